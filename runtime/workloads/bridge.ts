/**
 * The bridge, Bulwark's in-tenant agent (`bulwark agent bridge`, a scheduled Container Apps job
 * whose identity holds the backup role at every protected scope): it keeps the inventory of what
 * is protected and where, flags resources that sit outside their scope's region (no agent there
 * would back them up), and retires Bulwark snapshots that nothing needs any more: for each disk,
 * every Bulwark snapshot but the newest, once older than a grace period. Snapshots hold no backup
 * data (the vault does): retiring a needed one only makes the next backup of that disk a full read.
 */
import type { AzureContext } from "../azure/context.ts";
import { parseResourceId } from "../azure/resource-id.ts";
import { UsageError, describeError } from "../errors.ts";
import { kindOfResourceType } from "../policy/items.ts";
import { requiresAction } from "../azure/permissions.ts";

requiresAction("Microsoft.Resources/subscriptions/resourceGroups/resources/read", "bridge: inventory of a protected resource group", { identity: "bridge" });
requiresAction("Microsoft.Resources/subscriptions/resources/read", "bridge: inventory of a protected subscription", { identity: "bridge" });
requiresAction("Microsoft.Compute/snapshots/read", "bridge: find Bulwark snapshots nothing needs any more", { identity: "bridge" });
requiresAction("Microsoft.Compute/snapshots/delete", "bridge: retire them", { identity: "bridge" });
requiresAction("Microsoft.Compute/snapshots/endGetAccess/action", "bridge: end the read access a killed backup left on a snapshot it retires", { identity: "bridge" });

export interface ProtectedScope {
  scope: string;
  region: string;
}

export interface BridgeReport {
  scopes: { scope: string; region: string; items: number; outOfRegion: { id: string; location: string }[] }[];
  snapshots: { disk: string; kept: string; retired: string[]; waiting: string[] }[];
  errors: string[];
}

export function parseScopes(raw: string | undefined): ProtectedScope[] {
  if (!raw) throw new UsageError("no protected scopes: set BULWARK_PROTECTED_SCOPES to a JSON array of {scope, region}");
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (error) {
    throw new UsageError(`BULWARK_PROTECTED_SCOPES is not valid JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.some((s) => typeof s?.scope !== "string" || typeof s?.region !== "string")) {
    throw new UsageError("BULWARK_PROTECTED_SCOPES must be a JSON array of {scope, region} objects");
  }
  return parsed as ProtectedScope[];
}

const normalize = (region: string) => region.toLowerCase().replace(/\s+/g, "");

export async function runBridge(ctx: AzureContext, scopes: ProtectedScope[], options: { graceMs: number; now?: number }): Promise<BridgeReport> {
  const now = options.now ?? Date.now();
  const report: BridgeReport = { scopes: [], snapshots: [], errors: [] };
  const { ResourceManagementClient } = await import("@azure/arm-resources");
  const subscriptions = new Set<string>();
  for (const { scope, region } of scopes) {
    const parts = scope.split("/").filter(Boolean);
    const subscriptionId = parts[1];
    const group = parts[2]?.toLowerCase() === "resourcegroups" ? parts[3] : undefined;
    if (parts[0]?.toLowerCase() !== "subscriptions" || !subscriptionId) {
      report.errors.push(`${scope}: not a subscription or resource group scope`);
      continue;
    }
    subscriptions.add(subscriptionId);
    try {
      const client = new ResourceManagementClient(ctx.credential, subscriptionId, { endpoint: ctx.armEndpoint });
      const listing = group ? client.resources.listByResourceGroup(group) : client.resources.list();
      let items = 0;
      const outOfRegion: { id: string; location: string }[] = [];
      for await (const resource of listing) {
        if (!resource.type || !kindOfResourceType(resource.type)) continue;
        items++;
        if (resource.location && normalize(resource.location) !== normalize(region)) outOfRegion.push({ id: resource.id!, location: resource.location });
      }
      report.scopes.push({ scope, region, items, outOfRegion });
    } catch (error) {
      report.errors.push(`${scope}: ${describeError(error).split("\n")[0]}`);
    }
  }
  for (const subscriptionId of subscriptions) {
    try {
      const compute = await ctx.compute(subscriptionId);
      const byDisk = new Map<string, { id: string; created: number }[]>();
      for await (const snapshot of compute.snapshots.list()) {
        if (snapshot.tags?.["bulwark-managed"] !== "true" || !snapshot.id) continue;
        const disk = (snapshot.tags["bulwark-disk"] ?? snapshot.creationData?.sourceResourceId ?? "").toLowerCase();
        const list = byDisk.get(disk) ?? [];
        list.push({ id: snapshot.id, created: snapshot.timeCreated ? new Date(snapshot.timeCreated).getTime() : now });
        byDisk.set(disk, list);
      }
      for (const [disk, snapshots] of byDisk) {
        snapshots.sort((a, b) => b.created - a.created);
        const [newest, ...older] = snapshots;
        const entry = { disk, kept: newest.id, retired: [] as string[], waiting: [] as string[] };
        for (const old of older) {
          if (now - old.created < options.graceMs) {
            entry.waiting.push(old.id);
            continue;
          }
          const ref = parseResourceId(old.id);
          try {
            // A killed backup leaves its read grant open (the snapshot's diskState stays ActiveSAS, see
            // Snapshot.properties.diskState in Azure/azure-rest-api-specs, Microsoft.Compute DiskRP):
            // end it first (Snapshots_RevokeAccess, POST .../snapshots/{name}/endGetAccess), then delete.
            await compute.snapshots.beginRevokeAccessAndWait(ref.resourceGroup, ref.name);
            await compute.snapshots.beginDeleteAndWait(ref.resourceGroup, ref.name);
            entry.retired.push(old.id);
          } catch (error) {
            report.errors.push(`retiring ${old.id}: ${describeError(error).split("\n")[0]}`);
          }
        }
        report.snapshots.push(entry);
      }
    } catch (error) {
      report.errors.push(`snapshots of subscription ${subscriptionId}: ${describeError(error).split("\n")[0]}`);
    }
  }
  return report;
}
