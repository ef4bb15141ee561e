/**
 * The backup role's actions: importing this module loads every runtime module that calls Azure,
 * so each has registered what it needs (see permissions.ts).
 */
import "./planned-actions.ts";
import { declaredActions } from "./permissions.ts";

export function backupRoleActions(): { actions: string[]; dataActions: string[] } {
  return declaredActions();
}
