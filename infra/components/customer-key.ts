/**
 * The customer-managed key: a Key Vault with RBAC authorization, soft delete and purge protection,
 * and an RSA key that Key Vault rotates on a schedule. Bulwark wraps its data keys with it; the
 * isolated storage encrypts with it. The "key user" role carries only the key data actions the
 * runtime declares (read, wrap, unwrap) and is assigned at this key alone.
 *
 * Its lifecycle:
 * - the vault and the key are `protect`ed and the vault carries a CanNotDelete lock: losing either
 *   loses every backup wrapped with the key;
 * - a destroyed vault stays soft-deleted (purge protection: 90 days here) and keeps its name, so
 *   creating it again fails; `bulwark:keyVaultRecover: true` recovers it instead (VaultProperties
 *   .createMode "recover", Azure/azure-rest-api-specs specification/keyvault/resource-manager/
 *   Microsoft.KeyVault/stable/2023-07-01/keyvault.json, enum CreateMode: default, recover);
 * - the key's size and rotation are fixed by its first deployment: Resource Manager's key PUT
 *   (Keys_CreateIfNotExist, .../2023-07-01/keys.json) "Creates the first version of a new key if it
 *   does not exist. If it already exists, then the existing key is returned without any write
 *   operations being performed. This API does not create subsequent versions, and does not update
 *   existing keys." A changed size or rotation would be ignored without a word, so the program
 *   records what it deployed (the stack output `keySpec`) and refuses a change (refuseIgnoredKeyChanges);
 * - Key Vault's audit log (AuditEvent) goes to a Log Analytics workspace of the customer stack.
 */
import * as pulumi from "@pulumi/pulumi";
import * as keyvault from "@pulumi/azure-native/keyvault/index.js";
import * as authorization from "@pulumi/azure-native/authorization/index.js";
import * as operationalinsights from "@pulumi/azure-native/operationalinsights/index.js";
import { UsageError } from "../../runtime/errors.ts";
import type { KeyConfig } from "../config.ts";
import { CONFIG_NAMESPACE } from "../config.ts";
import { deterministicGuid, globalName } from "../naming.ts";
import { keyUserPermissions } from "./backup-role.ts";
import { keyVaultDiagnostics } from "./diagnostics.ts";
import { doNotDelete } from "./resource-locks.ts";

/** The Resource Manager name of the key (the key's URI ends in it). */
export const KEY_NAME = "bulwark-kek";

/** What the first deployment fixed about the key, recorded as the customer stack's output `keySpec`. */
export interface KeySpec {
  vaultName: string;
  keyName: string;
  size: number;
  rotationPeriod: string;
  expiresAfter: string;
}

export function keySpecOf(vaultName: string, key: KeyConfig): KeySpec {
  return { vaultName, keyName: KEY_NAME, size: key.size, rotationPeriod: key.rotationPeriod, expiresAfter: key.expiresAfter };
}

/** The key vault's Azure name: global, 3-24 characters. */
export function keyVaultName(customer: string, tenantId: string, subscriptionId: string): string {
  return globalName(`bwk${customer}`, 24, tenantId, subscriptionId);
}

/**
 * Fails when the config asks for a key size or rotation other than what the stack's last
 * deployment recorded for the same vault and key: Azure would keep the old key as it is. A previous
 * spec for another vault or key (renamed, or none yet) is no change to refuse.
 */
