/**
 * The backup role's actions: importing this module loads every runtime module that calls Azure,
 * so each has registered, next to its calls, what it needs (see permissions.ts).
 */
import "../sources/azure-disk.ts";
import "../sources/azure-restore.ts";
import "../sources/azure-vm.ts";
import "../sources/azure-sql.ts";
import "../keys/azure-key-vault.ts";
import "../policy/resolve-arm.ts";
import "../workloads/bridge.ts";
import { declaredActions } from "./permissions.ts";

export function backupRoleActions(): { actions: string[]; dataActions: string[] } {
  return declaredActions();
}
