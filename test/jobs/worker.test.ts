import type { ContainerClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { encodeWorkMessage, submitJob, type Fleet } from "../../runtime/jobs/submit.ts";
import { runWorker, type WorkerOptions } from "../../runtime/jobs/worker.ts";
import { Azurite } from "../support/azurite.ts";
import { waitFor } from "../support/wait.ts";
import { executionLog, fakeContainer, fakeMachine, holdStep, listKeys, pointKey, StepProbe } from "./fake-machine.ts";
import { collectLog, disk, poisonMessages, queueLength, testFleet } from "./harness.ts";

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

const REGION = "westeurope";

function worker(fleet: Fleet, overrides: Partial<WorkerOptions> = {}) {
  const log = collectLog();
  return {
    log,
    done: runWorker({
      fleet,
      region: REGION,
      machines: [fakeMachine(container)],
      limits: { perWorker: 2, perRegion: 4 },
      leaseMs: 2000,
      retryDelayMs: 200,
      lockRetryMs: 200,
      pollMs: 100,
      untilDrained: true,
      log: log.sink,
      ...overrides,
    }),
  };
}

describe("job records", () => {
  test("large state data is split across properties and read back whole; ETags refuse stale writers", async () => {
    const fleet = await testFleet(azurite.connectionString);
    const item = disk("s1", "d-big", REGION);
    const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id } });
    if (!submitted.submitted) throw new Error("not submitted");
    const first = (await fleet.jobs.get(submitted.job.jobId))!;
    const ranges = Array.from({ length: 4000 }, (_, i) => ({ offset: i * 65536, length: 4096 + i }));
    const big = { ...first.value, data: { ranges, note: "ü".repeat(1000) } };
    const etag = await fleet.jobs.replace(big, first.etag);
    expect(etag).toBeDefined();
    expect(JSON.stringify(big.data).length).toBeGreaterThan(100_000);
    expect((await fleet.jobs.get(big.jobId))!.value.data).toEqual(big.data);
    // A writer holding the old ETag loses.
    expect(await fleet.jobs.replace({ ...first.value, state: "stale" }, first.etag)).toBeUndefined();
    // Shrinking the data drops the chunks it no longer needs.
    await fleet.jobs.replace({ ...big, data: { small: true } }, etag!);
    const entity = await fleet.storage.jobs.getEntity<Record<string, unknown>>("job", big.jobId);
    expect(entity.dataParts).toBe(1);
    expect(entity.data1).toBeUndefined();
    expect((await fleet.jobs.get(big.jobId))!.value.data).toEqual({ small: true });
  });
});

