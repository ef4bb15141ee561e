/**
 * The region's processing agent: a Container Apps environment with a scheduler job (cron) that
 * queues due work, and a worker job that KEDA starts per queued message. Each job has its own
 * user-assigned identity with only the roles its part needs:
 * - scheduler: Reader on the region's protected scopes (to find tagged resources), send on the queue;
 * - worker: the backup role on the region's protected scopes, key user on the customer's key,
 *   read/process on the queue, blob data on the staging container and the vault container.
 */
import * as pulumi from "@pulumi/pulumi";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import type { WorkerConfig } from "../config.ts";
import { AgentEnvironment } from "./agent-environment.ts";
import { agentJob } from "./agent-job.ts";
import type { JobSecret } from "./agent-job.ts";
import { BUILT_IN_ROLES, builtInRoleId, grantRole } from "./roles.ts";

export interface RegionAgentArgs {
  customer: string;
  region: string;
  subscriptionId: string;
  resourceGroupName: pulumi.Input<string>;
  image: string;
  schedule: string;
  worker: WorkerConfig;
  retentionDays: number;
  /** ARM ids of the protected scopes in this region. */
  protectedScopes: string[];
  backupRoleDefinitionId: pulumi.Input<string>;
  keyUserRoleDefinitionId: pulumi.Input<string>;
  keyResourceId: pulumi.Input<string>;
  keyUri: pulumi.Input<string>;
  queue: { accountName: pulumi.Input<string>; name: pulumi.Input<string>; url: pulumi.Input<string>; scope: pulumi.Input<string> };
  transient: { containerUrl: pulumi.Input<string>; containerScope: pulumi.Input<string> };
  vault: { containerUrl: pulumi.Input<string>; containerScope: pulumi.Input<string> };
  notificationWebhook?: pulumi.Input<string>;
  tags: Record<string, string>;
}

export class RegionAgent extends pulumi.ComponentResource {
  readonly schedulerJobName: pulumi.Output<string>;
  readonly workerJobName: pulumi.Output<string>;
  readonly workerPrincipalId: pulumi.Output<string>;
  readonly schedulerPrincipalId: pulumi.Output<string>;

  constructor(name: string, args: RegionAgentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:RegionAgent", name, {}, opts);
    const environment = new AgentEnvironment(
      `${name}-environment`,
      { resourceGroupName: args.resourceGroupName, location: args.region, tags: args.tags },
      { parent: this },
    );
    const identity = (role: string) =>
      new managedidentity.UserAssignedIdentity(
        `${name}-${role}-identity`,
        { resourceGroupName: args.resourceGroupName, location: args.region, tags: args.tags },
        { parent: this },
      );
    const scheduler = identity("scheduler");
    const worker = identity("worker");
    const builtIn = (guid: string) => builtInRoleId(args.subscriptionId, guid);

    args.protectedScopes.forEach((scope, i) => {
      grantRole(`${name}-scheduler-read-${i}`, { principalId: scheduler.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.reader), scope, description: `Bulwark scheduler: find protected resources in ${args.region}` }, this);
      grantRole(`${name}-worker-backup-${i}`, { principalId: worker.principalId, roleDefinitionId: args.backupRoleDefinitionId, scope, description: `Bulwark worker: back up and restore in ${args.region}` }, this);
    });
    grantRole(`${name}-scheduler-queue`, { principalId: scheduler.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageQueueDataMessageSender), scope: args.queue.scope, description: "Bulwark scheduler: queue due work" }, this);
    const workerGrants = [
      grantRole(`${name}-worker-queue-read`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageQueueDataReader), scope: args.queue.scope, description: "Bulwark worker: KEDA reads the queue length" }, this),
      grantRole(`${name}-worker-queue-process`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageQueueDataMessageProcessor), scope: args.queue.scope, description: "Bulwark worker: take and complete queued work" }, this),
      grantRole(`${name}-worker-staging`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.transient.containerScope, description: "Bulwark worker: stage backups and SQL exports" }, this),
      grantRole(`${name}-worker-vault`, { principalId: worker.principalId, roleDefinitionId: builtIn(BUILT_IN_ROLES.storageBlobDataContributor), scope: args.vault.containerScope, description: "Bulwark worker: write and read the vault" }, this),
      grantRole(`${name}-worker-key`, { principalId: worker.principalId, roleDefinitionId: args.keyUserRoleDefinitionId, scope: args.keyResourceId, description: "Bulwark worker: wrap and unwrap data keys" }, this),
    ];

    const secrets: JobSecret[] = args.notificationWebhook === undefined ? [] : [{ env: "BULWARK_NOTIFICATION_WEBHOOK", value: args.notificationWebhook }];
    const common = {
      resourceGroupName: args.resourceGroupName,
      location: args.region,
      environmentId: environment.environmentId,
      image: args.image,
      tags: args.tags,
    };
    const protectedScopes = args.protectedScopes.join(",");
    const schedulerJob = agentJob(
      `${name}-scheduler`,
      {
        ...common,
        agentCommand: "schedule",
        identityId: scheduler.id,
        identityClientId: scheduler.clientId,
        env: {
          BULWARK_CUSTOMER: args.customer,
          BULWARK_REGION: args.region,
          BULWARK_PROTECTED_SCOPES: protectedScopes,
          BULWARK_QUEUE_URL: args.queue.url,
          BULWARK_RETENTION_DAYS: String(args.retentionDays),
        },
        secrets,
        trigger: { kind: "schedule", cron: args.schedule },
        replicaTimeoutSeconds: 900,
        replicaRetryLimit: 1,
        cpu: 0.5,
        memory: "1Gi",
      },
      this,
    );
    const workerJob = agentJob(
      `${name}-worker`,
      {
        ...common,
        agentCommand: "worker",
        identityId: worker.id,
        identityClientId: worker.clientId,
        env: {
          BULWARK_CUSTOMER: args.customer,
          BULWARK_REGION: args.region,
          BULWARK_PROTECTED_SCOPES: protectedScopes,
          BULWARK_QUEUE_URL: args.queue.url,
          BULWARK_TRANSIENT: args.transient.containerUrl,
          BULWARK_VAULT: args.vault.containerUrl,
          BULWARK_KEY_ID: args.keyUri,
          BULWARK_RETENTION_DAYS: String(args.retentionDays),
        },
        secrets,
        trigger: { kind: "queue", accountName: args.queue.accountName, queueName: args.queue.name, maxExecutions: args.worker.maxExecutions, queueLength: 1 },
        replicaTimeoutSeconds: args.worker.replicaTimeoutSeconds,
        replicaRetryLimit: args.worker.replicaRetryLimit,
        cpu: args.worker.cpu,
        memory: args.worker.memory,
        // A worker started before its roles exist would fail its first executions.
        dependsOn: workerGrants,
      },
      this,
    );
    this.schedulerJobName = schedulerJob.name;
    this.workerJobName = workerJob.name;
    this.workerPrincipalId = worker.principalId;
    this.schedulerPrincipalId = scheduler.principalId;
    this.registerOutputs({ schedulerJobName: this.schedulerJobName, workerJobName: this.workerJobName });
  }
}
