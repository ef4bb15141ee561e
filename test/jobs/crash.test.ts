import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { ContainerClient } from "@azure/storage-blob";
import { afterAll, beforeAll, expect, test } from "vitest";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { Azurite } from "../support/azurite.ts";
import { trackChild } from "../support/cleanup.ts";
import { waitFor } from "../support/wait.ts";
import { executionLog, fakeContainer, listKeys, pointKey } from "./fake-machine.ts";
import { disk, queueLength, testFleet } from "./harness.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
let azurite: Azurite;
let container: ContainerClient;
const children: ChildProcess[] = [];

beforeAll(async () => {
  azurite = await Azurite.start();
  container = fakeContainer(azurite.connectionString);
  await container.createIfNotExists();
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  await azurite?.stop();
});

interface WorkerProcess {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  exited: Promise<number | null>;
  waitFor(predicate: (lines: Record<string, unknown>[]) => boolean, timeoutMs: number): Promise<void>;
}

function startWorker(prefix: string, region: string, workerId: string): WorkerProcess {
  const child = spawn(process.execPath, [path.join(here, "worker-process.ts")], {
    env: {
      ...process.env,
      BULWARK_TEST_CONNECTION: azurite.connectionString,
      BULWARK_TEST_PREFIX: prefix,
      BULWARK_TEST_REGION: region,
      BULWARK_TEST_WORKER: workerId,
      BULWARK_TEST_LEASE_MS: "2000",
      BULWARK_TEST_PER_WORKER: "4",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  trackChild(child); // killed after this test even when an assertion fails first
  children.push(child);
  const lines: Record<string, unknown>[] = [];
  const listeners = new Set<() => void>();
  createInterface({ input: child.stdout! }).on("line", (line) => {
    try {
      lines.push(JSON.parse(line));
    } catch {
      lines.push({ raw: line });
    }
    for (const listener of listeners) listener();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    lines,
    exited,
    waitFor: (predicate, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        if (predicate(lines)) return resolve();
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`worker ${workerId} did not get there in ${timeoutMs} ms; it logged ${JSON.stringify(lines.slice(-5))}`));
        }, timeoutMs);
        function check() {
          if (predicate(lines)) {
            clearTimeout(timer);
            listeners.delete(check);
            resolve();
          }
        }
        listeners.add(check);
        void exited.then(() => check());
      }),
  };
}

test("a worker killed with SIGKILL in each state of a job is replaced, and every job commits its point exactly once", async () => {
  const prefix = "crash";
  const region = "northeurope";
  const fleet = await testFleet(azurite.connectionString, undefined, prefix);
  // Four jobs, each slow in a different state, so one kill catches a job in every state. In
  // "commit" the kill comes after the point blob was written but before the step was committed.
  // Slow means "does not end before the kill": far longer than the test, so a busy machine that
  // takes long to start all four cannot see one of them finish its slow state first.
  const cases = [
    { state: "snapshot", slowAfter: false },
    { state: "copy", slowAfter: false },
    { state: "commit", slowAfter: true },
    { state: "cleanup", slowAfter: false },
  ];
  const jobs: { jobId: string; itemId: string; state: string }[] = [];
  for (const c of cases) {
    const item = disk("s1", `d-kill-${c.state}`, region);
    const submitted = await submitJob(fleet, {
      machine: "backup",
      item,
      queueRegion: region,
      input: { itemId: item.id, slowState: c.state, slowMs: 600_000, slowAfter: c.slowAfter },
      exclusive: true,
    });
    if (!submitted.submitted) throw new Error("not submitted");
    jobs.push({ jobId: submitted.job.jobId, itemId: item.id, state: c.state });
  }

  const victim = startWorker(prefix, region, "victim");
  await victim.waitFor(
    (lines) => jobs.every((j) => lines.some((l) => l.event === "step.start" && l.jobId === j.jobId && l.state === j.state)),
    120_000, // a hang bound: every step waits on the worker's own log lines
  );
  // Each slow step has recorded its run (the step's log line is appended after step.start is
  // printed): wait for the record itself, or a kill in between loses the first run's line.
  for (const j of jobs) {
    await waitFor(`${j.state}'s execution record`, async () => (await executionLog(container, j.jobId)).at(-1) === j.state);
  }
  // The "commit" job's point is written (its blob exists) before the kill: wait for that blob, not for a time.
  await waitFor("the commit job's point blob", async () => (await listKeys(container, pointKey(jobs[2].itemId, ""))).length > 0);
  victim.child.kill("SIGKILL");
  expect(await victim.exited).toBeNull();

  for (const j of jobs) {
    const record = (await fleet.jobs.get(j.jobId))!.value;
    expect(record.owner).toBe("victim");
    expect(record.status).toBe("running");
    expect(record.state).toBe(j.state);
  }
  expect(await listKeys(container, pointKey(jobs[2].itemId, ""))).toEqual([pointKey(jobs[2].itemId, jobs[2].jobId)]);

  // The slow step is fast on the second run: runs count from the job record.
  const rescuer = startWorker(prefix, region, "rescuer");
  await rescuer.waitFor((lines) => lines.some((l) => l.event === "summary"), 120_000);
  expect(await rescuer.exited).toBe(0);
  const summary = rescuer.lines.find((l) => l.event === "summary")!;
  expect(summary.succeeded).toBe(4);

  const order = ["snapshot", "copy", "commit", "cleanup"];
  for (const j of jobs) {
    const record = (await fleet.jobs.get(j.jobId))!.value;
    expect(record).toMatchObject({ status: "succeeded", runs: 2, owner: "" });
    // The state the kill interrupted ran twice; every other state exactly once.
    const expected = order.flatMap((s) => (s === j.state ? [s, s] : [s]));
    expect(await executionLog(container, j.jobId)).toEqual(expected);
    expect(await listKeys(container, pointKey(j.itemId, ""))).toEqual([pointKey(j.itemId, j.jobId)]);
    expect(await listKeys(container, `work/${j.jobId}`)).toEqual([]);
    expect((await fleet.items.get(j.itemId))!.value).toMatchObject({ state: "idle", lastGoodJobId: j.jobId });
    expect(rescuer.lines.some((l) => l.event === "job.claimed" && l.jobId === j.jobId && l.takeover === true)).toBe(true);
  }
  expect(await queueLength(fleet, region)).toBe(0);
}, 300_000);
