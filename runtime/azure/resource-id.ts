/** Azure resource ids: /subscriptions/S/resourceGroups/G/providers/NAMESPACE/TYPE/NAME[/TYPE/NAME]. */
import { createHash } from "node:crypto";
import { UsageError } from "../errors.ts";

export interface ResourceId {
  id: string;
  subscriptionId: string;
  resourceGroup: string;
  /** e.g. "Microsoft.Compute/disks" or "Microsoft.Sql/servers/databases" */
  type: string;
  /** Names along the type path, e.g. ["server", "db"] for a database. */
  names: string[];
  name: string;
}

export function isResourceId(value: string): boolean {
  return /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\//i.test(value);
}

export function parseResourceId(value: string): ResourceId {
  const parts = value.split("/").filter(Boolean);
  if (parts.length < 8 || parts[0].toLowerCase() !== "subscriptions" || parts[2].toLowerCase() !== "resourcegroups" || parts[4].toLowerCase() !== "providers" || parts.length % 2 !== 0) {
    throw new UsageError(
      `"${value}" is not an Azure resource id; write /subscriptions/S/resourceGroups/G/providers/Microsoft.Compute/disks/NAME (or virtualMachines/NAME, or Microsoft.Sql/servers/S/databases/D)`,
    );
  }
  const namespace = parts[5];
  const types: string[] = [];
  const names: string[] = [];
  for (let i = 6; i < parts.length; i += 2) {
    types.push(parts[i]);
    names.push(decodeURIComponent(parts[i + 1]));
  }
  return {
    id: value,
    subscriptionId: parts[1],
    resourceGroup: decodeURIComponent(parts[3]),
    type: `${namespace}/${types.join("/")}`,
    names,
    name: names.at(-1)!,
  };
}

export function sameType(id: ResourceId, type: string): boolean {
  return id.type.toLowerCase() === type.toLowerCase();
}

export function diskId(subscriptionId: string, resourceGroup: string, name: string): string {
  return `/subscriptions/${subscriptionId}/resourceGroups/${resourceGroup}/providers/Microsoft.Compute/disks/${name}`;
}

/**
 * The name of a resource Bulwark makes from another (a snapshot of a disk, a copy of a database):
 * `<base>-bulwark-<tag>`, within Azure's `maxLength` for the type (disks and snapshots 80,
 * servers/databases 128: MicrosoftDocs/azure-docs articles/azure-resource-manager/management/
 * resource-name-rules.md). The tag (a job's or a run's) and the `-bulwark-` marker are never cut:
 * a long base is shortened and followed by a hash of its whole, so the name differs from the base
 * itself (a copy named as its source would be the source, and its cleanup would delete it), from
 * every other job's name, and from other long bases that share a prefix.
 */
export function derivedResourceName(base: string, tag: string, maxLength: number): string {
  const ending = `-bulwark-${tag}`;
  const whole = `${base}${ending}`;
  if (whole.length <= maxLength) return whole;
  const hash = createHash("sha256").update(base).digest("hex").slice(0, 8);
  const room = maxLength - ending.length - hash.length - 1;
  if (room < 1) throw new Error(`a name tagged ${tag} cannot fit ${maxLength} characters`);
  return `${base.slice(0, room)}-${hash}${ending}`;
}
