/**
 * Azure VMs: all disks snapshotted together (crash-consistent: the snapshots are requested at the
 * same moment, before any data is read), the VM's configuration recorded, one disk point per disk,
 * then one VM point that groups them. A VM point restores as an alternate VM (new disks, then a VM
 * from the recorded configuration) in a chosen resource group, never over the original.
 */
import { commitPoint } from "../engine/commit.ts";
import { VaultLock } from "../engine/locks.ts";
import type { VirtualMachine } from "@azure/arm-compute";
import { ServiceError, SourceError, UsageError } from "../errors.ts";
import type { CodecPool } from "../engine/codec-pool.ts";
import type { PointManifest } from "../engine/point.ts";
import { newPointId, type Vault } from "../engine/vault.ts";
import type { AzureContext } from "../azure/context.ts";
import { requiresAction } from "../azure/permissions.ts";
import { diskId, parseResourceId, sameType } from "../azure/resource-id.ts";
import {
  armFailure,
  azureFailure,
  backupDiskSnapshot,
  createSnapshot,
  deleteSnapshot,
  getDisk,
  latestPointOf,
  retirePrevious,
  statusOf,
  type DiskBackupOutcome,
  refuseExisting,
} from "./azure-disk.ts";
import { randomUUID } from "node:crypto";
import type { ComputeManagementClient } from "@azure/arm-compute";
import { removeOwnDisk, restoreToManagedDisk, RESTORE_TAG } from "./azure-restore.ts";
import os from "node:os";

requiresAction("Microsoft.Compute/virtualMachines/read", "vm backup: read the VM's configuration", { identity: "backup" });
requiresAction("Microsoft.Compute/virtualMachines/read", "vm restore: refuse an existing VM", { identity: "restore" });
requiresAction("Microsoft.Compute/virtualMachines/write", "vm restore: create the alternate VM", { identity: "restore" });
requiresAction("Microsoft.Network/networkInterfaces/join/action", "vm restore: attach the chosen network interface", { identity: "restore" });
requiresAction("Microsoft.Compute/virtualMachines/delete", "vm restore: remove a half-made alternate VM", { identity: "restore" });
// VM operations are polled at /subscriptions/S/providers/Microsoft.Compute/locations/L/operations/ID
// ("Microsoft.Compute/locations/operations/read: Gets the status of an asynchronous operation",
// MicrosoftDocs/azure-docs articles/role-based-access-control/permissions/compute.md).
requiresAction("Microsoft.Compute/locations/operations/read", "vm restore: poll the VM's creation and deletion", { identity: "restore" });

export interface VmDiskRecord {
  role: "os" | "data";
  diskId: string;
  lun?: number;
  caching?: string;
  name?: string;
}

export interface VmConfiguration {
  vmSize?: string;
  location: string;
  zones?: string[];
  tags?: Record<string, string>;
  osType?: string;
  networkInterfaces: { id: string; primary?: boolean }[];
  disks: VmDiskRecord[];
}

export function recordConfiguration(vm: VirtualMachine): VmConfiguration {
  const storage = vm.storageProfile ?? {};
  const osDisk = storage.osDisk;
  if (!osDisk?.managedDisk?.id) throw new SourceError(`VM ${vm.id} has no managed OS disk; Bulwark protects VMs with managed disks`);
  return {
    vmSize: vm.hardwareProfile?.vmSize,
    location: vm.location,
    zones: vm.zones,
    tags: vm.tags,
    osType: osDisk.osType,
    networkInterfaces: (vm.networkProfile?.networkInterfaces ?? []).map((n) => ({ id: n.id!, primary: n.primary })),
    disks: [
      { role: "os", diskId: osDisk.managedDisk.id, caching: osDisk.caching, name: osDisk.name },
      ...(storage.dataDisks ?? []).map((d) => {
        if (!d.managedDisk?.id) throw new SourceError(`VM ${vm.id} has an unmanaged data disk at LUN ${d.lun}; Bulwark protects managed disks`);
        return { role: "data" as const, diskId: d.managedDisk.id, lun: d.lun, caching: d.caching, name: d.name };
      }),
    ],
  };
}

export interface VmBackupOutcome {
  point: PointManifest;
  disks: DiskBackupOutcome[];
}

