/**
 * Protected items: what a policy's `protect` section turns into. An item is one Azure resource
 * (a managed disk, a VM or an Azure SQL database) with the region it lives in, which decides the
 * queue its work goes to.
 */
import type { Policy } from "./policy.ts";

export type ItemKind = "disk" | "vm" | "sql";

export interface ProtectedItem {
  /** The ARM resource id, as ARM returns it. */
  id: string;
  kind: ItemKind;
  /** The Azure region, normalized ("westeurope"). */
  region: string;
}

/** An explicit resource of a policy that does not exist (deleted, or invisible to the identity). */
export interface MissingItem {
  id: string;
  kind: ItemKind;
  /** Why it counts as missing, for the log, the alert and `bulwark status`. */
  reason: string;
}

export interface ResolveOptions {
  /**
   * Called for each explicit resource that does not exist; the others are still resolved. Without
   * it a missing resource fails the whole resolution (a NotFoundError).
   */
  onMissing?: (missing: MissingItem) => void;
}

/** Turns a policy's protect section into the items it protects (ARM-backed in production). */
export interface ItemResolver {
  resolve(policy: Policy, options?: ResolveOptions): Promise<ProtectedItem[]>;
}

export const RESOURCE_TYPES = {
  "microsoft.compute/virtualmachines": "vm",
  "microsoft.compute/disks": "disk",
  "microsoft.sql/servers/databases": "sql",
} as const satisfies Record<string, ItemKind>;

export type ProtectableType =
  | "Microsoft.Compute/virtualMachines"
  | "Microsoft.Compute/disks"
  | "Microsoft.Sql/servers/databases";

export const PROTECTABLE_TYPES: ProtectableType[] = [
  "Microsoft.Compute/virtualMachines",
  "Microsoft.Compute/disks",
  "Microsoft.Sql/servers/databases",
];

const RESOURCE_ID =
  /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/(Microsoft\.Compute\/virtualMachines\/[^/]+|Microsoft\.Compute\/disks\/[^/]+|Microsoft\.Sql\/servers\/[^/]+\/databases\/[^/]+)$/i;

/** The full resource type of an ARM id ("Microsoft.Sql/servers/databases"), or undefined. */
export function resourceTypeOf(id: string): string | undefined {
  const match = /\/providers\/([^/]+)\/([^/]+)\/[^/]+(?:\/([^/]+)\/[^/]+)?$/i.exec(id);
  if (!match) return undefined;
  return match[3] ? `${match[1]}/${match[2]}/${match[3]}` : `${match[1]}/${match[2]}`;
}

/** The item kind of a protectable ARM id, or undefined if Bulwark does not protect that type. */
export function kindOfResourceId(id: string): ItemKind | undefined {
  if (!RESOURCE_ID.test(id)) return undefined;
  const type = resourceTypeOf(id)?.toLowerCase();
  return type ? (RESOURCE_TYPES as Record<string, ItemKind>)[type] : undefined;
}

export function kindOfResourceType(type: string): ItemKind | undefined {
  return (RESOURCE_TYPES as Record<string, ItemKind>)[type.toLowerCase()];
}

/** "West Europe" and "westeurope" name the same region. */
export function normalizeRegion(region: string): string {
  return region.replace(/\s+/g, "").toLowerCase();
}

/** The subscription id in an ARM id. */
export function subscriptionOf(id: string): string | undefined {
  return /^\/subscriptions\/([^/]+)/i.exec(id)?.[1];
}
