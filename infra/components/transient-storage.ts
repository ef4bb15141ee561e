/**
 * Transient storage in the agent's region: where backups are staged before promotion and SQL
 * exports land (a lifecycle rule deletes every blob, version and snapshot older than a day), and
 * the fleet's state: the runtime's tables and the region's work and poison queues
 * (runtime/jobs/storage.ts). Those are created here, so the agents' identities need no right to
 * create them; the runtime's create-if-missing calls then find them in place.
 */
import * as pulumi from "@pulumi/pulumi";
import * as storage from "@pulumi/azure-native/storage/index.js";
import { globalName } from "../naming.ts";
import { STORAGE_KIND_TAG } from "../../policies/rules.ts";
import { storageDiagnostics } from "./diagnostics.ts";
import type { StorageNetworkAccess } from "./network.ts";

export const TRANSIENT_CONTAINER = "staging";
export const TRANSIENT_MAX_AGE_DAYS = 1;
/** The prefix of the fleet's tables and queues, passed to the agents as BULWARK_FLEET_PREFIX. */
export const FLEET_PREFIX = "bulwark";

/** The names FleetStorage (runtime/jobs/storage.ts) uses for a prefix and a region. */
export function fleetNames(prefix: string, region: string): { tables: string[]; workQueue: string; poisonQueue: string } {
  const normalized = region.replace(/\s+/g, "").toLowerCase();
  return {
    tables: ["jobs", "items", "locks", "reports"].map((table) => `${prefix}${table}`),
    workQueue: `${prefix}-work-${normalized}`,
    poisonQueue: `${prefix}-poison-${normalized}`,
  };
}

export interface TransientStorageArgs {
  customer: string;
  region: string;
  subscriptionId: string;
  resourceGroupName: pulumi.Input<string>;
  /** Who may connect: public with RBAC-only data access, or private endpoints only (network.ts). */
  networkAccess: StorageNetworkAccess;
  tags: Record<string, string>;
}

export class TransientStorage extends pulumi.ComponentResource {
  readonly accountName: pulumi.Output<string>;
  readonly accountId: pulumi.Output<string>;
  readonly containerUrl: pulumi.Output<string>;
  readonly containerScope: pulumi.Output<string>;
  /** The fleet's table and queue service URLs (BULWARK_FLEET_TABLE_ENDPOINT, BULWARK_FLEET_QUEUE_ENDPOINT). */
  readonly tableEndpoint: pulumi.Output<string>;
  readonly queueEndpoint: pulumi.Output<string>;
  /** The region's work queue, which the worker's KEDA rule watches. */
  readonly workQueueName: pulumi.Output<string>;
  readonly fleetPrefix: string;
  /** The tables and queues: agents depend on them so no run starts before they exist. */
  readonly fleetResources: pulumi.Resource[];
  private readonly name: string;

  constructor(name: string, args: TransientStorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:TransientStorage", name, {}, opts);
    this.name = name;
    const account = new storage.StorageAccount(
      `${name}-account`,
      {
        accountName: globalName(`bwt${args.customer}`, 24, args.subscriptionId, args.region),
        resourceGroupName: args.resourceGroupName,
        location: args.region,
        tags: { ...args.tags, [STORAGE_KIND_TAG]: "transient" },
        kind: "StorageV2",
        sku: { name: "Standard_LRS" },
        accessTier: "Hot",
        allowBlobPublicAccess: false,
        allowSharedKeyAccess: false,
        defaultToOAuthAuthentication: true,
        minimumTlsVersion: "TLS1_2",
        enableHttpsTrafficOnly: true,
        allowCrossTenantReplication: false,
        ...args.networkAccess,
      },
      { parent: this },
    );
    const lifecycle = new storage.ManagementPolicy(
      `${name}-lifecycle`,
      {
        accountName: account.name,
        resourceGroupName: args.resourceGroupName,
        managementPolicyName: "default",
        policy: {
          rules: [
            {
              name: "delete-after-a-day",
              enabled: true,
              type: "Lifecycle",
              definition: {
                filters: { blobTypes: ["blockBlob", "appendBlob"] },
                actions: {
                  baseBlob: { delete: { daysAfterModificationGreaterThan: TRANSIENT_MAX_AGE_DAYS } },
                  snapshot: { delete: { daysAfterCreationGreaterThan: TRANSIENT_MAX_AGE_DAYS } },
                  version: { delete: { daysAfterCreationGreaterThan: TRANSIENT_MAX_AGE_DAYS } },
                },
              },
            },
          ],
        },
      },
      { parent: this },
    );
    const container = new storage.BlobContainer(
      `${name}-staging`,
      { accountName: account.name, resourceGroupName: args.resourceGroupName, containerName: TRANSIENT_CONTAINER, publicAccess: "None" },
      { parent: this, dependsOn: [lifecycle] },
    );
    const fleet = fleetNames(FLEET_PREFIX, args.region);
    const tables = fleet.tables.map(
      (tableName) => new storage.Table(`${name}-${tableName}`, { accountName: account.name, resourceGroupName: args.resourceGroupName, tableName }, { parent: this }),
    );
    const queues = [fleet.workQueue, fleet.poisonQueue].map(
      (queueName) => new storage.Queue(`${name}-${queueName}`, { accountName: account.name, resourceGroupName: args.resourceGroupName, queueName }, { parent: this }),
    );
    this.accountName = account.name;
    this.accountId = account.id;
    this.containerUrl = pulumi.interpolate`https://${account.name}.blob.core.windows.net/${container.name}`;
    this.containerScope = pulumi.interpolate`${account.id}/blobServices/default/containers/${container.name}`;
    this.tableEndpoint = pulumi.interpolate`https://${account.name}.table.core.windows.net`;
    this.queueEndpoint = pulumi.interpolate`https://${account.name}.queue.core.windows.net`;
    this.workQueueName = queues[0].name;
    this.fleetResources = [...tables, ...queues];
    this.fleetPrefix = FLEET_PREFIX;
    this.registerOutputs({ accountName: this.accountName, containerUrl: this.containerUrl, tableEndpoint: this.tableEndpoint, queueEndpoint: this.queueEndpoint, workQueueName: this.workQueueName });
  }

  /** Sends the staging, table and queue services' read, write and delete logs to a Log Analytics workspace. */
  sendLogsTo(workspaceId: pulumi.Input<string>): void {
    for (const service of ["blobServices", "tableServices", "queueServices"] as const) {
      storageDiagnostics(`${this.name}-${service}-diagnostics`, this.accountId, service, workspaceId, this);
    }
  }
}
