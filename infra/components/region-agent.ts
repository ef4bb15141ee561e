/**
 * The region's processing agent: a Container Apps environment with a scheduler job (cron) that
 * runs `bulwark agent schedule` (one tick: the policy's due items onto the region's work queue)
 * and a worker job that KEDA starts while that queue holds messages, running `bulwark agent
 * worker`. Both keep the fleet's state in the transient account's tables and queues. Each job has
 * its own user-assigned identity with only the roles its part needs (the custom roles are
 * components/backup-role.ts's, built from what the runtime declares per identity):
 * - scheduler: the inventory role (reads only) at the region's protected scopes; table and queue
 *   data on the transient account;
 * - worker: the backup role at the protected scopes, key user on the customer's key, table and
 *   queue data on the transient account, blob data on the staging and vault containers, and Blob
 *   Delegator on the transient account (user-delegation SAS for Azure SQL export and import);
 * - restore, the worker's second identity: the restore role at the region's restore resource groups
 *   only (bulwark:restoreResourceGroups), nothing else. The worker runs restore jobs' Azure calls
 *   as this identity (BULWARK_RESTORE_CLIENT_ID), so the identity that backs up cannot create or
 *   delete VMs, disks or databases, and the one that can, can do so only in those groups;
 * - prune: the vault's containers and the key, no Resource Manager role at all.
 */
import * as pulumi from "@pulumi/pulumi";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import type { ContainerRegistry, WorkerConfig } from "../config.ts";
import { AgentEnvironment } from "./agent-environment.ts";
import { agentJob, grantRegistryPull } from "./agent-job.ts";
import type { JobSecret } from "./agent-job.ts";
import { BUILT_IN_ROLES, builtInRoleId, grantRole } from "./roles.ts";
import { regionalName } from "../naming.ts";

export interface RegionAgentArgs {
  customer: string;
  region: string;
  subscriptionId: string;
  resourceGroupName: pulumi.Input<string>;
  image: string;
  /** The image's Azure Container Registry; absent for a public image. */
  registry?: ContainerRegistry;
  /** The scheduler's tick (cron, UTC). */
  schedule: string;
  /** When retention and prune run (cron, UTC); daily at 02:30 by default. */
  pruneSchedule?: string;
  worker: WorkerConfig;
  /** ARM ids of the protected scopes in this region. */
  protectedScopes: string[];
  /** BULWARK_POLICY_JSON: the region's policy documents. */
  policyJson: pulumi.Input<string>;
  /** Tenant-scoped ids of the customer's custom roles (components/backup-role.ts); restore absent without restore groups. */
  roles: { inventory: pulumi.Input<string>; backup: pulumi.Input<string>; restore?: pulumi.Input<string> };
  /** ARM ids of this region's restore resource groups, where the restore identity's role is assigned. */
  restoreScopes: string[];
  keyUserRoleDefinitionId: pulumi.Input<string>;
  keyResourceId: pulumi.Input<string>;
  /** The customer's key without version (the worker follows rotation). */
  keyUri: pulumi.Input<string>;
  /** Where the fleet's state lives: the transient account's tables and queues. */
  fleet: {
    accountName: pulumi.Input<string>;
    accountId: pulumi.Input<string>;
    tableEndpoint: pulumi.Input<string>;
    queueEndpoint: pulumi.Input<string>;
    prefix: string;
    workQueueName: pulumi.Input<string>;
    /** The tables and queues, which must exist before an agent runs. */
    resources: pulumi.Resource[];
  };
  transient: { containerUrl: pulumi.Input<string>; containerScope: pulumi.Input<string> };
  /** The vault container, and the container of its lock objects (outside WORM: isolated-storage.ts). */
  vault: { containerScope: pulumi.Input<string>; locksContainerScope: pulumi.Input<string> };
  /** Azure SQL's server login for export and import, as job secrets; absent when nothing is SQL. */
  sqlAdmin?: { login: pulumi.Input<string>; password: pulumi.Input<string> };
  /** Private networking: the delegated subnet the environment joins (components/network.ts). */
  infrastructureSubnetId?: pulumi.Input<string>;
  tags: Record<string, string>;
}

export class RegionAgent extends pulumi.ComponentResource {
  readonly schedulerJobName: pulumi.Output<string>;
  readonly workerJobName: pulumi.Output<string>;
  readonly pruneJobName: pulumi.Output<string>;
  readonly workerPrincipalId: pulumi.Output<string>;
  readonly schedulerPrincipalId: pulumi.Output<string>;
  readonly restorePrincipalId: pulumi.Output<string>;
  readonly prunePrincipalId: pulumi.Output<string>;
  /** The environment's Log Analytics workspace, where the agents' console logs land (alerts query it). */
  readonly workspaceId: pulumi.Output<string>;
  /** The agents' jobs by role (their executions are alerted on). */
  readonly jobIds: { role: string; id: pulumi.Output<string> }[];

