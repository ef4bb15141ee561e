/**
 * The restore machine: an on-demand job (submitted with `bulwark restore ... --queue`, or by the
 * service) that restores a point to a new Azure resource in the item's region. Restores never
 * overwrite: the target must not exist, except for what an earlier run of this same job made
 * (tagged `bulwark-restore-job` with its job id): a finished disk or VM of its own is reused (the
 * restore resumes), a half-written one is removed and made again. Anything without the job's tag
 * (a disk or VM someone else made under that name) fails the job and is left untouched.
 */
import { UsageError } from "../errors.ts";
import { CodecPool } from "../engine/codec-pool.ts";
import type { JobData, MachineDefinition } from "../jobs/machine.ts";
import { PermanentJobError } from "../jobs/machine.ts";
import { parseResourceId, sameType } from "../azure/resource-id.ts";
import { restoreToManagedDisk } from "../sources/azure-restore.ts";
import { restoreSqlDatabase } from "../sources/azure-sql.ts";
import { restoreVirtualMachine } from "../sources/azure-vm.ts";
import type { WorkloadEnvironment } from "./environment.ts";

export interface RestoreJobData extends JobData {
  vault: string;
  pointId: string;
  target: string;
  nicIds: string[];
  location?: string;
  restored?: string[];
}

export function restoreMachine(env: WorkloadEnvironment): MachineDefinition<RestoreJobData> {
  return {
    name: "restore",
    initial: "restore",
    start(input): RestoreJobData {
      if (!input.vault || !input.pointId || !input.target) throw new PermanentJobError("a restore job needs vault, pointId and target");
      return {
        vault: String(input.vault),
        pointId: String(input.pointId),
        target: String(input.target),
        nicIds: (input.nicIds as string[] | undefined) ?? [],
        location: input.location as string | undefined,
      };
    },
    retryable(error) {
      return !(error instanceof UsageError || error instanceof PermanentJobError);
    },
    states: {
      restore: {
        async step(ctx, data) {
          const vault = await env.openVault(data.vault);
          const point = await vault.resolvePoint(data.pointId);
          const target = parseResourceId(data.target);
          const pool = new CodecPool(vault.master);
          try {
            if (sameType(target, "Microsoft.Compute/disks")) {
              await restoreToManagedDisk(env.azure, vault, pool, point, data.target, { location: data.location, restoreId: ctx.jobId });
              return { done: true, data: { ...data, restored: [data.target] } };
            }
            if (sameType(target, "Microsoft.Compute/virtualMachines")) {
              const result = await restoreVirtualMachine(env.azure, vault, pool, point, data.target, { nicIds: data.nicIds, location: data.location, restoreId: ctx.jobId });
              return { done: true, data: { ...data, restored: [result.vmId, ...result.diskIds] } };
            }
            if (sameType(target, "Microsoft.Sql/servers/databases")) {
              await restoreSqlDatabase(env.azure, vault, pool, point, data.target, env.transient, env.sqlLogin());
              return { done: true, data: { ...data, restored: [data.target] } };
            }
            throw new PermanentJobError(`cannot restore to ${target.type}`);
          } finally {
            await pool.close();
          }
        },
      },
    },
  };
}
