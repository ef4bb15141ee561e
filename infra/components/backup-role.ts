/**
 * Bulwark's custom roles: one per identity that calls Azure Resource Manager, each with exactly the
 * control-plane actions the runtime declares for that identity. The lists are not written here:
 * each runtime module that calls Azure registers the action next to its call, with the identity
 * that makes it (runtime/azure/permissions.ts), and `roleActionsFor()` collects them, so a role and
 * the code that needs it cannot drift apart.
 *
 * - inventory (the scheduler): reads only, at the protected scopes;
 * - backup (the worker): snapshots, read access, SQL copies and exports, at the protected scopes;
 * - restore (the worker's restore identity): creates disks, VMs and databases, assignable and
 *   assigned only at the restore resource groups (bulwark:restoreResourceGroups). It holds delete
 *   too, for a half-made restore: RBAC cannot say "only what Bulwark created", so the runtime
 *   deletes only resources it tagged, and the role is confined to groups meant for restores;
 * - bridge: inventories the protected scopes and retires Bulwark's own snapshots;
 * - prune: no Resource Manager role at all (the vault's container and key only).
 *
 * Key Vault data actions (wrap and unwrap with the customer's key) are in none of these: they go
 * into `keyUserPermissions`, a role assigned at the key alone (see CustomerKey).
 */
import * as pulumi from "@pulumi/pulumi";
import * as authorization from "@pulumi/azure-native/authorization/index.js";
import { type AzureIdentity, roleActionsFor } from "../../runtime/azure/role.ts";
import { deterministicGuid } from "../naming.ts";
import { stableRoleHome, tenantRoleDefinitionId } from "./roles.ts";

export interface RolePermissions {
  actions: string[];
  dataActions: string[];
}

/** The identities that hold a Resource Manager role (prune holds none). */
export type ArmIdentity = Exclude<AzureIdentity, "prune">;
export const ARM_IDENTITIES: readonly ArmIdentity[] = ["inventory", "backup", "restore", "bridge"];

/** Control-plane actions of one identity's role. */
export function rolePermissions(identity: ArmIdentity): RolePermissions {
  return { actions: [...roleActionsFor(identity).actions], dataActions: [] };
}

/** Data actions on the customer's key, assigned at the key's scope only (the worker's and prune's). */
export function keyUserPermissions(): RolePermissions {
  const dataActions = [...new Set([...roleActionsFor("backup").dataActions, ...roleActionsFor("prune").dataActions])].sort();
  const foreign = dataActions.filter((a) => !a.startsWith("Microsoft.KeyVault/vaults/keys/"));
  // A data action on anything but a key would need a role at that resource: fail loudly here.
  if (foreign.length > 0) throw new Error(`runtime declares data actions outside Key Vault keys (${foreign.join(", ")}); give them a role at their own scope in infra/`);
  for (const identity of ARM_IDENTITIES) {
    if (identity !== "backup" && roleActionsFor(identity).dataActions.length > 0) throw new Error(`the ${identity} identity declares data actions; give it a key role in infra/`);
  }
  return { actions: [], dataActions };
}

const DESCRIPTIONS: Record<ArmIdentity, string> = {
  inventory: "Bulwark's scheduler: finds the resources its policies protect (reads only).",
  backup: "Bulwark's worker: snapshots and their read access, VM and disk reads, SQL copies and exports.",
  restore: "Bulwark's restores: creates disks, VMs and databases (assigned only at the restore resource groups).",
  bridge: "Bulwark's bridge: inventories the protected scopes and retires Bulwark's own snapshots.",
};

export interface IdentityRolesArgs {
  customer: string;
  /** ARM scope ids of the protected subscriptions and resource groups. */
  protectedScopes: string[];
  /** ARM ids of the restore resource groups (none: no restore role is defined). */
  restoreScopes: string[];
}

export class IdentityRoles extends pulumi.ComponentResource {
  /**
   * Each role's definition id in its tenant-scoped form, assignable in every subscription of the
   * tenant (see roles.ts); the restore role's is absent when no restore group is configured.
   */
  readonly roleDefinitionIds: Partial<Record<ArmIdentity, pulumi.Output<string>>> = {};
  readonly definitions: authorization.RoleDefinition[] = [];

  constructor(name: string, args: IdentityRolesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:IdentityRoles", name, {}, opts);
    if (args.protectedScopes.length === 0) throw new Error("the roles need at least one protected scope");
    for (const identity of ARM_IDENTITIES) {
      const assignableScopes = identity === "restore" ? args.restoreScopes : args.protectedScopes;
      if (assignableScopes.length === 0) continue;
      const guid = deterministicGuid(`bulwark-${identity}-role`, args.customer);
      const sorted = [...assignableScopes].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
      const definition = new authorization.RoleDefinition(
        `${name}-${identity}`,
        {
          roleDefinitionId: guid,
          roleName: `Bulwark ${identity} (${args.customer})`,
          description: DESCRIPTIONS[identity],
          roleType: "CustomRole",
          scope: stableRoleHome(sorted),
          assignableScopes: sorted,
          permissions: [{ actions: rolePermissions(identity).actions, notActions: [], dataActions: [], notDataActions: [] }],
        },
        { parent: this },
      );
      this.definitions.push(definition);
      // From the definition's id, so an assignment waits for the definition to exist.
      this.roleDefinitionIds[identity] = definition.id.apply(() => tenantRoleDefinitionId(guid));
    }
    this.registerOutputs({ roleDefinitionIds: this.roleDefinitionIds });
  }
}
