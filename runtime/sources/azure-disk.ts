/**
 * Azure managed disks, the way the product exists to protect them:
 *   1. an incremental snapshot of the disk;
 *   2. short-lived read access (SAS) to it;
 *   3. the changed page ranges against the previous backup's snapshot (asked in 150 MiB segments,
 *      each followed through its NextMarkers), or for a first backup the allocated ranges only;
 *   4. those ranges read in parallel, in large aligned requests, into a new synthetic-full point
 *      that updates the previous point's block map;
 *   5. access revoked; then the previous snapshot deleted, so one golden snapshot per disk stays.
 * If the previous snapshot is gone or the diff is refused, the backup falls back to reading the
 * allocated ranges in full, and says so in its report. A failure releases what was taken (access,
 * the new snapshot) and leaves the previous golden snapshot and every committed point alone.
 */
import type { Disk, Snapshot } from "@azure/arm-compute";
import { PageBlobClient, AnonymousCredential, newPipeline } from "@azure/storage-blob";
import { abortScopeFactory, outsideAbortScope } from "../azure/abort-scope.ts";
import { BulwarkError, SourceError, ServiceError, UsageError, describeError } from "../errors.ts";
import type { ByteRange, BlockSource } from "../engine/backup-blocks.ts";
import { backupDisk } from "../engine/backup.ts";
import { latestPointOfSource } from "../engine/catalog.ts";
import type { PointManifest } from "../engine/point.ts";
import type { Vault } from "../engine/vault.ts";
import type { AzureContext } from "../azure/context.ts";
import { requiresAction } from "../azure/permissions.ts";
import { derivedResourceName, parseResourceId, sameType, type ResourceId } from "../azure/resource-id.ts";
import os from "node:os";
import { processAlive, throwIfInterrupted } from "../interruption.ts";

const DISK_READ = requiresAction("Microsoft.Compute/disks/read", "disk backup: read the disk", { identity: "backup" });
const SNAPSHOT_WRITE = requiresAction("Microsoft.Compute/snapshots/write", "disk backup: create the incremental snapshot", { identity: "backup" });
const SNAPSHOT_READ = requiresAction("Microsoft.Compute/snapshots/read", "disk backup: check the previous snapshot", { identity: "backup" });
const SNAPSHOT_DELETE = requiresAction("Microsoft.Compute/snapshots/delete", "disk backup: retire the previous snapshot", { identity: "backup" });
const SNAPSHOT_ACCESS = requiresAction("Microsoft.Compute/snapshots/beginGetAccess/action", "disk backup: SAS read access", { identity: "backup" });
const SNAPSHOT_END_ACCESS = requiresAction("Microsoft.Compute/snapshots/endGetAccess/action", "disk backup: revoke SAS", { identity: "backup" });
// Creating a snapshot of a disk is also authorised against the source disk (a linked access check
// for disks/beginGetAccess/action: the LinkedAuthorizationFailed error quoted in Azure/OpenShift#186).
const SOURCE_DISK_ACCESS = requiresAction("Microsoft.Compute/disks/beginGetAccess/action", "disk backup: the snapshot's linked access check on its source disk", { identity: "backup" });
// Disk and snapshot operations (create, delete, grant and revoke access) are polled at
// /subscriptions/S/providers/Microsoft.Compute/locations/L/DiskOperations/ID (Azure-AsyncOperation and
// Location of a Snapshots_Delete in the Azure SDK for JavaScript's arm-compute nock recordings,
// api-version 2021-04-01), authorised as "Microsoft.Compute/locations/diskOperations/read: Gets the
// status of an asynchronous Disk operation" (MicrosoftDocs/azure-docs
// articles/role-based-access-control/permissions/compute.md, "Microsoft.Compute").
const DISK_OPERATION_STATUS = requiresAction("Microsoft.Compute/locations/diskOperations/read", "disks and snapshots: poll long-running operations", { identity: ["backup", "restore", "bridge"] });
void [DISK_READ, SNAPSHOT_WRITE, SNAPSHOT_READ, SNAPSHOT_DELETE, SNAPSHOT_ACCESS, SNAPSHOT_END_ACCESS, SOURCE_DISK_ACCESS, DISK_OPERATION_STATUS];