export async function backupVirtualMachine(
  ctx: AzureContext,
  vault: Vault,
  vmResourceId: string,
  options: { tags?: Record<string, string>; onProgress?: (n: number) => void } = {},
): Promise<VmBackupOutcome> {
  const vmId = parseResourceId(vmResourceId);
  if (!sameType(vmId, "Microsoft.Compute/virtualMachines")) throw new UsageError(`${vmResourceId} is not a VM id`);
  const compute = await ctx.compute(vmId.subscriptionId);
  let vm: VirtualMachine;
  try {
    vm = await compute.virtualMachines.get(vmId.resourceGroup, vmId.name);
  } catch (error) {
    if (statusOf(error) === 404) throw new SourceError(`the VM ${vmResourceId} does not exist (or the backup identity cannot see it)`);
    throw armFailure(`reading VM ${vmResourceId}`, error);
  }
  const configuration = recordConfiguration(vm);
  const disks = await Promise.all(
    configuration.disks.map(async (record) => {
      const ref = parseResourceId(record.diskId);
      return { record, ref, info: await getDisk(ctx, ref), previous: await latestPointOf(vault, ref.id, "disk") };
    }),
  );
  // All snapshots first, requested together: the disks are captured at (nearly) one moment.
  const now = new Date();
  const settled = await Promise.allSettled(disks.map((d) => createSnapshot(ctx, d.ref, d.info, now)));
  const snapshots = settled.map((s) => (s.status === "fulfilled" ? s.value : undefined));
  const failedSnapshot = settled.find((s) => s.status === "rejected") as PromiseRejectedResult | undefined;
  if (failedSnapshot) {
    await Promise.all(snapshots.map((s) => s && deleteSnapshot(ctx, s.id).catch(() => {})));
    throw failedSnapshot.reason;
  }
  const outcomes: DiskBackupOutcome[] = [];
  try {
    for (const [i, disk] of disks.entries()) {
      outcomes.push(
        await backupDiskSnapshot(ctx, vault, disk.ref, disk.info, snapshots[i]!, disk.previous, {
          tags: options.tags,
          onProgress: options.onProgress,
          extraDetails: { vm: vmResourceId, role: disk.record.role, lun: disk.record.lun },
        }),
      );
    }
  } catch (error) {
    // Disk points already committed stay valid and name their new snapshot: for those disks it is the
    // golden one now (the previous goes); for the others the new snapshot goes and the old golden one stays.
    await Promise.all(
      disks.map((disk, i) =>
        i < outcomes.length ? retirePrevious(ctx, disk.previous, snapshots[i]!.id) : deleteSnapshot(ctx, snapshots[i]!.id).catch(() => {}),
      ),
    );
    throw azureFailure(`backing up VM ${vmResourceId}`, error);
  }
  const point: PointManifest = {
    version: 1,
    id: newPointId(),
    time: new Date().toISOString(),
    kind: "vm",
    source: { type: "azure-vm", path: vmResourceId, host: os.hostname(), location: vm.location },
    size: outcomes.reduce((sum, o) => sum + o.point.size, 0),
    tags: options.tags ?? {},
    members: disks.map((d, i) => ({ role: d.record.role, point: outcomes[i].point.id, diskId: d.record.diskId, lun: d.record.lun, caching: d.record.caching })),
    details: { configuration },
    stats: {
      bytesRead: outcomes.reduce((s, o) => s + o.point.stats.bytesRead, 0),
      bytesNew: outcomes.reduce((s, o) => s + o.point.stats.bytesNew, 0),
      bytesStored: outcomes.reduce((s, o) => s + o.point.stats.bytesStored, 0),
      chunksNew: outcomes.reduce((s, o) => s + o.point.stats.chunksNew, 0),
      durationMs: Date.now() - now.getTime(),
    },
  };
  // The group point, under a lock of its own, after proving its members are there (commit.ts).
  const lock = await VaultLock.acquire(vault.store, "shared", "backup");
  try {
    await commitPoint(vault, point, lock);
  } finally {
    await lock.release().catch(() => {});
  }
  for (const [i, disk] of disks.entries()) await retirePrevious(ctx, disk.previous, snapshots[i]!.id);
  return { point, disks: outcomes };
}

/**
 * A VM point as a new VM named by targetVmId (its resource group is where everything is created).
 * The original's network interfaces are in use, so the alternate VM needs its own: `nicIds`.
 *
 * What the restore creates (the disks `<vm>-osdisk`, `<vm>-datadisk-lun<N>`, then the VM) carries
 * its id in the tag `bulwark-restore-job` (a worker's restore: its job id, so names and tags derive
 * from the job). Nothing without that tag is ever written, reused or deleted: a VM or disk of that
 * name that is someone else's fails the restore (UsageError) and stays as it was. A restore run
 * again with the same id resumes: its finished disks are reused, half-written ones redone, and its
 * VM, if already provisioned, is the result. The VM is created create-only (If-None-Match: *, see
 * VirtualMachinesCreateOrUpdateOptionalParams.ifNoneMatch in Azure/azure-sdk-for-js
 * sdk/compute/arm-compute: "Set to '*' to allow a new record set to be created, but to prevent
 * updating an existing record set"), and checked just before, so a VM that appeared meanwhile under
 * that name is never updated. A failure removes exactly what carries this restore's tag.
 */
