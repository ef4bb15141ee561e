/**
 * Grandfather-father-son retention, with restic `forget` semantics: points are walked newest
 * first; `last` keeps the N newest; each calendar rule keeps the newest point of each of the N
 * most recent distinct buckets (hour, day, ISO week, month, year) that hold a point. A point is
 * kept when any rule keeps it. Buckets are computed in UTC so every worker agrees.
 *
 * Pure: it only says what to keep. Deleting (and never deleting what a kept point references or
 * what is still immutable) is the vault's prune.
 */

import { UsageError } from "../errors.ts";

export interface RetentionRule {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
}

export const RETENTION_KINDS = ["last", "hourly", "daily", "weekly", "monthly", "yearly"] as const;
export type RetentionKind = (typeof RETENTION_KINDS)[number];

export interface RetentionResult<P> {
  /** Newest first. */
  keep: P[];
  /** Newest first. */
  remove: P[];
  /** Why each kept point is kept, by point id: e.g. ["last", "daily 2026-11-20"]. */
  reasons: Map<string, string[]>;
}

/** True when the rule keeps a bounded number of points (callers refuse to prune with an empty rule). */
export function ruleIsEmpty(rule: RetentionRule): boolean {
  return RETENTION_KINDS.every((kind) => !rule[kind]);
}

function pad(value: number, width = 2): string {
  return String(value).padStart(width, "0");
}

/** ISO 8601 week-numbering year and week of a UTC instant (weeks start on Monday; week 1 holds the first Thursday). */
export function isoWeek(time: Date): { year: number; week: number } {
  const day = new Date(Date.UTC(time.getUTCFullYear(), time.getUTCMonth(), time.getUTCDate()));
  const weekday = day.getUTCDay() || 7; // Monday 1 .. Sunday 7
  day.setUTCDate(day.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const year = day.getUTCFullYear();
  const firstDay = Date.UTC(year, 0, 1);
  const week = Math.floor((day.getTime() - firstDay) / 86_400_000 / 7) + 1;
  return { year, week };
}

/** The bucket label of a point for a calendar rule, which is also what the reason shows. */
export function bucketOf(kind: Exclude<RetentionKind, "last">, time: Date): string {
  const y = time.getUTCFullYear();
  const m = pad(time.getUTCMonth() + 1);
  const d = pad(time.getUTCDate());
  switch (kind) {
    case "hourly":
      return `${y}-${m}-${d}T${pad(time.getUTCHours())}`;
    case "daily":
      return `${y}-${m}-${d}`;
    case "weekly": {
      const { year, week } = isoWeek(time);
      return `${year}-W${pad(week)}`;
    }
    case "monthly":
      return `${y}-${m}`;
    case "yearly":
      return String(y);
  }
}

function checkCount(kind: RetentionKind, value: number | undefined): number {
  if (value === undefined) return 0;
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`retention.${kind} must be a whole number of points, 0 or more (got ${value})`);
  }
  return value;
}

export function selectRetained<P extends { id: string; time: Date }>(
  points: P[],
  rule: RetentionRule,
  options: { timeZone?: "UTC" } = {},
): RetentionResult<P> {
  if (options.timeZone !== undefined && options.timeZone !== "UTC") {
    throw new RangeError(`retention is computed in UTC only (got time zone ${String(options.timeZone)})`);
  }
  // Newest first; equal times in a stable order (by id) so the result does not depend on input order.
  const ordered = [...points].sort(
    (a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  const reasons = new Map<string, string[]>();
  if (ruleIsEmpty(rule)) {
    for (const point of ordered) reasons.set(point.id, ["no retention rule"]);
    return { keep: ordered, remove: [], reasons };
  }

  let lastRemaining = checkCount("last", rule.last);
  const calendar = (["hourly", "daily", "weekly", "monthly", "yearly"] as const).map((kind) => ({
    kind,
    remaining: checkCount(kind, rule[kind]),
    previous: undefined as string | undefined,
  }));

  const keep: P[] = [];
  const remove: P[] = [];
  for (const point of ordered) {
    const why: string[] = [];
    if (lastRemaining > 0) {
      lastRemaining--;
      why.push("last");
    }
    for (const bucket of calendar) {
      if (bucket.remaining <= 0) continue;
      const label = bucketOf(bucket.kind, point.time);
      if (label !== bucket.previous) {
        bucket.previous = label;
        bucket.remaining--;
        why.push(`${bucket.kind} ${label}`);
      }
    }
    if (why.length > 0) {
      keep.push(point);
      reasons.set(point.id, why);
    } else {
      remove.push(point);
    }
  }
  return { keep, remove, reasons };
}

/**
 * What a prune may remove: selectRetained, but refusing a rule that keeps nothing by any rule
 * (which selectRetained reads as "keep everything") so a prune is never run on an empty rule by mistake.
 */
export function planRetention<P extends { id: string; time: Date }>(points: P[], rule: RetentionRule): RetentionResult<P> {
  if (ruleIsEmpty(rule)) {
    throw new UsageError(`a retention rule must keep something: set at least one of ${RETENTION_KINDS.join(", ")} above 0`);
  }
  return selectRetained(points, rule);
}
