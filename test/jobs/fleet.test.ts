import type { ContainerClient } from "@azure/storage-blob";
import { afterAll, beforeAll, expect, test } from "vitest";
import { itemStatuses, listRecentJobs } from "../../runtime/jobs/reports.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import type { Fleet } from "../../runtime/jobs/submit.ts";
import type { MachineDefinition } from "../../runtime/jobs/machine.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { StaticItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { Azurite } from "../support/azurite.ts";
import { waitFor } from "../support/wait.ts";
import { fakeContainer, fakeMachine, listKeys, pointKey } from "./fake-machine.ts";
import { collectLog, disk, queueLength, ShiftedClock, sqlDb, testFleet, vm } from "./harness.ts";

let azurite: Azurite;
let container: ContainerClient;

beforeAll(async () => {
  azurite = await Azurite.start();
  container = fakeContainer(azurite.connectionString);
  await container.createIfNotExists();
});
afterAll(async () => {
  await azurite?.stop();
});

const HOUR = 3_600_000;
const web1 = vm("s1", "web1", "West Europe");
const web2 = vm("s1", "web2", "westeurope");
const diskWe = disk("s1", "d-we", "westeurope", { backup: "gold" });
const diskNe1 = disk("s1", "d-ne1", "northeurope", { backup: "gold" });
const diskNe2 = disk("s1", "d-ne2", "northeurope", { backup: "gold" });
const diskSilver = disk("s1", "d-silver", "northeurope", { backup: "silver" });
const sqlNe = sqlDb("s1", "sql1", "orders", "northeurope");
const east = vm("s1", "east1", "eastus");
const far = sqlDb("s1", "sql9", "archive", "southindia");
const inventory = [web1, web2, diskWe, diskNe1, diskNe2, diskSilver, sqlNe, east, far];

const fleetPolicy = parsePolicy(
  JSON.stringify({
    name: "fleet",
    vault: "https://isolated.blob.core.windows.net/vault",
    protect: {
      resources: [web1.id, web2.id, sqlNe.id, east.id],
      tagged: { type: "Microsoft.Compute/disks", tag: "backup=gold", subscriptions: ["s1"] },
    },
    schedule: { every: "4h" },
    retention: { last: 6 },
  }),
  "fleet.json",
);
const farPolicy = parsePolicy(
  JSON.stringify({
    name: "far",
    vault: "https://isolated.blob.core.windows.net/vault",
    protect: { resources: [far.id] },
    schedule: { every: "4h" },
    retention: { last: 6 },
    crossRegion: true,
  }),
  "far.json",
);
const policies = [fleetPolicy, farPolicy];
const resolver = new StaticItemResolver(inventory);
const REGIONS = ["westeurope", "northeurope"];

/**
 * The fake machine, whose copy step waits for `gate` (when given) after telling `entered`: a test
 * holds jobs in flight for as long as it needs them there, instead of guessing how long they run.
 */
function fleetMachine(gate?: { open: Promise<void>; entered: Set<string> }): MachineDefinition<any> {
  const machine = fakeMachine(container, { defaults: { slowState: "copy", slowMs: 300 } });
  if (!gate) return machine;
  const copy = machine.states.copy;
  return {
    ...machine,
    states: {
      ...machine.states,
      copy: {
        ...copy,
        step: async (ctx, data) => {
          gate.entered.add(ctx.jobId);
          await gate.open;
          return copy.step(ctx, data);
        },
      },
    },
  };
}

async function runFleetWorkers(fleet: Fleet, logs: Map<string, Record<string, unknown>[]>, gate?: { open: Promise<void>; entered: Set<string> }) {
  const machines = [fleetMachine(gate)];
  const runs = REGIONS.flatMap((region) =>
    [1, 2].map((n) => {
      const workerId = `${region}-w${n}`;
      const log = collectLog();
      logs.set(workerId, log.lines);
      return runWorker({
        fleet,
        region,
        machines,
        limits: { perWorker: 2, perRegion: 3 },
        workerId,
        leaseMs: 2000,
        pollMs: 100,
        untilDrained: true,
        log: log.sink,
      });
    }),
  );
  return Promise.all(runs);
}

