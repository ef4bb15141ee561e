/**
 * Issue 8, item 8: a step stops when its worker can no longer hold the job. The job table's writes
 * fail for one worker (fault injection around its table client) while its step runs: it cannot
 * renew its lease, so it must stop the step before the lease runs out, which is the first moment
 * another worker may take the job over and start the step again. And a step that runs past its
 * time limit is stopped and fails its attempt as retryable.
 */
import type { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, expect, test } from "vitest";
import { systemClock } from "../../runtime/jobs/clock.ts";
import type { MachineDefinition, StepContext } from "../../runtime/jobs/machine.ts";
import { JobStore } from "../../runtime/jobs/records.ts";
import { JobRunner, type RunOutcome, type RunnerOptions } from "../../runtime/jobs/runner.ts";
import { submitJob, type Fleet } from "../../runtime/jobs/submit.ts";
import { Azurite } from "../support/azurite.ts";
import { collectLog, disk, testFleet } from "./harness.ts";

let azurite: Azurite;

beforeAll(async () => {
  azurite = await Azurite.start();
}, 60_000);
afterAll(async () => {
  await azurite?.stop();
});

const REGION = "westeurope";
const LEASE_MS = 2000;

/** A table client whose writes fail with 503 (Server Busy) while `failing` is set. */
function faultyTable(table: TableClient, faults: { failing: boolean; failed: number }): TableClient {
  const writes = new Set(["createEntity", "updateEntity", "upsertEntity", "deleteEntity", "submitTransaction"]);
  return new Proxy(table, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      if (!writes.has(String(property))) return value.bind(target);
      return (...args: unknown[]) => {
        if (!faults.failing) return value.apply(target, args);
        faults.failed++;
        return Promise.reject(Object.assign(new Error("The server is busy (injected)"), { statusCode: 503 }));
      };
    },
  });
}

/** What happened, in order, across both workers. */
interface Timeline {
  events: string[];
  waiters: { event: string; resolve: () => void }[];
}

function record(timeline: Timeline, event: string): void {
  timeline.events.push(event);
  for (const waiter of timeline.waiters.filter((w) => w.event === event)) waiter.resolve();
}

function happened(timeline: Timeline, event: string): Promise<void> {
  if (timeline.events.includes(event)) return Promise.resolve();
  return new Promise((resolve) => timeline.waiters.push({ event, resolve }));
}

/** One state, "work": it runs until its signal aborts (worker "old"), or returns at once (worker "new"). */
function machine(worker: string, timeline: Timeline): MachineDefinition {
  return {
    name: "backup",
    initial: "work",
    start: (input) => ({ ...input }),
    states: {
      work: {
        async step(ctx: StepContext, data) {
          record(timeline, `${worker}: started`);
          if (worker === "new") return { done: true, data };
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          record(timeline, `${worker}: stopped`);
          throw ctx.signal.reason;
        },
      },
    },
  };
}

function runner(fleet: Fleet, jobs: JobStore, workerId: string, timeline: Timeline, options: Partial<RunnerOptions> = {}) {
  const log = collectLog();
  const instance = new JobRunner({ ...fleet, jobs, log: log.sink }, [machine(workerId, timeline)], {
    workerId,
    leaseMs: LEASE_MS,
    maxAttempts: 3,
    retryDelayMs: 100,
    lockRetryMs: 100,
    maxRuns: 10,
    ...options,
  });
  return { instance, log };
}

test("table writes failing for longer than the lease make the old worker stop its step before the new owner starts it", async () => {
  const fleet = await testFleet(azurite.connectionString);
  const item = disk("s1", "d-outage", REGION);
  const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id } });
  if (!submitted.submitted) throw new Error(submitted.reason);
  const jobId = submitted.job.jobId;
  const timeline: Timeline = { events: [], waiters: [] };

  // The old owner's job table fails every write once its step runs (an outage of its own).
  const faults = { failing: false, failed: 0 };
  const old = runner(fleet, new JobStore(faultyTable(fleet.storage.jobs, faults)), "old", timeline);
  const oldRun = old.instance.run({ jobId });
  await happened(timeline, "old: started");
  faults.failing = true;

  // The new owner takes the job the moment the lease it sees has run out (as a worker given the
  // message again would), and runs the step.
  const fresh = runner(fleet, fleet.jobs, "new", timeline);
  let outcome: RunOutcome;
  for (;;) {
    const current = (await fleet.jobs.get(jobId))!.value;
    const wait = current.leaseUntil - systemClock.now();
    if (wait > 0) await systemClock.sleep(wait + 1);
    outcome = await fresh.instance.run({ jobId });
    if (outcome.kind !== "busy") break;
  }

  expect(outcome.kind).toBe("finished");
  expect(await oldRun).toEqual({ kind: "lost" });
  // The old step stopped before the new one started: never two at once.
  expect(timeline.events).toEqual(["old: started", "old: stopped", "new: started"]);
  expect(faults.failed).toBeGreaterThan(0);
  const lost = old.log.lines.find((l) => l.event === "job.lease-lost");
  expect(String(lost?.reason)).toMatch(/could not be renewed before it expired/);
  expect((await fleet.jobs.get(jobId))!.value).toMatchObject({ status: "succeeded", owner: "", runs: 2 });
}, 30_000);

test("a step that runs past its time limit is stopped and its attempt fails as retryable", async () => {
  const fleet = await testFleet(azurite.connectionString);
  const item = disk("s1", "d-slow", REGION);
  const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, input: { itemId: item.id } });
  if (!submitted.submitted) throw new Error(submitted.reason);
  const timeline: Timeline = { events: [], waiters: [] };
  const slow = runner(fleet, fleet.jobs, "old", timeline, { stepTimeoutMs: 300 });
  const outcome = await slow.instance.run({ jobId: submitted.job.jobId });
  expect(outcome.kind).toBe("retry");
  if (outcome.kind !== "retry") return;
  expect(outcome.error).toBe("work: the step work did not finish within 300 ms and was stopped");
  expect(timeline.events).toEqual(["old: started", "old: stopped"]);
  expect(slow.log.lines.find((l) => l.event === "step.failed")).toMatchObject({ state: "work", retryable: true, failures: 1 });
  expect((await fleet.jobs.get(submitted.job.jobId))!.value).toMatchObject({ status: "running", state: "work", owner: "", failures: 1 });
}, 30_000);
