/**
 * A stand-in backup machine with real side effects in Azurite blobs, for the job runtime tests:
 *   snapshot -> copy -> commit -> cleanup -> done
 * Each step writes its own transient blob create-only (idempotent), and appends one line to the
 * job's execution log (deliberately not idempotent: it counts how often each step really ran).
 * `commit` creates the item's point blob create-only, so a point exists at most once per job.
 * Compensation deletes the transient blobs. Input knobs: slowState/slowMs (a step that takes long,
 * to kill a worker in it; only on the job's first run), failState/failTimes (a retryable failure for the first N runs),
 * permanentFailState.
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import type { Clock } from "../../runtime/jobs/clock.ts";
import { PermanentJobError, type MachineDefinition, type StepContext } from "../../runtime/jobs/machine.ts";

export interface FakeData extends Record<string, unknown> {
  itemId: string;
  slowState: string;
  slowMs: number;
  /** Be slow after the step's side effect instead of before it (a crash then leaves the effect behind). */
  slowAfter: boolean;
  failState: string;
  failTimes: number;
  permanentFailState: string;
  bytes: number;
}

/** Observes steps in-process: how many run at once, and when each ran. */
export class StepProbe {
  active = 0;
  maxActive = 0;
  readonly spans: { jobId: string; item: string; machine: string; start: number; end: number }[] = [];
}

export function pointKey(itemId: string, jobId: string): string {
  return `points/${Buffer.from(itemId).toString("base64url")}/${jobId}`;
}

async function createOnce(container: ContainerClient, key: string, body: string): Promise<void> {
  try {
    await container.getBlockBlobClient(key).upload(body, Buffer.byteLength(body), { conditions: { ifNoneMatch: "*" } });
  } catch (error) {
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== 409 && status !== 412) throw error; // already made by an earlier run of this step
  }
}

async function appendLine(container: ContainerClient, key: string, line: string): Promise<void> {
  const blob = container.getAppendBlobClient(key);
  await blob.createIfNotExists();
  await blob.appendBlock(`${line}\n`, Buffer.byteLength(`${line}\n`));
}

export async function executionLog(container: ContainerClient, jobId: string): Promise<string[]> {
  const blob = container.getAppendBlobClient(`log/${jobId}`);
  if (!(await blob.exists())) return [];
  return (await blob.downloadToBuffer()).toString().split("\n").filter(Boolean);
}

export async function listKeys(container: ContainerClient, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const blob of container.listBlobsFlat({ prefix })) keys.push(blob.name);
  return keys.sort();
}

export function fakeContainer(connectionString: string, name = "fake"): ContainerClient {
  return BlobServiceClient.fromConnectionString(connectionString).getContainerClient(name);
}

function sleep(ms: number, signal: AbortSignal, clock: Clock): Promise<void> {
  return clock.sleep(ms, signal);
}

export function fakeMachine(
  container: ContainerClient,
  options: { name?: string; probe?: StepProbe; makesPoints?: boolean; defaults?: Record<string, unknown> } = {},
): MachineDefinition<FakeData> {
  const name = options.name ?? "backup";
  const run =
    (state: string, body: (ctx: StepContext, data: FakeData) => Promise<void>, next: string | undefined) =>
    async (ctx: StepContext, data: FakeData) => {
      const started = Date.now();
      const probe = options.probe;
      if (probe) {
        probe.active++;
        probe.maxActive = Math.max(probe.maxActive, probe.active);
      }
      try {
        await appendLine(container, `log/${ctx.jobId}`, state);
        if (data.permanentFailState === state) throw new PermanentJobError(`${state} cannot work on ${data.itemId}`);
        if (data.failState === state && ctx.job.failures < data.failTimes) {
          throw new Error(`${state} failed on purpose (run ${ctx.job.runs})`);
        }
        // Slow only on the job's first run, so a worker that takes over finishes quickly.
        const slow = data.slowState === state && ctx.job.runs <= 1;
        if (slow && !data.slowAfter) await sleep(data.slowMs, ctx.signal, ctx.clock);
        await body(ctx, data);
        if (slow && data.slowAfter) await sleep(data.slowMs, ctx.signal, ctx.clock);
      } finally {
        if (probe) {
          probe.active--;
          probe.spans.push({ jobId: ctx.jobId, item: data.itemId, machine: name, start: started, end: Date.now() });
        }
      }
      return next === undefined ? { done: true as const, data } : { next, data };
    };
  return {
    name,
    initial: "snapshot",
    makesPoints: options.makesPoints ?? name === "backup",
    start: (given) => {
      const input = { ...options.defaults, ...given };
      return {
      itemId: String(input.itemId),
      slowState: String(input.slowState ?? ""),
      slowMs: Number(input.slowMs ?? 0),
      slowAfter: input.slowAfter === true,
      failState: String(input.failState ?? ""),
      failTimes: Number(input.failTimes ?? 0),
      permanentFailState: String(input.permanentFailState ?? ""),
      bytes: Number(input.bytes ?? 1000),
      };
    },
    states: {
      snapshot: {
        step: run("snapshot", (ctx) => createOnce(container, `work/${ctx.jobId}/snapshot`, "snap"), "copy"),
        compensate: async (ctx) => {
          await container.getBlockBlobClient(`work/${ctx.jobId}/snapshot`).deleteIfExists();
        },
      },
      copy: {
        step: run("copy", (ctx) => createOnce(container, `work/${ctx.jobId}/copy`, "copy"), "commit"),
        compensate: async (ctx) => {
          await container.getBlockBlobClient(`work/${ctx.jobId}/copy`).deleteIfExists();
        },
      },
      commit: {
        step: run("commit", (ctx, data) => createOnce(container, pointKey(data.itemId, ctx.jobId), ctx.jobId), "cleanup"),
      },
      cleanup: {
        step: run(
          "cleanup",
          async (ctx) => {
            await container.getBlockBlobClient(`work/${ctx.jobId}/snapshot`).deleteIfExists();
            await container.getBlockBlobClient(`work/${ctx.jobId}/copy`).deleteIfExists();
          },
          undefined,
        ),
      },
    },
    metrics: (data) => ({ bytesRead: data.bytes, bytesNew: Math.floor(data.bytes / 4), bytesStored: Math.floor(data.bytes / 8), pointId: `point-of-${data.itemId.split("/").pop()}` }),
  };
}

/**
 * The machine with one state's step held until `until(arrived)` holds (checked every 10 ms;
 * `arrived` names the jobs that reached the hold so far): a test keeps jobs in flight until what it
 * wants to see has happened (a second job started, another worker deferred), instead of hoping a
 * slow step lasts long enough on a busy machine.
 */
export function holdStep<D extends FakeData>(
  machine: MachineDefinition<D>,
  state: string,
  until: (arrived: ReadonlySet<string>) => boolean,
  timeoutMs = 120_000,
): MachineDefinition<D> {
  const held = machine.states[state]!;
  const arrived = new Set<string>();
  return {
    ...machine,
    states: {
      ...machine.states,
      [state]: {
        ...held,
        step: async (ctx, data) => {
          arrived.add(ctx.jobId);
          const deadline = Date.now() + timeoutMs;
          while (!until(arrived)) {
            if (Date.now() > deadline) throw new Error(`holdStep: ${state} of ${ctx.jobId} waited ${timeoutMs} ms in vain`);
            await new Promise((r) => setTimeout(r, 10));
          }
          return held.step(ctx, data);
        },
      },
    },
  };
}
