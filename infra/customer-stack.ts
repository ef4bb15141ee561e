/**
 * The customer stack: what exists once per customer, in the customer's tenant and subscription.
 */
import * as pulumi from "@pulumi/pulumi";
import * as resources from "@pulumi/azure-native/resources/index.js";
import type { CustomerConfig } from "./config.ts";
import { scopeId } from "./config.ts";
import { EnterpriseApp } from "./components/enterprise-app.ts";
import { IdentityRoles } from "./components/backup-role.ts";
import { CustomerKey } from "./components/customer-key.ts";
import type { KeySpec } from "./components/customer-key.ts";
import { Bridge } from "./components/bridge.ts";
import { consoleForRegionStack } from "./components/console-app.ts";

/** What region stacks read from the customer stack (through a StackReference). */
export interface CustomerStackOutputs {
  customer: pulumi.Output<string>;
  tenantId: pulumi.Output<string>;
  resourceGroupName: pulumi.Output<string>;
  enterpriseAppClientId: pulumi.Output<string>;
  /** Tenant-scoped ids of the custom roles region stacks assign (components/backup-role.ts). */
  inventoryRoleDefinitionId: pulumi.Output<string>;
  backupRoleDefinitionId: pulumi.Output<string>;
  /** Empty when bulwark:restoreResourceGroups names no group (no restore role exists then). */
  restoreRoleDefinitionId: pulumi.Output<string>;
  keyUserRoleDefinitionId: pulumi.Output<string>;
  keyVaultUri: pulumi.Output<string>;
  keyName: pulumi.Output<string>;
  keyResourceId: pulumi.Output<string>;
  keyUri: pulumi.Output<string>;
  /** What the key's first deployment fixed (size, rotation): the next deployment refuses changes Azure would ignore. */
  keySpec: KeySpec;
  /** The key vault's ARM id: a private region stack's endpoint connects to it. */
  keyVaultId: pulumi.Output<string>;
  /** bulwark:network of the customer stack: a public region stack cannot reach a private vault. */
  network: string;
  protectedScopes: { scope: string; region: string }[];
  /** Where restores may create resources, by region: each region stack assigns the restore role at its own. */
  restoreResourceGroups: { scope: string; region: string }[];
  bridgeJobName: pulumi.Output<string>;
  /** The deployed console's address; empty without bulwark:console. */
  consoleUrl: pulumi.Output<string>;
}

export function customerTags(customer: string): Record<string, string> {
  return { "bulwark-customer": customer, "managed-by": "pulumi" };
}

export function customerStack(config: CustomerConfig): CustomerStackOutputs {
  const tags = customerTags(config.customer);
  const group = new resources.ResourceGroup(config.customer, {
    resourceGroupName: `bulwark-${config.customer}`,
    location: config.homeRegion,
    tags,
  });
  const app = new EnterpriseApp(`${config.customer}-enterprise-app`, { customer: config.customer });
  const protectedScopes = config.protect.map((s) => ({ scope: scopeId(s), region: s.region }));
  const restoreResourceGroups = config.restoreResourceGroups.map((g) => ({ scope: scopeId(g), region: g.region }));
  const roles = new IdentityRoles(`${config.customer}-roles`, {
    customer: config.customer,
    protectedScopes: protectedScopes.map((s) => s.scope),
    restoreScopes: restoreResourceGroups.map((g) => g.scope),
  });
  const key = new CustomerKey(`${config.customer}-key`, {
    customer: config.customer,
    tenantId: config.tenantId,
    subscriptionId: config.subscriptionId,
    resourceGroupName: group.name,
    resourceGroupId: group.id,
    location: config.homeRegion,
    key: config.key,
    recoverVault: config.keyVaultRecover,
    tags,
  });
  const bridge = new Bridge(`${config.customer}-bridge`, {
    customer: config.customer,
    resourceGroupName: group.name,
    location: config.homeRegion,
    image: config.image,
    registry: config.registry,
    schedule: config.bridgeSchedule,
    protect: config.protect,
    bridgeRoleDefinitionId: roles.roleDefinitionIds.bridge!,
    tags,
  });
  const consoleApp =
    config.console === undefined
      ? undefined
      : consoleForRegionStack(`${config.customer}-console`, {
          regionStack: config.console.regionStack,
          customer: config.customer,
          tenantId: config.tenantId,
          location: config.homeRegion,
          resourceGroupName: group.name,
          environmentId: bridge.environmentId,
          image: config.image,
          registry: config.registry,
          key: { resourceId: key.keyResourceId, uri: key.keyUri, userRoleDefinitionId: key.keyUserRoleDefinitionId },
          tags,
        });
  return {
    customer: pulumi.output(config.customer),
    tenantId: pulumi.output(config.tenantId),
    resourceGroupName: group.name,
    enterpriseAppClientId: app.clientId,
    inventoryRoleDefinitionId: roles.roleDefinitionIds.inventory!,
    backupRoleDefinitionId: roles.roleDefinitionIds.backup!,
    restoreRoleDefinitionId: roles.roleDefinitionIds.restore ?? pulumi.output(""),
    keyUserRoleDefinitionId: key.keyUserRoleDefinitionId,
    keyVaultUri: key.vaultUri,
    keyName: key.keyName,
    keyResourceId: key.keyResourceId,
    keyUri: key.keyUri,
    keySpec: key.keySpec,
    keyVaultId: key.vaultId,
    network: config.network,
    protectedScopes,
    restoreResourceGroups,
    bridgeJobName: bridge.jobName,
    consoleUrl: consoleApp?.url ?? pulumi.output(""),
  };
}
