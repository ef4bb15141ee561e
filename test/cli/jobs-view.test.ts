/**
 * `bulwark jobs`: a finished job is shown finished, not at its last step. The runner leaves a
 * succeeded backup's record at `state: "cleanup"` (its last step); the view shows no step for it,
 * the step for a running job, and for a failed job the step it failed in.
 */
import { describe, expect, test } from "vitest";
import { jobRows, jobsText } from "../../runtime/cli/jobs-view.ts";
import type { JobSummary } from "../../runtime/jobs/index.ts";

const DISK = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/web-data";

function job(status: string, state: string, extra: Partial<JobSummary> = {}): JobSummary {
  return { jobId: `job-${status}`, machine: "backup", item: DISK, kind: "disk", region: "westeurope", policy: "gold", status, state, owner: "", created: "2026-11-30T09:00:00.000Z", started: null, ended: null, runs: 1, error: "", ...extra };
}

describe("the jobs listing", () => {
  const rows = jobRows([job("succeeded", "cleanup"), job("running", "stage"), job("failed", "acquire", { error: "the disk is gone" }), job("queued", "")]);

  test("a succeeded job whose record is at its last step, cleanup, has no step: it is finished", () => {
    expect(rows[0]).toMatchObject({ status: "succeeded", step: null });
    expect(rows[0]).not.toHaveProperty("state");
    expect(rows[0]).not.toHaveProperty("failedIn");
  });

  test("a running job shows its step, a failed one the step it failed in, a queued one none", () => {
    expect(rows[1]).toMatchObject({ status: "running", step: "stage" });
    expect(rows[2]).toMatchObject({ status: "failed", step: null, failedIn: "acquire", error: "the disk is gone" });
    expect(rows[3]).toMatchObject({ status: "queued", step: null });
  });

  test("the text: a header over aligned columns, the item by name, no `cleanup` anywhere", () => {
    const lines = jobsText(rows).split("\n");
    expect(lines[0]).toMatch(/^CREATED\s+JOB\s+STATUS\s+STEP\s+ITEM\s+ERROR$/);
    expect(lines[1]).toMatch(/^2026-11-30T09:00:00.000Z {2}backup {2}succeeded {2}-\s+web-data$/);
    expect(lines[2]).toMatch(/ running\s+stage\s+web-data$/);
    expect(lines[3]).toMatch(/ failed\s+\(in acquire\)\s+web-data\s+the disk is gone$/);
    expect(jobsText(rows)).not.toContain("cleanup");
    const column = (line: string) => line.indexOf("web-data");
    expect(new Set(lines.slice(1).map(column)).size).toBe(1);
    expect(jobsText([])).toBe("no jobs yet");
  });
});