/** How long a SAS lives: long enough for one disk's read, short enough to be worthless soon after. */
const SAS_SECONDS = 4 * 60 * 60;
/** Reads: 4 MiB aligned requests (the page-blob range limit we hold to), several at once. */
const READ_BYTES = 4 * 1024 * 1024;
const PARALLEL_READS = 8;
/**
 * Page ranges are asked for in segments of 150 MiB: Get Page Ranges over a large span of a fragmented
 * blob can run past the server's processing time and fail, and Azure Storage's guidance is segments of
 * about 150 MB, "safe even for the most fragmented page blob" (Azure Storage team, "Getting the Page
 * Ranges of a Large Page Blob in Segments", learn.microsoft.com/archive/blogs/windowsazurestorage).
 * Within a segment a response holds at most 10,000 ranges and a NextMarker for the rest, which we
 * follow (Get Page Ranges REST reference, "marker" and "maxresults", version 2020-10-02 and later).
 */
const RANGE_SEGMENT = 150 * 1024 * 1024;

export interface SnapshotRef {
  id: string;
  name: string;
  resourceGroup: string;
  subscriptionId: string;
  diskId: string;
}

export interface DiskBackupOutcome extends Partial<SubBlockStats> {
  point: PointManifest;
  mode: "first" | "incremental" | "full-fallback";
  fallbackReason?: string;
  changedBytes: number;
  /** Bytes read from the snapshot. */
  bytesRead: number;
}

/** What patching partly changed blocks cost (backup-blocks.ts): blocks patched, base chunks read from the vault. */
export interface SubBlockStats {
  blocksPatched: number;
  baseChunksRead: number;
  baseBytesRead: number;
  baseReadsFailed: number;
}

export async function getDisk(ctx: AzureContext, disk: ResourceId): Promise<Disk> {
  if (!sameType(disk, "Microsoft.Compute/disks")) throw new UsageError(`${disk.id} is not a managed disk id`);
  const compute = await ctx.compute(disk.subscriptionId);
  try {
    return await compute.disks.get(disk.resourceGroup, disk.name);
  } catch (error) {
    if (statusOf(error) === 404) throw new SourceError(`the managed disk ${disk.id} does not exist (or the backup identity cannot see it)`);
    throw armFailure(`reading disk ${disk.id}`, error);
  }
}

/**
 * The tag naming the `bulwark` command run (HOST~PID) that made a snapshot. Only the CLI's own runs
 * set it (the agents' snapshots are named for their job and cleaned by the job's compensation): a
 * later run on the same host removes the snapshots of a run whose process is gone (see
 * removeAbandonedSnapshots), so a killed backup leaves no orphan beside the golden snapshot.
 */
const RUN_TAG = "bulwark-run";

function thisRun(): string {
  return `${os.hostname()}~${process.pid}`;
}

/** Step 1: an incremental snapshot in the disk's resource group and region. */
export async function createSnapshot(ctx: AzureContext, disk: ResourceId, info: Disk, now = new Date(), named?: string): Promise<SnapshotRef> {
  const compute = await ctx.compute(disk.subscriptionId);
  // To the millisecond: two backups of one disk within the same second would otherwise name the same
  // snapshot, and the second's create-or-update would update the first's snapshot instead of taking a
  // new one (found when test/azure/disk.test.ts's backups ran within one second).
  const stamp = now.toISOString().replace(/[-:.]/g, "");
  const name = named ?? derivedResourceName(disk.name, stamp, 80);
  try {
    const snapshot = await compute.snapshots.beginCreateOrUpdateAndWait(disk.resourceGroup, name, {
      location: info.location,
      incremental: true,
      creationData: { createOption: "Copy", sourceResourceId: info.id ?? disk.id },
      tags: { "bulwark-disk": disk.id.slice(0, 256), "bulwark-managed": "true", ...(named ? {} : { [RUN_TAG]: thisRun() }) },
    });
    return { id: snapshot.id!, name, resourceGroup: disk.resourceGroup, subscriptionId: disk.subscriptionId, diskId: disk.id };
  } catch (error) {
    // A failed create may still have left a snapshot behind.
    await compute.snapshots.beginDeleteAndWait(disk.resourceGroup, name).catch(() => {});
    throw armFailure(`creating an incremental snapshot of ${disk.id}`, error);
  }
}