  constructor(name: string, args: RegionAgentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:RegionAgent", name, {}, opts);
    const environment = new AgentEnvironment(
      `${name}-environment`,
      { customer: args.customer, resourceGroupName: args.resourceGroupName, location: args.region, tags: args.tags, infrastructureSubnetId: args.infrastructureSubnetId },
      { parent: this },
    );
    const identity = (role: string) =>
      new managedidentity.UserAssignedIdentity(
        `${name}-${role}-identity`,
        { resourceName: regionalName(args.customer, args.region, `${role}-id`), resourceGroupName: args.resourceGroupName, location: args.region, tags: args.tags },
        { parent: this },
      );
    const scheduler = identity("scheduler");
    const worker = identity("worker");
    const restore = identity("restore");
    const prune = identity("prune");
    const builtIn = (guid: string) => builtInRoleId(args.subscriptionId, guid);

    // Both agents read and write the fleet's tables and queues. Queue Data Contributor, not Message
    // Sender, for the scheduler too: FleetStorage opens a queue with create-if-missing, and Create
    // Queue (queueServices/queues/write) is only in the contributor role; both data roles stop at
    // tables and queues, and the account holds no others.
    const fleetGrants = (role: string, principalId: pulumi.Output<string>) => [
      grantRole(`${name}-${role}-fleet-tables`, { principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageTableDataContributor), scope: args.fleet.accountId, description: `Bulwark ${role}: the fleet's job, item, lock and report tables` }, this),
      grantRole(`${name}-${role}-fleet-queues`, { principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageQueueDataContributor), scope: args.fleet.accountId, description: `Bulwark ${role}: the region's work and poison queues` }, this),
    ];
    const protectedScopeGrants = (role: string, principalId: pulumi.Output<string>, roleDefinitionId: pulumi.Input<string>, description: string) =>
      args.protectedScopes.map((scope, i) =>
        grantRole(`${name}-${role}-backup-${i}`, { principalId, roleDefinitionId, scope, description }, this),
      );
    const schedulerGrants = [
      ...protectedScopeGrants("scheduler", scheduler.principalId, args.roles.inventory, `Bulwark scheduler: find protected resources in ${args.region} (reads only)`),
      ...fleetGrants("scheduler", scheduler.principalId),
      ...grantRegistryPull(`${name}-scheduler`, args.registry, scheduler.principalId, this),
    ];
    const workerGrants = [
      ...protectedScopeGrants("worker", worker.principalId, args.roles.backup, `Bulwark worker: back up in ${args.region}`),
      ...fleetGrants("worker", worker.principalId),
      ...grantRegistryPull(`${name}-worker`, args.registry, worker.principalId, this),
      grantRole(`${name}-worker-staging`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.transient.containerScope, description: "Bulwark worker: stage backups and SQL exports" }, this),
      grantRole(`${name}-worker-delegator`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDelegator), scope: args.fleet.accountId, description: "Bulwark worker: sign user-delegation SAS for Azure SQL export and import" }, this),
      grantRole(`${name}-worker-vault`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.vault.containerScope, description: "Bulwark worker: write and read the vault" }, this),
      grantRole(`${name}-worker-vault-locks`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.vault.locksContainerScope, description: "Bulwark worker and prune: take, refresh and release the vault's locks" }, this),
      grantRole(`${name}-worker-key`, { principalId: worker.principalId, roleDefinitionId: args.keyUserRoleDefinitionId, scope: args.keyResourceId, description: "Bulwark worker: wrap and unwrap data keys" }, this),
      ...restoreGrants(name, restore.principalId, args, this),
    ];
    const pruneGrants = [
      grantRole(`${name}-prune-vault`, { principalId: prune.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.vault.containerScope, description: "Bulwark prune: forget points and remove unreferenced packs" }, this),
      grantRole(`${name}-prune-vault-locks`, { principalId: prune.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.vault.locksContainerScope, description: "Bulwark prune: take and release the vault's exclusive lock" }, this),
      grantRole(`${name}-prune-key`, { principalId: prune.principalId, roleDefinitionId: args.keyUserRoleDefinitionId, scope: args.keyResourceId, description: "Bulwark prune: unwrap the vault's keys" }, this),
      ...grantRegistryPull(`${name}-prune`, args.registry, prune.principalId, this),
    ];

    const common = {
      customer: args.customer,
      resourceGroupName: args.resourceGroupName,
      location: args.region,
      environmentId: environment.environmentId,
      workloadProfileName: environment.workloadProfileName,
      image: args.image,
      registry: args.registry,
      tags: args.tags,
    };
    const fleetEnv = {
      BULWARK_FLEET_TABLE_ENDPOINT: args.fleet.tableEndpoint,
      BULWARK_FLEET_QUEUE_ENDPOINT: args.fleet.queueEndpoint,
      BULWARK_FLEET_PREFIX: args.fleet.prefix,
      // Informational (the runtime does not read it): where this identity holds the backup role.
      // The policy pack checks the job's role assignments against it.
      BULWARK_PROTECTED_SCOPES: args.protectedScopes.join(","),
    };
    const schedulerJob = agentJob(
      `${name}-scheduler`,
      {
        ...common,
        agentCommand: "schedule",
        identityId: scheduler.id,
        identityClientId: scheduler.clientId,
        env: {
          ...fleetEnv,
          BULWARK_POLICY_JSON: args.policyJson,
          // Only this region: its fleet (tables, queues) is this stack's own, and no other region's
          // worker reads this account's queues.
          BULWARK_AGENT_REGIONS: args.region,
        },
        trigger: { kind: "schedule", cron: args.schedule },
        replicaTimeoutSeconds: 900,
        replicaRetryLimit: 1,
        cpu: 0.5,
        memory: "1Gi",
        dependsOn: [...schedulerGrants, ...args.fleet.resources],
      },
      this,
    );
    const secrets: JobSecret[] =
      args.sqlAdmin === undefined
        ? []
        : [
            { env: "BULWARK_SQL_ADMIN_LOGIN", value: args.sqlAdmin.login },
            { env: "BULWARK_SQL_ADMIN_PASSWORD", value: args.sqlAdmin.password },
          ];
    const workerJob = agentJob(
      `${name}-worker`,
      {
        ...common,
        agentCommand: "worker",
        identityId: worker.id,
        identityClientId: worker.clientId,
        additionalIdentityIds: [restore.id],
        env: {
          ...fleetEnv,
          BULWARK_REGION: args.region,
          // Restore jobs call Azure as the restore identity (runtime/azure/context.ts).
          BULWARK_RESTORE_CLIENT_ID: restore.clientId,
          // Informational, like BULWARK_PROTECTED_SCOPES: where the restore identity holds its role.
          BULWARK_RESTORE_SCOPES: args.restoreScopes.join(","),
          // What a job may touch (its vault, item, retention) comes from the scheduler's policies, never from its record.
          BULWARK_POLICY_JSON: args.policyJson,
          BULWARK_TRANSIENT: args.transient.containerUrl,
          BULWARK_KEY_VAULT_KEY: args.keyUri,
          BULWARK_MAX_JOBS_PER_WORKER: String(args.worker.maxJobsPerWorker),
          BULWARK_MAX_JOBS_PER_REGION: String(args.worker.maxJobsPerRegion),
        },
        secrets,
        trigger: { kind: "queue", accountName: args.fleet.accountName, queueName: args.fleet.workQueueName, maxExecutions: args.worker.maxExecutions, queueLength: 1 },
        replicaTimeoutSeconds: args.worker.replicaTimeoutSeconds,
        replicaRetryLimit: args.worker.replicaRetryLimit,
        cpu: args.worker.cpu,
        memory: args.worker.memory,
        // A worker started before its roles and the fleet's tables exist would fail its first executions.
        dependsOn: [...workerGrants, ...args.fleet.resources],
      },
      this,
    );
    // Retention and prune on their own schedule, once a day, as their own identity: the vault's
    // containers and the key, and no Resource Manager role.
    const pruneJob = agentJob(
      `${name}-prune`,
      {
        ...common,
        agentCommand: "prune",
        identityId: prune.id,
        identityClientId: prune.clientId,
        env: {
          BULWARK_POLICY_JSON: args.policyJson,
          BULWARK_KEY_VAULT_KEY: args.keyUri,
        },
        trigger: { kind: "schedule", cron: args.pruneSchedule ?? "30 2 * * *" },
        replicaTimeoutSeconds: 4 * 3600,
        replicaRetryLimit: 1,
        cpu: args.worker.cpu,
        memory: args.worker.memory,
        dependsOn: pruneGrants,
      },
      this,
    );
    this.pruneJobName = pruneJob.name;
    this.workspaceId = environment.workspaceId;
    this.jobIds = [
      { role: "scheduler", id: schedulerJob.id },
      { role: "worker", id: workerJob.id },
      { role: "prune", id: pruneJob.id },
    ];
    this.schedulerJobName = schedulerJob.name;
    this.workerJobName = workerJob.name;
    this.workerPrincipalId = worker.principalId;
    this.schedulerPrincipalId = scheduler.principalId;
    this.restorePrincipalId = restore.principalId;
    this.prunePrincipalId = prune.principalId;
    this.registerOutputs({ schedulerJobName: this.schedulerJobName, workerJobName: this.workerJobName });
  }
}

/**
 * The restore role at each of the region's restore resource groups, and nowhere else. Without
 * restore groups (or without the role) the identity holds nothing: restores to Azure resources are
 * refused by Azure until bulwark:restoreResourceGroups names a group.
 */
function restoreGrants(name: string, principalId: pulumi.Output<string>, args: RegionAgentArgs, parent: pulumi.Resource) {
  const roleDefinitionId = args.roles.restore;
  if (roleDefinitionId === undefined) return [];
  return args.restoreScopes.map((scope, i) =>
    grantRole(`${name}-restore-${i}`, { principalId, roleDefinitionId, scope, description: `Bulwark restore: create disks, VMs and databases in a restore group (${args.region})` }, parent),
  );
}