export async function restoreVirtualMachine(
  ctx: AzureContext,
  vault: Vault,
  pool: CodecPool,
  point: PointManifest,
  targetVmId: string,
  options: { nicIds: string[]; location?: string; restoreId?: string; onProgress?: (n: number) => void },
): Promise<{ vmId: string; diskIds: string[] }> {
  if (point.kind !== "vm") throw new UsageError(`point ${point.id} is a ${point.kind} point, not a VM point`);
  const target = parseResourceId(targetVmId);
  if (!sameType(target, "Microsoft.Compute/virtualMachines")) throw new UsageError(`${targetVmId} is not a VM id`);
  const configuration = point.details?.configuration as VmConfiguration;
  if (options.nicIds.length === 0) {
    throw new UsageError("an alternate VM needs its own network interface: pass --nic NIC-RESOURCE-ID (create one in the target virtual network first)");
  }
  if (configuration.networkInterfaces.some((n) => options.nicIds.some((id) => id.toLowerCase() === n.id.toLowerCase()))) {
    throw new UsageError("that network interface belongs to the original VM; give the alternate VM a new one");
  }
  const compute = await ctx.compute(target.subscriptionId);
  const restoreId = options.restoreId ?? randomUUID();
  const location = options.location ?? configuration.location;
  const plan = (point.members ?? []).map((member) => {
    const record = configuration.disks.find((d) => d.diskId.toLowerCase() === String(member.diskId).toLowerCase());
    if (!record) throw new ServiceError(`VM point ${point.id} names disk ${member.diskId} that its configuration does not`);
    const name = record.role === "os" ? `${target.name}-osdisk` : `${target.name}-datadisk-lun${record.lun}`;
    return { member, record, id: diskId(target.subscriptionId, target.resourceGroup, name) };
  });

  const existing = await findVm(compute, target.resourceGroup, target.name, targetVmId);
  if (existing) {
    if (existing.tags?.[RESTORE_TAG] !== restoreId) throw new UsageError(`the VM ${targetVmId} already exists; restores never overwrite: choose a new VM name`);
    // This restore's own VM from an earlier run: done if provisioned, otherwise removed and made again.
    if (existing.provisioningState === "Succeeded") return { vmId: targetVmId, diskIds: plan.map((p) => p.id) };
    await removeOwnVm(compute, targetVmId, restoreId);
  }
  try {
    for (const { member, id } of plan) {
      const diskPoint = await vault.readPoint(member.point);
      await restoreToManagedDisk(ctx, vault, pool, diskPoint, id, { location, zones: configuration.zones, restoreId, onProgress: options.onProgress });
    }
    const os = plan.find((p) => p.record.role === "os");
    if (!os) throw new ServiceError(`VM point ${point.id} has no OS disk`);
    // A VM may have appeared under the name while the disks were written: never update it.
    const appeared = await findVm(compute, target.resourceGroup, target.name, targetVmId);
    if (appeared && appeared.tags?.[RESTORE_TAG] !== restoreId) {
      throw new UsageError(`the VM ${targetVmId} was created by someone else while its disks were restored; restores never overwrite: choose a new VM name`);
    }
    await compute.virtualMachines.beginCreateOrUpdateAndWait(
      target.resourceGroup,
      target.name,
      {
        location,
        zones: configuration.zones,
        tags: { ...configuration.tags, "bulwark-restored-from": point.id, [RESTORE_TAG]: restoreId },
        hardwareProfile: { vmSize: configuration.vmSize as never },
        storageProfile: {
          osDisk: { createOption: "Attach", osType: configuration.osType as never, caching: os.record.caching as never, managedDisk: { id: os.id } },
          dataDisks: plan
            .filter((p) => p.record.role === "data")
            .map((p) => ({ lun: p.record.lun!, createOption: "Attach", caching: p.record.caching as never, managedDisk: { id: p.id } })),
        },
        networkProfile: { networkInterfaces: options.nicIds.map((id, i) => ({ id, primary: i === 0 })) },
      },
      { ifNoneMatch: "*" },
    );
    return { vmId: targetVmId, diskIds: plan.map((p) => p.id) };
  } catch (error) {
    // Nothing half-made stays, and nothing that is not this restore's goes: the VM and each disk are
    // read back and removed only if they carry this restore's tag.
    await removeOwnVm(compute, targetVmId, restoreId).catch(() => {});
    for (const { id } of plan) await removeOwnDisk(compute, id, restoreId).catch(() => {});
    throw azureFailure(`restoring VM point ${point.id} as ${targetVmId}`, error);
  }
}

async function findVm(compute: ComputeManagementClient, resourceGroup: string, name: string, id: string): Promise<VirtualMachine | undefined> {
  try {
    return await compute.virtualMachines.get(resourceGroup, name);
  } catch (error) {
    if (statusOf(error) === 404) return undefined;
    throw armFailure(`checking ${id}`, error);
  }
}

/** Removes the VM if, read back now, it carries this restore's tag. True when it removed one. */
export async function removeOwnVm(compute: ComputeManagementClient, vmId: string, restoreId: string): Promise<boolean> {
  const ref = parseResourceId(vmId);
  const vm = await findVm(compute, ref.resourceGroup, ref.name, vmId);
  if (!vm || vm.tags?.[RESTORE_TAG] !== restoreId) return false;
  await compute.virtualMachines.beginDeleteAndWait(ref.resourceGroup, ref.name);
  return true;
}
