/**
 * The customer-managed key: a Key Vault with RBAC authorization, soft delete and purge protection,
 * and an RSA key that Key Vault rotates on a schedule. Bulwark wraps its data keys with it; the
 * isolated storage encrypts with it. The "key user" role carries only the key data actions the
 * runtime declares (read, wrap, unwrap) and is assigned at this key alone.
 */
import * as pulumi from "@pulumi/pulumi";
import * as keyvault from "@pulumi/azure-native/keyvault/index.js";
import * as authorization from "@pulumi/azure-native/authorization/index.js";
import type { KeyConfig } from "../config.ts";
import { deterministicGuid, globalName } from "../naming.ts";
import { keyUserPermissions } from "./backup-role.ts";
import { keyVaultNetworkAccess } from "./network.ts";

export interface CustomerKeyArgs {
  customer: string;
  tenantId: string;
  subscriptionId: string;
  resourceGroupName: pulumi.Input<string>;
  /** The resource group's ARM id: the key user role is assignable there. */
  resourceGroupId: pulumi.Input<string>;
  location: string;
  key: KeyConfig;
  tags: Record<string, string>;
}

export class CustomerKey extends pulumi.ComponentResource {
  readonly vaultName: pulumi.Output<string>;
  /** The vault's ARM id: region stacks in private mode make their private endpoints to it. */
  readonly vaultId: pulumi.Output<string>;
  readonly vaultUri: pulumi.Output<string>;
  readonly keyName: pulumi.Output<string>;
  /** The key's ARM resource id: the scope of key role assignments. */
  readonly keyResourceId: pulumi.Output<string>;
  /** https://<vault>.vault.azure.net/keys/<name>, without a version, so rotation is picked up. */
  readonly keyUri: pulumi.Output<string>;
  readonly keyUserRoleDefinitionId: pulumi.Output<string>;

  constructor(name: string, args: CustomerKeyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:CustomerKey", name, {}, opts);
    const vault = new keyvault.Vault(
      `${name}-vault`,
      {
        // Key vault names are global: 3-24 characters.
        vaultName: globalName(`bwk${args.customer}`, 24, args.tenantId, args.subscriptionId),
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        tags: args.tags,
        properties: {
          tenantId: args.tenantId,
          sku: { family: "A", name: "standard" },
          enableRbacAuthorization: true,
          enableSoftDelete: true,
          softDeleteRetentionInDays: 90,
          enablePurgeProtection: true,
          // Public (RBAC-only data access) or private endpoints only: why, with sources, in network.ts.
          ...keyVaultNetworkAccess(args.key.publicNetworkAccess),
        },
      },
      { parent: this },
    );
    const key = new keyvault.Key(
      `${name}-key`,
      {
        keyName: "bulwark-kek",
        vaultName: vault.name,
        resourceGroupName: args.resourceGroupName,
        tags: args.tags,
        properties: {
          kty: "RSA",
          keySize: args.key.size,
          keyOps: ["wrapKey", "unwrapKey"],
          rotationPolicy: {
            attributes: { expiryTime: args.key.expiresAfter },
            lifetimeActions: [
              { action: { type: "rotate" }, trigger: { timeAfterCreate: args.key.rotationPeriod } },
              { action: { type: "notify" }, trigger: { timeBeforeExpiry: "P30D" } },
            ],
          },
        },
      },
      { parent: this },
    );
    const permissions = keyUserPermissions();
    const keyUserRole = new authorization.RoleDefinition(
      `${name}-key-user`,
      {
        roleDefinitionId: deterministicGuid("bulwark-key-user-role", args.customer),
        roleName: `Bulwark key user (${args.customer})`,
        description: "Read the customer's key and wrap and unwrap data keys with it. Nothing else.",
        roleType: "CustomRole",
        scope: `/subscriptions/${args.subscriptionId}`,
        assignableScopes: [args.resourceGroupId],
        permissions: [{ actions: [], notActions: [], dataActions: permissions.dataActions, notDataActions: [] }],
      },
      { parent: this },
    );
    this.vaultName = vault.name;
    this.vaultId = vault.id;
    this.vaultUri = vault.properties.apply((p) => p.vaultUri ?? "");
    this.keyName = key.name;
    this.keyResourceId = key.id;
    this.keyUri = key.keyUri;
    this.keyUserRoleDefinitionId = keyUserRole.id;
    this.registerOutputs({ vaultUri: this.vaultUri, keyUri: this.keyUri, keyResourceId: this.keyResourceId });
  }
}
