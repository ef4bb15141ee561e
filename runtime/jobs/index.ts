/** The job runtime's public surface, for the CLI (`bulwark agent schedule|worker`, `bulwark jobs|status`). */
export { systemClock, ManualClock, type Clock } from "./clock.ts";
export { FleetStorage, type StorageConnection, type FleetStorageOptions } from "./storage.ts";
export { openFleet, submitJob, sendWork, parseWorkMessage, type Fleet, type SubmitRequest, type SubmitResult } from "./submit.ts";
export { scheduleTick, type ScheduleTickOptions, type TickResult } from "./scheduler.ts";
export { runWorker, defaultWorkerId, type WorkerOptions, type WorkerLimits, type WorkerSummary } from "./worker.ts";
export { JobRunner, jsonLog, type LogSink, type RunOutcome } from "./runner.ts";
export {
  PermanentJobError,
  type AnyMachine,
  type JobData,
  type JobMetrics,
  type MachineDefinition,
  type StateDefinition,
  type StepContext,
  type Transition,
} from "./machine.ts";
export { isTerminal, jobCreatedAt, type ItemRecord, type JobRecord, type JobStatus } from "./records.ts";
export { itemStatuses, listRecentJobs, buildReport, type ItemStatus, type JobReport, type JobSummary } from "./reports.ts";
