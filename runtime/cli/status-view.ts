/**
 * `bulwark status` as a person reads it: every item the given policies protect by id, those never
 * backed up included, each with its policy's RPO, the age of its last good point and one word for
 * where it stands. Items the policies select by tag are known once the scheduler has recorded them.
 */
import type { ItemStatus } from "../jobs/index.ts";
import type { Policy } from "../policy/policy.ts";
import { isDue, rpoDeadline, type Schedule } from "../policy/schedule.ts";

/**
 * never: no good point yet; missed: the last good point is older than the RPO allows; at risk: the
 * RPO holds, but a scheduled run is due (if it fails, the RPO is missed); ok: nothing due.
 */
export type Protection = "ok" | "at risk" | "missed" | "never";

export interface StatusRow extends ItemStatus {
  protection: Protection;
  /** The oldest the last good point may be now, in ms; null when the schedule has not fired twice yet. */
  rpoMs: number | null;
  /** How old the last good point is now, in ms; null when there is none. */
  ageMs: number | null;
}

export function protection(schedule: Schedule, lastGoodAt: Date | undefined, now: Date): Protection {
  if (!lastGoodAt) return "never";
  const deadline = rpoDeadline(schedule, now);
  if (deadline && lastGoodAt.getTime() < deadline.getTime()) return "missed";
  return isDue(schedule, lastGoodAt, now) ? "at risk" : "ok";
}

/** A row for an item a policy names that the scheduler has not recorded: never backed up. */
function neverRecorded(item: string, policy: Policy): ItemStatus {
  return {
    item,
    kind: "",
    region: "",
    policy: policy.name,
    state: "",
    lastGoodPoint: null,
    lastGoodAt: null,
    lastOutcome: "",
    lastError: "",
    meetsRpo: false,
    unprotected: "",
    missing: false,
    copies: [],
  };
}

/**
 * The rows for `policies`: a recorded item under the policy that names it now (a renamed policy
 * file takes its items along), one recorded under a policy not given is left out; each item the
 * policies name that has no record is a row of its own.
 */
export function statusRows(recorded: ItemStatus[], policies: Policy[], now: Date): StatusRow[] {
  const byName = new Map(policies.map((p) => [p.name, p]));
  const naming = new Map<string, Policy>();
  for (const policy of policies) for (const id of policy.protect.resources) if (!naming.has(id.toLowerCase())) naming.set(id.toLowerCase(), policy);
  const rows: StatusRow[] = [];
  const seen = new Set<string>();
  const add = (status: ItemStatus, policy: Policy) => {
    const lastGood = status.lastGoodAt ? new Date(status.lastGoodAt) : undefined;
    const deadline = rpoDeadline(policy.schedule, now);
    rows.push({
      ...status,
      policy: policy.name,
      protection: status.unprotected ? "missed" : protection(policy.schedule, lastGood, now),
      rpoMs: deadline ? now.getTime() - deadline.getTime() : null,
      ageMs: lastGood ? Math.max(0, now.getTime() - lastGood.getTime()) : null,
    });
    seen.add(status.item.toLowerCase());
  };
  for (const status of recorded) {
    const policy = naming.get(status.item.toLowerCase()) ?? byName.get(status.policy);
    if (policy) add(status, policy);
  }
  for (const [id, policy] of naming) {
    if (!seen.has(id)) add(neverRecorded(policy.protect.resources.find((r) => r.toLowerCase() === id) ?? id, policy), policy);
  }
  return rows.sort((a, b) => a.item.localeCompare(b.item));
}

/** `3d 4h`, `25m`, `40s`: the two largest units. */
export function formatAge(ms: number): string {
  const units: [string, number][] = [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]];
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of units) {
    if (rest >= size || (parts.length === 0 && unit === "s")) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

/** Rows under a header, columns aligned; the item is its resource name, its id in --json. */
export function statusText(rows: StatusRow[]): string {
  if (rows.length === 0) return "no protected items: the policies name none, and the scheduler has recorded none yet";
  const table = [
    ["STATE", "ITEM", "POLICY", "RPO", "LAST GOOD", "AGE", "NOTE"],
    ...rows.map((r) => [
      r.protection,
      r.item.split("/").slice(-1)[0],
      r.policy,
      r.rpoMs === null ? "-" : formatAge(r.rpoMs),
      r.lastGoodAt ?? "never",
      r.ageMs === null ? "-" : formatAge(r.ageMs),
      [r.unprotected && `UNPROTECTED: ${r.unprotected}`, ...r.copies.map((c) => `copy ${c.lagMs === null ? "none yet" : `lag ${formatAge(c.lagMs)}`}`)].filter(Boolean).join("; "),
    ]),
  ];
  const widths = table[0].map((_, column) => Math.max(...table.map((row) => row[column].length)));
  return table.map((row) => row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd()).join("\n");
}
