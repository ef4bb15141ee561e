/**
 * The one generic runner of persisted finite-state machines.
 *
 * A job's record (records.ts) holds its machine, current state and data. The runner claims the
 * job (owner + lease time, ETag-conditional), takes the job's item locks, then runs one step at a
 * time and commits `{ state, data }` with If-Match after each. A heartbeat renews the lease while a
 * step runs. If the worker dies, its lease runs out and the next worker that gets the message
 * claims the job and resumes at the last committed state (redoing at most the step in flight, which
 * is why steps are idempotent). If a commit finds the ETag changed, the lease was lost to a
 * takeover: the runner stops without writing anything more.
 *
 * On failure: retryable errors release the job for a later delivery (up to maxAttempts failed
 * runs); then, or for permanent errors, the compensations of the completed states run newest
 * first, each committed, and the job ends failed. Finishing (report, item state, lock release) is
 * idempotent and repeated by whoever sees a finished job's message again.
 */
import { withAbortScope } from "../azure/abort-scope.ts";
import { describeError } from "../errors.ts";
import type { Clock } from "./clock.ts";
import type { ItemLocks } from "./item-locks.ts";
import type { HeldLease, LeaseTable } from "./leases.ts";
import { PermanentJobError, type AnyMachine, type StepContext } from "./machine.ts";
import { isTerminal, type ItemStore, type JobRecord, type JobStore } from "./records.ts";
import { buildReport, type JobReport, type ReportStore } from "./reports.ts";

export type LogSink = (line: Record<string, unknown>) => void;

