/**
 * What the console's pages show, read from the fleet's tables, the policies and the vaults. Every
 * record read back from storage is untrusted (anyone with write access to the tables can put
 * anything there): a record that does not hold what a record of its kind must is shown as
 * "unreadable record" with its key, and the rest of the page still loads. The RPO judgement is
 * `bulwark status`'s own (cli/status-view.ts), not a second reading of the schedule.
 */
import type { AgentStatus } from "./agents.ts";
import type { PointManifest } from "../engine/point.ts";
import { mapLimit, type Vault } from "../engine/vault.ts";
import { describeError } from "../errors.ts";
import { itemStatuses, type Fleet } from "../jobs/index.ts";
import { ItemStore, type ItemRecord } from "../jobs/records.ts";
import type { JobReport } from "../jobs/reports.ts";
import { vaultKey, type Policy } from "../policy/policy.ts";
import { statusRows, type StatusRow } from "../cli/status-view.ts";

/** What the console reads from; tests pass their own readAgents. */
export interface ConsoleSources {
  fleet: Fleet;
  policies: Policy[];
  openVault(location: string): Promise<Vault>;
  /** Each region's scheduler and worker (agents.ts readAgents, bound to the configured regions). */
  readAgents(): Promise<AgentStatus[]>;
  now(): number;
}

export interface Unreadable {
  /** The record's key as stored (escaped when shown). */
  key: string;
  why: string;
}

const ITEM_KINDS = new Set(["disk", "vm", "sql", ""]);

function finiteTime(value: number): boolean {
  return Number.isFinite(value) && value >= 0 && value < 8.64e15;
}

/** Why an item record cannot be shown, or undefined when it can. */
function itemProblem(item: ItemRecord): string | undefined {
  if (!item.itemId.startsWith("/subscriptions/")) return "its key is not an Azure resource id";
  if (!ITEM_KINDS.has(item.kind)) return `its kind is not disk, vm or sql`;
  for (const field of ["lastGoodAt", "lastEndedAt", "queuedAt", "lastSeenAt"] as const) {
    if (!finiteTime(item[field])) return `its ${field} is not a time`;
  }
  return undefined;
}

/** The items table with unreadable records set aside (itemStatuses reads through it). */
class CheckedItems extends ItemStore {
  readonly unreadable: Unreadable[] = [];

  override async *list(): AsyncIterable<ItemRecord> {
    for await (const item of super.list()) {
      const problem = itemProblem(item);
      if (problem) this.unreadable.push({ key: item.itemId, why: problem });
      else yield item;
    }
  }
}

export async function readItems(sources: ConsoleSources): Promise<{ rows: StatusRow[]; unreadable: Unreadable[] }> {
  const items = new CheckedItems(sources.fleet.items.table);
  const now = sources.now();
  const rows = statusRows(await itemStatuses(items, sources.policies, now), sources.policies, new Date(now));
  return { rows, unreadable: items.unreadable };
}

export interface JobRow {
  jobId: string;
  machine: string;
  itemId: string;
  region: string;
  status: string;
  state: string;
  createdAt: number;
  startedAt: number;
  endedAt: number;
  runs: number;
  error: string;
  report?: JobReport;
}

const JOB_STATUSES = new Set(["queued", "running", "compensating", "succeeded", "failed"]);
const JOB_ID = /^\d{13}-[0-9a-f]{1,32}$/;

/** A job entity as the Jobs page needs it, each field checked; a string saying why when it is not one. */
function jobRow(entity: Record<string, unknown>): JobRow | string {
  const str = (name: string) => (typeof entity[name] === "string" ? (entity[name] as string) : undefined);
  const num = (name: string) => (entity[name] === undefined ? 0 : typeof entity[name] === "number" ? (entity[name] as number) : NaN);
  const jobId = str("rowKey") ?? "";
  if (!JOB_ID.test(jobId)) return "its key is not a job id";
  const status = str("status") ?? "";
  if (!JOB_STATUSES.has(status)) return "its status is not one a job has";
  const fields = { machine: str("machine"), itemId: str("itemId"), region: str("region"), state: str("state") ?? "", error: str("error") ?? "" };
  if (fields.machine === undefined || fields.itemId === undefined || fields.region === undefined) return "machine, item or region is missing";
  const times = { createdAt: num("createdAt"), startedAt: num("startedAt"), endedAt: num("endedAt") };
  if (!Object.values(times).every(finiteTime)) return "one of its times is not a time";
  try {
    JSON.parse(str("input") ?? "{}");
  } catch {
    return "its input is not JSON";
  }
  return { jobId, status, ...fields, machine: fields.machine, itemId: fields.itemId, region: fields.region, ...times, runs: Number.isFinite(num("runs")) ? num("runs") : 0 };
}

/** The Jobs page's length: a page stays bounded however many jobs the table holds. */
export const JOBS_SHOWN = 200;

/**
 * The newest `limit` jobs (job ids sort newest first), with their reports' byte counts; `more` says
 * the table holds older ones, left out.
 */
