/**
 * SIGTERM sent to a real `bulwark agent worker` process in the middle of a backup job (the signal
 * Container Apps sends a job replica it stops): the worker stops the step in flight (its Azure
 * requests abort with the step's signal; the read SAS is still revoked), keeps the last committed state, lets go of the job at once (no lease left for the next worker to wait
 * out), prints its summary and exits 0. Another real worker then takes the job over and finishes
 * it with the right point: the job's own, restoring the disk as it was; nothing left behind.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import {
  MiB, expectNothingLeaked, expectVaultVerifies, makeDisk, restoreBytes, startFleetWorld, vaultManifests, type FleetWorld, type WorkerProcess,
} from "./harness.ts";

const REGION = "westeurope";
let world: FleetWorld;
let policy: string;
let diskId: string;
const children: WorkerProcess[] = [];

beforeAll(async () => {
  world = await startFleetWorld();
  world.emulator.world.addResourceGroup("term-rg", REGION);
  // 64 MiB with a quarter written: staging it takes long enough to be interrupted.
  diskId = makeDisk(world, "term-rg", "term-disk", 64 * MiB, { seed: 31 }).id;
  policy = await world.policy(
    "term",
    `name: term
vault: ${world.vault}
protect:
  resources: [${diskId}]
schedule: { every: 1d }
retention: { last: 5 }
`,
  );
}, 60_000);

afterAll(async () => {
  for (const child of children) if (child.child.exitCode === null) child.child.kill("SIGKILL");
  await world?.stop();
});

test("SIGTERM to a real agent worker mid-job checkpoints, exits 0, and another worker finishes the job with the right point", async () => {
  const image = world.emulator.control.readImage(diskId);
  const tick = await world.json(["agent", "schedule", "--policies", policy, "--agent-regions", REGION]);
  expect(tick.errors).toEqual([]);
  expect(tick.enqueued).toHaveLength(1);
  const jobId = tick.enqueued[0].jobId as string;

  const env = { BULWARK_POLICIES: policy, BULWARK_LEASE_MS: "30000" };
  const first = world.worker(REGION, env);
  children.push(first);
  // The moment: the job's stage step has started (reading the snapshot into packs).
  await first.waitFor((lines) => lines.some((l) => l.event === "step.start" && l.jobId === jobId && l.state === "stage"), 60_000);
  first.child.kill("SIGTERM");
  const summary = await first.summary(); // throws unless it exited 0
  expect(summary).toMatchObject({ interrupted: 1, succeeded: 0, failed: 0 });
  const interrupted = first.lines.find((l) => l.event === "job.interrupted" && l.jobId === jobId);
  expect(interrupted).toBeDefined();
  expect(first.lines.find((l) => l.event === "worker.exit")).toMatchObject({ reason: "shutdown" });

  // Checkpointed: the record holds the last committed state, and nobody's lease (with a 30 s
  // lease, a worker that had not let go would keep the next one waiting).
  const fleet = await world.fleet();
  const record = (await fleet.jobs.get(jobId))!.value;
  expect(record).toMatchObject({ status: "running", owner: "", leaseUntil: 0, runs: 1, failures: 0 });
  // The step in flight was stopped (its Azure requests aborted), not run to its end: stage is
  // still the state to run, and the next owner redoes it.
  expect(record.state).toBe("stage");
  expect(interrupted!.state).toBe("stage");
  expect(first.lines.some((l) => l.event === "step.done" && l.jobId === jobId && l.state === "stage")).toBe(false);
  expect(world.emulator.control.inventory().activeSasGrants).toEqual([]);

  // The next worker finishes it: one run more, the job's point, the disk's bytes.
  const second = world.worker(REGION, env);
  children.push(second);
  expect(await second.summary()).toMatchObject({ succeeded: 1, failed: 0, poisoned: 0 });
  expect(second.lines.some((l) => l.event === "job.claimed" && l.jobId === jobId && l.state === record.state)).toBe(true);
  expect((await fleet.jobs.get(jobId))!.value).toMatchObject({ status: "succeeded", runs: 2, failures: 0 });
  const points = (await vaultManifests(world)).filter((p) => p.details?.job === jobId);
  expect(points.map((p) => ({ kind: p.kind, path: p.source.path.toLowerCase() }))).toEqual([{ kind: "disk", path: diskId.toLowerCase() }]);
  expect((await restoreBytes(world, points[0]!.id)).equals(image)).toBe(true);
  expect((await fleet.items.get(diskId))!.value).toMatchObject({ state: "idle", lastGoodJobId: jobId, lastGoodPointId: points[0]!.id });
  await expectVaultVerifies(world);
  await expectNothingLeaked(world, [diskId]);
}, 180_000);
