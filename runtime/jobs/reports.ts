/**
 * Every finished job leaves a report in the reports table and one JSON line in the log. From the
 * tables, `bulwark jobs` lists recent jobs and `bulwark status` shows each protected item with its
 * last good point, whether it meets its policy's RPO, and how far each of its copies is behind.
 */
import type { TableClient } from "@azure/data-tables";
import { vaultKey, type Policy } from "../policy/policy.ts";
import { CopyRecords, type CopyRecord } from "./copy-status.ts";
import { meetsRpo } from "../policy/schedule.ts";
import type { JobMetrics } from "./machine.ts";
import type { ItemRecord, ItemStore, JobRecord, JobStore } from "./records.ts";
import { isNotFound } from "./storage.ts";

/** Written by the scheduler into an item's `unprotected` when its resource no longer exists. */
export const MISSING_PREFIX = "missing: ";

export interface JobReport {
  jobId: string;
  machine: string;
  item: string;
  kind: string;
  region: string;
  policy: string;
  start: string;
  end: string;
  outcome: "succeeded" | "failed";
  error: string;
  bytesRead: number;
  bytesNew: number;
  bytesStored: number;
  /** bytesRead / bytesNew: how many bytes were read per byte that was new; null when nothing was new. */
  dedupRatio: number | null;
  pointId: string;
  /** What the job produced outside the vault (a files restore's archive URL), or "". */
  output: string;
  runs: number;
}

export function buildReport(job: JobRecord, metrics: JobMetrics): JobReport {
  const bytesRead = metrics.bytesRead ?? 0;
  const bytesNew = metrics.bytesNew ?? 0;
  return {
    jobId: job.jobId,
    machine: job.machine,
    item: job.itemId,
    kind: job.itemKind,
    region: job.region,
    policy: job.policy,
    start: new Date(job.startedAt || job.createdAt).toISOString(),
    end: new Date(job.endedAt).toISOString(),
    outcome: job.status === "succeeded" ? "succeeded" : "failed",
    error: job.error,
    bytesRead,
    bytesNew,
    bytesStored: metrics.bytesStored ?? 0,
    dedupRatio: bytesNew > 0 ? Math.round((bytesRead / bytesNew) * 1000) / 1000 : null,
    pointId: metrics.pointId ?? "",
    output: metrics.output ?? "",
    runs: job.runs,
  };
}

const PARTITION = "report";

export class ReportStore {
  readonly table: TableClient;

  constructor(table: TableClient) {
    this.table = table;
  }

  /** Idempotent: a job's report is keyed by its id, so a retried finish writes the same entity. */
  async write(report: JobReport): Promise<void> {
    const { dedupRatio, ...rest } = report;
    await this.table.upsertEntity(
      { partitionKey: PARTITION, rowKey: report.jobId, ...rest, dedupRatio: dedupRatio ?? -1 },
      "Replace",
    );
  }

