/**
 * Cross-region copies in the fleet: after a backup job commits a point, one `copy` job per vault in
 * its policy's `copyTo` brings the point (and exactly the packs and index entries it needs) from the
 * policy's vault into that copy vault, made `bulwark init --like` the first (engine/copy.ts), so
 * the point restores from the copy when the primary region's storage is down.
 *
 *   copy -> retain -> record
 *
 * copy runs the engine's copy (authenticated, points last, a rerun copies nothing); retain applies
 * the policy's retention to the copy vault's points of that source and policy, as the backup job's
 * retain step does in the primary (unreferenced packs stay for `agent prune`, which visits copy
 * vaults too); record writes the newest point of the item in the copy vault into the items table,
 * which `bulwark status` turns into the item's copy lag.
 *
 * Scheduling (withCopyJobs): when a machine that makes points (backup) ends with a committed point,
 * the copy jobs are submitted on the same region's queue (that worker reads the primary and writes
 * the copy), each with an id derived from the point and the copy vault, so a retried last step or
 * finish submits no second job. The job's terms (source, copy vaults, retention) come from the
 * worker's policies (policy/authority.ts), never from the job record.
 */
import { createHash } from "node:crypto";
import { copyPoints } from "../engine/copy.ts";
import { forgetPoint } from "../engine/chain.ts";
import { sourceIdentity } from "../engine/point.ts";
import { pointsBeyondRetention } from "../engine/retention-points.ts";
import { describeError } from "../errors.ts";
import { CopyRecords } from "../jobs/copy-status.ts";
import { PermanentJobError, type JobData, type MachineDefinition, type StepContext } from "../jobs/machine.ts";
import { isTerminal, type JobRecord } from "../jobs/records.ts";
import { sendWork, submitJob, type Fleet } from "../jobs/submit.ts";
import { isConflict } from "../jobs/storage.ts";
import type { JobAuthority } from "../policy/authority.ts";
import { vaultKey } from "../policy/policy.ts";
import type { RetentionRule } from "../retention/gfs.ts";
import type { WorkloadEnvironment } from "./environment.ts";

export interface CopyJobData extends JobData {
  policy: string;
  itemId: string;
  /** The policy's vault, and the copy vault this job writes. */
  from: string;
  to: string;
  pointId: string;
  retention?: RetentionRule;
  copied?: { pointsCopied: number; packsCopied: number; bytesCopied: number };
  retained?: { removed: number; kept: number };
  /** The newest point of the item's source in the copy vault after retention, and its time. */
  newest?: { pointId: string; time: string };
}

