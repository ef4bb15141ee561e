/**
 * A backup worker for kill -9 tests: what `bulwark agent worker` runs (runWorker with the real
 * backup and restore machines, built from the same environment), except that a job whose item is
 * named in BULWARK_TEST_PAUSE stops in the state named there and waits to be killed, logging
 * {"event":"test.paused", jobId, item, state} on stdout:
 *
 * - "<state>": after that state's step did all its work, before the runner commits the step (the
 *   worst moment: the side effects exist, the job record does not know of them);
 * - "stage-sas": inside stage, right after Azure granted the read SAS of the snapshot (nothing
 *   read or staged yet; the SAS stays open until someone revokes it);
 * - "stage-mid": inside stage, once the first pack is in the staging area (staged index and draft
 *   points not yet written).
 *
 * - "restore-write" (a restore job's item): once Azure granted write access to the new disk
 *   (the disk exists, in ActiveUpload, nothing written yet).
 *
 * BULWARK_TEST_PAUSE is JSON: { "<item id, lower case>": "<state>" | "stage-sas" | "stage-mid" | "restore-write" }. Everything else
 * comes from the agent's own environment (AZURE_STORAGE_CONNECTION_STRING, BULWARK_FLEET_PREFIX,
 * BULWARK_TRANSIENT, BULWARK_PASSPHRASE, BULWARK_LEASE_MS, BULWARK_MAX_JOBS_PER_REGION, Azure).
 * Test code only: production workers have no such hook.
 */
import { systemClock } from "../../runtime/jobs/clock.ts";
import type { MachineDefinition, StepContext } from "../../runtime/jobs/machine.ts";
import { jsonLog } from "../../runtime/jobs/runner.ts";
import { FleetStorage } from "../../runtime/jobs/storage.ts";
import { openFleet } from "../../runtime/jobs/submit.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { backupMachine, type BackupJobData } from "../../runtime/workloads/backup-machine.ts";
import { workloadEnvironment } from "../../runtime/workloads/environment.ts";
import { restoreMachine } from "../../runtime/workloads/restore-machine.ts";

const pauses = JSON.parse(process.env.BULWARK_TEST_PAUSE ?? "{}") as Record<string, string>;
const region = process.env.BULWARK_REGION!;
const forever = () => new Promise<never>(() => {});

function paused(ctx: StepContext, state: string): Promise<never> {
  process.stdout.write(`${JSON.stringify({ event: "test.paused", jobId: ctx.jobId, item: ctx.job.itemId, state })}\n`);
  return forever();
}

/** Jobs whose stage step should stop at the first pack written. */
const midStage = new Map<string, StepContext>();

function pausingStore(inner: ObjectStore, ctx: StepContext): ObjectStore {
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property === "createWriter") {
        return (key: string) => {
          const writer = target.createWriter(key);
          return {
            write: (data: Uint8Array) => writer.write(data),
            abort: () => writer.abort(),
            async commit() {
              await writer.commit();
              await paused(ctx, "stage-mid");
            },
          };
        };
      }
      const value = Reflect.get(target, property, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Disks (by name, lower case) whose stage step should stop once their snapshot's SAS is granted. */
const sasStage = new Map<string, StepContext>();
/** Restore targets (disk names, lower case) whose restore should stop once write access is granted. */
const restoreWrite = new Map<string, StepContext>();

const env = await workloadEnvironment();
const realCompute = env.azure.compute.bind(env.azure);
const wrapped = new WeakSet<object>();
env.azure.compute = async (subscriptionId) => {
  const client = await realCompute(subscriptionId);
  const snapshots = client.snapshots;
  if (wrapped.has(snapshots)) return client;
  wrapped.add(snapshots);
  const grant = snapshots.beginGrantAccessAndWait.bind(snapshots);
  snapshots.beginGrantAccessAndWait = async (group, name, access, options) => {
    const result = await grant(group, name, access, options);
    const ctx = sasStage.get(name.replace(/-bulwark-[^-]+$/, "").toLowerCase());
    if (ctx) await paused(ctx, "stage-sas");
    return result;
  };
  const disks = client.disks;
  const grantDisk = disks.beginGrantAccessAndWait.bind(disks);
  disks.beginGrantAccessAndWait = async (group, name, access, options) => {
    const result = await grantDisk(group, name, access, options);
    const ctx = restoreWrite.get(name.toLowerCase());
    if (ctx && access.access === "Write") await paused(ctx, "restore-write");
    return result;
  };
  return client;
};
const realStaging = env.staging.bind(env);
env.staging = (jobId) => {
  const ctx = midStage.get(jobId);
  return ctx ? pausingStore(realStaging(jobId), ctx) : realStaging(jobId);
};

const backup: MachineDefinition<BackupJobData> = backupMachine(env);
for (const [state, definition] of Object.entries(backup.states)) {
  const step = definition.step.bind(definition);
  definition.step = async (ctx, data) => {
    const pause = pauses[ctx.job.itemId.toLowerCase()];
    if (pause === "stage-mid" && state === "stage") midStage.set(ctx.jobId, ctx);
    if (pause === "stage-sas" && state === "stage") sasStage.set(ctx.job.itemId.split("/").at(-1)!.toLowerCase(), ctx);
    const transition = await step(ctx, data);
    if (pause === state) await paused(ctx, state);
    return transition;
  };
}

const restore = restoreMachine(env);
const restoreStep = restore.states.restore!.step.bind(restore.states.restore);
restore.states.restore!.step = async (ctx, data) => {
  if (pauses[ctx.job.itemId.toLowerCase()] === "restore-write") restoreWrite.set(data.target.split("/").at(-1)!.toLowerCase(), ctx);
  return restoreStep(ctx, data);
};

const fleet = await openFleet(
  new FleetStorage({ connectionString: process.env.AZURE_STORAGE_CONNECTION_STRING! }, { prefix: process.env.BULWARK_FLEET_PREFIX }),
  systemClock,
);
await runWorker({
  fleet,
  region,
  machines: [backup, restore],
  limits: { perWorker: 32, perRegion: Number(process.env.BULWARK_MAX_JOBS_PER_REGION ?? 8) },
  workerId: process.env.BULWARK_TEST_WORKER,
  leaseMs: Number(process.env.BULWARK_LEASE_MS ?? 3000),
  pollMs: 200,
  log: (line) => (["job.claimed", "step.start", "step.failed"].includes(String(line.event)) ? jsonLog(line) : undefined),
});