test("a fleet across two regions with two workers per region runs several schedule ticks", async () => {
  const clock = new ShiftedClock();
  const fleet = await testFleet(azurite.connectionString, clock);
  const tick = () => scheduleTick({ fleet, policies, resolveItems: resolver, regionsWithAgents: REGIONS });

  // Tick 1: everything protected is due; each item goes to the queue of its own region.
  const first = await tick();
  const byItem = new Map(first.enqueued.map((e) => [e.item, e]));
  expect([...byItem.keys()].sort()).toEqual([web1.id, web2.id, diskWe.id, diskNe1.id, diskNe2.id, sqlNe.id, far.id].sort());
  expect(byItem.get(web1.id)!.queueRegion).toBe("westeurope");
  expect(byItem.get(diskNe2.id)!.queueRegion).toBe("northeurope");
  expect(byItem.get(sqlNe.id)!.queueRegion).toBe("northeurope");
  // crossRegion: the far item goes to the first region that has an agent.
  expect(byItem.get(far.id)).toMatchObject({ region: "southindia", queueRegion: "westeurope" });
  // No agent in eastus and no crossRegion: reported, never sent elsewhere.
  expect(first.unprotected).toEqual([
    { item: east.id, region: "eastus", policy: "fleet", reason: "no agent in region eastus and policy fleet does not allow crossRegion" },
  ]);
  expect(await queueLength(fleet, "westeurope")).toBe(4);
  expect(await queueLength(fleet, "northeurope")).toBe(3);

  // A second tick before any worker ran enqueues nothing: every item is already queued.
  const again = await tick();
  expect(again.enqueued).toEqual([]);
  expect(again.busy).toHaveLength(7);
  expect(await queueLength(fleet, "westeurope")).toBe(4);

  // Workers run; a tick while they run still enqueues nothing. The jobs are held in their copy
  // step until the tick is done: with three jobs at once per region (perRegion: 3), six are in
  // flight and one waits in the west queue, whatever the machine's speed.
  const logs = new Map<string, Record<string, unknown>[]>();
  let release!: () => void;
  const gate = { open: new Promise<void>((r) => (release = r)), entered: new Set<string>() };
  const working = runFleetWorkers(fleet, logs, gate);
  try {
    await waitFor("six jobs in their copy step", () => gate.entered.size >= 6, 60_000, 20);
    const during = await tick();
    expect(during.enqueued).toEqual([]);
    expect(during.busy.map((b) => b.item).sort()).toEqual([...byItem.keys()].sort());
    expect(gate.entered.size).toBe(6); // the region limits held while the tick ran
  } finally {
    release();
  }
  const summaries = await working;
  expect(summaries.reduce((n, s) => n + s.succeeded, 0)).toBe(7);

  // Regional matching: each worker claimed only jobs from its own region's queue.
  for (const [workerId, lines] of logs) {
    const region = workerId.split("-")[0];
    for (const claim of lines.filter((l) => l.event === "job.claimed")) {
      expect(byItem.get(String(claim.item))!.queueRegion).toBe(region);
    }
  }
  // Both workers of a region took part (two jobs at once per worker, three per region).
  for (const id of ["westeurope-w1", "westeurope-w2", "northeurope-w1", "northeurope-w2"]) {
    expect(logs.get(id)!.some((l) => l.event === "job.claimed")).toBe(true);
  }
  for (const item of [web1, web2, diskWe, diskNe1, diskNe2, sqlNe, far]) {
    expect(await listKeys(container, pointKey(item.id, ""))).toHaveLength(1);
  }

  let status = await itemStatuses(fleet.items, policies, clock.now());
  expect(status.filter((s) => s.meetsRpo).map((s) => s.item).sort()).toEqual([...byItem.keys()].sort());
  expect(status.find((s) => s.item === east.id)).toMatchObject({ meetsRpo: false, lastGoodPoint: null, unprotected: expect.stringMatching(/no agent in region eastus/) });
  expect(status.find((s) => s.item === web1.id)).toMatchObject({ lastGoodPoint: "point-of-web1", lastOutcome: "succeeded", state: "idle", region: "westeurope" });

  // Two hours later nothing is due.
  clock.advance(2 * HOUR);
  const early = await tick();
  expect(early.enqueued).toEqual([]);
  expect(early.notDue).toHaveLength(7);

  // Four hours after the first run everything is due again, twice more.
  for (let round = 2; round <= 3; round++) {
    clock.advance(2 * HOUR + 60_000);
    const due = await tick();
    expect(due.enqueued).toHaveLength(7);
    expect((await tick()).enqueued).toEqual([]);
    const more = await runFleetWorkers(fleet, new Map());
    expect(more.reduce((n, s) => n + s.succeeded, 0)).toBe(7);
    for (const item of [web1, diskNe1, far]) {
      expect(await listKeys(container, pointKey(item.id, ""))).toHaveLength(round);
    }
    clock.advance(2 * HOUR);
  }

  const recent = await listRecentJobs(fleet.jobs, { limit: 100 });
  expect(recent).toHaveLength(21);
  expect(recent.every((j) => j.status === "succeeded")).toBe(true);
  const created = recent.map((j) => Date.parse(j.created));
  expect([...created].sort((a, b) => b - a)).toEqual(created); // newest first
  expect((await fleet.reports.list({ limit: 5 })).map((r) => r.jobId)).toEqual(recent.slice(0, 5).map((j) => j.jobId));

  // Nine hours without a backup: more than one 4-hour run is missing, so the RPO is not met.
  clock.advance(9 * HOUR);
  status = await itemStatuses(fleet.items, policies, clock.now());
  expect(status.filter((s) => s.meetsRpo)).toEqual([]);
}, 300_000);

