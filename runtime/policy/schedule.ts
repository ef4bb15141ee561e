/**
 * When a protected item is due, and whether its last good point meets the policy's RPO. Pure
 * functions of the schedule, the item's history and `now`, so the scheduler is testable with a
 * simulated clock.
 */
import { CronExpression } from "./cron.ts";

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** Parses "30m", "4h", "1d", "2w"; undefined if the text is not such a duration. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+)\s*([mhdw])$/.exec(text.trim());
  if (!match) return undefined;
  const value = Number(match[1]) * UNIT_MS[match[2]];
  return value > 0 ? value : undefined;
}

export function formatDuration(ms: number): string {
  for (const unit of ["w", "d", "h", "m"]) {
    if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${Math.round(ms / 1000)}s`;
}

export type Schedule =
  | { kind: "every"; intervalMs: number; rpoMs?: number; text: string }
  | { kind: "cron"; cron: CronExpression; rpoMs?: number; text: string };

/**
 * How much earlier than a full interval an `every` item is already due: scheduler ticks start a
 * few seconds late or early, and without slack "every 4h" with a tick at 04:00:03 and the next at
 * 08:00:01 would wait for the tick after. 5% of the interval, at most 5 minutes.
 */
export function everySlackMs(intervalMs: number): number {
  return Math.min(intervalMs * 0.05, 5 * 60_000);
}

/**
 * Due when the item has never succeeded, or:
 * - every: an interval (less a little slack) has passed since its last successful run was scheduled;
 * - cron: the schedule fired after its last successful run was scheduled (and at or before now).
 * `lastSuccessAt` is when that run was scheduled (its job was created), not when it ended, so
 * long or queued backups do not push the schedule later and later.
 */
export function isDue(schedule: Schedule, lastSuccessAt: Date | undefined, now: Date): boolean {
  if (lastSuccessAt === undefined) return true;
  if (schedule.kind === "every") {
    return now.getTime() - lastSuccessAt.getTime() >= schedule.intervalMs - everySlackMs(schedule.intervalMs);
  }
  const fired = schedule.cron.previousFire(now);
  return fired !== undefined && fired.getTime() > lastSuccessAt.getTime();
}

/**
 * The oldest a last good point may be (as of now) and still meet the policy's RPO. With an explicit
 * `rpo` that is now - rpo. Without one, at most one scheduled run may be outstanding (the one that is
 * running now): every → now - 2 × interval; cron → the fire before the latest fire.
 */
export function rpoDeadline(schedule: Schedule, now: Date): Date | undefined {
  if (schedule.rpoMs !== undefined) return new Date(now.getTime() - schedule.rpoMs);
  if (schedule.kind === "every") return new Date(now.getTime() - 2 * schedule.intervalMs);
  const latest = schedule.cron.previousFire(now);
  if (!latest) return undefined;
  return schedule.cron.previousFire(new Date(latest.getTime() - 60_000));
}

/** Whether a point scheduled at `lastGoodAt` meets the RPO now. */
export function meetsRpo(schedule: Schedule, lastGoodAt: Date | undefined, now: Date): boolean {
  if (lastGoodAt === undefined) return false;
  const deadline = rpoDeadline(schedule, now);
  return deadline === undefined || lastGoodAt.getTime() >= deadline.getTime();
}