/**
 * The snapshot of this name, made now unless it exists already (a job step run again after a
 * crash reuses the snapshot its earlier run made; one left Failed is replaced).
 */
export async function ensureSnapshot(ctx: AzureContext, disk: ResourceId, info: Disk, name: string): Promise<SnapshotRef> {
  const compute = await ctx.compute(disk.subscriptionId);
  const existing = await compute.snapshots.get(disk.resourceGroup, name).catch((error) => {
    if (statusOf(error) === 404) return undefined;
    throw armFailure(`reading snapshot ${name}`, error);
  });
  if (existing?.provisioningState === "Succeeded") {
    return { id: existing.id!, name, resourceGroup: disk.resourceGroup, subscriptionId: disk.subscriptionId, diskId: disk.id };
  }
  if (existing) await compute.snapshots.beginDeleteAndWait(disk.resourceGroup, name);
  return createSnapshot(ctx, disk, info, new Date(), name);
}

/**
 * The snapshots of this disk that a killed `bulwark` run on this host made and left: tagged with a
 * run whose process is gone, and not one of `keep` (the golden snapshot the disk's latest point
 * names, and the snapshot of this run). Each loses its read access (a killed run leaves its SAS
 * open) and is deleted. Failures are reported as warnings: the backup itself goes on.
 */
export async function removeAbandonedSnapshots(ctx: AzureContext, disk: ResourceId, keep: (string | undefined)[]): Promise<string[]> {
  const compute = await ctx.compute(disk.subscriptionId);
  const kept = new Set(keep.filter((k): k is string => Boolean(k)).map((k) => k.toLowerCase()));
  const host = os.hostname();
  const removed: string[] = [];
  try {
    for await (const snapshot of compute.snapshots.listByResourceGroup(disk.resourceGroup)) {
      const run = snapshot.tags?.[RUN_TAG];
      if (!snapshot.id || !snapshot.name || !run || snapshot.tags?.["bulwark-managed"] !== "true") continue;
      if ((snapshot.tags["bulwark-disk"] ?? "").toLowerCase() !== disk.id.toLowerCase() || kept.has(snapshot.id.toLowerCase())) continue;
      const separator = run.lastIndexOf("~");
      if (run.slice(0, separator) !== host || processAlive(Number(run.slice(separator + 1)))) continue;
      await compute.snapshots.beginRevokeAccessAndWait(disk.resourceGroup, snapshot.name).catch(() => {});
      await compute.snapshots.beginDeleteAndWait(disk.resourceGroup, snapshot.name);
      removed.push(snapshot.id);
    }
  } catch (error) {
    process.emitWarning(`could not remove the snapshots a killed backup of ${disk.id} left: ${describeError(error).split("\n")[0]}; \`bulwark agent bridge\` retires them later`);
  }
  return removed;
}

export async function deleteSnapshot(ctx: AzureContext, snapshotId: string): Promise<void> {
  const ref = parseResourceId(snapshotId);
  const compute = await ctx.compute(ref.subscriptionId);
  await compute.snapshots.beginDeleteAndWait(ref.resourceGroup, ref.name);
}

async function snapshotExists(ctx: AzureContext, snapshotId: string): Promise<Snapshot | undefined> {
  const ref = parseResourceId(snapshotId);
  const compute = await ctx.compute(ref.subscriptionId);
  try {
    return await compute.snapshots.get(ref.resourceGroup, ref.name);
  } catch (error) {
    if (statusOf(error) === 404) return undefined;
    throw armFailure(`reading snapshot ${snapshotId}`, error);
  }
}

