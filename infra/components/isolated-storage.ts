/**
 * The customer's isolated storage in one region: the vault. Its own account, encrypted with the
 * customer's key through its own user-assigned identity, with blob versioning and version-level
 * immutability (WORM), soft delete, and no public or shared-key access.
 *
 * Redundancy is chosen once: after the first backup the vault's data is not moved to another
 * redundancy by Bulwark (see infra/README.md).
 */
import * as pulumi from "@pulumi/pulumi";
import * as storage from "@pulumi/azure-native/storage/index.js";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import type { Redundancy, RetentionConfig } from "../config.ts";
import { globalName, regionalName } from "../naming.ts";
import { STORAGE_KIND_TAG } from "../../policies/rules.ts";
import { BUILT_IN_ROLES, builtInRoleId, grantRole } from "./roles.ts";
import type { StorageNetworkAccess } from "./network.ts";

export const VAULT_CONTAINER = "vault";

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
}

export class IsolatedStorage extends pulumi.ComponentResource {
  readonly accountName: pulumi.Output<string>;
  readonly accountId: pulumi.Output<string>;
  readonly containerUrl: pulumi.Output<string>;
  readonly containerScope: pulumi.Output<string>;

  constructor(name: string, args: IsolatedStorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:IsolatedStorage", name, {}, opts);
    const encryptionIdentity = new managedidentity.UserAssignedIdentity(
      `${name}-encryption-identity`,
      { resourceName: regionalName(args.customer, args.region, "vault-key-id"), resourceGroupName: args.resourceGroupName, location: args.region, tags: args.tags },
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
        accountName: globalName(`bwv${args.customer}`, 24, args.subscriptionId, args.region),
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
        // Version-level immutability must be enabled when the account is created.
        immutableStorageWithVersioning: {
          enabled: true,
          immutabilityPolicy: {
            immutabilityPeriodSinceCreationInDays: args.retention.immutabilityDays,
            state: args.retention.immutabilityLocked ? "Locked" : "Unlocked",
            allowProtectedAppendWrites: false,
          },
        },
      },
      { parent: this, dependsOn: [keyAccess] },
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
      { parent: this, dependsOn: [blobService] },
    );
    this.accountName = account.name;
    this.accountId = account.id;
    this.containerUrl = pulumi.interpolate`https://${account.name}.blob.core.windows.net/${container.name}`;
    this.containerScope = pulumi.interpolate`${account.id}/blobServices/default/containers/${container.name}`;
    this.registerOutputs({ accountName: this.accountName, containerUrl: this.containerUrl });
  }
}
