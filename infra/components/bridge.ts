/**
 * The bridge: Bulwark's in-tenant agent. A scheduled Container Apps job in the customer's home
 * region whose user-assigned identity holds the bridge role at every protected scope (reads, and
 * snapshot read, delete and end of access: components/backup-role.ts): it keeps the inventory of
 * what is protected (and where) and retires snapshots nothing needs any more.
 */
import * as pulumi from "@pulumi/pulumi";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import type { ContainerRegistry, ProtectedScope } from "../config.ts";
import { scopeId } from "../config.ts";
import { AgentEnvironment } from "./agent-environment.ts";
import { agentJob, grantRegistryPull } from "./agent-job.ts";
import { afterRolePropagation, grantRole } from "./roles.ts";
import { regionalName } from "../naming.ts";

export interface BridgeArgs {
  customer: string;
  resourceGroupName: pulumi.Input<string>;
  location: string;
  image: string;
  /** The image's Azure Container Registry; absent for a public image. */
  registry?: ContainerRegistry;
  schedule: string;
  protect: ProtectedScope[];
  /** The bridge role's tenant-scoped id (components/backup-role.ts). */
  bridgeRoleDefinitionId: pulumi.Input<string>;
  tags: Record<string, string>;
}

export class Bridge extends pulumi.ComponentResource {
  readonly identityPrincipalId: pulumi.Output<string>;
  readonly identityClientId: pulumi.Output<string>;
  readonly jobName: pulumi.Output<string>;
  /** The bridge's Container Apps environment in the home region, which the console app shares. */
  readonly environmentId: pulumi.Output<string>;

  constructor(name: string, args: BridgeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:Bridge", name, {}, opts);
    const identity = new managedidentity.UserAssignedIdentity(
      `${name}-identity`,
      { resourceName: regionalName(args.customer, args.location, "bridge-id"), resourceGroupName: args.resourceGroupName, location: args.location, tags: args.tags },
      { parent: this },
    );
    const grants = args.protect.map((scope, i) =>
      grantRole(
        `${name}-backup-${i}`,
        {
          principalId: identity.principalId,
          roleDefinitionId: args.bridgeRoleDefinitionId,
          scope: scopeId(scope),
          description: `Bulwark bridge: inventory and snapshot hygiene at a protected scope (${scope.region})`,
        },
        this,
      ),
    );
    // The job's first run must find its roles honoured (they take minutes to propagate).
    const rolesHonoured = afterRolePropagation(`${name}-roles-propagated`, [...grants, ...grantRegistryPull(name, args.registry, identity.principalId, this)], this);
    const environment = new AgentEnvironment(
      `${name}-agents`,
      { customer: args.customer, resourceGroupName: args.resourceGroupName, location: args.location, tags: args.tags },
      { parent: this },
    );
    const job = agentJob(
      `${name}-job`,
      {
        customer: args.customer,
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        environmentId: environment.environmentId,
        image: args.image,
        registry: args.registry,
        agentCommand: "bridge",
        identityId: identity.id,
        identityClientId: identity.clientId,
        env: {
          BULWARK_CUSTOMER: args.customer,
          BULWARK_PROTECTED_SCOPES: JSON.stringify(args.protect.map((s) => ({ scope: scopeId(s), region: s.region }))),
        },
        trigger: { kind: "schedule", cron: args.schedule },
        replicaTimeoutSeconds: 1800,
        replicaRetryLimit: 1,
        cpu: 0.5,
        memory: "1Gi",
        tags: args.tags,
        dependsOn: [rolesHonoured],
      },
      this,
    );
    this.identityPrincipalId = identity.principalId;
    this.identityClientId = identity.clientId;
    this.jobName = job.name;
    this.environmentId = environment.environmentId;
    this.registerOutputs({ identityPrincipalId: this.identityPrincipalId, jobName: this.jobName });
  }
}
