/**
 * Transient storage in the agent's region: where backups are staged before promotion, where SQL
 * exports land, and the region's job queue. Nothing here is meant to last: a lifecycle rule
 * deletes every blob, version and snapshot older than a day.
 */
import * as pulumi from "@pulumi/pulumi";
import * as storage from "@pulumi/azure-native/storage/index.js";
import { globalName } from "../naming.ts";
import { STORAGE_KIND_TAG } from "../../policies/rules.ts";

export const TRANSIENT_CONTAINER = "staging";
export const JOB_QUEUE = "jobs";
export const TRANSIENT_MAX_AGE_DAYS = 1;

export interface TransientStorageArgs {
  customer: string;
  region: string;
  subscriptionId: string;
  resourceGroupName: pulumi.Input<string>;
  tags: Record<string, string>;
}

export class TransientStorage extends pulumi.ComponentResource {
  readonly accountName: pulumi.Output<string>;
  readonly accountId: pulumi.Output<string>;
  readonly containerUrl: pulumi.Output<string>;
  readonly containerScope: pulumi.Output<string>;
  readonly queueName: pulumi.Output<string>;
  readonly queueUrl: pulumi.Output<string>;
  readonly queueScope: pulumi.Output<string>;

  constructor(name: string, args: TransientStorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:TransientStorage", name, {}, opts);
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
    const queue = new storage.Queue(
      `${name}-queue`,
      { accountName: account.name, resourceGroupName: args.resourceGroupName, queueName: JOB_QUEUE },
      { parent: this },
    );
    this.accountName = account.name;
    this.accountId = account.id;
    this.containerUrl = pulumi.interpolate`https://${account.name}.blob.core.windows.net/${container.name}`;
    this.containerScope = pulumi.interpolate`${account.id}/blobServices/default/containers/${container.name}`;
    this.queueName = queue.name;
    this.queueUrl = pulumi.interpolate`https://${account.name}.queue.core.windows.net/${queue.name}`;
    this.queueScope = pulumi.interpolate`${account.id}/queueServices/default/queues/${queue.name}`;
    this.registerOutputs({ accountName: this.accountName, containerUrl: this.containerUrl, queueUrl: this.queueUrl });
  }
}
