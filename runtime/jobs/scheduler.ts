/**
 * One scheduler tick (`bulwark agent schedule`, a Container Apps job on a cron): resolve every
 * policy's items, and for each item that is due enqueue one backup job on the queue of the region
 * the item lives in. An item in a region without an agent is reported unprotected (and recorded so
 * `bulwark status` shows it) unless its policy allows crossRegion. An item already queued or
 * running is never enqueued again: the item record moves idle -> queued with an ETag-conditional
 * write, and only a finished job moves it back to idle.
 *
 * A resource a policy names that no longer exists (a deleted disk) does not stop the policy: the
 * items that exist are scheduled, the missing one is reported in the tick's result (`missing`), in
 * one JSON log line an alert rule can match (`event: schedule.missing`, `level: error`,
 * `alert: item-missing`), and in its item record, so `bulwark status` lists it as missing.
 *
 * An item past its policy's RPO gets one JSON log line on every tick while it stays late
 * (`event: schedule.late`, `level: error`, `alert: rpo-missed`): what the region's Azure Monitor
 * alert matches (infra/components/alerts.ts).
 */
import { describeError } from "../errors.ts";
import { normalizeRegion, type ItemResolver, type MissingItem, type ProtectedItem } from "../policy/items.ts";
import type { Policy } from "../policy/policy.ts";
import { isDue, meetsRpo } from "../policy/schedule.ts";
import { emptyItem, isTerminal, type ItemRecord } from "./records.ts";
import { MISSING_PREFIX } from "./reports.ts";
import type { LogSink } from "./runner.ts";
import { sendWork, submitJob, type Fleet } from "./submit.ts";

export interface ScheduleTickOptions {
  fleet: Fleet;
  policies: Policy[];
  resolveItems: ItemResolver;
  /** Regions that have a worker agent (and so a queue). */
  regionsWithAgents: string[];
  /** The machine that backs up an item; "backup" unless told otherwise. */
  machineFor?: (item: ProtectedItem, policy: Policy) => string;
  /**
   * A job still queued (never claimed) this long after it was queued gets its message sent again,
   * in case the message was lost (a crash between writing the job and sending). Duplicates are
   * harmless. Default 6 hours.
   */
  resendAfterMs?: number;
  log?: LogSink;
}

export interface TickResult {
  enqueued: { item: string; region: string; queueRegion: string; policy: string; jobId: string }[];
  notDue: string[];
  busy: { item: string; jobId: string }[];
  resent: { item: string; jobId: string }[];
  unprotected: { item: string; region: string; policy: string; reason: string }[];
  /** Resources a policy names that do not exist: reported and alerted on, never blocking the rest. */
  missing: { item: string; policy: string; reason: string }[];
  /** Items claimed by more than one policy: the first policy (in the order given) schedules them. */
  conflicts: { item: string; policies: string[] }[];
  errors: { policy: string; item?: string; error: string }[];
}

/**
 * Past its RPO: its last good point is too old, or it has none though a job of it already ended
 * (an item just added is not late before its first backup had a chance to run).
 */
function isLate(policy: Policy, record: ItemRecord, now: number): boolean {
  if (record.lastGoodAt === 0 && record.lastEndedAt === 0) return false;
  return !meetsRpo(policy.schedule, record.lastGoodAt ? new Date(record.lastGoodAt) : undefined, new Date(now));
}

