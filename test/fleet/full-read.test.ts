/**
 * A worker's disk backup that must read the whole disk where an incremental was due (here: the
 * page-range diff refuses the previous snapshot, as Azure does with 409 PreviousSnapshotNotFound)
 * says so in the job's log, so an operator sees a diff that keeps failing before the bill does
 * (found by review; issue 10). The point is still the disk as it is.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import { ManualClock } from "../../runtime/jobs/clock.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { backupMachine } from "../../runtime/workloads/backup-machine.ts";
import { workloadEnvironment } from "../../runtime/workloads/environment.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { KiB, MiB, makeDisk, pattern, restoreBytes, startFleetWorld, type FleetWorld, adoptWorldCredentials } from "./harness.ts";

const HOUR = 3_600_000;
let world: FleetWorld;
let restoreEnvironment: (() => void) | undefined;

beforeAll(async () => {
  world = await startFleetWorld();
  restoreEnvironment = adoptWorldCredentials(world);
}, 60_000);

afterAll(async () => {
  restoreEnvironment?.();
  await world?.stop();
});

test("a worker's backup that reads the whole disk instead of the changes logs disk.full-read with the reason", async () => {
  const disk = makeDisk(world, "fullread", "fr-disk", 2 * MiB, { seed: 11 });
  const policy = parsePolicy(`name: fr\nvault: ${world.vault}\nprotect:\n  resources: [${disk.id}]\nschedule: { every: 1d }\nretention: { last: 5 }\n`, "fr.yaml");
  const env = await workloadEnvironment({ ...world.workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const clock = new ManualClock(Date.UTC(2026, 7, 1, 1));
  const logged: (Record<string, unknown> & { round: number })[] = [];
  const points: string[] = [];
  for (let round = 0; round < 2; round++) {
    world.emulator.control.writeDisk(disk.id, 64 * KiB * round, pattern(700 + round, 64 * KiB));
    if (round === 1) world.emulator.control.refusePreviousSnapshot("PreviousSnapshotNotFound");
    const fleet = await world.fleet(clock);
    const resolver = new ArmItemResolver(world.emulator.credential(), { endpoint: world.emulator.armEndpoint });
    const tick = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope", "northeurope"] });
    await runWorker({
      fleet,
      region: "westeurope",
      machines: [backupMachine(env)],
      limits: { perWorker: 1, perRegion: 1 },
      leaseMs: 30_000,
      pollMs: 100,
      lockRetryMs: 100,
      untilDrained: true,
      log: (line) => void logged.push({ ...line, round }),
    });
    for (const queued of tick.enqueued) points.push(String((await fleet.jobs.get(queued.jobId))!.value.data.pointId));
    clock.advance(24 * HOUR);
  }
  const fullReads = logged.filter((l) => l.event === "disk.full-read");
  expect(fullReads).toHaveLength(1);
  expect(fullReads[0]).toMatchObject({ round: 1, diskId: disk.id, reason: expect.stringMatching(/409 PreviousSnapshotNotFound/) });
  expect(points).toHaveLength(2);
  expect((await restoreBytes(world, points[1]!)).equals(world.emulator.control.readImage(disk.id))).toBe(true);
}, 300_000);
