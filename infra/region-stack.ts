/**
 * A region stack: one per customer and region. It reads the customer stack's outputs through a
 * StackReference and provisions the region's agent, transient storage and isolated storage, all
 * in that region, protecting only the scopes the customer declared in that region; with
 * bulwark:copyRegion, also a copy vault in that (paired) region (components/copy-vault.ts).
 */
import * as pulumi from "@pulumi/pulumi";
import * as resources from "@pulumi/azure-native/resources/index.js";
import { UsageError } from "../runtime/errors.ts";
import type { RegionConfig } from "./config.ts";
import { customerTags } from "./customer-stack.ts";
import { TransientStorage } from "./components/transient-storage.ts";
import { IsolatedStorage } from "./components/isolated-storage.ts";
import { CopyVault } from "./components/copy-vault.ts";
import { RegionAgent } from "./components/region-agent.ts";
import { subscriptionOf } from "./components/roles.ts";
import { RegionNetwork, storageNetworkAccess } from "./components/network.ts";
import { AgentAlerts } from "./components/alerts.ts";
import { policyJson, regionPolicyDocument, requireResourcesInScopes } from "./backup-policy.ts";

export interface RegionStackOutputs {
  region: string;
  protectedScopes: string[];
  resourceGroupName: pulumi.Output<string>;
  transientAccountName: pulumi.Output<string>;
  transientUrl: pulumi.Output<string>;
  fleetTableEndpoint: pulumi.Output<string>;
  fleetQueueEndpoint: pulumi.Output<string>;
  workQueueName: pulumi.Output<string>;
  /** The scheduler's BULWARK_POLICY_JSON (also what `bulwark status` needs as a policy file). */
  policyJson: pulumi.Output<string>;
  vaultAccountName: pulumi.Output<string>;
  vaultUrl: pulumi.Output<string>;
  schedulerJobName: pulumi.Output<string>;
  workerJobName: pulumi.Output<string>;
  /** The copy vault in bulwark:copyRegion ("" without one). */
  copyVaultUrl: pulumi.Output<string>;
  copyVaultAccountName: pulumi.Output<string>;
}

/** Customer stack outputs that decide what the region stack creates must be known values. */
async function requireKnown<T>(ref: pulumi.StackReference, stack: string, name: string): Promise<T> {
  const details = await ref.getOutputDetails(name);
  const value = details.value ?? details.secretValue;
  if (value === undefined) {
    throw new UsageError(`customer stack ${stack} has no output "${name}". Run \`pulumi up\` on the customer stack first, then this region stack.`);
  }
  return value as T;
}

