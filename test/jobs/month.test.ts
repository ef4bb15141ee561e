import type { ContainerClient } from "@azure/storage-blob";
import { afterAll, beforeAll, expect, test } from "vitest";
import { ManualClock } from "../../runtime/jobs/clock.ts";
import type { MachineDefinition } from "../../runtime/jobs/machine.ts";
import { jobCreatedAt } from "../../runtime/jobs/records.ts";
import { itemStatuses } from "../../runtime/jobs/reports.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { StaticItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { planRetention } from "../../runtime/retention/gfs.ts";
import { Azurite } from "../support/azurite.ts";
import { fakeContainer, listKeys } from "./fake-machine.ts";
import { disk, testFleet } from "./harness.ts";

let azurite: Azurite;
let container: ContainerClient;

beforeAll(async () => {
  azurite = await Azurite.start();
  container = fakeContainer(azurite.connectionString, "month");
  await container.createIfNotExists();
});
afterAll(async () => {
  await azurite?.stop();
});

/** A one-step backup: the point is a blob named after the job, created once. */
function pointMachine(): MachineDefinition<{ itemId: string }> {
  return {
    name: "backup",
    initial: "commit",
    makesPoints: true,
    start: (input) => ({ itemId: String(input.itemId) }),
    states: {
      commit: {
        step: async (ctx, data) => {
          const key = `points/${ctx.jobId}`;
          try {
            await container.getBlockBlobClient(key).upload("p", 1, { conditions: { ifNoneMatch: "*" } });
          } catch (error) {
            if ((error as { statusCode?: number }).statusCode !== 409) throw error;
          }
          return { done: true, data };
        },
      },
    },
    metrics: () => ({ bytesRead: 10, bytesNew: 1, bytesStored: 1 }),
  };
}

test("a simulated month of schedule ticks, then retention, keeps exactly the points the policy says", async () => {
  const clock = new ManualClock(Date.UTC(2026, 10, 1)); // Sunday 1 November 2026, 00:00 UTC
  const fleet = await testFleet(azurite.connectionString, clock);
  const item = disk("s1", "d-month", "westeurope");
  const policy = parsePolicy(
    JSON.stringify({
      name: "month",
      vault: "/v",
      protect: { resources: [item.id] },
      schedule: { every: "4h" },
      retention: { last: 3, daily: 7, weekly: 4, monthly: 2 },
    }),
    "month.json",
  );
  const machines = [pointMachine()];
  let ticks = 0;
  let enqueued = 0;
  // A tick every two hours for the first two days (the item is due at every other tick), then every
  // four hours (due at each) to keep the test short.
  while (clock.now() < Date.UTC(2026, 11, 1)) {
    const tick = await scheduleTick({ fleet, policies: [policy], resolveItems: new StaticItemResolver([item]), regionsWithAgents: ["westeurope"] });
    ticks++;
    enqueued += tick.enqueued.length;
    if (tick.enqueued.length > 0) {
      const summary = await runWorker({ fleet, region: "westeurope", machines, limits: { perWorker: 1, perRegion: 1 }, leaseMs: 30_000, log: () => {} });
      expect(summary.succeeded).toBe(1);
    } else {
      expect(tick.notDue).toEqual([item.id]);
    }
    clock.advance((clock.now() < Date.UTC(2026, 10, 3) ? 2 : 4) * 3_600_000);
  }
  expect(ticks).toBe(24 + 28 * 6);
  expect(enqueued).toBe(180);

  const keys = await listKeys(container, "points/");
  expect(keys).toHaveLength(180);
  const points = keys.map((key) => {
    const jobId = key.slice("points/".length);
    return { id: key, time: new Date(jobCreatedAt(jobId)) };
  });
  const plan = planRetention(points, policy.retention);
  for (const point of plan.remove) await container.getBlockBlobClient(point.id).delete();

  const kept = (await listKeys(container, "points/")).map((key) => new Date(jobCreatedAt(key.slice(7))).toISOString()).sort().reverse();
  expect(kept).toEqual([
    "2026-11-30T20:00:00.000Z",
    "2026-11-30T16:00:00.000Z",
    "2026-11-30T12:00:00.000Z",
    "2026-11-29T20:00:00.000Z",
    "2026-11-28T20:00:00.000Z",
    "2026-11-27T20:00:00.000Z",
    "2026-11-26T20:00:00.000Z",
    "2026-11-25T20:00:00.000Z",
    "2026-11-24T20:00:00.000Z",
    "2026-11-22T20:00:00.000Z",
    "2026-11-15T20:00:00.000Z",
  ]);

  const [status] = await itemStatuses(fleet.items, [policy], Date.UTC(2026, 10, 30, 23));
  expect(status).toMatchObject({ item: item.id, lastGoodAt: "2026-11-30T20:00:00.000Z", meetsRpo: true });
}, 90_000);