/**
 * Premium SSD v2 and Ultra Disk snapshots are copied in the background after they are created, and
 * their completionPercent "must be 100 before you can use the snapshot for restoring disk or generate
 * a SAS URI for downloading the underlying data"; snapshots of disks with 4096-byte logical sectors
 * "are stored as VHDX", those of 512-byte sectors as VHD (MicrosoftDocs/azure-docs
 * articles/virtual-machines/disks-incremental-snapshots.md, "Check status of snapshots or disks" and
 * "Check sector size"; includes/virtual-machines-disks-incremental-snapshots-restrictions.md).
 */
const BACKGROUND_COPY_SKUS = new Set(["premiumv2_lrs", "ultrassd_lrs"]);
/** How often, and how long at most, a backup waits for a background copy (env for tests and slow copies). */
const COPY_POLL_MS = Number(process.env.BULWARK_SNAPSHOT_COPY_POLL_MS ?? 15_000);
const COPY_TIMEOUT_MS = Number(process.env.BULWARK_SNAPSHOT_COPY_TIMEOUT_S ?? 6 * 3600) * 1000;

function copiesInBackground(info: Disk): boolean {
  return BACKGROUND_COPY_SKUS.has(String(info.sku?.name ?? "").toLowerCase());
}

/** A disk whose snapshots Azure serves as VHDX is refused before anything is taken: we read raw images only. */
export function refuseVhdxSnapshots(disk: ResourceId, info: Disk): void {
  if (info.creationData?.logicalSectorSize !== 4096) return;
  throw new SourceError(
    `the disk ${disk.id} has 4096-byte logical sectors, and Azure serves the snapshots of such disks as VHDX files, ` +
      `which Bulwark does not read: leave this disk out of the policy (or its VM's backup) and protect it another way, ` +
      `e.g. by backing up its files from inside the VM`,
  );
}

/** Waits, bounded and with progress on stderr, until Azure's background copy of the snapshot is complete. */
export async function waitForSnapshotCopy(ctx: AzureContext, snapshotId: string): Promise<void> {
  const ref = parseResourceId(snapshotId);
  const compute = await ctx.compute(ref.subscriptionId);
  const deadline = Date.now() + COPY_TIMEOUT_MS;
  let reported: number | undefined;
  for (;;) {
    throwIfInterrupted();
    const current = await compute.snapshots.get(ref.resourceGroup, ref.name).catch((error: unknown) => {
      throw armFailure(`reading snapshot ${snapshotId}`, error);
    });
    const percent = current.completionPercent ?? 100;
    if (percent >= 100) return;
    if (percent !== reported) process.stderr.write(`bulwark: waiting for Azure's background copy of snapshot ${ref.name}: ${percent}%\n`);
    reported = percent;
    if (Date.now() >= deadline) {
      throw new ServiceError(
        `Azure's background copy of snapshot ${snapshotId} is at ${percent}% after ${Math.round(COPY_TIMEOUT_MS / 60_000)} minutes; ` +
          `no read access is possible before it is complete: run the backup again later (or raise BULWARK_SNAPSHOT_COPY_TIMEOUT_S)`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, COPY_POLL_MS));
  }
}

/** Step 2: read access; the returned release() revokes it (always call it). */
export async function grantRead(ctx: AzureContext, snapshotId: string): Promise<{ sasUrl: string; release(): Promise<void> }> {
  // Ctrl-C: no new grant (the caller's cleanup deletes the snapshot and revokes what was granted).
  throwIfInterrupted();
  const ref = parseResourceId(snapshotId);
  const compute = await ctx.compute(ref.subscriptionId);
  let access;
  try {
    access = await compute.snapshots.beginGrantAccessAndWait(ref.resourceGroup, ref.name, { access: "Read", durationInSeconds: SAS_SECONDS });
  } catch (error) {
    // Revoked even when the step was stopped (its requests abort): no SAS is left open.
    await releaseReporting({ release: () => outsideAbortScope(() => compute.snapshots.beginRevokeAccessAndWait(ref.resourceGroup, ref.name)).then(() => {}) }, snapshotId);
    throw armFailure(`getting read access to snapshot ${snapshotId}`, error);
  }
  if (!access.accessSAS) throw new ServiceError(`Azure granted access to ${snapshotId} but returned no SAS URL`);
  return {
    sasUrl: access.accessSAS,
    release: () => outsideAbortScope(() => compute.snapshots.beginRevokeAccessAndWait(ref.resourceGroup, ref.name)).then(() => {}),
  };
}

