/**
 * A disk backed up by a worker in daily rounds (scheduler tick, then a worker until the queue is
 * drained), where something found by review went wrong (issue 10):
 * - a disk whose name has 71-80 characters (Azure allows 80 for disks and snapshots:
 *   MicrosoftDocs/azure-docs articles/azure-resource-manager/management/resource-name-rules.md)
 *   got the same snapshot name in every job (`${name}-bulwark-${suffix}` cut to 80 dropped the
 *   job's suffix), so each later point held the first snapshot's data;
 * - a backup that had to read the whole disk where an incremental was due said so only in the
 *   point's details, never in the job's log.
 */
import { expect, test } from "vitest";
import { ManualClock } from "../../runtime/jobs/clock.ts";
import type { LogSink } from "../../runtime/jobs/runner.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { backupMachine } from "../../runtime/workloads/backup-machine.ts";
import { workloadEnvironment } from "../../runtime/workloads/environment.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { KiB, MiB, fleetWorldForFile, makeDisk, pattern, restoreBytes } from "./harness.ts";

const DAY = 24 * 3_600_000;
const world = fleetWorldForFile();

/** Backs the disk up once a day for `rounds` days; `before(round)` changes the world first. Returns each round's point. */
async function dailyBackups(diskId: string, rounds: number, before: (round: number) => void, log: LogSink = () => {}): Promise<string[]> {
  const w = world();
  const policy = parsePolicy(`name: rounds\nvault: ${w.vault}\nprotect:\n  resources: [${diskId}]\nschedule: { every: 1d }\nretention: { last: 5 }\n`, "rounds.yaml");
  const env = await workloadEnvironment({ ...w.workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const clock = new ManualClock(Date.UTC(2026, 6, 1, 1));
  const points: string[] = [];
  for (let round = 0; round < rounds; round++) {
    before(round);
    const fleet = await w.fleet(clock);
    const resolver = new ArmItemResolver(w.emulator.credential(), { endpoint: w.emulator.armEndpoint });
    const tick = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope", "northeurope"] });
    await runWorker({ fleet, region: "westeurope", machines: [backupMachine(env)], limits: { perWorker: 1, perRegion: 1 }, leaseMs: 30_000, pollMs: 100, lockRetryMs: 100, untilDrained: true, log: (line) => log({ ...line, round }) });
    for (const queued of tick.enqueued) points.push(String((await fleet.jobs.get(queued.jobId))!.value.data.pointId));
    clock.advance(DAY);
  }
  return points;
}

test("a second backup of a disk with a 75-character name holds the disk as it is now, not the first backup's snapshot again", async () => {
  const disk = makeDisk(world(), "longname", "d".repeat(75), 4 * MiB, { seed: 7 });
  const points = await dailyBackups(disk.id, 2, (round) => world().emulator.control.writeDisk(disk.id, 0, pattern(5000 + round, 64 * KiB)));
  expect(points).toHaveLength(2);
  expect((await restoreBytes(world(), points[1]!)).equals(world().emulator.control.readImage(disk.id))).toBe(true);
}, 300_000);

test("a worker's backup that reads the whole disk instead of the changes logs disk.full-read with the reason", async () => {
  const disk = makeDisk(world(), "fullread", "fr-disk", 2 * MiB, { seed: 11 });
  const logged: Record<string, unknown>[] = [];
  const points = await dailyBackups(
    disk.id,
    2,
    (round) => {
      world().emulator.control.writeDisk(disk.id, 64 * KiB * round, pattern(700 + round, 64 * KiB));
      // The diff refuses the previous snapshot, as Azure does with 409 PreviousSnapshotNotFound.
      if (round === 1) world().emulator.control.refusePreviousSnapshot("PreviousSnapshotNotFound");
    },
    (line) => void logged.push(line),
  );
  const fullReads = logged.filter((l) => l.event === "disk.full-read");
  expect(fullReads).toHaveLength(1);
  expect(fullReads[0]).toMatchObject({ round: 1, diskId: disk.id, reason: expect.stringMatching(/409 PreviousSnapshotNotFound/) });
  expect(points).toHaveLength(2);
  expect((await restoreBytes(world(), points[1]!)).equals(world().emulator.control.readImage(disk.id))).toBe(true);
}, 300_000);
