/**
 * Putting work on a region's queue. The job record is written first, then the item is moved
 * idle -> queued (for scheduled work), then the message is sent: a crash between the steps leaves a
 * job that the scheduler re-sends (a duplicate message is harmless: workers skip finished and owned
 * jobs), never a message without a job.
 */
import type { ItemKind, ProtectedItem } from "../policy/items.ts";
import type { Clock } from "./clock.ts";
import { ItemLocks } from "./item-locks.ts";
import { LeaseTable } from "./leases.ts";
import type { JobData } from "./machine.ts";
import { ItemStore, JobStore, emptyItem, newJobId, type JobRecord } from "./records.ts";
import { ReportStore } from "./reports.ts";
import type { FleetStorage } from "./storage.ts";

/** What travels on the queue: only a pointer to the job record. */
export interface WorkMessage {
  v: 1;
  jobId: string;
  machine: string;
  item: string;
}

export function encodeWorkMessage(job: Pick<JobRecord, "jobId" | "machine" | "itemId">): string {
  const message: WorkMessage = { v: 1, jobId: job.jobId, machine: job.machine, item: job.itemId };
  return JSON.stringify(message);
}

export function parseWorkMessage(text: string): WorkMessage | undefined {
  try {
    const value = JSON.parse(text) as Partial<WorkMessage>;
    if (value?.v === 1 && typeof value.jobId === "string" && /^\d{13}-[0-9a-f]+$/.test(value.jobId)) {
      return { v: 1, jobId: value.jobId, machine: String(value.machine ?? ""), item: String(value.item ?? "") };
    }
  } catch {
    // not JSON: falls through
  }
  return undefined;
}

/** The stores of one fleet, built once from its storage and clock. */
export interface Fleet {
  storage: FleetStorage;
  clock: Clock;
  jobs: JobStore;
  items: ItemStore;
  reports: ReportStore;
  itemLocks: ItemLocks;
  slots: LeaseTable;
}

export async function openFleet(storage: FleetStorage, clock: Clock): Promise<Fleet> {
  await storage.ensureTables();
  const jobs = new JobStore(storage.jobs);
  return {
    storage,
    clock,
    jobs,
    items: new ItemStore(storage.items),
    reports: new ReportStore(storage.reports),
    itemLocks: new ItemLocks(storage.locks, jobs),
    slots: new LeaseTable(storage.locks, clock),
  };
}

export interface SubmitRequest {
  machine: string;
  item: ProtectedItem;
  /** The region whose queue gets the work (the item's own region unless sent across). */
  queueRegion: string;
  policy?: string;
  input: JobData;
  /**
   * Scheduled work: the item must be idle and becomes queued, so it is never queued twice. Off for
   * on-demand jobs such as restores (item locks keep those from overlapping a backup).
   */
  exclusive?: boolean;
  /** A job id derived from what the job is for (a copy of one point to one vault), so submitting it twice makes one job; new otherwise. */
  jobId?: string;
}

export type SubmitResult = { submitted: true; job: JobRecord } | { submitted: false; reason: string; jobId: string };

export async function submitJob(fleet: Fleet, request: SubmitRequest): Promise<SubmitResult> {
  const now = fleet.clock.now();
  const job: JobRecord = {
    jobId: request.jobId ?? newJobId(now),
    machine: request.machine,
    itemId: request.item.id,
    itemKind: request.item.kind as ItemKind,
    region: request.queueRegion,
    policy: request.policy ?? "",
    input: request.input,
    status: "queued",
    state: "",
    data: {},
    compensable: [],
    pendingCompensations: [],
    owner: "",
    leaseUntil: 0,
    createdAt: now,
    startedAt: 0,
    endedAt: 0,
    runs: 0,
    failures: 0,
    error: "",
  };
  const created = await fleet.jobs.create(job);
  if (request.exclusive) {
    let blockedBy: string | undefined;
    await fleet.items.update(
      request.item.id,
      () => emptyItem(request.item.id, request.item.kind, request.item.region, request.policy ?? ""),
      (item) => {
        if (item.state !== "idle") {
          blockedBy = item.jobId;
          return undefined;
        }
        blockedBy = undefined;
        return { ...item, state: "queued", jobId: job.jobId, queuedAt: now };
      },
    );
    if (blockedBy !== undefined) {
      await fleet.jobs.delete(job.jobId, created.etag);
      return { submitted: false, reason: `already queued or running as job ${blockedBy}`, jobId: blockedBy };
    }
  }
  await sendWork(fleet, job);
  return { submitted: true, job };
}

/** Sends (or re-sends) the message of an existing job. */
export async function sendWork(fleet: Fleet, job: Pick<JobRecord, "jobId" | "machine" | "itemId" | "region">): Promise<void> {
  const queue = await fleet.storage.queue(job.region);
  await queue.sendMessage(encodeWorkMessage(job));
}