/**
 * Revokes what grantRead gave; a failure is reported, not ignored: the SAS stays valid until it
 * expires, and while it does it holds one of the five SAS slots of the disk's snapshot family
 * (articles/virtual-machines/disks-incremental-snapshots.md, "Restrictions").
 */
async function releaseReporting(access: { release(): Promise<void> } | undefined, snapshotId: string): Promise<void> {
  await access?.release().catch((error: unknown) => {
    process.emitWarning(
      `could not revoke read access to snapshot ${snapshotId}: ${describeError(error).split("\n")[0]}; ` +
        `its SAS stays valid for up to ${SAS_SECONDS / 3600} h and holds one of the five SAS of its snapshot family: ` +
        `revoke it (az snapshot revoke-access --ids ${snapshotId})`,
    );
  });
}

function pageBlob(sasUrl: string): PageBlobClient {
  const pipeline = newPipeline(new AnonymousCredential(), { retryOptions: { maxTries: 6, retryDelayInMs: 500, maxRetryDelayInMs: 30_000 } });
  // Reads abort with the job step that makes them (see azure/abort-scope.ts).
  pipeline.factories.unshift(abortScopeFactory);
  return new PageBlobClient(sasUrl, pipeline);
}

/** The snapshot's SAS stopped working (revoked with endGetAccess, or expired) while we read it. */
export class ReadAccessLost extends ServiceError {
  constructor(cause: unknown) {
    super("read access to the snapshot expired or was revoked during the backup; run the backup again", { cause });
  }
}

/** One response of Get Page Ranges (or its diff), as the storage service's generated client returns it. */
interface PageListSegment {
  pageRange?: { start: number; end: number }[];
  clearRange?: { start: number; end: number }[];
  continuationToken?: string;
}

/**
 * The generated operations behind PageBlobClient: its public getPageRangesDiffForManagedDisks sends
 * the previous snapshot's URL as x-ms-previous-snapshot-url but takes no marker, and its paging
 * listPageRangesDiff sends the URL as the prevsnapshot query, which the REST reference defines as a
 * snapshot time; only the generated call sends both the header and the marker.
 */
interface PageBlobOperations {
  getPageRanges(options: { range: string; marker?: string }): Promise<PageListSegment>;
  getPageRangesDiff(options: { range: string; marker?: string; prevSnapshotUrl: string }): Promise<PageListSegment>;
}

function pageBlobOperations(client: PageBlobClient): PageBlobOperations {
  return client["pageBlobContext"] as PageBlobOperations;
}

/** A 403 from a diff is about the previous snapshot's URL when our own SAS still works. */
async function ownAccessWorks(client: PageBlobClient): Promise<boolean> {
  return client.getProperties().then(
    () => true,
    (error: unknown) => {
      if (statusOf(error) === 403) return false;
      throw error;
    },
  );
}

/** The previous snapshot could not be diffed against: the caller reads in full instead. */
export class PreviousSnapshotRefused extends ServiceError {}

/**
 * Step 3: the allocated ranges (or, with a previous snapshot's SAS URL, the changed ones: written or
 * cleared) in 150 MiB segments, each followed through its NextMarkers. A 403 on our own SAS is
 * ReadAccessLost; a diff refused for its previous snapshot, as the Blob service documents it
 * (PreviousSnapshotNotFound, PreviousSnapshotOperationNotSupported, PreviousSnapshotCannotBeNewer:
 * learn.microsoft.com/rest/api/storageservices/blob-service-error-codes) or as a plain 403 while our
 * SAS works (reported of real Azure: Azure/azure-powershell#12298), is PreviousSnapshotRefused.
 */