test("a job whose message was lost is sent again; a finished job's hold on its item is repaired", async () => {
  const clock = new ShiftedClock();
  const fleet = await testFleet(azurite.connectionString, clock);
  const single = parsePolicy(
    JSON.stringify({ name: "single", vault: "/v", protect: { resources: [web1.id] }, schedule: { every: "4h" }, retention: { last: 1 } }),
    "single.json",
  );
  const tickOptions = { fleet, policies: [single], resolveItems: new StaticItemResolver([web1]), regionsWithAgents: REGIONS, resendAfterMs: HOUR };
  const first = await scheduleTick(tickOptions);
  expect(first.enqueued).toHaveLength(1);
  const queue = await fleet.storage.queue("westeurope");
  await queue.clearMessages(); // the message is lost

  clock.advance(30 * 60_000);
  expect((await scheduleTick(tickOptions)).busy).toHaveLength(1);
  clock.advance(31 * 60_000);
  const resent = await scheduleTick(tickOptions);
  expect(resent.resent).toEqual([{ item: web1.id, jobId: first.enqueued[0].jobId }]);
  expect(await queueLength(fleet, "westeurope")).toBe(1);

  // The job finishes but (a crash) the item was not released: the next tick repairs it.
  const summary = await runWorker({
    fleet,
    region: "westeurope",
    machines: [fakeMachine(container)],
    limits: { perWorker: 1, perRegion: 1 },
    leaseMs: 2000,
    pollMs: 100,
    log: () => {},
  });
  expect(summary.succeeded).toBe(1);
  await fleet.items.update(web1.id, () => { throw new Error("missing"); }, (item) => ({ ...item, state: "running", jobId: first.enqueued[0].jobId }));
  clock.advance(5 * HOUR);
  const repaired = await scheduleTick(tickOptions);
  expect(repaired.enqueued).toHaveLength(1);
  expect(repaired.enqueued[0].jobId).not.toBe(first.enqueued[0].jobId);
});
