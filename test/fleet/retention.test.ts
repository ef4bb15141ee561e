/**
 * Retention with the real backup machine over a simulated month: scheduler ticks and a worker run in
 * this process on an injected clock (no sleeps), backing up a disk in the emulator into a vault in
 * Azurite. Each job's retain step applies the policy; at the end the item's points are exactly the
 * GFS selection (retention/gfs.ts) of every point the jobs made, each still restoring the disk as
 * it was when it was taken, and the vault verifies.
 */
import { expect, test } from "vitest";
import { ManualClock } from "../../runtime/jobs/clock.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { selectRetained } from "../../runtime/retention/gfs.ts";
import { backupMachine } from "../../runtime/workloads/backup-machine.ts";
import { workloadEnvironment } from "../../runtime/workloads/environment.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { KiB, MiB, expectNothingLeaked, expectVaultVerifies, makeDisk, pattern, restoreBytes, vaultManifests, fleetWorldForFile } from "./harness.ts";

const HOUR = 3_600_000;
const world = fleetWorldForFile();

test("a simulated month of ticks every 12 hours keeps exactly the points the policy's GFS rule selects", async () => {
  world().emulator.world.addResourceGroup("keep", "westeurope");
  const diskId = makeDisk(world(), "keep", "k-disk", 1 * MiB, { seed: 77 }).id;
  const policy = parsePolicy(
    `name: keep
vault: ${world().vault}
protect:
  resources: [${diskId}]
schedule: { every: 1d }
retention: { last: 2, daily: 3, weekly: 4 }
`,
    "keep.yaml",
  );
  // The month runs on the fleet's manual clock, the emulator's snapshot rate limit (seven per disk
  // every five minutes) on real time: sixty snapshots in a minute of real time would be throttled
  // for many real minutes. The rate limit has its own tests (test/emulator/compute-limits.test.ts).
  world().emulator.control.computeKnobs({ snapshotRateWindowMs: 0 });
  const clock = new ManualClock(Date.UTC(2026, 2, 2, 1)); // Monday 2 March 2026, 01:00 UTC
  const fleet = await world().fleet(clock);
  const env = await workloadEnvironment({ ...world().workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const resolver = new ArmItemResolver(world().emulator.credential(), { endpoint: world().emulator.armEndpoint });
  const machines = [backupMachine(env)];

  const made: { id: string; time: Date; image: Buffer }[] = [];
  let ticks = 0;
  while (clock.now() < Date.UTC(2026, 3, 1, 1)) {
    // The disk changes between backups: one 64 KiB block per tick.
    world().emulator.control.writeDisk(diskId, (ticks % 16) * 64 * KiB, pattern(1000 + ticks, 64 * KiB));
    const image = world().emulator.control.readImage(diskId);
    const tick = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope", "northeurope"] });
    expect(tick.errors).toEqual([]);
    ticks++;
    if (tick.enqueued.length > 0) {
      const takenAt = clock.now();
      const summary = await runWorker({ fleet, region: "westeurope", machines, limits: { perWorker: 1, perRegion: 1 }, leaseMs: 30_000, pollMs: 100, log: () => {} });
      expect(summary).toMatchObject({ succeeded: 1, failed: 0 });
      const job = (await fleet.jobs.get(tick.enqueued[0]!.jobId))!.value;
      expect(job.status).toBe("succeeded");
      made.push({ id: String(job.data.pointId), time: new Date(takenAt), image });
    } else {
      expect(tick.notDue).toEqual([diskId]);
    }
    clock.advance(12 * HOUR);
  }
  expect(ticks).toBe(60);
  expect(made).toHaveLength(30);

  const points = (await vaultManifests(world())).filter((p) => p.source.path.toLowerCase() === diskId.toLowerCase());
  // Each point carries the (simulated) time its snapshot was taken.
  for (const point of points) expect(new Date(point.time).getTime()).toBe(made.find((m) => m.id === point.id)!.time.getTime());
  const expected = selectRetained(made, policy.retention).keep;
  expect(points.map((p) => p.id).sort()).toEqual(expected.map((p) => p.id).sort());
  // Spelled out: the two newest and the newest of each of the three newest days (29-31 March),
  // and the newest of each of the four newest ISO weeks (Tuesday 31 March, then Sundays 29, 22, 15).
  expect(points.map((p) => p.time).sort()).toEqual([
    "2026-03-15T01:00:00.000Z",
    "2026-03-22T01:00:00.000Z",
    "2026-03-29T01:00:00.000Z",
    "2026-03-30T01:00:00.000Z",
    "2026-03-31T01:00:00.000Z",
  ]);
  for (const point of points) expect((await restoreBytes(world(), point.id)).equals(made.find((m) => m.id === point.id)!.image)).toBe(true);
  await expectVaultVerifies(world());
  await expectNothingLeaked(world(), [diskId]);
}, 300_000);