export async function pageRanges(sasUrl: string, size: number, previousSasUrl?: string): Promise<ByteRange[]> {
  const client = pageBlob(sasUrl);
  const operations = pageBlobOperations(client);
  const ranges: ByteRange[] = [];
  for (let segment = 0; segment < size; segment += RANGE_SEGMENT) {
    const range = `bytes=${segment}-${Math.min(size, segment + RANGE_SEGMENT) - 1}`;
    let marker: string | undefined;
    do {
      throwIfInterrupted();
      const response = await (previousSasUrl
        ? operations.getPageRangesDiff({ range, marker, prevSnapshotUrl: previousSasUrl })
        : operations.getPageRanges({ range, marker })
      ).catch(async (error: unknown) => {
        throw await rangeFailure(error, client, previousSasUrl);
      });
      // Cleared (trimmed) pages read as zeros now: for a diff they changed as much as written ones.
      const found = [...(response.pageRange ?? []), ...(previousSasUrl ? (response.clearRange ?? []) : [])]
        .map((r): ByteRange => [r.start, r.end + 1])
        .sort((a, b) => a[0] - b[0]);
      for (const next of found) {
        const last = ranges.at(-1);
        if (last && next[0] <= last[1]) last[1] = Math.max(last[1], next[1]);
        else ranges.push(next);
      }
      marker = response.continuationToken || undefined;
    } while (marker);
  }
  return ranges;
}

const PREVIOUS_SNAPSHOT_CODES = new Set(["PreviousSnapshotNotFound", "PreviousSnapshotOperationNotSupported", "PreviousSnapshotCannotBeNewer"]);

async function rangeFailure(error: unknown, client: PageBlobClient, previousSasUrl: string | undefined): Promise<Error> {
  const code = (error as { code?: string }).code;
  const reason = `${statusOf(error)} ${code ?? ""}: ${describeError(error).split("\n")[0]}`;
  if (previousSasUrl && code && PREVIOUS_SNAPSHOT_CODES.has(code)) {
    return new PreviousSnapshotRefused(`Azure refused the diff against the previous snapshot (${reason})`, { cause: error });
  }
  if (statusOf(error) !== 403) return error as Error;
  if (previousSasUrl && (await ownAccessWorks(client).catch(() => false))) {
    return new PreviousSnapshotRefused(`Azure refused the previous snapshot's URL (${reason})`, { cause: error });
  }
  return new ReadAccessLost(error);
}

/** A BlockSource over a SAS URL that counts what it reads, with up to PARALLEL_READS requests at once. */
export function sasBlockSource(sasUrl: string, size: number): BlockSource & { bytesFetched: number } {
  const client = pageBlob(sasUrl);
  let active = 0;
  const queue: (() => void)[] = [];
  const source = {
    size,
    bytesFetched: 0,
    async read(offset: number, length: number): Promise<Buffer> {
      throwIfInterrupted();
      if (active >= PARALLEL_READS) await new Promise<void>((resolve) => queue.push(resolve));
      active++;
      try {
        throwIfInterrupted();
        const buffer = await client.downloadToBuffer(offset, length, { blockSize: READ_BYTES, concurrency: 4 });
        // A read that outlived the signal is not used: the backup stops before committing anything more.
        throwIfInterrupted();
        source.bytesFetched += buffer.length;
        return buffer;
      } catch (error) {
        if (statusOf(error) === 403) throw new ReadAccessLost(error);
        throw error;
      } finally {
        active--;
        queue.shift()?.();
      }
    },
  };
  return source;
}

/**
 * Steps 2-5 for one disk whose snapshot exists. `previous` is the disk's latest point in the vault
 * (its details hold the golden snapshot's id).
 */
/** What one disk backup reads: a source over the snapshot's SAS, the ranges to read, and the base. */
export interface DiskRead {
  source: BlockSource & { bytesFetched: number };
  changed: ByteRange[];
  /** The point whose block map the new one updates (incremental only). */
  base?: PointManifest;
  mode: DiskBackupOutcome["mode"];
  fallbackReason?: string;
  changedBytes: number;
  size: number;
  /** Facts for the point's details: the snapshot (the next backup's diff base), the disk's settings. */
  details: Record<string, unknown>;
}