export async function readJobs(sources: ConsoleSources, limit = JOBS_SHOWN): Promise<{ rows: JobRow[]; unreadable: Unreadable[]; more: boolean }> {
  const rows: JobRow[] = [];
  const unreadable: Unreadable[] = [];
  let more = false;
  const filter = "PartitionKey eq 'job'";
  for await (const entity of sources.fleet.jobs.table.listEntities({ queryOptions: { filter } })) {
    if (rows.length + unreadable.length >= limit) {
      more = true;
      break;
    }
    const row = jobRow(entity);
    if (typeof row === "string") unreadable.push({ key: String(entity.rowKey ?? ""), why: row });
    else rows.push(row);
  }
  const reports = new Map((await sources.fleet.reports.list({ limit: limit * 2 })).map((r) => [r.jobId, r]));
  for (const row of rows) row.report = reports.get(row.jobId);
  return { rows, unreadable, more };
}

/** Vaults opened once per console (opening runs the key's KDF or asks Key Vault). */
export function vaultOpener(open: (location: string) => Promise<Vault>): (location: string) => Promise<Vault> {
  const opened = new Map<string, Promise<Vault>>();
  return (location) => {
    const key = vaultKey(location);
    let vault = opened.get(key);
    if (!vault) {
      vault = open(location);
      opened.set(key, vault);
      vault.catch(() => opened.delete(key));
    }
    return vault;
  };
}

export interface VaultPoints {
  points: PointManifest[];
  /** Points whose manifest did not open (damaged or forged): ids only. */
  damaged: string[];
}

/**
 * A point's manifest never changes once written (points are create-only objects), so each is read
 * and authenticated once per console: a page lists the vault's point names and reads only the new
 * ones. Manifests that failed to open are read again next time (a read may have failed for a moment).
 */
const manifests = new WeakMap<Vault, Map<string, PointManifest>>();

export async function vaultPoints(sources: ConsoleSources, location: string): Promise<VaultPoints> {
  const vault = await sources.openVault(location);
  let known = manifests.get(vault);
  if (!known) manifests.set(vault, (known = new Map()));
  const ids = await vault.listPointIds();
  const damaged: string[] = [];
  await mapLimit(ids.filter((id) => !known.has(id)), 8, async (id) => {
    try {
      known.set(id, await vault.readPoint(id));
    } catch {
      damaged.push(id);
    }
  });
  // Points forgotten since (retention, prune) leave the cache.
  const present = new Set(ids);
  for (const id of known.keys()) if (!present.has(id)) known.delete(id);
  return { points: ids.flatMap((id) => known.get(id) ?? []), damaged };
}

/** The points of one item in its policy's vault, newest first (a VM's own points, not its disks'). */
export function pointsOf(points: PointManifest[], itemId: string): PointManifest[] {
  const id = itemId.toLowerCase();
  return points.filter((p) => p.source.path.toLowerCase() === id).sort((a, b) => b.time.localeCompare(a.time));
}

export interface VaultRow {
  location: string;
  policies: string[];
  points: number;
  damaged: number;
  /** The points' content as their sources had it, and what it takes in the vault. */
  logicalBytes: number;
  storedBytes: number;
  /** The objects under the vault's data/ (its packs: its real size). */
  packBytes: number;
  dedupRatio: number | null;
  immutability: string;
  lastVerify: JobReport | undefined;
  lastPrune: JobReport | undefined;
  error: string;
}

/** Where the vault's immutability stands, read from its config object; "unknown" if that cannot be read. */
async function immutabilityOf(vault: Vault): Promise<string> {
  const store = vault.store;
  if (!store.immutableUntil) return "none (this storage has no immutability)";
  try {
    const until = await store.immutableUntil("config");
    return until ? `locked until ${until.toISOString()}` : "none set";
  } catch (error) {
    return `unknown (${describeError(error).split("\n")[0]})`;
  }
}

export async function readVaults(sources: ConsoleSources): Promise<VaultRow[]> {
  const byVault = new Map<string, { location: string; policies: string[] }>();
  for (const policy of sources.policies) {
    for (const location of [policy.vault, ...policy.copyTo]) {
      const entry = byVault.get(vaultKey(location)) ?? { location, policies: [] };
      entry.policies.push(policy.name);
      byVault.set(vaultKey(location), entry);
    }
  }
  const reports = await sources.fleet.reports.list({ limit: 500 });
  const rows: VaultRow[] = [];
  for (const { location, policies } of byVault.values()) {
    const row: VaultRow = {
      location, policies, points: 0, damaged: 0, logicalBytes: 0, storedBytes: 0, packBytes: 0, dedupRatio: null, immutability: "unknown",
      // Verify and prune report as jobs of those machines when the agents run them.
      lastVerify: reports.find((r) => r.machine === "verify" && r.item === location),
      lastPrune: reports.find((r) => r.machine === "prune" && r.item === location),
      error: "",
    };
    try {
      const vault = await sources.openVault(location);
      const { points, damaged } = await vaultPoints(sources, location);
      // A VM point's size is its disks' points' sizes again: count content points only.
      const content = points.filter((p) => p.kind !== "vm");
      row.points = points.length;
      row.damaged = damaged.length;
      row.logicalBytes = content.reduce((sum, p) => sum + p.size, 0);
      row.storedBytes = content.reduce((sum, p) => sum + p.stats.bytesStored, 0);
      for await (const object of vault.store.list("data/")) row.packBytes += object.size;
      row.dedupRatio = row.packBytes > 0 ? Math.round((row.logicalBytes / row.packBytes) * 100) / 100 : null;
      row.immutability = await immutabilityOf(vault);
    } catch (error) {
      row.error = describeError(error).split("\n")[0];
    }
    rows.push(row);
  }
  return rows;
}
