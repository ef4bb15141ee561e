/**
 * Issue 8, item 8: a step's Azure requests abort with the step, even where the code that makes
 * them takes no signal. A step reads a page blob through a storage SDK client built the way the
 * disk source builds its SAS reader (newPipeline + the abort-scope policy); the storage endpoint
 * takes the request and never answers. Shutting the worker down must end the request (the server
 * sees the connection close) and the step, and the runner lets go of the job at once.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { AnonymousCredential, PageBlobClient, newPipeline } from "@azure/storage-blob";
import { afterAll, beforeAll, expect, test } from "vitest";
import { abortScopeFactory } from "../../runtime/azure/abort-scope.ts";
import type { MachineDefinition } from "../../runtime/jobs/machine.ts";
import { JobRunner } from "../../runtime/jobs/runner.ts";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { Azurite } from "../support/azurite.ts";
import { collectLog, disk, testFleet } from "./harness.ts";

let azurite: Azurite;
let server: http.Server;
/** Requests the silent endpoint received, and whether their connection was closed by the client. */
const received: { url: string; closed: Promise<void> }[] = [];
let onRequest: () => void = () => {};

beforeAll(async () => {
  azurite = await Azurite.start();
  server = http.createServer((request) => {
    // Never answers: a storage front end that hangs.
    received.push({ url: request.url ?? "", closed: new Promise((resolve) => request.socket.once("close", () => resolve())) });
    onRequest();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
}, 60_000);
afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await azurite?.stop();
});

test("a step's storage read that never answers is aborted when the worker shuts down, and the job is let go at once", async () => {
  const fleet = await testFleet(azurite.connectionString);
  const item = disk("s1", "d-hang", "westeurope");
  const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: "westeurope", input: { itemId: item.id } });
  if (!submitted.submitted) throw new Error(submitted.reason);
  const { port } = server.address() as AddressInfo;
  const pipeline = newPipeline(new AnonymousCredential(), { retryOptions: { maxTries: 1, tryTimeoutInMs: 600_000 } });
  pipeline.factories.unshift(abortScopeFactory);
  const blob = new PageBlobClient(`http://127.0.0.1:${port}/devstoreaccount1/disks/d-hang?sv=2022-11-02&sig=x`, pipeline);

  let stepError: unknown;
  const machine: MachineDefinition = {
    name: "backup",
    initial: "read",
    start: (input) => ({ ...input }),
    states: {
      read: {
        // The read gets no signal of its own: only the step's abort scope can end it.
        async step(_ctx, data) {
          try {
            await blob.download(0, 4 * 1024 * 1024);
          } catch (error) {
            stepError = error;
            throw error;
          }
          return { done: true, data };
        },
      },
    },
  };
  const log = collectLog();
  const runner = new JobRunner({ ...fleet, log: log.sink }, [machine], { workerId: "w1", leaseMs: 60_000, maxAttempts: 3, retryDelayMs: 100, lockRetryMs: 100, maxRuns: 10 });
  const shutdown = new AbortController();
  const requested = new Promise<void>((resolve) => (onRequest = resolve));
  const run = runner.run({ jobId: submitted.job.jobId, signal: shutdown.signal });
  await requested;
  shutdown.abort();

  expect(await run).toEqual({ kind: "interrupted" });
  await received[0]!.closed; // the request itself was ended, not left hanging
  expect((stepError as Error).name).toBe("AbortError");
  // Let go at once (a 60 s lease would otherwise keep the next worker waiting), at the same state.
  expect((await fleet.jobs.get(submitted.job.jobId))!.value).toMatchObject({ status: "running", state: "read", owner: "", leaseUntil: 0 });
}, 30_000);
