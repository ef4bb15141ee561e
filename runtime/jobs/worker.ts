/**
 * The worker loop (`bulwark agent worker`, a queue-triggered Container Apps job): take work items
 * from the region's queue and run each job's machine to the end, then exit when the queue is empty.
 *
 * Throttling:
 * - per worker: at most `limits.perWorker` jobs at once in this process;
 * - per region: a counting semaphore in storage, `limits.perRegion` slot entities in the locks
 *   table (partition `slots-<region>`), each a heartbeat lease (leases.ts). A worker takes a slot
 *   *before* it receives a message, so a full region does not churn messages (and their dequeue
 *   counts); a dead worker's slot frees itself when its lease runs out. Every worker of a region
 *   must be given the same perRegion.
 * - per item: the job's item locks (item-locks.ts): one job per item (or per disk) at a time, so a
 *   backup and a restore of one item never overlap. A job whose lock is busy is deferred: its
 *   message is re-sent with a delay and the original deleted, so waiting does not count as failing.
 *
 * Messages: received with a visibility timeout; the owner keeps its message invisible on every
 * heartbeat. A message is deleted only once its job is finished; a job that ends failed (after
 * maxAttempts failed runs, a permanent error, or maxRuns claims) has its message moved to the
 * poison queue with the error, as has a message that is not a work message or names no job.
 * Duplicates (a finished job, or one owned by a live worker) are recognised from the job record.
 *
 * SIGTERM: abort `signal`; running steps see it, the runner commits the step in flight, releases
 * the job's lease and the worker makes the message visible at once for the next worker.
 *
 * Policies (`authority`, policy/authority.ts): a job record is not trusted input. Before a job runs,
 * on every delivery, the worker checks its record against the policies it loaded (the vault one of
 * theirs, the item one its policy protects, in this region); a record that does not match is failed
 * at once with the reason, nothing of it runs (no compensation runs on forged state either), its
 * report is written and its message poisoned: it is never retried.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import type { QueueClient, DequeuedMessageItem } from "@azure/storage-queue";
import { describeError } from "../errors.ts";
import type { JobAuthority } from "../policy/authority.ts";
import { normalizeRegion } from "../policy/items.ts";
import type { HeldLease } from "./leases.ts";
import type { AnyMachine } from "./machine.ts";
import { isTerminal } from "./records.ts";
import { JobRunner, jsonLog, type LogSink, type RunOutcome } from "./runner.ts";
import { parseWorkMessage, type Fleet } from "./submit.ts";

export interface WorkerLimits {
  /** Jobs this worker runs at once. */
  perWorker: number;
  /** Jobs all workers of the region run at once. */
  perRegion: number;
}

export interface WorkerOptions {
  fleet: Fleet;
  region: string;
  machines: AnyMachine[];
  limits: WorkerLimits;
  /** Shutdown (SIGTERM). */
  signal?: AbortSignal;
  workerId?: string;
  /** Job, slot and message lease; renewed every third of it. Default 30 s. */
  leaseMs?: number;
  /** Failed runs before a job compensates and fails. Default 3. */
  maxAttempts?: number;
  /** Claims before a job that never finishes (workers keep dying on it) is given up. Default 10. */
  maxRuns?: number;
  /** Deliveries before a message is poisoned whatever its job says. Default 50. */
  maxDequeues?: number;
  /** First retry delay after a failed run (doubles each time). Default 10 s. */
  retryDelayMs?: number;
  /** Delay before a job waiting for an item lock is tried again. Default 30 s. */
  lockRetryMs?: number;
  /** How often to look for a free region slot while the region is full. Default 2 s. */
  pollMs?: number;
  /**
   * Exit only when the queue holds no message at all, not even invisible ones (retries, deferred
   * jobs, jobs other workers run). Default false: exit as soon as nothing is visible, as a Container
   * Apps job execution does; the queue scaler starts another execution for what comes back.
   */
  untilDrained?: boolean;
  /**
   * What jobs may touch, from the worker's policies. `bulwark agent worker` always has one; without
   * it (tests of the queue mechanics with fake machines) records are run as they are.
   */
  authority?: JobAuthority;
  log?: LogSink;
}

export interface WorkerSummary {
  workerId: string;
  succeeded: number;
  failed: number;
  poisoned: number;
  duplicates: number;
  deferred: number;
  retried: number;
  interrupted: number;
  /** Jobs whose records did not match the worker's policies: failed without running. */
  refused: number;
}

