/**
 * The customer's isolated storage in one region: the vault. Its own account, encrypted with the
 * customer's key through its own user-assigned identity, with blob versioning and version-level
 * immutability (WORM), soft delete, and no public or shared-key access.
 *
 * Where WORM applies, from Microsoft's docs (MicrosoftDocs/azure-docs,
 * articles/storage/blobs/immutable-version-level-worm-policies.md, "Enablement and policy setting"
 * and "Configure a policy on the current version"): version-level immutability support can only be
 * enabled on an account when it is created; a default time-based policy may then be set on the
 * account or on a container, a blob inherits it on upload (blob > container > account), and with
 * no default on either "you can upload a blob ... with no policy". An account default would also
 * cover the lock objects, which must be deleted and rewritten every few minutes. So the account
 * gets the support only, the vault container gets the default policy, and the vault's locks live
 * in a sibling container with none (`<vault container>-locks`, runtime/store/azure-blob.ts).
 *
 * The policy is created Unlocked: Azure creates a policy only as Disabled or Unlocked; "Only a
 * policy in an Unlocked state can transition to a Locked state which cannot be reverted"
 * (Azure/azure-rest-api-specs specification/storage/resource-manager/Microsoft.Storage/stable/
 * 2023-05-01/storage.json, AccountImmutabilityPolicyProperties.state; for a container's policy,
 * blob.json's ImmutabilityPolicyProperty.state is read-only and BlobContainers_LockImmutabilityPolicy
 * is the separate step). Locking is the operator's deliberate step (infra/README.md); once done,
 * `bulwark:retention.immutabilityLocked: true` tells this program never to change or delete it.
 *
 * Redundancy is chosen once: after the first backup the vault's data is not moved to another
 * redundancy by Bulwark (see infra/README.md).
 */
import * as pulumi from "@pulumi/pulumi";
import * as storage from "@pulumi/azure-native/storage/index.js";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import type * as azureInputs from "@pulumi/azure-native/types/input.js";
import type { Redundancy, RetentionConfig } from "../config.ts";
import { globalName, regionalName } from "../naming.ts";
import { STORAGE_KIND_TAG } from "../../policies/rules.ts";
import { lockContainerName } from "../../runtime/store/azure-blob.ts";
import { BUILT_IN_ROLES, afterRolePropagation, builtInRoleId, grantRole } from "./roles.ts";
import type { StorageNetworkAccess } from "./network.ts";
import { storageDiagnostics } from "./diagnostics.ts";
import { doNotDelete } from "./resource-locks.ts";

export const VAULT_CONTAINER = "vault";
/** Where the runtime keeps the vault's lock objects: outside WORM (see above). */
export const LOCKS_CONTAINER = lockContainerName(VAULT_CONTAINER);
/** Lock objects are rewritten every 5 minutes; their previous versions serve nobody after a day. */
export const LOCK_VERSIONS_MAX_AGE_DAYS = 1;

/**
 * The lifecycle rules of the vault's account (Azure/azure-rest-api-specs
 * specification/storage/resource-manager/Microsoft.Storage/stable/2023-05-01/storage.json,
 * ManagementPolicyVersion.delete: DateAfterCreation.daysAfterCreationGreaterThan; the rule's
 * filters need blobTypes). With versioning on, a blob prune deletes stays as a previous version, so
 * without a rule a pruned pack is kept for ever. A version is deleted once older than its
 * immutability period plus a day: while its policy is active, "A blob or version that hasn't yet
 * been soft deleted is protected by the immutability policy and can't be soft deleted until after
 * the time-based retention policy is expired" (MicrosoftDocs/azure-docs
 * articles/storage/blobs/immutable-storage-overview.md, "Immutable storage with blob soft delete"),
 * and a version's age counts from its creation, as its immutability does (vault objects are written
 * once, so a version is created when its blob is). Lifecycle deletes go through soft delete
 * (articles/storage/blobs/lifecycle-management-policy-delete.md), which keeps them
 * `softDeleteDays` more. Current versions are prune's alone: no baseBlob action.
 */
