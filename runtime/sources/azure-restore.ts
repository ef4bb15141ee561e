/**
 * Restores into Azure: a disk point to a new managed disk (an upload disk written through a
 * short-lived write SAS, then access revoked) or to a new page blob; never over an existing
 * resource. A failure deletes what the restore created, so nothing half-written is left behind.
 *
 * Every disk a restore creates carries the restore's id in the tag `bulwark-restore-job` (a worker's
 * restore uses its job id, so a retried or resumed job finds what its earlier runs made). A disk is
 * removed only after reading it back and finding that tag; a disk without it is someone else's and
 * is never written, reused or deleted. A resumed restore reuses a disk of its own whose upload was
 * finished (its access revoked: state Unattached) and removes and redoes one left half-written
 * (ReadyToUpload or ActiveUpload). Disk states as Azure defines them (KnownDiskState in
 * Azure/azure-sdk-for-js sdk/compute/arm-compute, and Microsoft.Compute's DiskState in
 * Azure/azure-rest-api-specs): ReadyToUpload "ready to be created by upload by requesting a write
 * token", ActiveUpload "created for upload and a write token has been issued", Unattached "not being
 * used and can be attached to a VM".
 */
import { randomUUID } from "node:crypto";
import { PageBlobClient, AnonymousCredential, newPipeline } from "@azure/storage-blob";
import type { ComputeManagementClient, Disk } from "@azure/arm-compute";
import { UsageError, ServiceError } from "../errors.ts";
import type { CodecPool } from "../engine/codec-pool.ts";
import type { PointManifest } from "../engine/point.ts";
import { restoreContent, type RestoreTarget } from "../engine/restore.ts";
import type { Vault } from "../engine/vault.ts";
import type { AzureContext } from "../azure/context.ts";
import { requiresAction } from "../azure/permissions.ts";
import { parseResourceId, sameType } from "../azure/resource-id.ts";
import { armFailure, azureFailure, statusOf } from "./azure-disk.ts";
import { fixedVhdFooter, uploadDiskBytes, VHD_FOOTER_BYTES } from "./vhd.ts";
import { throwIfInterrupted } from "../interruption.ts";

requiresAction("Microsoft.Compute/disks/read", "disk restore: refuse an existing disk", { identity: "restore" });
requiresAction("Microsoft.Compute/disks/write", "disk restore: create the upload disk", { identity: "restore" });
requiresAction("Microsoft.Compute/disks/delete", "disk restore: remove a half-restored disk", { identity: "restore" });
requiresAction("Microsoft.Compute/disks/beginGetAccess/action", "disk restore: write access to the upload disk", { identity: "restore" });
requiresAction("Microsoft.Compute/disks/endGetAccess/action", "disk restore: revoke write access", { identity: "restore" });

/** Put Page takes at most 4 MiB. */
const MAX_PAGE_WRITE = 4 * 1024 * 1024;
const SAS_SECONDS = 4 * 60 * 60;

function pageBlobAt(sasUrl: string): PageBlobClient {
  return new PageBlobClient(sasUrl, newPipeline(new AnonymousCredential(), { retryOptions: { maxTries: 6, retryDelayInMs: 500, maxRetryDelayInMs: 30_000 } }));
}

/** A restore target over a page blob: zero blocks stay unwritten (a new page blob reads as zeros). */
export function pageBlobTarget(client: PageBlobClient): RestoreTarget {
  return {
    needsZeros: false,
    async write(offset, data) {
      for (let at = 0; at < data.length; at += MAX_PAGE_WRITE) {
        const piece = data.subarray(at, Math.min(at + MAX_PAGE_WRITE, data.length));
        // Pages are 512-byte units; a disk's size is a multiple of 512, so only padding a short tail is needed.
        const padded = piece.length % 512 === 0 ? piece : Buffer.concat([piece, Buffer.alloc(512 - (piece.length % 512))]);
        // Ctrl-C: stop writing; the restore's failure cleanup revokes access and removes the disk.
        throwIfInterrupted();
        await client.uploadPages(padded, offset + at, padded.length);
      }
    },
  };
}

export interface DiskRestoreOptions {
  location?: string;
  sku?: string;
  zones?: string[];
  tags?: Record<string, string>;
  /**
   * The restore's id, tagged on what it creates (`bulwark-restore-job`): only a disk with it is
   * reused or removed. A worker passes its job id; without one a restore gets a fresh id.
   */
  restoreId?: string;
  onProgress?: (n: number) => void;
}

/** The tag that names the restore (a worker's: its job id) that created a disk or a VM. */
export const RESTORE_TAG = "bulwark-restore-job";

/** The disk, or undefined when there is none. */
export async function findDisk(compute: ComputeManagementClient, resourceGroup: string, name: string, id: string): Promise<Disk | undefined> {
  try {
    return await compute.disks.get(resourceGroup, name);
  } catch (error) {
    if (statusOf(error) === 404) return undefined;
    throw armFailure(`checking ${id}`, error);
  }
}

/**
 * Removes the disk if, read back now, it carries this restore's tag; leaves anything else alone.
 * True when it removed one.
 */
export async function removeOwnDisk(compute: ComputeManagementClient, diskId: string, restoreId: string): Promise<boolean> {
  const ref = parseResourceId(diskId);
  const disk = await findDisk(compute, ref.resourceGroup, ref.name, diskId);
  if (!disk || disk.tags?.[RESTORE_TAG] !== restoreId) return false;
  if (disk.diskState === "ActiveUpload" || disk.diskState === "ActiveSAS") await compute.disks.beginRevokeAccessAndWait(ref.resourceGroup, ref.name).catch(() => {});
  await compute.disks.beginDeleteAndWait(ref.resourceGroup, ref.name);
  return true;
}