describe("worker", () => {
  test("runs a job to the end, reports it, and exits when the queue is empty", async () => {
    const fleet = await testFleet(azurite.connectionString);
    const item = disk("s1", "d-happy", REGION);
    const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id, bytes: 4000 }, exclusive: true });
    expect(submitted.submitted).toBe(true);
    const jobId = submitted.submitted ? submitted.job.jobId : "";
    expect((await fleet.items.get(item.id))?.value.state).toBe("queued");

    const { done, log } = worker(fleet);
    const summary = await done;
    expect(summary.succeeded).toBe(1);
    expect(await executionLog(container, jobId)).toEqual(["snapshot", "copy", "commit", "cleanup"]);
    expect(await listKeys(container, pointKey(item.id, ""))).toEqual([pointKey(item.id, jobId)]);
    expect(await listKeys(container, `work/${jobId}`)).toEqual([]);
    expect(await queueLength(fleet, REGION)).toBe(0);

    const job = (await fleet.jobs.get(jobId))!.value;
    expect(job).toMatchObject({ status: "succeeded", owner: "", runs: 1 });
    const report = await fleet.reports.get(jobId);
    expect(report).toMatchObject({ outcome: "succeeded", item: item.id, kind: "disk", bytesRead: 4000, bytesNew: 1000, bytesStored: 500, dedupRatio: 4, error: "" });
    const logged = log.lines.filter((l) => l.event === "job.report");
    expect(logged).toHaveLength(1);
    expect(logged[0].report).toEqual(report);
    const itemRecord = (await fleet.items.get(item.id))!.value;
    expect(itemRecord).toMatchObject({ state: "idle", jobId: "", lastOutcome: "succeeded", lastGoodJobId: jobId, lastGoodPointId: "point-of-d-happy" });
    expect(await fleet.itemLocks.holder(item.id)).toBeUndefined();
  });

  test("duplicate messages run the job once", async () => {
    const fleet = await testFleet(azurite.connectionString);
    const item = disk("s1", "d-dup", REGION);
    const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id, slowState: "copy", slowMs: 500 } });
    if (!submitted.submitted) throw new Error("not submitted");
    const queue = await fleet.storage.queue(REGION);
    await queue.sendMessage(encodeWorkMessage(submitted.job));
    await queue.sendMessage(encodeWorkMessage(submitted.job));

    const [a, b] = [worker(fleet), worker(fleet)];
    const summaries = await Promise.all([a.done, b.done]);
    expect(summaries.reduce((n, s) => n + s.succeeded, 0)).toBe(1);
    expect(summaries.reduce((n, s) => n + s.duplicates + s.deferred, 0)).toBeGreaterThanOrEqual(2);
    expect(await executionLog(container, submitted.job.jobId)).toEqual(["snapshot", "copy", "commit", "cleanup"]);
    expect(await listKeys(container, pointKey(item.id, ""))).toHaveLength(1);
    expect(await queueLength(fleet, REGION)).toBe(0);
    expect(await fleet.reports.list()).toHaveLength(1);
  });

  test("a job that keeps failing is retried, compensated, failed and its message poisoned with the error", async () => {
    const fleet = await testFleet(azurite.connectionString);
    const item = disk("s1", "d-flaky", REGION);
    const submitted = await submitJob(fleet, {
      machine: "backup",
      item,
      queueRegion: REGION,
      input: { itemId: item.id, failState: "commit", failTimes: 99 },
      exclusive: true,
    });
    if (!submitted.submitted) throw new Error("not submitted");
    const jobId = submitted.job.jobId;
    const { done } = worker(fleet, { maxAttempts: 2 });
    const summary = await done;
    expect(summary).toMatchObject({ retried: 1, failed: 1, poisoned: 1 });
    // Run 1: snapshot, copy, commit (fails). Run 2 resumes at commit (fails again) and gives up.
    expect(await executionLog(container, jobId)).toEqual(["snapshot", "copy", "commit", "commit"]);
    // Compensation released what the job held.
    expect(await listKeys(container, `work/${jobId}`)).toEqual([]);
    expect(await listKeys(container, pointKey(item.id, ""))).toEqual([]);
    const job = (await fleet.jobs.get(jobId))!.value;
    expect(job).toMatchObject({ status: "failed", failures: 2, pendingCompensations: [] });
    expect(job.error).toMatch(/commit: commit failed on purpose/);
    const poisoned = await poisonMessages(fleet, REGION);
    expect(poisoned).toHaveLength(1);
    expect(poisoned[0].error).toMatch(new RegExp(`job ${jobId} failed: commit: commit failed on purpose`));
    expect(await queueLength(fleet, REGION)).toBe(0);
    expect(await fleet.reports.get(jobId)).toMatchObject({ outcome: "failed" });
    expect((await fleet.items.get(item.id))!.value).toMatchObject({ state: "idle", lastOutcome: "failed", lastGoodAt: 0 });
  });

  test("a permanent error compensates at once; garbage and orphan messages go to the poison queue", async () => {
    const fleet = await testFleet(azurite.connectionString);
    const item = disk("s1", "d-broken", REGION);
    const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id, permanentFailState: "copy" } });
    if (!submitted.submitted) throw new Error("not submitted");
    const queue = await fleet.storage.queue(REGION);
    await queue.sendMessage("this is not json");
    await queue.sendMessage(encodeWorkMessage({ jobId: "0000000000000-abcdef", machine: "backup", itemId: item.id }));
    const summary = await worker(fleet).done;
    expect(summary).toMatchObject({ failed: 1, poisoned: 3, retried: 0 });
    expect(await executionLog(container, submitted.job.jobId)).toEqual(["snapshot", "copy"]);
    expect(await listKeys(container, `work/${submitted.job.jobId}`)).toEqual([]);
    const errors = (await poisonMessages(fleet, REGION)).map((m) => String(m.error)).sort();
    expect(errors).toEqual([
      expect.stringMatching(/^job 0000000000000-abcdef has no record/),
      expect.stringMatching(new RegExp(`^job ${submitted.job.jobId} failed: copy: copy cannot work on`)),
      "not a Bulwark work message",
    ]);
    expect(await queueLength(fleet, REGION)).toBe(0);
  });

  test("caps: jobs per worker, jobs per region, and one job per item (backup and restore never overlap)", async () => {
    // Per worker: one worker, perWorker 2, region cap high: two at once, never three.
    const fleetA = await testFleet(azurite.connectionString);
    const probeA = new StepProbe();
    for (let i = 0; i < 4; i++) {
      const item = disk("s1", `d-cap-${i}`, REGION);
      await submitJob(fleetA, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id, slowState: "copy", slowMs: 400 } });
    }
    // The first two copies wait for each other, so two run at once however slowly the worker claims.
    await worker(fleetA, { machines: [holdStep(fakeMachine(container, { probe: probeA }), "copy", (arrived) => arrived.size >= 2)], limits: { perWorker: 2, perRegion: 10 } }).done;
    expect(probeA.maxActive).toBe(2);

    // Per region: two workers of perWorker 2, region cap 1: never two at once.
    const fleetB = await testFleet(azurite.connectionString);
    const probeB = new StepProbe();
    for (let i = 0; i < 4; i++) {
      const item = disk("s1", `d-region-${i}`, REGION);
      await submitJob(fleetB, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id, slowState: "copy", slowMs: 200 } });
    }
    const machinesB = [fakeMachine(container, { probe: probeB })];
    const summariesB = await Promise.all([
      worker(fleetB, { machines: machinesB, limits: { perWorker: 2, perRegion: 1 } }).done,
      worker(fleetB, { machines: machinesB, limits: { perWorker: 2, perRegion: 1 } }).done,
    ]);
    expect(summariesB.reduce((n, s) => n + s.succeeded, 0)).toBe(4);
    expect(probeB.maxActive).toBe(1);

    // Per item: a backup and a restore of one item, two workers: the spans never overlap.
    const fleetC = await testFleet(azurite.connectionString);
    const probeC = new StepProbe();
    const shared = disk("s1", "d-shared", REGION);
    await submitJob(fleetC, { machine: "backup", item: shared, queueRegion: REGION, input: { itemId: shared.id, slowState: "copy", slowMs: 600 } });
    await submitJob(fleetC, { machine: "restore", item: shared, queueRegion: REGION, input: { itemId: shared.id, slowState: "copy", slowMs: 600 } });
    // Whichever job runs first holds its copy step until the other has been deferred (its item is
    // locked), so the two meet however the workers' polls fall.
    const workersC: ReturnType<typeof worker>[] = [];
    const deferred = () => workersC.some((w) => w.log.lines.some((l) => l.event === "message.deferred"));
    const machinesC = [
      holdStep(fakeMachine(container, { probe: probeC }), "copy", deferred),
      holdStep(fakeMachine(container, { name: "restore", probe: probeC }), "copy", deferred),
    ];
    workersC.push(worker(fleetC, { machines: machinesC }), worker(fleetC, { machines: machinesC }));
    const summariesC = await Promise.all(workersC.map((w) => w.done));
    expect(summariesC.reduce((n, s) => n + s.succeeded, 0)).toBe(2);
    const byMachine = (name: string) => probeC.spans.filter((s) => s.machine === name);
    const backup = { start: Math.min(...byMachine("backup").map((s) => s.start)), end: Math.max(...byMachine("backup").map((s) => s.end)) };
    const restore = { start: Math.min(...byMachine("restore").map((s) => s.start)), end: Math.max(...byMachine("restore").map((s) => s.end)) };
    expect(backup.end <= restore.start || restore.end <= backup.start).toBe(true);
    expect(summariesC.reduce((n, s) => n + s.deferred, 0)).toBeGreaterThanOrEqual(1);
  });

  test("SIGTERM (abort) checkpoints the step in flight and releases the job for the next worker", async () => {
    const fleet = await testFleet(azurite.connectionString);
    const item = disk("s1", "d-term", REGION);
    const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id, slowState: "copy", slowMs: 30_000 } });
    if (!submitted.submitted) throw new Error("not submitted");
    const stop = new AbortController();
    const first = worker(fleet, { signal: stop.signal, leaseMs: 20_000 });
    await waitFor("the copy step to start", () => first.log.lines.some((l) => l.event === "step.start" && l.state === "copy"), 60_000, 20);
    const stoppedAt = Date.now();
    stop.abort();
    const summary = await first.done;
    expect(summary.interrupted).toBe(1);
    // It did not sit out its 30 s step (half of it is a bound no busy machine reaches by chance).
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    const paused = (await fleet.jobs.get(submitted.job.jobId))!.value;
    // The fake's slow step returns early on abort, so its result is committed: copy is done.
    expect(paused).toMatchObject({ owner: "", leaseUntil: 0, status: "running", state: "commit" });

    // The next worker takes it at once (no lease to wait out, the message is visible again).
    const resumedAt = Date.now();
    const second = await worker(fleet, { leaseMs: 20_000 }).done;
    expect(second.succeeded).toBe(1);
    // It did not wait out the first worker's 20 s lease.
    expect(Date.now() - resumedAt).toBeLessThan(20_000);
    expect(await executionLog(container, submitted.job.jobId)).toEqual(["snapshot", "copy", "commit", "cleanup"]);
  });
});
