/**
 * Found by review (issue 10): a managed disk whose name is 71-80 characters (Azure allows 1-80 for disks and
 * snapshots: MicrosoftDocs/azure-docs articles/azure-resource-manager/management/resource-name-rules.md,
 * Microsoft.Compute disks / snapshots) gets the same snapshot name in every job:
 * `${name}-bulwark-${suffix(jobId)}`.slice(0, 80) cuts the job's suffix off. The previous job's
 * snapshot is kept (the next diff's base), so ensureSnapshot finds it and reuses it: the second
 * point holds the first point's data.
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

test("a second backup of a disk with a 75-character name holds the disk as it is now, not the first backup's snapshot again", async () => {
  const disk = makeDisk(world, "longname", "d".repeat(75), 4 * MiB, { seed: 7 });
  const policy = parsePolicy(`name: long\nvault: ${world.vault}\nprotect:\n  resources: [${disk.id}]\nschedule: { every: 1d }\nretention: { last: 5 }\n`, "long.yaml");
  const env = await workloadEnvironment({ ...world.workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const clock = new ManualClock(Date.UTC(2026, 6, 1, 1));
  const points: string[] = [];
  for (let round = 0; round < 2; round++) {
    world.emulator.control.writeDisk(disk.id, 0, pattern(5000 + round, 64 * KiB));
    const fleet = await world.fleet(clock);
    const resolver = new ArmItemResolver(world.emulator.credential(), { endpoint: world.emulator.armEndpoint });
    const tick = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope", "northeurope"] });
    await runWorker({ fleet, region: "westeurope", machines: [backupMachine(env)], limits: { perWorker: 1, perRegion: 1 }, leaseMs: 30_000, pollMs: 100, lockRetryMs: 100, untilDrained: true, log: () => {} });
    for (const queued of tick.enqueued) points.push(String((await fleet.jobs.get(queued.jobId))!.value.data.pointId));
    clock.advance(24 * HOUR);
  }
  const now = world.emulator.control.readImage(disk.id);
  expect(points).toHaveLength(2);
  expect((await restoreBytes(world, points[1]!)).equals(now)).toBe(true);
}, 300_000);
