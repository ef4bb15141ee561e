/**
 * A job is a finite-state machine whose state and data are persisted after every step. A machine
 * definition is plain data plus step functions; the one generic runner (runner.ts) executes any of
 * them. Backup and restore are machines; workload plugins (disk, VM, SQL) supply their steps.
 *
 * The contract a step must keep: it is idempotent. It may run again after a crash (the worker died
 * after the step's side effects but before its result was committed), so it must find and reuse
 * what an earlier run of itself made (create-only writes, deterministic names from the job id).
 */
import type { Clock } from "./clock.ts";
import type { JobRecord } from "./records.ts";

export type JobData = Record<string, unknown>;

export interface StepContext {
  readonly jobId: string;
  readonly job: Readonly<JobRecord>;
  /**
   * Aborted when the worker is shutting down (SIGTERM), when the job's lease is lost or cannot be
   * renewed before it expires, or when the step runs past its time limit: stop soon, and pass it to
   * every read, upload and SDK call (the Azure SDK clients take it as `abortSignal`). A step that
   * returns after its signal aborted is not committed; the next owner runs it again.
   */
  readonly signal: AbortSignal;
  readonly clock: Clock;
  /** Logs one JSON line tagged with the job. */
  log(event: string, fields?: Record<string, unknown>): void;
}

export type Transition<D extends JobData> = { next: string; data: D } | { done: true; data: D };

export interface StateDefinition<D extends JobData> {
  step(ctx: StepContext, data: D): Promise<Transition<D>>;
  /** How long the step (and the compensation) may run before it is aborted and its attempt fails as retryable. */
  timeoutMs?: number;
  /**
   * Undoes what this state's step holds (revoke access, delete a half-made snapshot, remove a
   * transient blob) when the job fails later. Runs in reverse order of the states that completed,
   * must be idempotent, and must never touch committed points.
   */
  compensate?(ctx: StepContext, data: D): Promise<void>;
}

/** What a finished job reports: the runner adds item, kind, times, outcome and error. */
export interface JobMetrics {
  bytesRead?: number;
  bytesNew?: number;
  bytesStored?: number;
  /** The recovery point the job committed, if any. */
  pointId?: string;
  /** Where what the job produced outside the vault is (a files restore's archive URL; never a credential). */
  output?: string;
}

export interface MachineDefinition<D extends JobData = JobData> {
  /** The name jobs and messages refer to ("backup", "restore"). */
  name: string;
  initial: string;
  states: Record<string, StateDefinition<D>>;
  /** The job's starting data, from the input it was submitted with. */
  start(input: JobData): D;
  /**
   * The resources the job must hold exclusively while it runs (defaults to the item itself). A VM
   * backup can name each disk, so one disk never has two jobs at once; a backup and a restore of
   * one item name the same key, so they never overlap. Asked again after every step: resources a
   * step added to the job's data (a VM's disks, learnt in its first step) are locked before the
   * next step runs, and the job waits (is deferred) while one is held by another job. ARM ids are
   * compared case-insensitively.
   */
  locks?(job: Readonly<JobRecord>): string[];
  /** The time limit of the machine's steps that set none (default: the runner's, 6 hours). */
  stepTimeoutMs?: number;
  /** False for errors that no retry will fix (the runner compensates and fails at once). */
  retryable?(error: unknown): boolean;
  metrics?(data: D): JobMetrics;
  /** True for machines whose success is a new recovery point of the item (backup): it moves the item's last good point. */
  makesPoints?: boolean;
}

/** Any machine, for registries that hold machines of different data types. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMachine = MachineDefinition<any>;

/** Thrown by a step for a failure no retry can fix. */
export class PermanentJobError extends Error {}