/**
 * Steps 2-4 around body: read access to the snapshot (and the previous one), the ranges to read,
 * then body reads them; access is revoked whatever happens. `previous` is the disk's latest point
 * (its details hold the golden snapshot's id).
 */
export async function withDiskRead<T>(
  ctx: AzureContext,
  disk: ResourceId,
  info: Disk,
  snapshot: SnapshotRef,
  previous: PointManifest | undefined,
  body: (read: DiskRead) => Promise<T>,
): Promise<T> {
  const size = Number(info.diskSizeBytes ?? (info.diskSizeGB ?? 0) * 1024 ** 3);
  if (!(size > 0)) throw new SourceError(`Azure reports no size for disk ${disk.id}`);
  refuseVhdxSnapshots(disk, info);
  if (copiesInBackground(info)) await waitForSnapshotCopy(ctx, snapshot.id);
  const access = await grantRead(ctx, snapshot.id);
  let previousAccess: { sasUrl: string; release(): Promise<void> } | undefined;
  const previousSnapshot = previous?.details?.snapshotId as string | undefined;
  try {
    let changed: ByteRange[];
    let mode: DiskBackupOutcome["mode"] = "first";
    let fallbackReason: string | undefined;
    let base: PointManifest | undefined;
    if (previous && previousSnapshot) {
      try {
        if (!(await snapshotExists(ctx, previousSnapshot))) throw new Error(`the previous snapshot ${previousSnapshot} no longer exists`);
        previousAccess = await grantRead(ctx, previousSnapshot);
        changed = await pageRanges(access.sasUrl, size, previousAccess.sasUrl);
        mode = "incremental";
        base = previous;
      } catch (error) {
        if (error instanceof ReadAccessLost) throw error;
        fallbackReason = `full read instead of incremental: ${describeError(error).split("\n")[0]}`;
        mode = "full-fallback";
        changed = await pageRanges(access.sasUrl, size);
      }
    } else {
      changed = await pageRanges(access.sasUrl, size);
    }
    const changedBytes = changed.reduce((sum, [a, b]) => sum + (b - a), 0);
    return await body({
      source: sasBlockSource(access.sasUrl, size),
      changed,
      base,
      mode,
      fallbackReason,
      changedBytes,
      size,
      details: {
        snapshotId: snapshot.id,
        mode,
        ...(fallbackReason ? { fallbackReason } : {}),
        changedBytes,
        diskSizeBytes: size,
        sku: info.sku?.name,
        osType: info.osType,
        hyperVGeneration: info.hyperVGeneration,
        zones: info.zones,
        location: info.location,
      },
    });
  } finally {
    await releaseReporting(previousAccess, previousSnapshot ?? "");
    await releaseReporting(access, snapshot.id);
  }
}

/** Steps 2-4 for one disk whose snapshot exists, committed straight into the vault. */
export async function backupDiskSnapshot(
  ctx: AzureContext,
  vault: Vault,
  disk: ResourceId,
  info: Disk,
  snapshot: SnapshotRef,
  previous: PointManifest | undefined,
  options: { tags?: Record<string, string>; onProgress?: (n: number) => void; extraDetails?: Record<string, unknown> } = {},
): Promise<DiskBackupOutcome> {
  // What a killed run of ours left on this disk goes first (its grant would count against Azure's limit).
  await removeAbandonedSnapshots(ctx, disk, [previous?.details?.snapshotId as string | undefined, snapshot.id]);
  return withDiskRead(ctx, disk, info, snapshot, previous, async (read) => {
    const point = await backupDisk(
      vault,
      read.source,
      {
        kind: "disk",
        source: { type: "azure-managed-disk", path: disk.id, location: info.location },
        tags: options.tags,
        details: { ...read.details, ...options.extraDetails },
      },
      // What the sub-block reads cost (the base chunks read from the vault beside the snapshot's bytes) goes into the details.
      { base: read.base, changed: read.changed, onProgress: options.onProgress, readAhead: PARALLEL_READS, recordPatching: true },
    );
    const { blocksPatched, baseChunksRead, baseBytesRead, baseReadsFailed } = point.details as unknown as SubBlockStats;
    return {
      point,
      mode: read.mode,
      fallbackReason: read.fallbackReason,
      changedBytes: read.changedBytes,
      bytesRead: read.source.bytesFetched,
      blocksPatched,
      baseChunksRead,
      baseBytesRead,
      baseReadsFailed,
    };
  });
}

