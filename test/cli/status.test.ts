/**
 * `bulwark status` rows from the scheduler's records and the policies given: every item a policy
 * names (never backed up ones too) with its RPO, the age of its last good point and one of ok,
 * at risk, missed, never; an item follows the policy that names it now.
 */
import { describe, expect, test } from "vitest";
import type { ItemStatus } from "../../runtime/jobs/index.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { formatAge, statusRows, statusText } from "../../runtime/cli/status-view.ts";

const DISK = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks";
const HOUR = 3_600_000;
const NOW = new Date("2026-11-30T12:00:00Z");

function policy(name: string, resources: string[], schedule = "{ every: 4h }") {
  return parsePolicy(
    `name: ${name}\nvault: https://acct.blob.core.windows.net/vault\nprotect:\n  resources: [${resources.join(", ")}]\nschedule: ${schedule}\nretention: { last: 3 }\n`,
    `${name}.yaml`,
  );
}

/** An item as the scheduler records it, its last good point `hoursAgo` hours before NOW. */
function recorded(item: string, policyName: string, hoursAgo: number | null): ItemStatus {
  return {
    item,
    kind: "disk",
    region: "westeurope",
    policy: policyName,
    state: "idle",
    lastGoodPoint: hoursAgo === null ? null : "0123456789abcdef",
    lastGoodAt: hoursAgo === null ? null : new Date(NOW.getTime() - hoursAgo * HOUR).toISOString(),
    lastOutcome: hoursAgo === null ? "" : "succeeded",
    lastError: "",
    meetsRpo: false,
    unprotected: "",
    missing: false,
    copies: [],
  };
}

describe("status rows", () => {
  const every4h = policy("disks", [`${DISK}/fresh`, `${DISK}/due`, `${DISK}/late`, `${DISK}/new`]);

  test("every 4h (RPO 8h): a point 1h old is ok, 5h old at risk, 9h old missed, none never; the never-recorded item is listed", () => {
    const rows = statusRows([recorded(`${DISK}/fresh`, "disks", 1), recorded(`${DISK}/due`, "disks", 5), recorded(`${DISK}/late`, "disks", 9)], [every4h], NOW);
    expect(rows.map((r) => [r.item.split("/").pop(), r.protection, r.rpoMs, r.ageMs])).toEqual([
      ["due", "at risk", 8 * HOUR, 5 * HOUR],
      ["fresh", "ok", 8 * HOUR, 1 * HOUR],
      ["late", "missed", 8 * HOUR, 9 * HOUR],
      ["new", "never", 8 * HOUR, null],
    ]);
    expect(rows.find((r) => r.item.endsWith("/new"))).toMatchObject({ policy: "disks", lastGoodAt: null, lastGoodPoint: null });
  });

  test("an explicit rpo is the RPO shown and judged", () => {
    const strict = policy("strict", [`${DISK}/fresh`], "{ every: 4h, rpo: 2h }");
    const [row] = statusRows([recorded(`${DISK}/fresh`, "strict", 3)], [strict], NOW);
    expect(row).toMatchObject({ protection: "missed", rpoMs: 2 * HOUR, ageMs: 3 * HOUR });
  });

  test("an item recorded under an old policy name shows under the policy that names it now; one no given policy names is left out", () => {
    const renamed = policy("renamed", [`${DISK}/fresh`]);
    const rows = statusRows([recorded(`${DISK}/fresh`, "old-name", 1), recorded(`${DISK}/other`, "elsewhere", 1)], [renamed], NOW);
    expect(rows.map((r) => [r.item.split("/").pop(), r.policy, r.protection])).toEqual([["fresh", "renamed", "ok"]]);
  });

  test("an item the scheduler could not protect is missed, whatever its last point", () => {
    const [row] = statusRows([{ ...recorded(`${DISK}/fresh`, "disks", 1), unprotected: "no agent in westeurope" }], [policy("disks", [`${DISK}/fresh`])], NOW);
    expect(row.protection).toBe("missed");
  });

  test("the text has a header and aligned columns, names never-backed-up items, and says why an item is unprotected", () => {
    const rows = statusRows(
      [recorded(`${DISK}/fresh`, "disks", 1), { ...recorded(`${DISK}/late`, "disks", 30), unprotected: "no agent in westeurope" }],
      [every4h],
      NOW,
    );
    const lines = statusText(rows).split("\n");
    expect(lines[0].split(/\s{2,}/)).toEqual(["STATE", "ITEM", "POLICY", "RPO", "LAST GOOD", "AGE", "NOTE"]);
    expect(lines).toHaveLength(5);
    const itemColumn = lines[0].indexOf("ITEM");
    for (const line of lines.slice(1)) expect(line[itemColumn - 1], line).toBe(" ");
    expect(lines.find((l) => l.includes(" new "))).toMatch(/^never\s+new\s+disks\s+8h\s+never\s+-$/);
    expect(lines.find((l) => l.includes(" late "))).toMatch(/^missed\s+late\s+disks\s+8h\s+2026-11-29T06:00:00.000Z\s+1d 6h\s+UNPROTECTED: no agent in westeurope$/);
  });

  test("ages read in their two largest units", () => {
    expect([formatAge(0), formatAge(40_000), formatAge(25 * 60_000), formatAge(30 * HOUR + 5 * 60_000), formatAge(8 * HOUR)]).toEqual(["0s", "40s", "25m", "1d 6h", "8h"]);
  });
});
