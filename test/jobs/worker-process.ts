/**
 * A worker in its own process, for kill -9 tests: runs the fake backup machine from the region's
 * queue until the queue is drained, logging JSON lines to stdout. SIGTERM shuts it down cleanly.
 * Environment: BULWARK_TEST_CONNECTION (Azurite's development connection string), BULWARK_TEST_PREFIX,
 * BULWARK_TEST_REGION, BULWARK_TEST_WORKER, BULWARK_TEST_LEASE_MS, BULWARK_TEST_PER_WORKER.
 */
import { systemClock } from "../../runtime/jobs/clock.ts";
import { FleetStorage } from "../../runtime/jobs/storage.ts";
import { openFleet } from "../../runtime/jobs/submit.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { fakeContainer, fakeMachine } from "./fake-machine.ts";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const connectionString = env("BULWARK_TEST_CONNECTION");
const fleet = await openFleet(new FleetStorage({ connectionString }, { prefix: env("BULWARK_TEST_PREFIX") }), systemClock);
const shutdown = new AbortController();
process.on("SIGTERM", () => shutdown.abort());
const summary = await runWorker({
  fleet,
  region: env("BULWARK_TEST_REGION"),
  machines: [fakeMachine(fakeContainer(connectionString))],
  limits: { perWorker: Number(process.env.BULWARK_TEST_PER_WORKER ?? 4), perRegion: 8 },
  workerId: env("BULWARK_TEST_WORKER"),
  leaseMs: Number(process.env.BULWARK_TEST_LEASE_MS ?? 2000),
  retryDelayMs: 200,
  lockRetryMs: 200,
  pollMs: 200,
  untilDrained: true,
  signal: shutdown.signal,
});
process.stdout.write(`${JSON.stringify({ event: "summary", ...summary })}\n`);