export function vaultLifecycleRules(immutabilityDays: number): azureInputs.storage.ManagementPolicyRuleArgs[] {
  return [
    {
      name: "delete-previous-versions-after-immutability",
      enabled: true,
      type: "Lifecycle",
      definition: {
        filters: { blobTypes: ["blockBlob"], prefixMatch: [`${VAULT_CONTAINER}/`] },
        actions: { version: { delete: { daysAfterCreationGreaterThan: immutabilityDays + 1 } } },
      },
    },
    {
      name: "delete-previous-lock-versions",
      enabled: true,
      type: "Lifecycle",
      definition: {
        filters: { blobTypes: ["blockBlob"], prefixMatch: [`${LOCKS_CONTAINER}/`] },
        actions: { version: { delete: { daysAfterCreationGreaterThan: LOCK_VERSIONS_MAX_AGE_DAYS } } },
      },
    },
  ];
}

export interface IsolatedStorageArgs {
  customer: string;
  region: string;
  subscriptionId: string;
  resourceGroupName: pulumi.Input<string>;
  redundancy: Redundancy;
  retention: RetentionConfig;
  keyVaultUri: pulumi.Input<string>;
  keyName: pulumi.Input<string>;
  keyResourceId: pulumi.Input<string>;
  /** Who may connect: public with RBAC-only data access, or private endpoints only (network.ts). */
  networkAccess: StorageNetworkAccess;
  tags: Record<string, string>;
  /** "copy": a copy vault (copy-vault.ts), named apart from the vault its region's own stack makes. */
  purpose?: "vault" | "copy";
}

export class IsolatedStorage extends pulumi.ComponentResource {
  readonly accountName: pulumi.Output<string>;
  readonly accountId: pulumi.Output<string>;
  readonly containerUrl: pulumi.Output<string>;
  readonly containerScope: pulumi.Output<string>;
  /** The lock objects' container: the agents that take vault locks need blob data rights here too. */
  readonly locksContainerScope: pulumi.Output<string>;
  /** The vault container's default immutability policy as Azure reports it (its `state`: Unlocked until the operator locks it). */
  readonly immutabilityPolicy: storage.BlobContainerImmutabilityPolicy;
  private readonly name: string;