/** One JSON line per event on stdout. */
export const jsonLog: LogSink = (line) => {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...line })}\n`);
};

export interface RunnerDeps {
  jobs: JobStore;
  items: ItemStore;
  reports: ReportStore;
  itemLocks: ItemLocks;
  slots: LeaseTable;
  clock: Clock;
  log: LogSink;
}

export interface RunnerOptions {
  workerId: string;
  /** How long a claim lasts without a heartbeat; renewed every third of it. */
  leaseMs: number;
  /** Failed runs (step errors) before the job compensates and fails. */
  maxAttempts: number;
  /** First retry delay after a failed run; doubles with each failure. */
  retryDelayMs: number;
  /** How long to wait before trying again when an item lock is held by another job. */
  lockRetryMs: number;
  /** Claims (including takeovers after crashes) after which the job is given up: compensated and failed. */
  maxRuns: number;
  /**
   * How long one step (or compensation) may run before it is aborted and its attempt fails as
   * retryable, unless its state or machine says otherwise. Default 6 hours.
   */
  stepTimeoutMs?: number;
}

/** A step that runs longer than this is aborted unless its state or machine sets its own limit. */
export const DEFAULT_STEP_TIMEOUT_MS = 6 * 60 * 60_000;

export interface RunRequest {
  jobId: string;
  /** Shutdown (SIGTERM): the runner stops after the step in flight, commits it and releases the job. */
  signal?: AbortSignal;
  /** Leases renewed along with the job (the worker's region slot). */
  heldLeases?: HeldLease[];
  /** Called on each heartbeat (the worker extends its message's invisibility). */
  onHeartbeat?: () => Promise<void>;
  /** Give up on the job: compensate and fail with this error (a poisoned message). */
  giveUp?: string;
}

export type RunOutcome =
  | { kind: "finished"; job: JobRecord; report: JobReport; duplicate: boolean }
  | { kind: "busy"; retryAfterMs: number; reason: string }
  | { kind: "retry"; retryAfterMs: number; error: string; job: JobRecord }
  | { kind: "interrupted" }
  | { kind: "lost" }
  | { kind: "missing" }
  | { kind: "unknown-machine"; machine: string };

class LeaseLost extends Error {}

/** The reason a step's signal aborts when the step ran past its time limit. */
export class StepTimeoutError extends Error {
  constructor(state: string, timeoutMs: number) {
    super(`the step ${state} did not finish within ${timeoutMs} ms and was stopped`);
    this.name = "StepTimeoutError";
  }
}

export class JobRunner {
  private readonly deps: RunnerDeps;
  private readonly machines: Map<string, AnyMachine>;
  private readonly options: RunnerOptions;
  /** Jobs this runner is running now: a second message for one of them is a duplicate. */
  private readonly active = new Set<string>();

  constructor(deps: RunnerDeps, machines: AnyMachine[], options: RunnerOptions) {
    this.deps = deps;
    this.machines = new Map(machines.map((m) => [m.name, m]));
    this.options = options;
  }

  private lockedResources(machine: AnyMachine, job: JobRecord): string[] {
    return machine.locks?.(job) ?? [job.itemId];
  }

  private timeoutOf(machine: AnyMachine, state: string): number {
    return machine.states[state]?.timeoutMs ?? machine.stepTimeoutMs ?? this.options.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
  }

  async run(request: RunRequest): Promise<RunOutcome> {
    if (this.active.has(request.jobId)) {
      return { kind: "busy", retryAfterMs: this.options.leaseMs, reason: "the job is running in this worker" };
    }
    this.active.add(request.jobId);
    try {
      return await this.runOwned(request);
    } finally {
      this.active.delete(request.jobId);
    }
  }

  private async runOwned(request: RunRequest): Promise<RunOutcome> {
    const { jobs, clock, log } = this.deps;
    const { workerId, leaseMs } = this.options;
    const found = await jobs.get(request.jobId);
    if (!found) return { kind: "missing" };
    let rec = found.value;
    let etag = found.etag;
    const machine = this.machines.get(rec.machine);
    if (!machine) return { kind: "unknown-machine", machine: rec.machine };
    const jobLog = (event: string, fields: Record<string, unknown> = {}) =>
      log({ event, jobId: rec.jobId, machine: rec.machine, item: rec.itemId, worker: workerId, ...fields });

    if (isTerminal(rec.status)) {
      const report = await this.finish(rec, machine, false, jobLog);
      return { kind: "finished", job: rec, report, duplicate: true };
    }

    // Claim.
    const claimedAt = clock.now();
    if (rec.owner && rec.owner !== workerId && rec.leaseUntil > claimedAt) {
      return { kind: "busy", retryAfterMs: rec.leaseUntil - claimedAt + 500, reason: `job is owned by ${rec.owner}` };
    }
    const takeover = rec.owner !== "" && rec.owner !== workerId;
    const giveUp =
      request.giveUp ??
      (rec.runs >= this.options.maxRuns
        ? `the job was started ${rec.runs} times without finishing; last error: ${rec.error || "none (its workers died or were stopped)"}`
        : undefined);
    const firstRun = rec.state === "";
    const claimed: JobRecord = {
      ...rec,
      owner: workerId,
      leaseUntil: claimedAt + leaseMs,
      runs: rec.runs + 1,
      startedAt: rec.startedAt || claimedAt,
      status: rec.status === "queued" ? "running" : rec.status,
      state: firstRun ? machine.initial : rec.state,
      data: firstRun ? machine.start(rec.input) : rec.data,
    };
    const claimSentAt = performance.now();
    const claimedEtag = await jobs.replace(claimed, etag);
    if (claimedEtag === undefined) return { kind: "busy", retryAfterMs: 1000, reason: "another worker claimed the job first" };
    rec = claimed;
    etag = claimedEtag;

    const resources = this.lockedResources(machine, rec);
    const busyOn = await this.deps.itemLocks.acquireAll(resources, rec.jobId);
    if (busyOn) {
      const released: JobRecord = { ...rec, owner: "", leaseUntil: 0, runs: rec.runs - 1 };
      await jobs.replace(released, etag);
      jobLog("job.waiting", { reason: `${busyOn} is locked by another job` });
      return { kind: "busy", retryAfterMs: this.options.lockRetryMs, reason: `${busyOn} is locked by another job` };
    }
    jobLog("job.claimed", { run: rec.runs, state: rec.state, status: rec.status, takeover });
    await this.markItem(rec, "running");

    // From here on every write of the record goes through one queue, so heartbeats and step
    // commits never race each other for the ETag.
    const stop = new AbortController();
    let lost = false;
    const onShutdown = () => stop.abort(new Error("worker is shutting down"));
    if (request.signal?.aborted) onShutdown();
    request.signal?.addEventListener("abort", onShutdown, { once: true });
    let queue: Promise<unknown> = Promise.resolve();
    const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
      const result = queue.then(fn);
      queue = result.then(
        () => undefined,
        () => undefined,
      );
      return result;
    };
    const loseLease = (reason = "the job's lease was taken over by another worker") => {
      if (lost) return;
      lost = true;
      jobLog("job.lease-lost", { reason });
      stop.abort(new LeaseLost(reason));
    };
    // The lease watchdog. The lease runs `leaseMs` from the moment its last renewal was sent
    // (measured on this host's monotonic clock, not on the job clock, which tests may move). If no
    // renewal got through by a tenth of a lease before that, the step is aborted: it must have
    // stopped before another worker may take the job over, never run beside the new owner (an
    // aborted step stops at its next request; a new owner also waits for the message to reappear,
    // a second after the lease). A renewal already sent and not yet answered (a slow table) gets
    // until a twentieth of a lease before the expiry. Heartbeats come every third of a lease, so
    // only a process starved of CPU for more than half a lease loses a lease it still held.
    const margin = Math.max(50, Math.floor(leaseMs / 10));
    const lastMargin = Math.max(25, Math.floor(leaseMs / 20));
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    let renewalSentAt: number | undefined;
    const armWatchdog = (sentAt: number) => {
      if (watchdog) clearTimeout(watchdog);
      if (lost) return;
      const expire = () => loseLease(`the job's lease could not be renewed before it expired (last renewed ${Math.round(performance.now() - sentAt)} ms ago)`);
      const check = () => {
        if (renewalSentAt !== undefined && renewalSentAt > sentAt && performance.now() < sentAt + leaseMs - lastMargin) {
          watchdog = setTimeout(expire, Math.max(0, sentAt + leaseMs - lastMargin - performance.now()));
          watchdog.unref?.();
          return;
        }
        expire();
      };
      watchdog = setTimeout(check, Math.max(0, sentAt + leaseMs - margin - performance.now()));
      watchdog.unref?.();
    };
    armWatchdog(claimSentAt);
    const write = (change: (current: JobRecord) => JobRecord): Promise<boolean> =>
      exclusive(async () => {
        if (lost) return false;
        const next = change(rec);
        // Not renewing: leaseUntil stays as the last heartbeat set it (the watchdog's deadline).
        // A write that does not answer within a lease is given up (the watchdog stopped the step).
        const nextEtag = await jobs.replace(next, etag, { abortSignal: AbortSignal.timeout(leaseMs) });
        if (nextEtag === undefined) {
          loseLease();
          return false;
        }
        rec = next;
        etag = nextEtag;
        return true;
      });
    // The job record's renewal is the only part of a heartbeat that shares the record's write
    // queue; the slot and message renewals follow on their own, so a slow one never delays the
    // next renewal of the lease. A heartbeat still queued or running is not queued twice.
    let renewalQueued = false;
    let othersRenewing = false;
    let others: Promise<void> = Promise.resolve();
    const heartbeat = setInterval(() => {
      if (renewalQueued || lost) return;
      renewalQueued = true;
      void exclusive(async (): Promise<boolean> => {
        if (lost) return false;
        try {
          const next = { ...rec, leaseUntil: clock.now() + leaseMs };
          const sentAt = performance.now();
          renewalSentAt = sentAt;
          // A write that does not answer must not outlive the lease it is renewing.
          const nextEtag = await jobs.replace(next, etag, { abortSignal: AbortSignal.timeout(Math.max(1, leaseMs - lastMargin)) });
          renewalSentAt = undefined;
          if (nextEtag === undefined) {
            loseLease();
            return false;
          }
          rec = next;
          etag = nextEtag;
          armWatchdog(sentAt);
          return true;
        } catch (error) {
          renewalSentAt = undefined;
          jobLog("heartbeat.failed", { error: describeError(error) });
          if (clock.now() > rec.leaseUntil) loseLease("the job's lease expired while its renewals failed");
          return false;
        }
      }).then((renewed) => {
        renewalQueued = false;
        if (!renewed || othersRenewing || lost) return;
        others = renewOthers();
      });
    }, Math.max(100, Math.floor(leaseMs / 3)));
    const renewOthers = async (): Promise<void> => {
      othersRenewing = true;
      try {
        for (const lease of request.heldLeases ?? []) {
          if (!(await this.deps.slots.renew(lease, leaseMs))) jobLog("slot.lost", { slot: lease.rowKey });
        }
        await request.onHeartbeat?.();
      } catch (error) {
        jobLog("heartbeat.failed", { error: describeError(error) });
      } finally {
        othersRenewing = false;
      }
    };

    // Each step and compensation gets its own signal: aborted on shutdown, on a lost lease, and
    // when it runs past its time limit.
    let stepController = new AbortController();
    const stopStep = () => stepController.abort(stop.signal.reason);
    stop.signal.addEventListener("abort", stopStep);
    const ctx: StepContext = {
      jobId: rec.jobId,
      get job() {
        return rec;
      },
      get signal() {
        return stepController.signal;
      },
      clock,
      log: (event, fields) => jobLog(event, fields),
    };
    /** Runs one step or compensation under its own signal and time limit; `timedOut` tells which ended it. */
    const limited = async <T>(state: string, body: () => Promise<T>): Promise<{ value?: T; error?: unknown; timedOut: boolean }> => {
      stepController = new AbortController();
      if (stop.signal.aborted) stepController.abort(stop.signal.reason);
      const timeoutMs = this.timeoutOf(machine, state);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        jobLog("step.timeout", { state, timeoutMs });
        stepController.abort(new StepTimeoutError(state, timeoutMs));
      }, timeoutMs);
      try {
        // Azure requests made anywhere inside the step abort with its signal (azure/abort-scope.ts).
        return { value: await withAbortScope(stepController.signal, body), timedOut };
      } catch (error) {
        return { error: timedOut && !stop.signal.aborted ? new StepTimeoutError(state, timeoutMs) : error, timedOut };
      } finally {
        clearTimeout(timer);
      }
    };
    /**
     * Takes the locks the job's data names now and did not name before (a VM backup learns its
     * disks in its first step). False when one is held by another job: the job is released to wait.
     */
    const lockNewResources = async (): Promise<boolean> => {
      const wanted = this.lockedResources(machine, rec);
      const busy = await this.deps.itemLocks.acquireAll(wanted, rec.jobId);
      if (!busy) return true;
      await write((cur) => ({ ...cur, owner: "", leaseUntil: 0, runs: cur.runs - 1 }));
      jobLog("job.waiting", { reason: `${busy} is locked by another job`, state: rec.state });
      return false;
    };

    const enterCompensation = (error: string, failures: number) =>
      write((cur) => ({
        ...cur,
        status: "compensating",
        error,
        failures,
        pendingCompensations: [...cur.compensable].reverse(),
      }));
    const releaseForRetry = async (error: string, failures: number): Promise<RunOutcome> => {
      await write((cur) => ({ ...cur, failures, error, owner: "", leaseUntil: 0 }));
      if (lost) return { kind: "lost" };
      const retryAfterMs = Math.min(this.options.retryDelayMs * 2 ** Math.max(0, failures - 1), 15 * 60_000);
      return { kind: "retry", retryAfterMs, error, job: rec };
    };

    try {
      while (!stop.signal.aborted && !isTerminal(rec.status)) {
        if (rec.status === "running" && giveUp) {
          jobLog("job.giving-up", { error: giveUp });
          await enterCompensation(giveUp, rec.failures);
          continue;
        }
        if (rec.status === "running") {
          const state = rec.state;
          const definition = machine.states[state];
          if (!definition) {
            await enterCompensation(`machine ${machine.name} has no state "${state}"`, rec.failures + 1);
            continue;
          }
          jobLog("step.start", { state });
          const ran = await limited(state, () => definition.step(ctx, rec.data));
          // Lost: never commit. Shut down: a step that returned is committed, one that threw is
          // redone by the next owner.
          if (lost || (stop.signal.aborted && ran.error !== undefined)) break;
          if (ran.error !== undefined || ran.value === undefined) {
            const error = ran.error ?? new Error(`the step ${state} returned no transition`);
            const message = `${state}: ${describeError(error)}`;
            const failures = rec.failures + 1;
            // A step stopped at its time limit may well succeed on a later attempt.
            const retryable = ran.timedOut || (!(error instanceof PermanentJobError) && (machine.retryable?.(error) ?? true));
            jobLog("step.failed", { state, error: message, failures, retryable });
            if (retryable && failures < this.options.maxAttempts) return await releaseForRetry(message, failures);
            await enterCompensation(message, failures);
            continue;
          }
          const transition = ran.value;
          if ("done" in transition) {
            const endedAt = clock.now();
            await write((cur) => ({
              ...cur,
              data: transition.data,
              compensable: definition.compensate ? [...cur.compensable, state] : cur.compensable,
              status: "succeeded",
              error: "",
              endedAt,
              owner: "",
              leaseUntil: 0,
            }));
          } else if (!machine.states[transition.next]) {
            await enterCompensation(`machine ${machine.name}: state ${state} went to unknown state "${transition.next}"`, rec.failures + 1);
          } else {
            await write((cur) => ({
              ...cur,
              data: transition.data,
              state: transition.next,
              compensable: definition.compensate ? [...cur.compensable, state] : cur.compensable,
            }));
            if (!lost) jobLog("step.done", { state, next: transition.next });
            // The step may have named more resources to hold (a VM's disks): held before the next step.
            if (!lost && !stop.signal.aborted && !(await lockNewResources())) {
              return lost ? { kind: "lost" } : { kind: "busy", retryAfterMs: this.options.lockRetryMs, reason: `waiting for an item lock before ${rec.state}` };
            }
            continue;
          }
          if (!lost) jobLog("step.done", { state, next: "done" in transition ? "done" : transition.next });
          continue;
        }
        // Compensating: undo what completed states hold, newest first, committing each.
        const name = rec.pendingCompensations[0];
        if (name === undefined) {
          const endedAt = clock.now();
          await write((cur) => ({ ...cur, status: "failed", endedAt, owner: "", leaseUntil: 0 }));
          continue;
        }
        jobLog("compensate.start", { state: name });
        const undone = await limited(name, async () => machine.states[name]?.compensate?.(ctx, rec.data));
        if (lost || (stop.signal.aborted && undone.error !== undefined)) break;
        if (undone.error !== undefined) {
          const message = `compensating ${name}: ${describeError(undone.error)}`;
          jobLog("compensate.failed", { state: name, error: message });
          if (!giveUp) return await releaseForRetry(rec.error, rec.failures + 1);
          // Giving up: record what could not be undone and end the job anyway.
          await write((cur) => ({ ...cur, error: `${cur.error}; ${message}`, pendingCompensations: cur.pendingCompensations.slice(1) }));
          continue;
        }
        await write((cur) => ({ ...cur, pendingCompensations: cur.pendingCompensations.slice(1) }));
      }
    } finally {
      clearInterval(heartbeat);
      if (watchdog) clearTimeout(watchdog);
      stop.signal.removeEventListener("abort", stopStep);
      request.signal?.removeEventListener("abort", onShutdown);
      await queue;
      await others; // the message's invisibility, before the worker deletes or releases it
    }

    if (lost) return { kind: "lost" };
    if (isTerminal(rec.status)) {
      const report = await this.finish(rec, machine, true, jobLog);
      return { kind: "finished", job: rec, report, duplicate: false };
    }
    // Shutdown: the last step is committed; let the next worker take the job at once.
    await write((cur) => ({ ...cur, owner: "", leaseUntil: 0 }));
    jobLog("job.interrupted", { state: rec.state, status: rec.status });
    return lost ? { kind: "lost" } : { kind: "interrupted" };
  }

  private async markItem(job: JobRecord, state: "running"): Promise<void> {
    const current = await this.deps.items.get(job.itemId);
    if (!current || current.value.jobId !== job.jobId || current.value.state === state) return;
    await this.deps.items.put({ ...current.value, state }, current.etag);
  }

  /** Report, item state and locks of a finished job. Idempotent. */
  private async finish(
    job: JobRecord,
    machine: AnyMachine,
    firstTime: boolean,
    jobLog: (event: string, fields?: Record<string, unknown>) => void,
  ): Promise<JobReport> {
    const metrics = machine.metrics?.(job.data) ?? {};
    const report = buildReport(job, metrics);
    await this.deps.reports.write(report);
    const item = await this.deps.items.get(job.itemId);
    if (item) {
      await this.deps.items.update(
        job.itemId,
        () => item.value,
        (current) => {
          let changed = false;
          if (current.jobId === job.jobId) {
            current.state = "idle";
            current.jobId = "";
            current.queuedAt = 0;
            changed = true;
          }
          if (job.endedAt >= current.lastEndedAt && current.lastJobId !== job.jobId) {
            current.lastJobId = job.jobId;
            current.lastOutcome = job.status;
            current.lastEndedAt = job.endedAt;
            current.lastError = job.error;
            changed = true;
          }
          if (machine.makesPoints && job.status === "succeeded" && job.createdAt > current.lastGoodAt) {
            current.lastGoodAt = job.createdAt;
            current.lastGoodPointId = metrics.pointId ?? "";
            current.lastGoodJobId = job.jobId;
            changed = true;
          }
          return changed ? current : undefined;
        },
      );
    }
    await this.deps.itemLocks.releaseAll(this.lockedResources(machine, job), job.jobId);
    if (firstTime) jobLog("job.report", { report });
    else jobLog("job.duplicate", { status: job.status });
    return report;
  }
}
