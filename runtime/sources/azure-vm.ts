/**
 * Azure VMs: all disks snapshotted together (crash-consistent: the snapshots are requested at the
 * same moment, before any data is read), the VM's configuration recorded, one disk point per disk,
 * then one VM point that groups them. A VM point restores as an alternate VM (new disks, then a VM
 * from the recorded configuration) in a chosen resource group, never over the original.
 */
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
import { restoreToManagedDisk } from "./azure-restore.ts";
import os from "node:os";

requiresAction("Microsoft.Compute/virtualMachines/read", "vm backup: read the VM's configuration");
requiresAction("Microsoft.Compute/virtualMachines/write", "vm restore: create the alternate VM");
requiresAction("Microsoft.Network/networkInterfaces/join/action", "vm restore: attach the chosen network interface");
requiresAction("Microsoft.Compute/virtualMachines/delete", "vm restore: remove a half-made alternate VM");

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
  await vault.writePoint(point);
  for (const [i, disk] of disks.entries()) await retirePrevious(ctx, disk.previous, snapshots[i]!.id);
  return { point, disks: outcomes };
}

/**
 * A VM point as a new VM named by targetVmId (its resource group is where everything is created).
 * The original's network interfaces are in use, so the alternate VM needs its own: `nicIds`.
 */
export async function restoreVirtualMachine(
  ctx: AzureContext,
  vault: Vault,
  pool: CodecPool,
  point: PointManifest,
  targetVmId: string,
  options: { nicIds: string[]; location?: string; onProgress?: (n: number) => void },
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
  await refuseExisting(() => compute.virtualMachines.get(target.resourceGroup, target.name), "VM", targetVmId);
  const location = options.location ?? configuration.location;
  const created: string[] = [];
  try {
    const attached: { record: VmDiskRecord; id: string }[] = [];
    for (const member of point.members ?? []) {
      const record = configuration.disks.find((d) => d.diskId.toLowerCase() === String(member.diskId).toLowerCase());
      if (!record) throw new ServiceError(`VM point ${point.id} names disk ${member.diskId} that its configuration does not`);
      const diskPoint = await vault.readPoint(member.point);
      const name = record.role === "os" ? `${target.name}-osdisk` : `${target.name}-datadisk-lun${record.lun}`;
      const newDisk = diskId(target.subscriptionId, target.resourceGroup, name);
      await restoreToManagedDisk(ctx, vault, pool, diskPoint, newDisk, { location, zones: configuration.zones, onProgress: options.onProgress });
      created.push(newDisk);
      attached.push({ record, id: newDisk });
    }
    const os = attached.find((a) => a.record.role === "os");
    if (!os) throw new ServiceError(`VM point ${point.id} has no OS disk`);
    await compute.virtualMachines.beginCreateOrUpdateAndWait(target.resourceGroup, target.name, {
      location,
      zones: configuration.zones,
      tags: { ...configuration.tags, "bulwark-restored-from": point.id },
      hardwareProfile: { vmSize: configuration.vmSize as never },
      storageProfile: {
        osDisk: { createOption: "Attach", osType: configuration.osType as never, caching: os.record.caching as never, managedDisk: { id: os.id } },
        dataDisks: attached
          .filter((a) => a.record.role === "data")
          .map((a) => ({ lun: a.record.lun!, createOption: "Attach", caching: a.record.caching as never, managedDisk: { id: a.id } })),
      },
      networkProfile: { networkInterfaces: options.nicIds.map((id, i) => ({ id, primary: i === 0 })) },
    });
    return { vmId: targetVmId, diskIds: created };
  } catch (error) {
    // Nothing half-made stays: a failed VM is removed with the disks made for it.
    await compute.virtualMachines.beginDeleteAndWait(target.resourceGroup, target.name).catch(() => {});
    for (const id of created) {
      const ref = parseResourceId(id);
      await compute.disks.beginDeleteAndWait(ref.resourceGroup, ref.name).catch(() => {});
    }
    throw azureFailure(`restoring VM point ${point.id} as ${targetVmId}`, error);
  }
}
