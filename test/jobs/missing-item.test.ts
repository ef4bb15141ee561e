/**
 * Issue 8, item 17: a policy naming one resource that no longer exists still protects the rest.
 * The scheduler enqueues the items that exist, reports the missing one in the tick's result and in
 * one alert-able JSON log line, and `bulwark status` lists it as missing (never meeting its RPO).
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import { itemStatuses } from "../../runtime/jobs/reports.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { StaticItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { Azurite } from "../support/azurite.ts";
import { collectLog, disk, queueLength, testFleet } from "./harness.ts";

let azurite: Azurite;

beforeAll(async () => {
  azurite = await Azurite.start();
});
afterAll(async () => {
  await azurite?.stop();
});

test("a policy naming one deleted disk enqueues the disks that exist and reports the deleted one as missing", async () => {
  const fleet = await testFleet(azurite.connectionString);
  const kept = disk("s1", "d-kept", "westeurope");
  const alsoKept = disk("s1", "d-also", "westeurope");
  const deleted = disk("s1", "d-deleted", "westeurope");
  const policy = parsePolicy(
    JSON.stringify({
      name: "three-disks",
      vault: "https://isolated.blob.core.windows.net/vault",
      protect: { resources: [kept.id, deleted.id, alsoKept.id] },
      schedule: { every: "4h" },
      retention: { last: 3 },
    }),
    "three-disks.json",
  );
  // The deleted disk is not in the inventory: ARM answers 404 for it.
  const resolver = new StaticItemResolver([kept, alsoKept]);
  const log = collectLog();
  const result = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope"], log: log.sink });

  expect(result.enqueued.map((e) => e.item).sort()).toEqual([alsoKept.id, kept.id].sort());
  expect(await queueLength(fleet, "westeurope")).toBe(2);
  expect(result.errors).toEqual([]);
  expect(result.missing).toEqual([{ item: deleted.id, policy: "three-disks", reason: expect.stringMatching(/d-deleted.*does not exist/) }]);
  // One JSON line an alert rule can match on: its event, level and the item.
  const alerts = log.lines.filter((l) => l.event === "schedule.missing");
  expect(alerts).toEqual([expect.objectContaining({ level: "error", alert: "item-missing", item: deleted.id, policy: "three-disks" })]);
  expect(JSON.parse(JSON.stringify(alerts[0]))).toEqual(alerts[0]);

  const statuses = await itemStatuses(fleet.items, [policy], fleet.clock.now());
  const byItem = new Map(statuses.map((s) => [s.item, s]));
  expect(byItem.get(deleted.id)).toMatchObject({ missing: true, meetsRpo: false, unprotected: expect.stringMatching(/does not exist/) });
  expect(byItem.get(kept.id)).toMatchObject({ missing: false, state: "queued" });
  expect(byItem.get(alsoKept.id)).toMatchObject({ missing: false, state: "queued" });

  // When the disk comes back, the next tick protects it and it is no longer missing.
  const again = await scheduleTick({ fleet, policies: [policy], resolveItems: new StaticItemResolver([kept, alsoKept, deleted]), regionsWithAgents: ["westeurope"] });
  expect(again.missing).toEqual([]);
  expect(again.enqueued.map((e) => e.item)).toEqual([deleted.id]);
  const after = await itemStatuses(fleet.items, [policy], fleet.clock.now());
  expect(after.find((s) => s.item === deleted.id)).toMatchObject({ missing: false, unprotected: "", state: "queued" });
});