export function copyMachine(env: WorkloadEnvironment, records: CopyRecords): MachineDefinition<CopyJobData> {
  return {
    name: "copy",
    initial: "copy",
    start(input): CopyJobData {
      const policy = String(input.policy ?? "");
      const pointId = String(input.pointId ?? "");
      const itemId = String(input.itemId ?? "");
      const to = String(input.to ?? "");
      if (!policy || !pointId || !itemId || !to) throw new PermanentJobError("a copy job needs policy, itemId, pointId and to");
      // The source and retention are the policy's, whatever the record says (the authority checked `to`).
      const terms = env.authority?.copyTerms(policy);
      const from = terms?.vault ?? String(input.from ?? "");
      const retention = terms ? terms.retention : (input.retention as RetentionRule | undefined);
      return { policy, itemId, from, to, pointId, retention };
    },
    locks(job) {
      // One copy of an item into one vault at a time; a backup of the item runs beside it.
      const data = job.input as Partial<CopyJobData>;
      return [`copy|${vaultKey(String(data.to ?? ""))}|${job.itemId.toLowerCase()}`];
    },
    retryable(error) {
      return !(error instanceof PermanentJobError);
    },
    metrics(data) {
      return { bytesNew: data.copied?.bytesCopied, bytesStored: data.copied?.bytesCopied, pointId: data.pointId };
    },
    states: {
      copy: {
        async step(ctx, data) {
          const from = await env.openVault(data.from);
          const to = await env.openVault(data.to);
          // The point must be the job's item's, of its policy: a copy job moves nothing else.
          const point = await from.readPoint(data.pointId);
          if (point.source.path.toLowerCase() !== data.itemId.toLowerCase() || point.tags.policy !== data.policy) {
            throw new PermanentJobError(`point ${data.pointId} is not a point of ${data.itemId} by policy ${data.policy}; nothing was copied`);
          }
          const report = await copyPoints(from, to, { references: [data.pointId] });
          ctx.log("copied", { to: data.to, point: data.pointId, ...report, points: undefined });
          const { pointsCopied, packsCopied, bytesCopied } = report;
          return { next: "retain", data: { ...data, copied: { pointsCopied, packsCopied, bytesCopied } } };
        },
      },
      retain: {
        async step(ctx, data) {
          const to = await env.openVault(data.to);
          const points = await to.listPoints();
          const copied = points.find((p) => p.id === data.pointId);
          if (!copied) throw new Error(`point ${data.pointId} is not in ${data.to} after its copy; the copy runs again`);
          const source = sourceIdentity(copied);
          const ofItem = (p: { id: string; tags: Record<string, string>; kind: string; source: { path: string; host?: string } }) =>
            p.tags.policy === data.policy && sourceIdentity(p) === source;
          const { remove, kept } = data.retention ? pointsBeyondRetention(points, data.retention, ofItem) : { remove: [], kept: 0 };
          const removed = new Set<string>();
          for (const id of remove) {
            try {
              await forgetPoint(to, id, `retention of policy ${data.policy} for ${data.itemId} (copy)`);
              removed.add(id);
            } catch (error) {
              ctx.log("retention-kept", { point: id, reason: describeError(error) });
            }
          }
          const newest = points
            .filter((p) => ofItem(p) && !removed.has(p.id))
            .reduce((a, b) => (b.time > a.time || (b.time === a.time && b.id > a.id) ? b : a), copied);
          return { next: "record", data: { ...data, retained: { removed: removed.size, kept }, newest: { pointId: newest.id, time: newest.time } } };
        },
      },
      record: {
        async step(ctx, data) {
          await records.record({ itemId: data.itemId, vault: data.to, pointId: data.newest!.pointId, pointTime: data.newest!.time, copiedAt: ctx.clock.now(), jobId: ctx.jobId });
          return { done: true, data };
        },
      },
    },
  };
}

/** The copy job of one point into one vault: an id of the backup job's time, derived from both. */
export function copyJobId(backupJobId: string, pointId: string, to: string): string {
  return `${backupJobId.slice(0, 13)}-${createHash("sha256").update(`copy/${pointId}/${vaultKey(to)}`).digest("hex").slice(0, 16)}`;
}

/**
 * The machine, submitting a copy job per copyTo vault of its policy when a step ends the job with
 * a committed point. Submitting again (the step ran twice: a worker died before committing it)
 * finds the job made before and only sends its message again if it has not finished.
 */
export function withCopyJobs<D extends JobData>(machine: MachineDefinition<D>, fleet: Fleet, authority: JobAuthority): MachineDefinition<D> {
  const states = Object.fromEntries(
    Object.entries(machine.states).map(([name, state]) => [
      name,
      {
        ...state,
        async step(ctx: StepContext, data: D) {
          const transition = await state.step(ctx, data);
          const pointId = "done" in transition ? machine.metrics?.(transition.data).pointId : undefined;
          if (pointId) await submitCopyJobs(fleet, authority, ctx.job, pointId, ctx);
          return transition;
        },
      },
    ]),
  );
  return { ...machine, states };
}

async function submitCopyJobs(fleet: Fleet, authority: JobAuthority, job: Readonly<JobRecord>, pointId: string, ctx: StepContext): Promise<void> {
  const terms = authority.copyTerms(job.policy);
  for (const to of terms?.copyTo ?? []) {
    const jobId = copyJobId(job.jobId, pointId, to);
    try {
      await submitJob(fleet, {
        machine: "copy",
        item: { id: job.itemId, kind: job.itemKind, region: job.region },
        queueRegion: job.region,
        policy: job.policy,
        input: { policy: job.policy, itemId: job.itemId, from: terms!.vault, to, pointId },
        jobId,
      });
      ctx.log("copy.submitted", { copyJob: jobId, to, point: pointId });
    } catch (error) {
      if (!isConflict(error)) throw error;
      const existing = await fleet.jobs.get(jobId);
      if (existing && !isTerminal(existing.value.status)) await sendWork(fleet, existing.value);
    }
  }
}
