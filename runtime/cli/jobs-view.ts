/**
 * `bulwark jobs` as a person reads it. A job record's `state` is the step its machine runs next
 * while the job runs; when the last step returns `done`, the runner (runtime/jobs/runner.ts) sets
 * the status to succeeded and leaves `state` at that last step: a finished backup's record says
 * `cleanup`, its last step, which read as if it were still cleaning up. So the step is shown only
 * for a job that has not finished, and for a failed one as the step it failed in.
 */
import type { JobSummary } from "../jobs/index.ts";

export interface JobRow extends Omit<JobSummary, "state"> {
  /** The step running or next, for an unfinished job; null once it finished. */
  step: string | null;
  /** For a failed job: the step it failed in. */
  failedIn?: string;
}

function finished(job: Pick<JobSummary, "status">): boolean {
  return job.status === "succeeded" || job.status === "failed";
}

export function jobRows(jobs: JobSummary[]): JobRow[] {
  return jobs.map(({ state, ...job }) => ({
    ...job,
    step: finished(job) ? null : state || null,
    ...(job.status === "failed" && state ? { failedIn: state } : {}),
  }));
}

/** A header over aligned columns; the item by its last name (the full id is in --json). */
export function jobsText(rows: JobRow[]): string {
  if (rows.length === 0) return "no jobs yet";
  const table = [
    ["CREATED", "JOB", "STATUS", "STEP", "ITEM", "ERROR"],
    ...rows.map((j) => [j.created, j.machine, j.status, j.step ?? (j.failedIn ? `(in ${j.failedIn})` : "-"), j.item.split("/").at(-1) ?? "", j.error]),
  ];
  const widths = table[0].map((_, column) => Math.max(...table.map((r) => r[column].length)));
  return table.map((r) => r.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd()).join("\n");
}
