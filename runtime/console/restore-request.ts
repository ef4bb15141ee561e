/**
 * A restore asked for from the console, checked and turned into a job for the agents, as the
 * restore and restore-files machines take them (workloads/restore-machine.ts,
 * restore-files-machine.ts) through jobs/submit.ts. What the request may choose is narrow: one of
 * the item's own points, and a target. The vault is the item's policy's, never the form's; the
 * target must be a new resource of the item's own kind (the restore machine fails a job whose
 * target exists and leaves it untouched: nothing is overwritten from the console).
 */
import { UsageError } from "../errors.ts";
import { parseResourceId, sameType, type ResourceId } from "../azure/resource-id.ts";
import { submitJob } from "../jobs/submit.ts";
import type { ItemKind } from "../policy/items.ts";
import { pointsOf, readItems, vaultPoints, type ConsoleSources } from "./fleet-view.ts";

/** The paths a files restore may name at most (the restore-files machine's own limit). */
export const MAX_FILE_PATHS = 1000;

const TARGET_TYPES: Record<ItemKind, { type: string; words: string }> = {
  disk: { type: "Microsoft.Compute/disks", words: "a new managed disk id (…/providers/Microsoft.Compute/disks/NAME)" },
  vm: { type: "Microsoft.Compute/virtualMachines", words: "a new VM id (…/providers/Microsoft.Compute/virtualMachines/NAME)" },
  sql: { type: "Microsoft.Sql/servers/databases", words: "a new database id (…/providers/Microsoft.Sql/servers/S/databases/NAME)" },
};

export interface RestoreForm {
  kind: "resource" | "files";
  item: string;
  point: string;
  target: string;
  nic: string;
  paths: string[];
}

/** The form's fields, as sent (URL-encoded); absent ones are "". */
export function restoreForm(body: URLSearchParams): RestoreForm {
  const one = (name: string) => (body.get(name) ?? "").trim();
  return {
    kind: one("kind") === "files" ? "files" : "resource",
    item: one("item"),
    point: one("point"),
    target: one("target"),
    nic: one("nic"),
    paths: body.getAll("paths").map((p) => p.trim()).filter(Boolean),
  };
}

function checkTarget(kind: ItemKind, itemId: string, target: string): string {
  const wanted = TARGET_TYPES[kind];
  if (!target) throw new UsageError(`give the target: ${wanted.words}`);
  let parsed;
  try {
    parsed = parseResourceId(target);
  } catch {
    throw new UsageError(`the target is not an Azure resource id; give ${wanted.words}`);
  }
  if (!sameType(parsed, wanted.type)) throw new UsageError(`a ${kind} point restores to ${wanted.words}, not to a ${parsed.type}`);
  if (sameResource(parsed, parseResourceId(itemId))) throw new UsageError("the target is the protected item itself: the console never overwrites; name a new resource");
  // Names of disks, VMs and SQL databases hold no "%" (resource-name-rules.md): an id with one, or
  // with an empty segment, is another spelling of some resource, which ARM may read as the item.
  if (target.includes("%") || target !== `/${target.split("/").filter(Boolean).join("/")}`) {
    throw new UsageError(`write the target as Azure shows it: ${wanted.words}, one "/" between its parts and none at the end, no %-escapes`);
  }
  return target;
}

/**
 * Whether two ids name one resource, however each is written: ARM ids are split on "/" (empty
 * segments dropped) and names %-decoded by parseResourceId, and "resource names are
 * case-insensitive unless specifically noted" — they are not for disks, VMs or SQL databases
 * (MicrosoftDocs/azure-docs, articles/azure-resource-manager/management/resource-name-rules.md).
 */
function sameResource(a: ResourceId, b: ResourceId): boolean {
  const identity = (id: ResourceId) => [id.subscriptionId, id.resourceGroup, id.type, ...id.names].join("/").toLowerCase();
  return identity(a) === identity(b);
}

export interface SubmittedRestore {
  jobId: string;
  machine: string;
}

/** Checks the form against the item, its policy and its points, then submits the job. */
export async function submitRestore(sources: ConsoleSources, form: RestoreForm): Promise<SubmittedRestore> {
  const { rows } = await readItems(sources);
  const row = rows.find((r) => r.item.toLowerCase() === form.item.toLowerCase());
  if (!row) throw new UsageError("that item is not one the policies protect; pick it from Protected items");
  const policy = sources.policies.find((p) => p.name === row.policy);
  const kind = row.kind as ItemKind;
  if (!policy || !row.region || !(kind in TARGET_TYPES)) throw new UsageError("the scheduler has not recorded this item yet, so it has no points to restore");
  // The region names the queue the job goes on: from a record, so checked to be a region's name.
  if (!/^[a-z0-9]{2,40}$/.test(row.region)) throw new UsageError("the item's record names no valid region (an unreadable record): the scheduler's next tick rewrites it");
  const { points } = await vaultPoints(sources, policy.vault);
  const point = pointsOf(points, row.item).find((p) => p.id === form.point);
  if (!point) throw new UsageError("that point is not one of this item's points in its policy's vault; pick one from the item's page");
  const item = { id: row.item, kind, region: row.region };
  const base = { item, queueRegion: row.region, policy: policy.name };
  if (form.kind === "files") {
    if (point.kind !== "disk" && point.kind !== "vm") throw new UsageError(`a ${point.kind} point holds no files to browse`);
    if (form.paths.length === 0) throw new UsageError("choose at least one file or folder to restore");
    if (form.paths.length > MAX_FILE_PATHS) throw new UsageError(`choose at most ${MAX_FILE_PATHS} paths at once`);
    if (!form.paths.every((p) => p.startsWith("/") && !p.includes("\0"))) throw new UsageError("a path must start with / (as the point's browser shows it)");
    const result = await submitJob(sources.fleet, { ...base, machine: "restore-files", input: { vault: policy.vault, pointId: point.id, paths: form.paths } });
    if (!result.submitted) throw new UsageError(result.reason);
    return { jobId: result.job.jobId, machine: "restore-files" };
  }
  const target = checkTarget(kind, row.item, form.target);
  let nicIds: string[] = [];
  if (kind === "vm") {
    if (!form.nic) throw new UsageError("an alternate VM needs its own network interface: give a NIC id (the original's NICs are in use)");
    try {
      if (!sameType(parseResourceId(form.nic), "Microsoft.Network/networkInterfaces")) throw new Error("not a NIC");
    } catch {
      throw new UsageError("the NIC is not a network interface id (…/providers/Microsoft.Network/networkInterfaces/NAME)");
    }
    nicIds = [form.nic];
  }
  const result = await submitJob(sources.fleet, { ...base, machine: "restore", input: { vault: policy.vault, pointId: point.id, target, nicIds } });
  if (!result.submitted) throw new UsageError(result.reason);
  return { jobId: result.job.jobId, machine: "restore" };
}

export function targetWords(kind: ItemKind): string {
  return TARGET_TYPES[kind]?.words ?? "";
}