export async function scheduleTick(options: ScheduleTickOptions): Promise<TickResult> {
  const { fleet, policies, resolveItems } = options;
  const log = options.log ?? (() => {});
  const agents = options.regionsWithAgents.map(normalizeRegion);
  const resendAfterMs = options.resendAfterMs ?? 6 * 3_600_000;
  const now = fleet.clock.now();
  const result: TickResult = { enqueued: [], notDue: [], busy: [], resent: [], unprotected: [], missing: [], conflicts: [], errors: [] };

  const owners = new Map<string, { policy: Policy; item: ProtectedItem }>();
  const seenBy = new Map<string, string[]>();
  const missing: { policy: Policy; item: MissingItem }[] = [];
  for (const policy of policies) {
    let items: ProtectedItem[];
    try {
      items = await resolveItems.resolve(policy, { onMissing: (item) => missing.push({ policy, item }) });
    } catch (error) {
      result.errors.push({ policy: policy.name, error: describeError(error) });
      log({ event: "schedule.policy-failed", policy: policy.name, error: describeError(error) });
      continue;
    }
    for (const item of items) {
      const key = item.id.toLowerCase();
      seenBy.set(key, [...(seenBy.get(key) ?? []), policy.name]);
      if (!owners.has(key)) owners.set(key, { policy, item: { ...item, region: normalizeRegion(item.region) } });
    }
  }
  for (const [key, names] of seenBy) {
    if (names.length > 1) result.conflicts.push({ item: owners.get(key)!.item.id, policies: names });
  }

  for (const { policy, item } of missing) {
    // Named by another policy that did find it: not missing (ARM answered both; one was stale).
    if (owners.has(item.id.toLowerCase())) continue;
    result.missing.push({ item: item.id, policy: policy.name, reason: item.reason });
    log({ event: "schedule.missing", level: "error", alert: "item-missing", item: item.id, kind: item.kind, policy: policy.name, reason: item.reason });
    try {
      await fleet.items.update(
        item.id,
        () => emptyItem(item.id, item.kind, "", policy.name),
        (current) => ({ ...current, kind: item.kind, policy: policy.name, unprotected: `${MISSING_PREFIX}${item.reason}`, lastSeenAt: now }),
      );
    } catch (error) {
      result.errors.push({ policy: policy.name, item: item.id, error: describeError(error) });
    }
  }

  for (const { policy, item } of owners.values()) {
    try {
      const queueRegion = agents.includes(item.region) ? item.region : policy.crossRegion ? agents[0] : undefined;
      if (queueRegion === undefined) {
        const reason =
          agents.length === 0
            ? "no region has an agent"
            : `no agent in region ${item.region} and policy ${policy.name} does not allow crossRegion`;
        result.unprotected.push({ item: item.id, region: item.region, policy: policy.name, reason });
        log({ event: "schedule.unprotected", item: item.id, region: item.region, policy: policy.name, reason });
        await fleet.items.update(
          item.id,
          () => emptyItem(item.id, item.kind, item.region, policy.name),
          (current) => ({ ...current, kind: item.kind, region: item.region, policy: policy.name, unprotected: reason, lastSeenAt: now }),
        );
        continue;
      }

      // Record the item (so status lists it) and repair a hold left by a job that already finished.
      const record = await fleet.items.update(
        item.id,
        () => emptyItem(item.id, item.kind, item.region, policy.name),
        (current) => ({ ...current, kind: item.kind, region: item.region, policy: policy.name, unprotected: "", lastSeenAt: now }),
      );
      if (record && isLate(policy, record, now)) {
        const lastGoodAt = record.lastGoodAt ? new Date(record.lastGoodAt).toISOString() : null;
        log({ event: "schedule.late", level: "error", alert: "rpo-missed", item: item.id, policy: policy.name, lastGoodAt, state: record.state });
      }
      if (record && record.state !== "idle") {
        const job = await fleet.jobs.get(record.jobId);
        if (!job || isTerminal(job.value.status)) {
          const heldBy = record.jobId;
          await fleet.items.update(
            item.id,
            () => record,
            (current) => (current.jobId === heldBy ? { ...current, state: "idle", jobId: "", queuedAt: 0 } : undefined),
          );
          log({ event: "schedule.repaired", item: item.id, jobId: heldBy });
        } else {
          if (job.value.status === "queued" && job.value.runs === 0 && now - record.queuedAt >= resendAfterMs) {
            await sendWork(fleet, job.value);
            result.resent.push({ item: item.id, jobId: job.value.jobId });
            log({ event: "schedule.resent", item: item.id, jobId: job.value.jobId });
          } else {
            result.busy.push({ item: item.id, jobId: record.jobId });
          }
          continue;
        }
      }

      const lastGood = record?.lastGoodAt ? new Date(record.lastGoodAt) : undefined;
      if (!isDue(policy.schedule, lastGood, new Date(now))) {
        result.notDue.push(item.id);
        continue;
      }
      const submitted = await submitJob(fleet, {
        machine: options.machineFor?.(item, policy) ?? "backup",
        item,
        queueRegion,
        policy: policy.name,
        input: { itemId: item.id, kind: item.kind, region: item.region, policy: policy.name, vault: policy.vault, retention: policy.retention },
        exclusive: true,
      });
      if (!submitted.submitted) {
        result.busy.push({ item: item.id, jobId: submitted.jobId });
        continue;
      }
      result.enqueued.push({ item: item.id, region: item.region, queueRegion, policy: policy.name, jobId: submitted.job.jobId });
      log({ event: "schedule.enqueued", item: item.id, queueRegion, policy: policy.name, jobId: submitted.job.jobId });
    } catch (error) {
      result.errors.push({ policy: policy.name, item: item.id, error: describeError(error) });
      log({ event: "schedule.item-failed", item: item.id, policy: policy.name, error: describeError(error) });
    }
  }
  log({
    event: "schedule.tick",
    enqueued: result.enqueued.length,
    notDue: result.notDue.length,
    busy: result.busy.length,
    unprotected: result.unprotected.length,
    missing: result.missing.length,
    errors: result.errors.length,
  });
  return result;
}
