/**
 * kill -9 of a worker in every state of the real backup machine. Ten small disks, each with a job
 * that stops in a different state (pausing-worker.ts: after the state's work, before its commit;
 * and once in the middle of stage); one SIGKILL catches all of them. Then the real
 * `bulwark agent worker` takes every job over: each ends succeeded, with exactly one point (the
 * job's), the previous point removed by retention (last: 1), the vault verifies, every point
 * restores to the disk as it was at backup time, and nothing is left: one golden snapshot per disk,
 * no read SAS, no staging blob.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";
import {
  KiB, MiB, ageItems, blobNames, expectNothingLeaked, expectVaultVerifies, makeDisk, pattern, restoreBytes, startFleetWorld, vaultManifests,
  watchProcess, type FleetWorld, type WorkerProcess,
} from "./harness.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const STATES = ["prepare", "acquire", "stage-sas", "stage-mid", "stage", "verify", "promote", "commit", "release", "retain", "cleanup"];
const REGION = "westeurope";
let world: FleetWorld;
let policy: string;
const disks: Record<string, string> = {};
const children: WorkerProcess[] = [];

beforeAll(async () => {
  world = await startFleetWorld();
  world.emulator.world.addResourceGroup("crash", REGION);
  for (const [i, state] of STATES.entries()) disks[state] = makeDisk(world, "crash", `c-${state}`, 1 * MiB, { tags: { crash: "yes" }, seed: 10 + i }).id;
  policy = await world.policy(
    "crash",
    `name: crash
vault: ${world.vault}
protect:
  tagged: { type: Microsoft.Compute/disks, tag: crash=yes, subscriptions: [${world.emulator.subscriptionId}] }
schedule: { every: 1d }
retention: { last: 1 }
`,
  );
}, 60_000);

afterAll(async () => {
  for (const child of children) if (child.child.exitCode === null) child.child.kill("SIGKILL");
  await world?.stop();
});

async function tick(): Promise<Record<string, string>> {
  const result = await world.json(["agent", "schedule", "--policies", policy, "--agent-regions", REGION]);
  expect(result.errors).toEqual([]);
  return Object.fromEntries(result.enqueued.map((e: { item: string; jobId: string }) => [e.item.toLowerCase(), e.jobId]));
}

test("a worker killed in each state of a backup is replaced, and every job commits its point exactly once", async () => {
  // A first point for every disk, so the killed jobs have a golden snapshot to retire and a point to forget.
  expect(Object.keys(await tick())).toHaveLength(STATES.length);
  const first = world.worker(REGION, { BULWARK_MAX_JOBS_PER_REGION: "16", BULWARK_MAX_JOBS_PER_WORKER: "6" });
  children.push(first);
  expect(await first.summary()).toMatchObject({ succeeded: STATES.length, failed: 0 });
  const firstPoints = await vaultManifests(world);
  expect(firstPoints).toHaveLength(STATES.length);

  const images: Record<string, Buffer> = {};
  for (const [i, state] of STATES.entries()) {
    world.emulator.control.writeDisk(disks[state]!, 128 * KiB, pattern(500 + i, 64 * KiB));
    images[state] = world.emulator.control.readImage(disks[state]!);
  }
  await ageItems(world, 86_400_000 + 60_000);
  const jobs = await tick();
  expect(Object.keys(jobs)).toHaveLength(STATES.length);

  const victim = watchProcess(
    spawn(process.execPath, [path.join(here, "pausing-worker.ts")], {
      env: {
        ...process.env,
        ...world.workerEnv(REGION),
        BULWARK_REGION: REGION,
        BULWARK_TEST_WORKER: "victim",
        BULWARK_MAX_JOBS_PER_REGION: "16",
        BULWARK_TEST_PAUSE: JSON.stringify(Object.fromEntries(STATES.map((s) => [disks[s]!.toLowerCase(), s]))),
      },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  children.push(victim);
  const pausedIn = (lines: Record<string, any>[]) => new Map(lines.filter((l) => l.event === "test.paused").map((l) => [String(l.item).toLowerCase(), l.state]));
  await victim.waitFor((lines) => pausedIn(lines).size === STATES.length, 60_000).catch((error) => {
    const notPaused = STATES.filter((s) => !pausedIn(victim.lines).has(disks[s]!.toLowerCase()));
    const about = victim.lines.filter((l) => notPaused.some((s) => String(l.item).toLowerCase() === disks[s]!.toLowerCase()) || !l.jobId);
    throw new Error(`not paused: ${notPaused.join(", ")}: ${JSON.stringify(about.slice(-12))}`, { cause: error });
  });
  // The moment of the kill holds what a crash leaves: a read SAS open (stage-sas), staged packs.
  const during = world.emulator.control.inventory();
  expect(during.activeSasGrants.map((g) => g.resourceId.toLowerCase())).toEqual([expect.stringContaining("/snapshots/c-stage-sas-bulwark-")]);
  expect((await blobNames(world.transient(REGION))).length).toBeGreaterThan(0);
  victim.child.kill("SIGKILL");
  expect((await victim.exited).code).toBeNull();

  const fleet = await world.fleet();
  for (const state of STATES) {
    expect(pausedIn(victim.lines).get(disks[state]!.toLowerCase())).toBe(state);
    const record = (await fleet.jobs.get(jobs[disks[state]!.toLowerCase()]!))!.value;
    // The job record still says the state the kill interrupted: its step's work is not committed.
    expect({ state, owner: record.owner, status: record.status, at: record.state }).toEqual({ state, owner: "victim", status: "running", at: state.startsWith("stage") ? "stage" : state });
  }

  const rescuer = world.worker(REGION, { BULWARK_MAX_JOBS_PER_REGION: "16", BULWARK_MAX_JOBS_PER_WORKER: "6" });
  children.push(rescuer);
  const summary = await rescuer.summary();
  expect(summary).toMatchObject({ succeeded: STATES.length, failed: 0, poisoned: 0 });

  const manifests = await vaultManifests(world);
  for (const state of STATES) {
    const diskId = disks[state]!.toLowerCase();
    const jobId = jobs[diskId]!;
    const record = (await fleet.jobs.get(jobId))!.value;
    // One run killed, one that finished: no failed step in between (a retry would show as a third run).
    const failed = rescuer.lines.filter((l) => l.event === "step.failed" && l.jobId === jobId).map((l) => l.error);
    expect({ state, status: record.status, runs: record.runs, failures: record.failures, failed }).toEqual({ state, status: "succeeded", runs: 2, failures: 0, failed: [] });
    expect(rescuer.lines.some((l) => l.event === "job.claimed" && l.jobId === jobId && l.takeover === true)).toBe(true);
    // Exactly one point for the disk: this job's (retention keeps the last one); the first is gone.
    const points = manifests.filter((p) => p.source.path.toLowerCase() === diskId);
    expect({ state, jobs: points.map((p) => p.details?.job) }).toEqual({ state, jobs: [jobId] });
    expect(points[0]!.details?.mode).toBe("incremental");
    expect((await restoreBytes(world, points[0]!.id)).equals(images[state]!)).toBe(true);
    const item = (await fleet.items.get(disks[state]!))!.value;
    expect(item).toMatchObject({ state: "idle", lastGoodJobId: jobId, lastGoodPointId: points[0]!.id });
  }
  expect(manifests).toHaveLength(STATES.length);
  await expectVaultVerifies(world);
  await expectNothingLeaked(world, Object.values(disks));
}, 150_000);
