/**
 * The Azure RBAC actions Bulwark's runtime needs, declared next to the calls that need them, each
 * with the identity that makes the call: every module that calls Azure Resource Manager or a Key
 * Vault key registers, at load time, the action each call requires. The roles in infra/ are built
 * from this registry, one per identity, and tests check that what the runtime really calls under
 * each identity (as seen by the local Azure emulator) is covered by that identity's role, that the
 * role holds nothing else, and that every action is one Azure publishes.
 */

/**
 * Who makes a call (each is its own managed identity in infra/):
 * - inventory: the scheduler, which finds what a policy protects (reads only);
 * - backup: the worker running backups (snapshots, read access, SQL copies and exports, the vault key);
 * - restore: the worker running restores, under a second identity whose role is assigned only at
 *   the restore resource groups (it creates disks, VMs and databases);
 * - bridge: the in-tenant agent that inventories scopes and retires Bulwark's own snapshots;
 * - prune: retention and prune, which touch only the vault (and so its key).
 */
export type AzureIdentity = "inventory" | "backup" | "restore" | "bridge" | "prune";

export const AZURE_IDENTITIES: readonly AzureIdentity[] = ["inventory", "backup", "restore", "bridge", "prune"];

export interface RoleActionUse {
  /** e.g. "Microsoft.Compute/snapshots/write" */
  action: string;
  /** Data-plane actions (Key Vault key operations) go into a role's dataActions. */
  dataAction: boolean;
  /** The identities whose calls need it. */
  identities: AzureIdentity[];
  /** Which call needs it, for review. */
  usedBy: string[];
}

export interface RequiresActionOptions {
  /** The identity (or identities) making the call: required, so no action lands in a role by default. */
  identity: AzureIdentity | readonly AzureIdentity[];
  dataAction?: boolean;
}

const registry = new Map<string, RoleActionUse>();

/** Declares that a call needs an action; returns the action so call sites can keep it beside them. */
export function requiresAction(action: string, usedBy: string, options: RequiresActionOptions): string {
  if (action.includes("*")) throw new Error(`role action ${action} must not use a wildcard`);
  const identities = typeof options.identity === "string" ? [options.identity] : [...options.identity];
  if (identities.length === 0) throw new Error(`role action ${action} (${usedBy}) names no identity`);
  const key = action.toLowerCase();
  const entry = registry.get(key) ?? { action, dataAction: options.dataAction ?? false, identities: [], usedBy: [] };
  if (entry.dataAction !== (options.dataAction ?? false)) throw new Error(`role action ${action} is declared both as a data action and not`);
  for (const identity of identities) if (!entry.identities.includes(identity)) entry.identities.push(identity);
  if (!entry.usedBy.includes(usedBy)) entry.usedBy.push(usedBy);
  registry.set(key, entry);
  return action;
}

/** What an identity's role must hold (or, without one, the union of every identity's). */
export function declaredActions(identity?: AzureIdentity): { actions: string[]; dataActions: string[] } {
  const entries = [...registry.values()]
    .filter((e) => identity === undefined || e.identities.includes(identity))
    .sort((a, b) => a.action.localeCompare(b.action));
  return {
    actions: entries.filter((e) => !e.dataAction).map((e) => e.action),
    dataActions: entries.filter((e) => e.dataAction).map((e) => e.action),
  };
}

export function declaredActionUses(): RoleActionUse[] {
  return [...registry.values()];
}