export async function regionStack(config: RegionConfig): Promise<RegionStackOutputs> {
  const ref = new pulumi.StackReference(`${config.customer}-customer`, { name: config.customerStack });
  const customer = await requireKnown<string>(ref, config.customerStack, "customer");
  if (customer !== config.customer) {
    throw new UsageError(`bulwark:customerStack ${config.customerStack} belongs to customer "${customer}", not "${config.customer}". Point bulwark:customerStack at ${config.customer}'s customer stack.`);
  }
  const allScopes = await requireKnown<{ scope: string; region: string }[]>(ref, config.customerStack, "protectedScopes");
  const scopes = allScopes.filter((s) => s.region === config.region).map((s) => s.scope);
  // Where this region's restores may create resources (the restore role is assigned there alone).
  const restoreGroups = await requireKnown<{ scope: string; region: string }[]>(ref, config.customerStack, "restoreResourceGroups");
  const restoreScopes = restoreGroups.filter((g) => g.region === config.region).map((g) => g.scope);
  const restoreRole = await requireKnown<string>(ref, config.customerStack, "restoreRoleDefinitionId");
  if (scopes.length === 0) {
    const regions = [...new Set(allScopes.map((s) => s.region))].join(", ");
    throw new UsageError(`bulwark:region ${config.region} has no protected scope: customer ${customer} protects only ${regions}. Add a scope in ${config.region} to the customer stack's bulwark:protect (and update it), or deploy this stack for one of ${regions}.`);
  }
  requireResourcesInScopes(config.policy.resources, scopes, config.region);
  const subscriptionId = subscriptionOf(scopes[0]);
  const output = (name: string) => ref.requireOutput(name) as pulumi.Output<string>;
  const tags = { ...customerTags(config.customer), "bulwark-region": config.region };

  const group = new resources.ResourceGroup(`${config.customer}-${config.region}`, {
    resourceGroupName: `bulwark-${config.customer}-${config.region}`,
    location: config.region,
    tags,
  });
  const customerNetwork = await requireKnown<string>(ref, config.customerStack, "network");
  if (customerNetwork === "private" && config.network !== "private") {
    throw new UsageError(`bulwark:network is public, but customer ${customer}'s key vault takes private endpoint traffic only: this region's agents could not wrap or unwrap. Set \`bulwark:network: private\` on this region stack.`);
  }
  const privateNetwork =
    config.network === "private" ? new RegionNetwork(`${config.customer}-${config.region}-network`, { resourceGroupName: group.name, location: config.region, tags }) : undefined;
  const networkAccess = storageNetworkAccess(config.network);
  const transient = new TransientStorage(`${config.customer}-${config.region}-transient`, {
    customer: config.customer,
    region: config.region,
    subscriptionId,
    resourceGroupName: group.name,
    networkAccess,
    tags,
  });
  const isolated = new IsolatedStorage(`${config.customer}-${config.region}-isolated`, {
    customer: config.customer,
    region: config.region,
    subscriptionId,
    resourceGroupName: group.name,
    redundancy: config.redundancy,
    retention: config.retention,
    keyVaultUri: output("keyVaultUri"),
    keyName: output("keyName"),
    keyResourceId: output("keyResourceId"),
    networkAccess,
    tags,
  });
  // bulwark:copyRegion: a copy vault in the paired region, which the copy jobs fill after each backup.
  const copyVault =
    config.copyRegion === undefined
      ? undefined
      : new CopyVault(`${config.customer}-${config.region}-copy`, {
          customer: config.customer,
          region: config.region,
          copyRegion: config.copyRegion,
          subscriptionId,
          redundancy: config.redundancy,
          retention: config.retention,
          keyVaultUri: output("keyVaultUri"),
          keyName: output("keyName"),
          keyResourceId: output("keyResourceId"),
          networkAccess,
          tags,
        });
  privateNetwork?.connectStores({ keyVaultId: output("keyVaultId"), vaultAccountId: isolated.accountId, transientAccountId: transient.accountId });
  const policy = pulumi.all([isolated.containerUrl, copyVault?.containerUrl]).apply(([vaultUrl, copyVaultUrl]) =>
    policyJson([
      regionPolicyDocument({
        customer: config.customer,
        region: config.region,
        vaultUrl,
        protectedScopes: scopes,
        policy: config.policy,
        retention: config.retention.rule,
        copyVaultUrl,
      }),
    ]),
  );
  const agent = new RegionAgent(`${config.customer}-${config.region}-agent`, {
    customer: config.customer,
    region: config.region,
    subscriptionId,
    resourceGroupName: group.name,
    image: config.image,
    registry: config.registry,
    schedule: config.schedule,
    worker: config.worker,
    protectedScopes: scopes,
    policyJson: policy,
    roles: { inventory: output("inventoryRoleDefinitionId"), backup: output("backupRoleDefinitionId"), restore: restoreRole === "" ? undefined : restoreRole },
    restoreScopes,
    keyUserRoleDefinitionId: output("keyUserRoleDefinitionId"),
    keyResourceId: output("keyResourceId"),
    keyUri: output("keyUri"),
    fleet: {
      accountName: transient.accountName,
      accountId: transient.accountId,
      tableEndpoint: transient.tableEndpoint,
      queueEndpoint: transient.queueEndpoint,
      prefix: transient.fleetPrefix,
      workQueueName: transient.workQueueName,
      resources: transient.fleetResources,
    },
    transient: { containerUrl: transient.containerUrl, containerScope: transient.containerScope },
    vault: { containerScope: isolated.containerScope, locksContainerScope: isolated.locksContainerScope },
    sqlAdmin: config.sqlAdmin === undefined ? undefined : { login: pulumi.secret(config.sqlAdmin.login.value), password: pulumi.secret(config.sqlAdmin.password.value) },
    infrastructureSubnetId: privateNetwork?.agentSubnetId,
    tags,
  }, { dependsOn: privateNetwork?.endpoints ?? [] });
  // Diagnostic settings: both accounts' storage logs in the workspace the agents' logs and alerts use.
  isolated.sendLogsTo(agent.workspaceId);
  transient.sendLogsTo(agent.workspaceId);
  copyVault?.grantTo({ workerPrincipalId: agent.workerPrincipalId, prunePrincipalId: agent.prunePrincipalId, sourceAccountId: isolated.accountId, workspaceId: agent.workspaceId });
  if (config.alerts !== "none") {
    new AgentAlerts(`${config.customer}-${config.region}-alerts`, {
      customer: config.customer,
      region: config.region,
      resourceGroupName: group.name,
      workspaceId: agent.workspaceId,
      jobs: agent.jobIds,
      schedule: config.schedule,
      receivers: config.alerts,
      tags,
    });
  }
  return {
    region: config.region,
    protectedScopes: scopes,
    resourceGroupName: group.name,
    transientAccountName: transient.accountName,
    transientUrl: transient.containerUrl,
    fleetTableEndpoint: transient.tableEndpoint,
    fleetQueueEndpoint: transient.queueEndpoint,
    workQueueName: transient.workQueueName,
    policyJson: policy,
    vaultAccountName: isolated.accountName,
    vaultUrl: isolated.containerUrl,
    schedulerJobName: agent.schedulerJobName,
    workerJobName: agent.workerJobName,
    copyVaultUrl: copyVault?.containerUrl ?? pulumi.output(""),
    copyVaultAccountName: copyVault?.accountName ?? pulumi.output(""),
  };
}
