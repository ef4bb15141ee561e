/**
 * The Azure RBAC actions Bulwark's runtime needs, declared next to the calls that need them:
 * every module that calls Azure Resource Manager or a Key Vault key registers, at load time,
 * the action each call requires. The backup role in infra/ is built from this registry, and a
 * test checks that what the runtime really calls (as seen by the local Azure emulator) is covered
 * by the role and that the role holds nothing else.
 */
export interface RoleActionUse {
  /** e.g. "Microsoft.Compute/snapshots/write" */
  action: string;
  /** Data-plane actions (Key Vault key operations) go into a role's dataActions. */
  dataAction: boolean;
  /** Which call needs it, for review. */
  usedBy: string[];
}

const registry = new Map<string, RoleActionUse>();

/** Declares that a call needs an action; returns the action so call sites can keep it beside them. */
export function requiresAction(action: string, usedBy: string, options: { dataAction?: boolean } = {}): string {
  if (action.includes("*")) throw new Error(`role action ${action} must not use a wildcard`);
  const entry = registry.get(action) ?? { action, dataAction: options.dataAction ?? false, usedBy: [] };
  if (!entry.usedBy.includes(usedBy)) entry.usedBy.push(usedBy);
  registry.set(action, entry);
  return action;
}

export function declaredActions(): { actions: string[]; dataActions: string[] } {
  const entries = [...registry.values()].sort((a, b) => a.action.localeCompare(b.action));
  return {
    actions: entries.filter((e) => !e.dataAction).map((e) => e.action),
    dataActions: entries.filter((e) => e.dataAction).map((e) => e.action),
  };
}

export function declaredActionUses(): RoleActionUse[] {
  return [...registry.values()];
}