  constructor(name: string, args: IsolatedStorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:IsolatedStorage", name, {}, opts);
    this.name = name;
    const copying = args.purpose === "copy";
    const encryptionIdentity = new managedidentity.UserAssignedIdentity(
      `${name}-encryption-identity`,
      { resourceName: regionalName(args.customer, args.region, copying ? "copy-key-id" : "vault-key-id"), resourceGroupName: args.resourceGroupName, location: args.region, tags: args.tags },
      { parent: this },
    );
    // The account cannot be created with a key it cannot read: grant first.
    const keyAccess = grantRole(
      `${name}-key-access`,
      {
        principalId: encryptionIdentity.principalId,
        roleDefinitionId: builtInRoleId(args.subscriptionId, BUILT_IN_ROLES.keyVaultCryptoServiceEncryptionUser),
        scope: args.keyResourceId,
        description: "Bulwark isolated storage: encrypt with the customer's key",
      },
      this,
    );
    const account = new storage.StorageAccount(
      `${name}-account`,
      {
        accountName: globalName(`${copying ? "bwc" : "bwv"}${args.customer}`, 24, args.subscriptionId, args.region),
        resourceGroupName: args.resourceGroupName,
        location: args.region,
        tags: { ...args.tags, [STORAGE_KIND_TAG]: "isolated" },
        kind: "StorageV2",
        sku: { name: args.redundancy },
        accessTier: "Cool",
        allowBlobPublicAccess: false,
        allowSharedKeyAccess: false,
        defaultToOAuthAuthentication: true,
        minimumTlsVersion: "TLS1_2",
        enableHttpsTrafficOnly: true,
        allowCrossTenantReplication: false,
        ...args.networkAccess,
        identity: { type: "UserAssigned", userAssignedIdentities: [encryptionIdentity.id] },
        encryption: {
          keySource: "Microsoft.Keyvault",
          keyVaultProperties: { keyName: args.keyName, keyVaultUri: args.keyVaultUri },
          encryptionIdentity: { encryptionUserAssignedIdentity: encryptionIdentity.id },
          requireInfrastructureEncryption: true,
          services: {
            blob: { enabled: true, keyType: "Account" },
            file: { enabled: true, keyType: "Account" },
            queue: { enabled: true, keyType: "Account" },
            table: { enabled: true, keyType: "Account" },
          },
        },
        // Version-level immutability support must be enabled when the account is created; the
        // default policy is the vault container's (no account default, which the locks would inherit).
        immutableStorageWithVersioning: { enabled: true },
      },
      // Never replaced: a new account would be an empty vault under the same config.
      { parent: this, dependsOn: [afterRolePropagation(`${name}-key-access-propagated`, [keyAccess], this)], protect: true },
    );
    const blobService = new storage.BlobServiceProperties(
      `${name}-blob-service`,
      {
        accountName: account.name,
        resourceGroupName: args.resourceGroupName,
        blobServicesName: "default",
        isVersioningEnabled: true,
        deleteRetentionPolicy: { enabled: true, days: args.retention.softDeleteDays },
        containerDeleteRetentionPolicy: { enabled: true, days: args.retention.softDeleteDays },
      },
      { parent: this },
    );
    const container = new storage.BlobContainer(
      `${name}-vault`,
      {
        accountName: account.name,
        resourceGroupName: args.resourceGroupName,
        containerName: VAULT_CONTAINER,
        publicAccess: "None",
        immutableStorageWithVersioning: { enabled: true },
      },
      { parent: this, dependsOn: [blobService], protect: true },
    );
    this.immutabilityPolicy = new storage.BlobContainerImmutabilityPolicy(
      `${name}-vault-immutability`,
      {
        accountName: account.name,
        resourceGroupName: args.resourceGroupName,
        containerName: container.name,
        immutabilityPolicyName: "default",
        immutabilityPeriodSinceCreationInDays: args.retention.immutabilityDays,
        allowProtectedAppendWrites: false,
      },
      lockedPolicyOptions(this, args.retention.immutabilityLocked),
    );
    const locks = new storage.BlobContainer(
      `${name}-locks`,
      {
        accountName: account.name,
        resourceGroupName: args.resourceGroupName,
        containerName: LOCKS_CONTAINER,
        publicAccess: "None",
        // As every container of the account has: support only. With no default policy, lock objects
        // are written with none ("does not make data in that container immutable":
        // articles/storage/blobs/immutable-policy-configure-version-scope.md).
        immutableStorageWithVersioning: { enabled: true },
      },
      // Protected like the vault container: a replaced or destroyed locks container drops every
      // held lock with it, and a prune would then see the vault as free during a backup.
      { parent: this, dependsOn: [blobService], protect: true },
    );
    new storage.ManagementPolicy(
      `${name}-lifecycle`,
      { accountName: account.name, resourceGroupName: args.resourceGroupName, managementPolicyName: "default", policy: { rules: vaultLifecycleRules(args.retention.immutabilityDays) } },
      { parent: this, dependsOn: [blobService] },
    );
    doNotDelete(`${name}-account-lock`, account.id, "Bulwark's isolated storage: the customer's backups. Remove this lock only to retire the vault on purpose.", this);
    this.accountName = account.name;
    this.accountId = account.id;
    this.containerUrl = pulumi.interpolate`https://${account.name}.blob.core.windows.net/${container.name}`;
    this.containerScope = pulumi.interpolate`${account.id}/blobServices/default/containers/${container.name}`;
    this.locksContainerScope = pulumi.interpolate`${account.id}/blobServices/default/containers/${locks.name}`;
    this.registerOutputs({ accountName: this.accountName, containerUrl: this.containerUrl, immutabilityState: this.immutabilityPolicy.state });
  }

  /** Sends the vault's blob read, write and delete logs to a Log Analytics workspace (the region's). */
  sendLogsTo(workspaceId: pulumi.Input<string>): void {
    storageDiagnostics(`${this.name}-blob-diagnostics`, this.accountId, "blobServices", workspaceId, this);
  }
}

/**
 * A locked policy can only be extended, never changed otherwise or deleted ("The only action allowed
 * on a Locked policy is ExtendImmutabilityPolicy action", BlobContainers_LockImmutabilityPolicy in
 * blob.json; and at most five extensions of a container-level locked policy:
 * articles/storage/blobs/immutable-storage-overview.md, "Locked versus unlocked policies"). Once the
 * operator has locked it, the program leaves it as it is and keeps it if the stack is destroyed.
 * Unlocked it is still protected: deleting it would leave every new object without WORM.
 */
function lockedPolicyOptions(parent: pulumi.Resource, locked: boolean): pulumi.CustomResourceOptions {
  if (!locked) return { parent, protect: true };
  return { parent, protect: true, ignoreChanges: ["immutabilityPeriodSinceCreationInDays", "allowProtectedAppendWrites"], retainOnDelete: true };
}