  async get(jobId: string): Promise<JobReport | undefined> {
    try {
      return toReport(await this.table.getEntity(PARTITION, jobId));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Reports newest first. */
  async list(options: { limit?: number } = {}): Promise<JobReport[]> {
    const reports: JobReport[] = [];
    const filter = `PartitionKey eq '${PARTITION}'`;
    for await (const entity of this.table.listEntities({ queryOptions: { filter } })) {
      if (options.limit !== undefined && reports.length >= options.limit) break;
      reports.push(toReport(entity));
    }
    return reports;
  }
}

function toReport(entity: Record<string, unknown>): JobReport {
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  const num = (v: unknown) => (typeof v === "number" ? v : Number(v ?? 0));
  return {
    jobId: str(entity.jobId),
    machine: str(entity.machine),
    item: str(entity.item),
    kind: str(entity.kind),
    region: str(entity.region),
    policy: str(entity.policy),
    start: str(entity.start),
    end: str(entity.end),
    outcome: entity.outcome === "succeeded" ? "succeeded" : "failed",
    error: str(entity.error),
    bytesRead: num(entity.bytesRead),
    bytesNew: num(entity.bytesNew),
    bytesStored: num(entity.bytesStored),
    dedupRatio: typeof entity.dedupRatio === "number" && entity.dedupRatio >= 0 ? entity.dedupRatio : null,
    pointId: str(entity.pointId),
    output: str(entity.output),
    runs: num(entity.runs),
  };
}

export interface JobSummary {
  jobId: string;
  machine: string;
  item: string;
  kind: string;
  region: string;
  policy: string;
  status: string;
  state: string;
  owner: string;
  created: string;
  started: string | null;
  ended: string | null;
  runs: number;
  error: string;
}

/** Recent jobs, newest first, with their state (for `bulwark jobs`). */
export async function listRecentJobs(jobs: JobStore, options: { limit?: number } = {}): Promise<JobSummary[]> {
  const out: JobSummary[] = [];
  const iso = (ms: number) => (ms ? new Date(ms).toISOString() : null);
  for await (const job of jobs.list({ limit: options.limit ?? 50 })) {
    out.push({
      jobId: job.jobId,
      machine: job.machine,
      item: job.itemId,
      kind: job.itemKind,
      region: job.region,
      policy: job.policy,
      status: job.status,
      state: job.state,
      owner: job.owner,
      created: new Date(job.createdAt).toISOString(),
      started: iso(job.startedAt),
      ended: iso(job.endedAt),
      runs: job.runs,
      error: job.error,
    });
  }
  return out;
}

export interface ItemStatus {
  item: string;
  kind: string;
  region: string;
  policy: string;
  state: string;
  lastGoodPoint: string | null;
  lastGoodAt: string | null;
  lastOutcome: string;
  lastError: string;
  /** False when the item has no good point recent enough, or cannot be protected at all. */
  meetsRpo: boolean;
  unprotected: string;
  /** True when the last scheduler tick found the resource gone (a policy names a deleted disk). */
  missing: boolean;
  /** One per copyTo vault of the item's policy: where its copy stands. */
  copies: CopyStatus[];
}

export interface CopyStatus {
  vault: string;
  /** The newest point of the item that a copy job found in the copy vault; null before the first copy. */
  newestPoint: string | null;
  newestAt: string | null;
  /**
   * How far the copy is behind the primary: 0 when it holds the item's last good point, else the time
   * from its newest point to when the last good backup was scheduled; null before the first copy.
   */
  lagMs: number | null;
  /** When the last copy job into this vault finished. */
  copiedAt: string | null;
}

/** Where an item's copy in `vault` stands, from the copy job's record and the item's last good point. */
function copyStatus(item: ItemRecord, vault: string, record: CopyRecord | undefined): CopyStatus {
  if (!record) return { vault, newestPoint: null, newestAt: null, lagMs: null, copiedAt: null };
  const behind = record.pointId !== item.lastGoodPointId;
  return {
    vault,
    newestPoint: record.pointId,
    newestAt: record.pointTime,
    lagMs: behind ? Math.max(0, item.lastGoodAt - Date.parse(record.pointTime)) : 0,
    copiedAt: new Date(record.copiedAt).toISOString(),
  };
}

/** Each known item with its last good point and whether it meets its policy's RPO (for `bulwark status`). */
export async function itemStatuses(items: ItemStore, policies: Policy[], now: number): Promise<ItemStatus[]> {
  const byName = new Map(policies.map((p) => [p.name, p]));
  const copyRecords = new Map((await new CopyRecords(items.table).list()).map((r) => [`${r.itemId.toLowerCase()}|${vaultKey(r.vault)}`, r]));
  const out: ItemStatus[] = [];
  for await (const item of items.list()) {
    const policy = byName.get(item.policy);
    const copies = (policy?.copyTo ?? []).map((vault) => copyStatus(item, vault, copyRecords.get(`${item.itemId.toLowerCase()}|${vaultKey(vault)}`)));
    const lastGood = item.lastGoodAt ? new Date(item.lastGoodAt) : undefined;
    out.push({
      item: item.itemId,
      kind: item.kind,
      region: item.region,
      policy: item.policy,
      state: item.state,
      lastGoodPoint: item.lastGoodPointId || null,
      lastGoodAt: lastGood ? lastGood.toISOString() : null,
      lastOutcome: item.lastOutcome,
      lastError: item.lastError,
      meetsRpo: !item.unprotected && policy !== undefined && meetsRpo(policy.schedule, lastGood, new Date(now)),
      unprotected: item.unprotected,
      missing: item.unprotected.startsWith(MISSING_PREFIX),
      copies,
    });
  }
  return out.sort((a, b) => a.item.localeCompare(b.item));
}