/**
 * The resource's latest point in the vault, if any, from its catalog entries (catalog.ts): a
 * few requests whatever the number of points in the vault. ARM ids compare case-insensitively.
 */
export async function latestPointOf(vault: Vault, sourceId: string, kind: PointManifest["kind"]): Promise<PointManifest | undefined> {
  return latestPointOfSource(vault, { kind, source: { type: "azure", path: sourceId } });
}

/** One disk, start to finish. */
export async function backupManagedDisk(
  ctx: AzureContext,
  vault: Vault,
  diskResourceId: string,
  options: { tags?: Record<string, string>; onProgress?: (n: number) => void } = {},
): Promise<DiskBackupOutcome> {
  const disk = parseResourceId(diskResourceId);
  const info = await getDisk(ctx, disk);
  refuseVhdxSnapshots(disk, info);
  const previous = await latestPointOf(vault, disk.id, "disk");
  const snapshot = await createSnapshot(ctx, disk, info);
  let outcome: DiskBackupOutcome;
  try {
    outcome = await backupDiskSnapshot(ctx, vault, disk, info, snapshot, previous, options);
  } catch (error) {
    await deleteSnapshot(ctx, snapshot.id).catch(() => {});
    throw azureFailure(`backing up disk ${disk.id}`, error);
  }
  await retirePrevious(ctx, previous, snapshot.id);
  return outcome;
}

/** Step 5: the new snapshot is golden now; the previous one goes (a failure here is reported, not fatal). */
export async function retirePrevious(ctx: AzureContext, previous: PointManifest | undefined, keep: string): Promise<void> {
  const old = previous?.details?.snapshotId as string | undefined;
  if (!old || old.toLowerCase() === keep.toLowerCase()) return;
  await deleteSnapshot(ctx, old).catch((error) => {
    process.emitWarning(`could not delete the previous snapshot ${old}: ${describeError(error)}; delete it by hand`);
  });
}

export function statusOf(error: unknown): number | undefined {
  return (error as { statusCode?: number })?.statusCode;
}

/**
 * Refuses a restore target that exists: restores never overwrite. `get` is the resource's GET;
 * a 404 means it is free.
 */
export async function refuseExisting(get: () => Promise<unknown>, what: string, id: string): Promise<void> {
  const exists = await get().then(
    () => true,
    (error) => {
      if (statusOf(error) === 404) return false;
      throw armFailure(`checking ${id}`, error);
    },
  );
  if (exists) throw new UsageError(`the ${what} ${id} already exists; restores never overwrite: choose a new ${what} name`);
}

export function armFailure(what: string, error: unknown): Error {
  const status = statusOf(error);
  const code = (error as { code?: string })?.code;
  const message = describeError(error).split("\n")[0];
  if (status === 403) return new ServiceError(`${what}: access denied (${code ?? status}). Give the backup identity the Bulwark backup role on this scope.`, { cause: error });
  if (status === 429) return new ServiceError(`${what}: Azure is throttling requests (${message}); retry later`, { cause: error });
  return new ServiceError(`${what} failed: ${code ? `${code}: ` : ""}${message}`, { cause: error });
}

/**
 * What a failed Azure step throws: our own errors as they are, anything else (an ARM error, a
 * long-running operation that ended Failed, a storage error) as an actionable ServiceError.
 */
export function azureFailure(what: string, error: unknown): Error {
  return error instanceof BulwarkError ? error : armFailure(what, error);
}
