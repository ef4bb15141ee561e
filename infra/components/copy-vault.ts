/**
 * A region's copy vault (`bulwark:copyRegion`): isolated storage in the paired region that the
 * region's copy jobs fill with every point of the region's vault (runtime/workloads/copy-machine.ts),
 * so the points restore when the region's own storage is down. It is an IsolatedStorage of its own
 * (purpose "copy": its own account, encryption identity and names) in its own resource group in
 * the copy region, so it has the vault's protections: customer-managed key, no public or shared-key
 * access, TLS 1.2, versioning and soft delete, version-level WORM on its vault container, the
 * locks container outside WORM, a CanNotDelete lock, the lifecycle rules, the same network rules and
 * diagnostic settings into the region's workspace.
 *
 * Roles (`grantTo`), each from Microsoft's docs:
 * - the worker writes the copy (and takes its shared lock): Storage Blob Data Contributor on the copy
 *   vault container and its locks container, as on the region's own vault;
 * - the copy is server-side: "The source for a Copy Blob From URL operation can be any committed
 *   block blob in any Azure storage account that's either public or authorized with a shared access
 *   signature" (learn.microsoft.com/rest/api/storageservices/copy-blob-from-url; Put Block From URL
 *   likewise). The worker signs a read-only user-delegation SAS for the region's vault, which needs
 *   Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action at the storage
 *   account (the operation acts on the account: MicrosoftDocs/azure-docs
 *   articles/storage/blobs/storage-blob-user-delegation-sas-create-cli.md, "Assign permissions with
 *   Azure RBAC": a role scoped to a container is not enough, Storage Blob Delegator at the account
 *   is); the SAS can grant no more than the worker's own read on the vault container, which it has;
 * - `agent prune` applies retention and prunes the copy vault too: Storage Blob Data Contributor on
 *   both containers for the prune identity.
 */
import * as pulumi from "@pulumi/pulumi";
import * as resources from "@pulumi/azure-native/resources/index.js";
import type { Redundancy, RetentionConfig } from "../config.ts";
import { REGION_TAG } from "../../policies/rules.ts";
import { IsolatedStorage } from "./isolated-storage.ts";
import type { StorageNetworkAccess } from "./network.ts";
import { BUILT_IN_ROLES, builtInRoleId, grantRole } from "./roles.ts";

export interface CopyVaultArgs {
  customer: string;
  /** The region whose points are copied, and the region the copy lives in (its pair). */
  region: string;
  copyRegion: string;
  subscriptionId: string;
  redundancy: Redundancy;
  retention: RetentionConfig;
  keyVaultUri: pulumi.Input<string>;
  keyName: pulumi.Input<string>;
  keyResourceId: pulumi.Input<string>;
  networkAccess: StorageNetworkAccess;
  tags: Record<string, string>;
}

export interface CopyVaultGrants {
  workerPrincipalId: pulumi.Input<string>;
  prunePrincipalId: pulumi.Input<string>;
  /** The region's own vault account: the worker signs the copy's source SAS for it. */
  sourceAccountId: pulumi.Input<string>;
  /** The region's Log Analytics workspace: the copy account's blob logs go there too. */
  workspaceId: pulumi.Input<string>;
}

export class CopyVault extends pulumi.ComponentResource {
  readonly storage: IsolatedStorage;
  readonly containerUrl: pulumi.Output<string>;
  readonly accountName: pulumi.Output<string>;
  readonly resourceGroupName: pulumi.Output<string>;
  private readonly name: string;
  private readonly args: CopyVaultArgs;

  constructor(name: string, args: CopyVaultArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:CopyVault", name, {}, opts);
    this.name = name;
    this.args = args;
    // Tagged with the region it is in (the policy pack checks each resource is where its tag says)
    // and the region whose points it holds.
    const tags = { ...args.tags, [REGION_TAG]: args.copyRegion, "bulwark-copy-of": args.region };
    // A group of its own in the copy region: nothing of it depends on the primary region's control plane.
    const group = new resources.ResourceGroup(
      `${name}-group`,
      { resourceGroupName: `bulwark-${args.customer}-${args.region}-copy`, location: args.copyRegion, tags },
      { parent: this },
    );
    this.storage = new IsolatedStorage(
      `${name}-isolated`,
      {
        customer: args.customer,
        region: args.copyRegion,
        subscriptionId: args.subscriptionId,
        resourceGroupName: group.name,
        redundancy: args.redundancy,
        retention: args.retention,
        keyVaultUri: args.keyVaultUri,
        keyName: args.keyName,
        keyResourceId: args.keyResourceId,
        networkAccess: args.networkAccess,
        tags,
        purpose: "copy",
      },
      { parent: this },
    );
    this.containerUrl = this.storage.containerUrl;
    this.accountName = this.storage.accountName;
    this.resourceGroupName = group.name;
    this.registerOutputs({ containerUrl: this.containerUrl, accountName: this.accountName });
  }

  /** The worker's and prune's roles on the copy, the worker's SAS signing on the source, and the copy's logs. */
  grantTo(grants: CopyVaultGrants): void {
    const name = this.name;
    const role = (guid: string) => builtInRoleId(this.args.subscriptionId, guid);
    const contributor = role(BUILT_IN_ROLES.storageBlobDataContributor);
    const containers = [
      { suffix: "vault", scope: this.storage.containerScope },
      { suffix: "vault-locks", scope: this.storage.locksContainerScope },
    ];
    for (const { suffix, scope } of containers) {
      grantRole(`${name}-worker-${suffix}`, { principalId: grants.workerPrincipalId, roleDefinitionId: contributor, scope, description: `Bulwark worker: copy ${this.args.region}'s points into the copy vault in ${this.args.copyRegion}` }, this);
      grantRole(`${name}-prune-${suffix}`, { principalId: grants.prunePrincipalId, roleDefinitionId: contributor, scope, description: "Bulwark prune: retention and prune of the copy vault" }, this);
    }
    grantRole(
      `${name}-worker-source-delegator`,
      { principalId: grants.workerPrincipalId, roleDefinitionId: role(BUILT_IN_ROLES.storageBlobDelegator), scope: grants.sourceAccountId, description: "Bulwark worker: sign the read SAS of a server-side copy out of the vault" },
      this,
    );
    this.storage.sendLogsTo(grants.workspaceId);
  }
}
