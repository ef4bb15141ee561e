/**
 * The backup role: a custom role with exactly the control-plane actions Bulwark's runtime calls.
 * The list is not written here: each runtime module that calls Azure registers the action next to
 * its call (runtime/azure/permissions.ts), and `backupRoleActions()` collects them. So the role
 * and the code that needs it cannot drift apart.
 *
 * Key Vault data actions (wrap and unwrap with the customer's key) are not in this role: they go
 * into `keyUserPermissions`, a role assigned at the key alone (see CustomerKey).
 */
import * as pulumi from "@pulumi/pulumi";
import * as authorization from "@pulumi/azure-native/authorization/index.js";
import { backupRoleActions } from "../../runtime/azure/role.ts";
import { deterministicGuid } from "../naming.ts";
import { subscriptionOf } from "./roles.ts";

export interface RolePermissions {
  actions: string[];
  dataActions: string[];
}

/** Control-plane actions for the protected scopes. */
export function backupRolePermissions(): RolePermissions {
  const { actions } = backupRoleActions();
  return { actions: [...actions], dataActions: [] };
}

/** Data actions on the customer's key, assigned at the key's scope only. */
export function keyUserPermissions(): RolePermissions {
  const { dataActions } = backupRoleActions();
  const foreign = dataActions.filter((a) => !a.startsWith("Microsoft.KeyVault/vaults/keys/"));
  // A data action on anything but a key would need a role at that resource: fail loudly here.
  if (foreign.length > 0) throw new Error(`runtime declares data actions outside Key Vault keys (${foreign.join(", ")}); give them a role at their own scope in infra/`);
  return { actions: [], dataActions: [...dataActions] };
}

export interface BackupRoleArgs {
  customer: string;
  /** ARM scope ids of the protected subscriptions and resource groups. */
  protectedScopes: string[];
}

export class BackupRole extends pulumi.ComponentResource {
  /** The role definition's ARM id, for role assignments. */
  readonly roleDefinitionId: pulumi.Output<string>;

  constructor(name: string, args: BackupRoleArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:BackupRole", name, {}, opts);
    if (args.protectedScopes.length === 0) throw new Error("the backup role needs at least one protected scope");
    const home = `/subscriptions/${subscriptionOf(args.protectedScopes[0])}`;
    const permissions = backupRolePermissions();
    const definition = new authorization.RoleDefinition(
      `${name}-definition`,
      {
        roleDefinitionId: deterministicGuid("bulwark-backup-role", args.customer),
        roleName: `Bulwark backup (${args.customer})`,
        description: "Snapshots, snapshot access, VM and disk reads, restore disks and VMs, SQL copy/export/import, tag reads: what Bulwark's runtime calls, nothing more.",
        roleType: "CustomRole",
        scope: home,
        assignableScopes: args.protectedScopes,
        permissions: [{ actions: permissions.actions, notActions: [], dataActions: [], notDataActions: [] }],
      },
      { parent: this },
    );
    this.roleDefinitionId = definition.id;
    this.registerOutputs({ roleDefinitionId: this.roleDefinitionId });
  }
}