/** What a restore to a managed disk made. */
export interface ManagedDiskRestore {
  diskId: string;
  diskSizeBytes: number;
  /** Set when the disk is larger than the point's image (Azure's upload sizes): says by how much and why. */
  resized?: string;
}

/**
 * The size of the new disk, and what to tell the user when it differs from the point's: Azure's upload
 * disks are whole MiB of at least 20 MiB (see vhd.ts), so an image of another size gets a larger disk
 * whose extra bytes read as zeros.
 */
function restoredDiskSize(point: PointManifest): { diskSizeBytes: number; resized?: string } {
  const diskSizeBytes = uploadDiskBytes(point.size);
  if (diskSizeBytes === point.size) return { diskSizeBytes };
  return {
    diskSizeBytes,
    resized: `the point's image is ${point.size} bytes; Azure's upload disks are a whole number of MiB and at least 20 MiB, so the new disk is ${diskSizeBytes} bytes and its last ${diskSizeBytes - point.size} bytes read as zeros`,
  };
}

/** A disk point into a new managed disk. */
export async function restoreToManagedDisk(
  ctx: AzureContext,
  vault: Vault,
  pool: CodecPool,
  point: PointManifest,
  targetDiskId: string,
  options: DiskRestoreOptions = {},
): Promise<ManagedDiskRestore> {
  if (point.kind !== "disk" || !point.content) throw new UsageError(`point ${point.id} is not a disk point; restore a disk point to a managed disk`);
  const target = parseResourceId(targetDiskId);
  if (!sameType(target, "Microsoft.Compute/disks")) throw new UsageError(`${targetDiskId} is not a managed disk id`);
  const size = restoredDiskSize(point);
  const compute = await ctx.compute(target.subscriptionId);
  const restoreId = options.restoreId ?? options.tags?.[RESTORE_TAG] ?? randomUUID();
  const existing = await findDisk(compute, target.resourceGroup, target.name, targetDiskId);
  if (existing) {
    if (existing.tags?.[RESTORE_TAG] !== restoreId) {
      throw new UsageError(`the disk ${targetDiskId} already exists; restores never overwrite: choose a new disk name`);
    }
    // This restore's own disk, from an earlier run: finished (uploaded and revoked) is reused,
    // half-written is removed and written again.
    if (existing.diskState === "Unattached" && existing.tags?.["bulwark-restored-from"] === point.id) return { diskId: targetDiskId, ...size };
    await removeOwnDisk(compute, targetDiskId, restoreId);
  }
  const details = point.details ?? {};
  const location = options.location ?? (details.location as string | undefined) ?? (point.source.location as string | undefined);
  if (!location) throw new UsageError("give the new disk's region: --location REGION");
  let writing = false;
  try {
    await compute.disks.beginCreateOrUpdateAndWait(target.resourceGroup, target.name, {
      location,
      sku: { name: (options.sku ?? (details.sku as string | undefined) ?? "Standard_LRS") as never },
      zones: options.zones ?? (details.zones as string[] | undefined),
      osType: details.osType as never,
      hyperVGeneration: details.hyperVGeneration as never,
      creationData: { createOption: "Upload", uploadSizeBytes: size.diskSizeBytes + VHD_FOOTER_BYTES },
      tags: { ...options.tags, "bulwark-restored-from": point.id, [RESTORE_TAG]: restoreId },
    });
    const access = await compute.disks.beginGrantAccessAndWait(target.resourceGroup, target.name, { access: "Write", durationInSeconds: SAS_SECONDS });
    if (!access.accessSAS) throw new ServiceError(`Azure granted write access to ${targetDiskId} but returned no SAS URL`);
    writing = true;
    const client = pageBlobAt(access.accessSAS);
    await restoreContent(vault, pool, point, pageBlobTarget(client), { onProgress: options.onProgress });
    // Pages past the image stay unwritten: they read as zeros.
    await client.uploadPages(fixedVhdFooter(size.diskSizeBytes), size.diskSizeBytes, VHD_FOOTER_BYTES);
    await compute.disks.beginRevokeAccessAndWait(target.resourceGroup, target.name);
    writing = false;
    return { diskId: targetDiskId, ...size };
  } catch (error) {
    if (writing) await compute.disks.beginRevokeAccessAndWait(target.resourceGroup, target.name).catch(() => {});
    // Only a disk that carries this restore's tag (read back, not assumed) is removed.
    await removeOwnDisk(compute, targetDiskId, restoreId).catch(() => {});
    throw azureFailure(`restoring point ${point.id} to ${targetDiskId}`, error);
  }
}

/** A disk point into a new page blob (e.g. a .vhd in a storage account), with the fixed VHD footer. */
export async function restoreToPageBlob(
  vault: Vault,
  pool: CodecPool,
  point: PointManifest,
  blobUrl: string,
  client: PageBlobClient,
  options: { onProgress?: (n: number) => void } = {},
): Promise<void> {
  if (!point.content) throw new UsageError(`point ${point.id} has no content of its own`);
  const size = Math.ceil(point.size / 512) * 512;
  try {
    await client.create(size + VHD_FOOTER_BYTES, { conditions: { ifNoneMatch: "*" } });
  } catch (error) {
    if (statusOf(error) === 409) throw new UsageError(`${blobUrl} already exists; restores never overwrite: choose a new blob name`);
    throw error;
  }
  try {
    await restoreContent(vault, pool, point, pageBlobTarget(client), options);
    await client.uploadPages(fixedVhdFooter(size), size, VHD_FOOTER_BYTES);
  } catch (error) {
    await client.deleteIfExists().catch(() => {});
    throw error;
  }
}