export function refuseIgnoredKeyChange(previous: unknown, next: KeySpec): void {
  if (typeof previous !== "object" || previous === null) return;
  const before = previous as Partial<KeySpec>;
  if (before.vaultName !== next.vaultName || before.keyName !== next.keyName) return;
  const changes: [string, unknown, unknown][] = [
    ["key.size", before.size, next.size],
    ["key.rotationPeriod", before.rotationPeriod, next.rotationPeriod],
    ["key.expiresAfter", before.expiresAfter, next.expiresAfter],
  ];
  const changed = changes.filter(([, was, now]) => was !== undefined && was !== now);
  if (changed.length === 0) return;
  const [key, was, now] = changed[0];
  const fix =
    key === "key.size"
      ? `Key Vault cannot resize a key and Resource Manager never updates an existing one: set it back to ${JSON.stringify(was)}; a key of another size is a new key (a new name and \`bulwark key add\` on every vault).`
      : `Resource Manager never updates an existing key's rotation policy: set it back to ${JSON.stringify(was)}, or change the policy in Key Vault first (\`az keyvault key rotation-policy update --vault-name ${next.vaultName} --name ${next.keyName} --value <policy.json>\`) and then set this to match.`;
  throw new UsageError(`${CONFIG_NAMESPACE}:${key} changed from ${JSON.stringify(was)} to ${JSON.stringify(now)} after the key ${next.keyName} in ${next.vaultName} was created, and Azure would silently keep ${JSON.stringify(was)}. ${fix}`);
}

/**
 * Reads the `keySpec` this stack recorded on its last deployment (a StackReference to the stack
 * itself, the way Pulumi's maintainers show for reading a stack's own outputs back, pulumi/pulumi
 * issue 3722) and refuses a change Azure would ignore. `stack` is this stack's own fully qualified
 * name (organization/project/stack). Run before the customer stack's resources.
 */
export async function refuseIgnoredKeyChanges(stack: string, customer: string, tenantId: string, subscriptionId: string, key: KeyConfig): Promise<void> {
  const previous = await new pulumi.StackReference(`${customer}-previous-deployment`, { name: stack }).getOutputDetails("keySpec");
  refuseIgnoredKeyChange(previous.value, keySpecOf(keyVaultName(customer, tenantId, subscriptionId), key));
}
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
  /** Recover the vault of this name from soft delete instead of creating it (bulwark:keyVaultRecover). */
  recoverVault?: boolean;
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
  /** What this deployment fixed about the key: exported, so the next deployment can refuse ignored changes. */
  readonly keySpec: KeySpec;
  /** The customer stack's Log Analytics workspace (the key vault's audit log). */
  readonly auditWorkspaceId: pulumi.Output<string>;

  constructor(name: string, args: CustomerKeyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:CustomerKey", name, {}, opts);
    const vault = new keyvault.Vault(
      `${name}-vault`,
      {
        vaultName: keyVaultName(args.customer, args.tenantId, args.subscriptionId),
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
          ...(args.recoverVault ? { createMode: "recover" as const } : {}),
          // Public (RBAC-only data access) or private endpoints only: why, with sources, in network.ts.
          ...keyVaultNetworkAccess(args.key.publicNetworkAccess),
        },
      },
      { parent: this, protect: true },
    );
    const key = new keyvault.Key(
      `${name}-key`,
      {
        keyName: KEY_NAME,
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
      { parent: this, protect: true },
    );
    doNotDelete(`${name}-vault-lock`, vault.id, "Bulwark: the customer's key. Every backup is wrapped with it; remove this lock only to retire Bulwark on purpose.", this);
    const workspace = new operationalinsights.Workspace(
      `${name}-audit-logs`,
      {
        // Workspace names: 4-63 letters, digits and hyphens, unique in the resource group.
        workspaceName: `bulwark-${args.customer}-audit`,
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        tags: args.tags,
        sku: { name: "PerGB2018" },
        retentionInDays: 90,
      },
      { parent: this },
    );
    keyVaultDiagnostics(`${name}-vault-diagnostics`, vault.id, workspace.id, this);
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
    this.keySpec = keySpecOf(keyVaultName(args.customer, args.tenantId, args.subscriptionId), args.key);
    this.auditWorkspaceId = workspace.id;
    this.registerOutputs({ vaultUri: this.vaultUri, keyUri: this.keyUri, keyResourceId: this.keyResourceId });
  }
}
