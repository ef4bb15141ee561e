/**
 * Issue 8, item 7, in the job runtime alone: item locks compare ARM ids case-insensitively, and a
 * resource a step adds to the job's locks (a VM's disks, learnt in its first step) is locked before
 * the next step runs; while another job holds it, the job waits (deferred, not failed, its run not
 * counted) and goes on once the lock is free.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import type { MachineDefinition } from "../../runtime/jobs/machine.ts";
import { JobRunner } from "../../runtime/jobs/runner.ts";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { Azurite } from "../support/azurite.ts";
import { collectLog, disk, testFleet, vm } from "./harness.ts";

let azurite: Azurite;

beforeAll(async () => {
  azurite = await Azurite.start();
}, 60_000);
afterAll(async () => {
  await azurite?.stop();
});

const REGION = "westeurope";

test("item locks on one ARM id spelled in two cases exclude each other", async () => {
  const fleet = await testFleet(azurite.connectionString);
  const a = await submitJob(fleet, { machine: "backup", item: disk("s1", "d-case", REGION), queueRegion: REGION, input: {} });
  const b = await submitJob(fleet, { machine: "backup", item: disk("s1", "d-case-other", REGION), queueRegion: REGION, input: {} });
  if (!a.submitted || !b.submitted) throw new Error("not submitted");
  const id = "/subscriptions/s1/resourceGroups/Disks-RG/providers/Microsoft.Compute/disks/Data-1";
  expect(await fleet.itemLocks.acquireAll([id], a.job.jobId)).toBeUndefined();
  // The same disk as another API spells it.
  expect(await fleet.itemLocks.acquireAll([id.toLowerCase()], b.job.jobId)).toBe(id.toLowerCase());
  expect(await fleet.itemLocks.acquireAll([id.toUpperCase().replace("/SUBSCRIPTIONS/", "/subscriptions/")], b.job.jobId)).toBeDefined();
  expect(await fleet.itemLocks.holder(id.toLowerCase())).toBe(a.job.jobId);
  await fleet.itemLocks.releaseAll([id.toLowerCase()], a.job.jobId);
  expect(await fleet.itemLocks.holder(id)).toBeUndefined();
});

test("a disk a VM job learns in its first step is locked before its next step; the job waits while a disk job holds it", async () => {
  const fleet = await testFleet(azurite.connectionString);
  const diskId = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/disks/shared";
  const steps: string[] = [];
  // A VM job: "inspect" names the VM's disk (in ARM's other spelling), "snapshot" works on it.
  const vmMachine: MachineDefinition = {
    name: "backup",
    initial: "inspect",
    start: (input) => ({ ...input, disks: [] as string[] }),
    locks: (job) => [job.itemId, ...((job.data.disks as string[]) ?? [])],
    states: {
      inspect: {
        async step(_ctx, data) {
          steps.push("vm: inspect");
          return { next: "snapshot", data: { ...data, disks: [diskId.replace("/resourceGroups/rg/", "/resourceGroups/RG/")] } };
        },
      },
      snapshot: {
        async step(_ctx, data) {
          steps.push("vm: snapshot");
          return { done: true, data };
        },
      },
    },
  };
  const vmJob = await submitJob(fleet, { machine: "backup", item: vm("s1", "web", REGION), queueRegion: REGION, input: {} });
  const diskJob = await submitJob(fleet, { machine: "backup", item: { id: diskId, kind: "disk", region: REGION }, queueRegion: REGION, input: {} });
  if (!vmJob.submitted || !diskJob.submitted) throw new Error("not submitted");
  // The disk job holds its disk (its worker is running it).
  expect(await fleet.itemLocks.acquireAll([diskId], diskJob.job.jobId)).toBeUndefined();

  const log = collectLog();
  const runner = new JobRunner({ ...fleet, log: log.sink }, [vmMachine], { workerId: "w1", leaseMs: 5000, maxAttempts: 3, retryDelayMs: 100, lockRetryMs: 100, maxRuns: 10 });
  const first = await runner.run({ jobId: vmJob.job.jobId });
  expect(first).toMatchObject({ kind: "busy", reason: "waiting for an item lock before snapshot" });
  expect(steps).toEqual(["vm: inspect"]);
  expect(log.lines.find((l) => l.event === "job.waiting")).toMatchObject({ reason: `${diskId.toLowerCase()} is locked by another job` });
  // Deferred, not failed: inspect is committed, nobody owns the job, this run is not counted.
  expect((await fleet.jobs.get(vmJob.job.jobId))!.value).toMatchObject({ status: "running", state: "snapshot", owner: "", runs: 0, failures: 0 });

  // Still held: still waiting, and the snapshot step never ran.
  expect((await runner.run({ jobId: vmJob.job.jobId })).kind).toBe("busy");
  expect(steps).toEqual(["vm: inspect"]);

  // The disk job finishes: its lock is free and the VM job goes on.
  const diskRecord = (await fleet.jobs.get(diskJob.job.jobId))!;
  await fleet.jobs.replace({ ...diskRecord.value, status: "succeeded" }, diskRecord.etag);
  const second = await runner.run({ jobId: vmJob.job.jobId });
  expect(second.kind).toBe("finished");
  expect(steps).toEqual(["vm: inspect", "vm: snapshot"]);
  expect((await fleet.jobs.get(vmJob.job.jobId))!.value).toMatchObject({ status: "succeeded", runs: 1 });
  // Finished: the VM job let go of the disk it locked.
  expect(await fleet.itemLocks.holder(diskId)).toBeUndefined();
}, 30_000);
