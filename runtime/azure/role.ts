/**
 * The roles' actions: importing this module loads every runtime module that calls Azure, so each
 * has registered, next to its calls, what it needs and for which identity (see permissions.ts).
 */
import "../sources/azure-disk.ts";
import "../sources/azure-restore.ts";
import "../sources/azure-vm.ts";
import "../sources/azure-sql.ts";
import "../keys/azure-key-vault.ts";
import "../policy/resolve-arm.ts";
import "../workloads/bridge.ts";
import { type AzureIdentity, declaredActionUses as uses, declaredActions } from "./permissions.ts";

export type { AzureIdentity } from "./permissions.ts";
export { AZURE_IDENTITIES } from "./permissions.ts";

/** What one identity's role holds: its control-plane actions and its data actions. */
export function roleActionsFor(identity: AzureIdentity): { actions: string[]; dataActions: string[] } {
  return declaredActions(identity);
}

/** Every action any identity needs (what the CLI, run by one person with every need, calls). */
export function backupRoleActions(): { actions: string[]; dataActions: string[] } {
  return declaredActions();
}

export const declaredActionUses = uses;