export function defaultWorkerId(): string {
  return `${os.hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

export async function runWorker(options: WorkerOptions): Promise<WorkerSummary> {
  const { fleet, limits } = options;
  const region = normalizeRegion(options.region);
  const clock = fleet.clock;
  const log = options.log ?? jsonLog;
  const workerId = options.workerId ?? defaultWorkerId();
  const leaseMs = options.leaseMs ?? 30_000;
  // A message outlives its owner's lease by a little, so when it reappears the lease has run out.
  const visibilitySeconds = Math.max(1, Math.ceil(leaseMs / 1000) + 1);
  const maxDequeues = options.maxDequeues ?? 50;
  const pollMs = options.pollMs ?? 2_000;
  const signal = options.signal ?? new AbortController().signal;
  if (limits.perWorker < 1 || limits.perRegion < 1) throw new RangeError("worker limits must be at least 1");

  const runner = new JobRunner({ ...fleet, log }, options.machines, {
    workerId,
    leaseMs,
    maxAttempts: options.maxAttempts ?? 3,
    maxRuns: options.maxRuns ?? 10,
    retryDelayMs: options.retryDelayMs ?? 10_000,
    lockRetryMs: options.lockRetryMs ?? 30_000,
  });
  const queue = await fleet.storage.queue(region);
  const poison = await fleet.storage.poisonQueue(region);
  const summary: WorkerSummary = { workerId, succeeded: 0, failed: 0, poisoned: 0, duplicates: 0, deferred: 0, retried: 0, interrupted: 0, refused: 0 };
  const slotScope = `slots-${region}`;
  let slotSequence = 0;

  const toPoison = async (message: DequeuedMessageItem, error: string) => {
    await poison.sendMessage(
      JSON.stringify({ error, message: message.messageText, messageId: message.messageId, dequeueCount: message.dequeueCount, poisonedAt: new Date(clock.now()).toISOString(), worker: workerId }),
    );
    summary.poisoned++;
    log({ event: "message.poisoned", worker: workerId, messageId: message.messageId, error });
  };

  const handle = async (message: DequeuedMessageItem, slot: HeldLease): Promise<void> => {
    let popReceipt = message.popReceipt;
    const work = parseWorkMessage(message.messageText);
    if (!work) {
      await toPoison(message, "not a Bulwark work message");
      await deleteMessage(queue, message.messageId, popReceipt);
      return;
    }
    if (options.authority && (await refuseForged(work.jobId, message, popReceipt))) return;
    const outcome: RunOutcome = await runner.run({
      jobId: work.jobId,
      signal,
      heldLeases: [slot],
      giveUp: message.dequeueCount > maxDequeues ? `the message was delivered ${message.dequeueCount} times` : undefined,
      onHeartbeat: async () => {
        const updated = await queue.updateMessage(message.messageId, popReceipt, message.messageText, visibilitySeconds);
        popReceipt = updated.popReceipt ?? popReceipt;
      },
    });
    switch (outcome.kind) {
      case "finished":
        if (outcome.duplicate) summary.duplicates++;
        else if (outcome.job.status === "succeeded") summary.succeeded++;
        else summary.failed++;
        if (!outcome.duplicate && outcome.job.status === "failed") {
          await toPoison(message, `job ${outcome.job.jobId} failed: ${outcome.job.error}`);
        }
        await deleteMessage(queue, message.messageId, popReceipt);
        return;
      case "busy":
        // Owned by a live worker, or waiting for an item lock: come back later with a fresh message.
        await queue.sendMessage(message.messageText, { visibilityTimeout: Math.max(1, Math.ceil(outcome.retryAfterMs / 1000)) });
        await deleteMessage(queue, message.messageId, popReceipt);
        summary.deferred++;
        log({ event: "message.deferred", worker: workerId, jobId: work.jobId, reason: outcome.reason, retryAfterMs: outcome.retryAfterMs });
        return;
      case "retry":
        summary.retried++;
        await setVisibility(queue, message, popReceipt, Math.max(1, Math.ceil(outcome.retryAfterMs / 1000)));
        return;
      case "interrupted":
        summary.interrupted++;
        await setVisibility(queue, message, popReceipt, 0);
        return;
      case "lost":
        return; // the worker that took the job over has the message now
      case "missing":
        await toPoison(message, `job ${work.jobId} has no record in ${fleet.storage.jobs.tableName}`);
        await deleteMessage(queue, message.messageId, popReceipt);
        return;
      case "unknown-machine":
        await toPoison(message, `this worker has no machine named "${outcome.machine}"`);
        await deleteMessage(queue, message.messageId, popReceipt);
        return;
    }
  };

  /**
   * Checks the job's record against the policies; a record that does not match is failed (an
   * ETag-conditional write: a live owner loses its lease and stops), finished by the runner (report,
   * item back to idle, locks released) and its message poisoned. True when the job was refused.
   */
  const refuseForged = async (jobId: string, message: DequeuedMessageItem, popReceipt: string): Promise<boolean> => {
    const found = await fleet.jobs.get(jobId);
    if (!found || isTerminal(found.value.status)) return false; // the runner handles missing and finished jobs
    const job = found.value;
    const reason = await options.authority!.refusal(job);
    if (reason === undefined) return false;
    const error = `refused: ${reason}`;
    log({ event: "job.refused", level: "error", alert: "job-refused", worker: workerId, jobId, machine: job.machine, item: job.itemId, error });
    const failed = { ...job, status: "failed" as const, error, endedAt: clock.now(), owner: "", leaseUntil: 0, pendingCompensations: [] };
    if ((await fleet.jobs.replace(failed, found.etag)) === undefined) {
      // Changed meanwhile: look again at the next delivery.
      await setVisibility(queue, message, popReceipt, 1);
      return true;
    }
    await runner.run({ jobId, signal }); // finishes the failed job: report, item state, locks
    summary.refused++;
    summary.failed++;
    await toPoison(message, `job ${jobId} failed: ${error}`);
    await deleteMessage(queue, message.messageId, popReceipt);
    return true;
  };

  const queueIsEmpty = async (): Promise<boolean> => {
    if (options.untilDrained) return ((await queue.getProperties()).approximateMessagesCount ?? 0) === 0;
    return (await queue.peekMessages({ numberOfMessages: 1 })).peekedMessageItems.length === 0;
  };
  const running = new Set<Promise<void>>();
  const waitForAny = (ms: number) => Promise.race([...running, clock.sleep(ms, signal)]);
  log({ event: "worker.start", worker: workerId, region, limits });
  while (!signal.aborted) {
    if (running.size >= limits.perWorker) {
      await Promise.race(running);
      continue;
    }
    const slot = await fleet.slots.acquireSlot(slotScope, limits.perRegion, `${workerId}#${slotSequence++}`, leaseMs);
    if (!slot) {
      if (running.size > 0) {
        await waitForAny(pollMs);
        continue;
      }
      if (await queueIsEmpty()) break;
      await clock.sleep(pollMs, signal);
      continue;
    }
    const received = await queue.receiveMessages({ numberOfMessages: 1, visibilityTimeout: visibilitySeconds });
    const message = received.receivedMessageItems[0];
    if (!message) {
      await fleet.slots.release(slot);
      if (running.size > 0) {
        await waitForAny(pollMs);
        continue;
      }
      if (await queueIsEmpty()) break; // this execution ends
      await clock.sleep(pollMs, signal);
      continue;
    }
    const task: Promise<void> = handle(message, slot)
      .catch((error) => log({ event: "message.failed", worker: workerId, messageId: message.messageId, error: describeError(error) }))
      .finally(async () => {
        running.delete(task);
        await fleet.slots.release(slot).catch(() => undefined);
      });
    running.add(task);
  }
  await Promise.all(running);
  log({ event: "worker.exit", ...summary, reason: signal.aborted ? "shutdown" : "queue empty" });
  return summary;
}

async function deleteMessage(queue: QueueClient, messageId: string, popReceipt: string): Promise<void> {
  try {
    await queue.deleteMessage(messageId, popReceipt);
  } catch (error) {
    // 404: already deleted, or our pop receipt is stale because the message went to another worker.
    if ((error as { statusCode?: number }).statusCode !== 404) throw error;
  }
}

async function setVisibility(queue: QueueClient, message: DequeuedMessageItem, popReceipt: string, seconds: number): Promise<void> {
  try {
    await queue.updateMessage(message.messageId, popReceipt, message.messageText, seconds);
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode !== 404) throw error;
  }
}
