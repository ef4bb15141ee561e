/**
 * The restore machine: an on-demand job (submitted with `bulwark restore ... --queue`, or by the
 * service) that restores a point to a new Azure resource in the item's region. Restores never
 * overwrite: the target must not exist, except for what an interrupted run of this same job left
 * behind (tagged with its job id), which is removed before the restore runs again.
 */
import { UsageError } from "../errors.ts";
import { CodecPool } from "../engine/codec-pool.ts";
import type { JobData, MachineDefinition } from "../jobs/machine.ts";
import { PermanentJobError } from "../jobs/machine.ts";
import { parseResourceId, sameType } from "../azure/resource-id.ts";
import { statusOf } from "../sources/azure-disk.ts";
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
          await removeOwnLeftover(env, data.target, ctx.jobId);
          const pool = new CodecPool(vault.master);
          try {
            if (sameType(target, "Microsoft.Compute/disks")) {
              await restoreToManagedDisk(env.azure, vault, pool, point, data.target, { location: data.location, tags: { "bulwark-restore-job": ctx.jobId } });
              return { done: true, data: { ...data, restored: [data.target] } };
            }
            if (sameType(target, "Microsoft.Compute/virtualMachines")) {
              const result = await restoreVirtualMachine(env.azure, vault, pool, point, data.target, { nicIds: data.nicIds, location: data.location });
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

/** A managed disk this job created in a run that died is deleted, so the step can run again. */
async function removeOwnLeftover(env: WorkloadEnvironment, targetId: string, jobId: string): Promise<void> {
  const target = parseResourceId(targetId);
  if (!sameType(target, "Microsoft.Compute/disks")) return;
  const compute = await env.azure.compute(target.subscriptionId);
  const disk = await compute.disks.get(target.resourceGroup, target.name).catch((error) => {
    if (statusOf(error) === 404) return undefined;
    throw error;
  });
  if (disk?.tags?.["bulwark-restore-job"] !== jobId) return;
  await compute.disks.beginRevokeAccessAndWait(target.resourceGroup, target.name).catch(() => {});
  await compute.disks.beginDeleteAndWait(target.resourceGroup, target.name);
}
