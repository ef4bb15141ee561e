/**
 * The backup machine the workers run: one generic sequence of persisted states, with a workload
 * plugin per kind of item (a managed disk, a VM, an Azure SQL database):
 *
 *   prepare -> acquire -> stage -> verify -> promote -> commit -> release -> retain -> cleanup
 *
 * acquire takes what the backup reads from (snapshots, or a database copy exported as BACPAC);
 * stage reads only what changed into packs in the region's transient storage; verify reads them
 * back; promote copies them server-side into the customer's isolated vault and names them in an
 * index object; commit writes the point manifests (ids derived from the job, so a resumed job
 * commits the same points, once); release retires the previous golden snapshot or deletes the
 * copy; retain applies the policy's retention to the item's points; cleanup empties the staging.
 * Every step is idempotent (names derive from the job id). Compensation, on failure before commit,
 * revokes access and deletes what acquire and stage made; it never touches committed points.
 */
import { createHash } from "node:crypto";
import os from "node:os";
import type { Readable } from "node:stream";
import { describeError, SourceError, UsageError } from "../errors.ts";
import { backupBlocks } from "../engine/backup-blocks.ts";
import { backupStream } from "../engine/backup-stream.ts";
import { manifestOf, withWriter } from "../engine/backup.ts";
import { CodecPool } from "../engine/codec-pool.ts";
import type { BlockLayout, PointManifest } from "../engine/point.ts";
import { clearStaging, immutabilityOf, promoteStaged, readStaged, recordStaged, resumeStaging, verifyStaged } from "../engine/stage.ts";
import { commitPoint, MissingDataError } from "../engine/commit.ts";
import { forgetPoint } from "../engine/chain.ts";
import { latestPointOfSource } from "../engine/catalog.ts";
import { jobVaultLock, releaseJobVaultLock } from "./job-vault-lock.ts";
import type { VaultLock } from "../engine/locks.ts";
import type { Vault } from "../engine/vault.ts";
import type { JobData, MachineDefinition, StepContext } from "../jobs/machine.ts";
import { PermanentJobError } from "../jobs/machine.ts";
import { derivedResourceName, parseResourceId } from "../azure/resource-id.ts";
import { ruleIsEmpty, type RetentionRule } from "../retention/gfs.ts";
import { pointsBeyondRetention } from "../engine/retention-points.ts";
import { deleteSnapshot, ensureSnapshot, getDisk, withDiskRead } from "../sources/azure-disk.ts";
import { recordConfiguration, type VmConfiguration } from "../sources/azure-vm.ts";
import { checkImportExportAccess, copyDatabase, dropCopy, exportBacpac } from "../sources/azure-sql.ts";
import { armFailure, statusOf } from "../sources/azure-disk.ts";
import type { WorkloadEnvironment } from "./environment.ts";

interface DiskTask {
  diskId: string;
  role: "disk" | "os" | "data";
  lun?: number;
  caching?: string;
  snapshotName: string;
  snapshotId?: string;
  previousPointId?: string;
  previousSnapshotId?: string;
  pointId: string;
}

export interface BackupJobData extends JobData {
  vault: string;
  itemId: string;
  kind: "disk" | "vm" | "sql";
  tags: Record<string, string>;
  retention?: RetentionRule;
  /** The point this job commits (the VM's group point for a VM). */
  pointId: string;
  disks: DiskTask[];
  vmConfiguration?: VmConfiguration;
  sqlCopyName?: string;
  bacpacName?: string;
  location?: string;
  /**
   * When acquire took the snapshots (or the database copy), from the job's clock: the time of the
   * points, which retention buckets by. The job's clock is the system clock in production and an
   * injected one in simulations.
   */
  takenAt?: number;
  staged?: { bytesRead: number; bytesNew: number; bytesStored: number; modes: string[] };
  committed?: boolean;
  retained?: { removed: number; kept: number };
  /** What the storage says protects the committed point from deletion, or that nothing does. */
  immutability?: string;
  /** How often commit found data gone and sent the job back to staging, and the packs it found missing. */
  restaged?: number;
  missingPacks?: string[];
}

/** The index object naming what this job promoted (a new one each time the job had to stage again). */
function stagedIndexName(jobId: string, data: BackupJobData): string {
  return `job-${derivedId(jobId, data.restaged ? `index/${data.restaged}` : "index")}`;
}

/** The point ids this job makes (its own, and its disks'): staged drafts naming others are refused. */
function ownPoints(data: BackupJobData): Set<string> {
  return new Set([data.pointId, ...data.disks.map((d) => d.pointId)]);
}

/** Deterministic, job-derived ids and names: a re-run step finds what an earlier run made. */
function derivedId(jobId: string, what: string): string {
  return createHash("sha256").update(`${jobId}/${what}`).digest("hex").slice(0, 32);
}

function suffix(jobId: string): string {
  return jobId.slice(-12);
}

export function backupMachine(env: WorkloadEnvironment): MachineDefinition<BackupJobData> {
  const withVault = async <T>(data: BackupJobData, body: (vault: Vault) => Promise<T>): Promise<T> => body(await env.openVault(data.vault));
  /**
   * A step from staging to commit: under the job's shared vault lock (job-vault-lock.ts), held across
   * these steps so no prune runs while the job is in flight; a step that fails lets go of it (the
   * retry may run on another worker, and commit proves the data is still there).
   */
  const withJobLock = async <T>(ctx: StepContext, data: BackupJobData, body: (vault: Vault, lock: VaultLock) => Promise<T>): Promise<T> =>
    withVault(data, async (vault) => {
      const lock = await jobVaultLock(ctx, vault);
      try {
        return await body(vault, lock);
      } catch (error) {
        await releaseJobVaultLock(ctx.jobId);
        throw error;
      }
    });

  return {
    name: "backup",
    initial: "prepare",
    makesPoints: true,
    start(input): BackupJobData {
      const itemId = String(input.itemId ?? "");
      const kind = input.kind as BackupJobData["kind"];
      if (!itemId || !["disk", "vm", "sql"].includes(kind)) throw new PermanentJobError(`a backup job needs itemId and kind (disk, vm or sql)`);
      if (env.authority) {
        // A worker with policies (every `agent worker`): the vault, retention and tags are the
        // policy's, never the job record's (a record in the fleet table is not trusted input; the
        // worker refused the job already if it names a policy it does not have or another vault).
        const terms = env.authority.backupTerms(String(input.policy ?? ""));
        return { vault: terms?.vault ?? "", itemId, kind, tags: terms?.tags ?? {}, retention: terms?.retention, pointId: "", disks: [] };
      }
      if (!input.vault) throw new PermanentJobError(`the backup job of ${itemId} names no vault`);
      return {
        vault: String(input.vault),
        itemId,
        kind,
        // The policy's name travels with its points, so retention on its own schedule finds them.
        tags: { ...((input.tags as Record<string, string>) ?? {}), ...(input.policy ? { policy: String(input.policy) } : {}) },
        retention: input.retention as RetentionRule | undefined,
        pointId: "",
        disks: [],
      };
    },
    locks(job) {
      // One job per item; a VM's disks too, so a disk job and a VM job never snapshot one disk at
      // once (the item locks compare ARM ids case-insensitively). A VM's disks are known after its
      // first prepare; the runner locks them before prepare runs again (see prepare).
      const data = job.data as Partial<BackupJobData>;
      return [job.itemId, ...(data.disks ?? []).map((d) => d.diskId)];
    },
    retryable(error) {
      // A SourceError says the item is gone or not backup-able (no such disk, VM or database; an
      // unmanaged disk): running the job again an attempt or two later cannot change that.
      return !(error instanceof UsageError || error instanceof PermanentJobError || error instanceof SourceError);
    },
    metrics(data) {
      return { bytesRead: data.staged?.bytesRead, bytesNew: data.staged?.bytesNew, bytesStored: data.staged?.bytesStored, pointId: data.committed ? data.pointId : undefined };
    },
    states: {
      prepare: {
        // Reads the item and lists the vault's points: minutes at most, even for a large vault.
        timeoutMs: 30 * 60_000,
        async step(ctx, data) {
          const pointId = derivedId(ctx.jobId, "point");
          if (data.kind === "sql") {
            const db = parseResourceId(data.itemId);
            const name = db.names[1];
            return {
              next: "acquire",
              data: { ...data, pointId, disks: [], sqlCopyName: derivedResourceName(name, suffix(ctx.jobId), 128) },
            };
          }
          const disks: DiskTask[] = [];
          let vmConfiguration: VmConfiguration | undefined;
          let location: string | undefined;
          if (data.kind === "vm") {
            const vmId = parseResourceId(data.itemId);
            const compute = await env.azure.compute(vmId.subscriptionId);
            const vm = await compute.virtualMachines.get(vmId.resourceGroup, vmId.name, { abortSignal: ctx.signal }).catch((error) => {
              throw statusOf(error) === 404 ? new PermanentJobError(`the VM ${data.itemId} no longer exists`) : armFailure(`reading VM ${data.itemId}`, error);
            });
            vmConfiguration = recordConfiguration(vm);
            location = vm.location;
            for (const d of vmConfiguration.disks) disks.push({ diskId: d.diskId, role: d.role, lun: d.lun, caching: d.caching, snapshotName: "", pointId: "" });
            // The disks must be locked before anything is decided about them (their previous
            // points and golden snapshots): a disk job of one of them may be running. Name them
            // and come back; the runner takes their locks (or defers the job) before this step runs
            // again. ARM ids compare case-insensitively (see jobs/item-locks.ts).
            const locked = new Set((data.disks ?? []).map((d) => d.diskId.toLowerCase()));
            if (!disks.every((d) => locked.has(d.diskId.toLowerCase()))) {
              ctx.log("vm-disks-to-lock", { disks: disks.map((d) => d.diskId) });
              return { next: "prepare", data: { ...data, disks } };
            }
          } else {
            disks.push({ diskId: data.itemId, role: "disk", snapshotName: "", pointId: "" });
          }
          // Each disk's newest point from its catalog entries, not from every manifest in the vault.
          const previous = await withVault(data, (vault) =>
            Promise.all(disks.map((d) => latestPointOfSource(vault, { kind: "disk", source: { type: "azure-managed-disk", path: d.diskId } }))),
          );
          for (const [i, disk] of disks.entries()) {
            const ref = parseResourceId(disk.diskId);
            disk.snapshotName = derivedResourceName(ref.name, suffix(ctx.jobId), 80);
            disk.previousPointId = previous[i]?.id;
            disk.previousSnapshotId = previous[i]?.details?.snapshotId as string | undefined;
            disk.pointId = data.kind === "vm" ? derivedId(ctx.jobId, `disk/${disk.diskId.toLowerCase()}`) : pointId;
          }
          return { next: "acquire", data: { ...data, pointId, disks, vmConfiguration, location } };
        },
      },

      acquire: {
        async step(ctx, data) {
          if (data.kind === "sql") {
            const db = parseResourceId(data.itemId);
            const [server] = db.names;
            const sql = await env.azure.sql(db.subscriptionId);
            const source = await sql.databases.get(db.resourceGroup, server, db.names[1]);
            const existing = await sql.databases.get(db.resourceGroup, server, data.sqlCopyName!).catch((error: unknown) => {
              if ((error as { statusCode?: number }).statusCode === 404) return undefined;
              throw error; // a refused or throttled read is not "no copy"
            });
            // A database of the copy's name that this job did not make is never exported as its point.
            if (existing && existing.tags?.["bulwark-job"] !== ctx.jobId) {
              throw new PermanentJobError(`the database ${data.sqlCopyName} on server ${server} exists and is not this job's copy of ${data.itemId}; rename or remove it`);
            }
            // What the import/export service needs of the server is checked before a copy is made.
            const access = await checkImportExportAccess(sql, db.resourceGroup, server!, env.sqlLogin(), "source");
            if (!existing) await copyDatabase(sql, db, source, data.sqlCopyName!, { "bulwark-job": ctx.jobId });
            // A BACPAC name of this run's own: an export started by a worker that died may still be
            // running in Azure and writing its blob, so a retry never reads or reuses that one.
            const bacpacName = `jobs/${ctx.jobId}/export-${ctx.job.runs}.bacpac`;
            await env.transient.blob(bacpacName).deleteIfExists();
            await exportBacpac(sql, db, data.sqlCopyName!, env.transient, bacpacName, env.sqlLogin(), access);
            return { next: "stage", data: { ...data, bacpacName, location: source.location, takenAt: ctx.clock.now() } };
          }
          // All disks' snapshots together (crash-consistent for a VM); existing ones are reused.
          const disks = await Promise.all(
            data.disks.map(async (disk) => {
              const ref = parseResourceId(disk.diskId);
              const info = await getDisk(env.azure, ref);
              const snapshot = await ensureSnapshot(env.azure, ref, info, disk.snapshotName);
              return { ...disk, snapshotId: snapshot.id };
            }),
          );
          return { next: "stage", data: { ...data, disks, takenAt: ctx.clock.now() } };
        },
        async compensate(ctx, data) {
          if (data.committed) return;
          if (data.kind === "sql") {
            await dropSqlCopy(env, data, ctx.jobId);
            await removeJobBlobs(env, ctx.jobId);
            return;
          }
          // A disk whose point got committed (a commit step that failed partway) keeps its new
          // snapshot: that point names it as the next backup's diff base.
          const vault = await env.openVault(data.vault).catch(() => undefined);
          for (const disk of data.disks) {
            if (!disk.snapshotId) continue;
            if (vault && (await vault.store.stat(`points/${disk.pointId}`))) continue;
            await deleteSnapshot(env.azure, disk.snapshotId).catch((error) => ctx.log("compensation-failed", { snapshot: disk.snapshotId, error: describeError(error) }));
          }
        },
      },

      stage: {
        async step(ctx, data) {
          const staging = env.staging(ctx.jobId);
          return withJobLock(ctx, data, async (vault, lock) => {
            // Packs an earlier commit found missing: their chunks are stored again, not deduplicated against.
            if (data.missingPacks?.length) vault.index.dropPacks(new Set(data.missingPacks));
            // An earlier, interrupted run of this step (a worker that died, credentials that ran out):
            // the packs it staged are kept and not written again.
            // (Staged packs the vault lost are promoted again from here.)
            const resumed = await resumeStaging(vault, staging);
            if (resumed.length > 0) ctx.log("stage-resumed", { packs: resumed.length });
            const drafts: PointManifest[] = [];
            const pointTime = new Date(data.takenAt ?? ctx.clock.now()).toISOString();
            const modes: string[] = [];
            let bytesRead = 0;
            const started = Date.now();
            const { writer } = await withWriter(vault, { packStore: staging, lock }, async (writer) => {
              if (data.kind === "sql") {
                // The BACPAC stream ends with the step (shutdown, lost lease, time limit).
                const download = await env.transient.blob(data.bacpacName!).download(0, undefined, { abortSignal: ctx.signal });
                const result = await backupStream(vault, writer, download.readableStreamBody as Readable);
                bytesRead += result.bytesRead;
                modes.push("bacpac");
                const db = parseResourceId(data.itemId);
                drafts.push(
                  manifestOf(
                    {
                      kind: "sql",
                      source: { type: "azure-sql-database", path: data.itemId, host: os.hostname(), location: data.location },
                      tags: data.tags,
                      details: { server: db.names[0], database: db.names[1], location: data.location, format: "bacpac", consistentCopy: data.sqlCopyName, job: ctx.jobId },
                    },
                    result.bytesRead,
                    result.content,
                    result.bytesRead,
                    writer,
                    started,
                    data.pointId,
                  ),
                );
                return;
              }
              for (const disk of data.disks) {
                const ref = parseResourceId(disk.diskId);
                const info = await getDisk(env.azure, ref);
                const previous = disk.previousPointId ? await vault.readPoint(disk.previousPointId).catch(() => undefined) : undefined;
                await withDiskRead(env.azure, ref, info, { id: disk.snapshotId!, name: disk.snapshotName, resourceGroup: ref.resourceGroup, subscriptionId: ref.subscriptionId, diskId: disk.diskId }, previous, async (read) => {
                  const before = writer.stats.bytesNew;
                  const result = await backupBlocks(vault, writer, read.source, {
                    base: read.base?.content?.layout === "blocks" ? { content: read.base.content as BlockLayout, size: read.base.size } : undefined,
                    changed: read.changed,
                    readAhead: 8,
                  });
                  bytesRead += read.source.bytesFetched;
                  modes.push(read.mode);
                  // A full read where an incremental was due costs the whole disk's reads: said, so an
                  // operator sees a diff that keeps failing (the point's details record it too).
                  if (read.fallbackReason) ctx.log("disk.full-read", { diskId: disk.diskId, reason: read.fallbackReason });
                  const draft = manifestOf(
                    {
                      kind: "disk",
                      source: { type: "azure-managed-disk", path: disk.diskId, location: info.location },
                      tags: data.tags,
                      parent: read.base?.id,
                      details: { ...read.details, job: ctx.jobId, ...(data.kind === "vm" ? { vm: data.itemId, role: disk.role, lun: disk.lun } : {}) },
                    },
                    read.size,
                    result.content,
                    read.source.bytesFetched,
                    writer,
                    started,
                    disk.pointId,
                  );
                  draft.stats.bytesNew = writer.stats.bytesNew - before;
                  drafts.push(draft);
                });
              }
              if (data.kind === "vm") {
                const config = data.vmConfiguration!;
                drafts.push({
                  version: 1,
                  id: data.pointId,
                  time: pointTime,
                  kind: "vm",
                  source: { type: "azure-vm", path: data.itemId, host: os.hostname(), location: data.location },
                  size: drafts.reduce((s, d) => s + d.size, 0),
                  tags: data.tags,
                  members: data.disks.map((d) => ({ role: d.role, point: d.pointId, diskId: d.diskId, lun: d.lun, caching: d.caching })),
                  details: { configuration: config, job: ctx.jobId },
                  stats: { bytesRead, bytesNew: writer.stats.bytesNew, bytesStored: writer.stats.bytesStored, chunksNew: writer.stats.chunksNew, durationMs: Date.now() - started },
                });
              }
            });
            for (const draft of drafts) draft.time = pointTime;
            await recordStaged(vault, staging, ctx.jobId, [...resumed, ...writer.committedPacks], drafts);
            ctx.log("staged", { packs: writer.committedPacks.length, bytesRead, bytesNew: writer.stats.bytesNew, modes });
            return {
              next: "verify",
              data: { ...data, staged: { bytesRead, bytesNew: writer.stats.bytesNew, bytesStored: writer.stats.bytesStored, modes } },
            };
          });
        },
        async compensate(_ctx, data) {
          await releaseJobVaultLock(_ctx.jobId);
          if (!data.committed) await clearStaging(env.staging(_ctx.jobId));
        },
      },

      verify: {
        async step(ctx, data) {
          const staging = env.staging(ctx.jobId);
          return withJobLock(ctx, data, async (vault, lock) => {
            const { packs } = await readStaged(vault, staging, ctx.jobId, ownPoints(data));
            const pool = new CodecPool(vault.master);
            try {
              const chunks = await verifyStaged(vault, pool, staging, packs);
              ctx.log("verified-staging", { packs: packs.length, chunks });
            } finally {
              await pool.close();
            }
            return { next: "promote", data };
          });
        },
      },

      promote: {
        async step(ctx, data) {
          const staging = env.staging(ctx.jobId);
          return withJobLock(ctx, data, async (vault, lock) => {
            const { packs } = await readStaged(vault, staging, ctx.jobId, ownPoints(data));
            const { copied } = await promoteStaged(vault, staging, packs, stagedIndexName(ctx.jobId, data));
            ctx.log("promoted", { packs: packs.length, copied });
            return { next: "commit", data };
          });
        },
      },

      commit: {
        async step(ctx, data) {
          const staging = env.staging(ctx.jobId);
          return withJobLock(ctx, data, async (vault, lock) => {
            const { drafts, packs } = await readStaged(vault, staging, ctx.jobId, ownPoints(data));
            // Members first, the group last: a VM point never names a disk point that is not there.
            try {
              for (const draft of drafts) {
                const outcome = await commitPoint(vault, draft, lock);
                ctx.log("point", { point: draft.id, kind: draft.kind, outcome });
              }
            } catch (error) {
              // Data the drafts need went away (a prune while this job's lock had lapsed, a pack deleted
              // by hand): nothing was written for the missing part; stage again from the snapshots.
              if (!(error instanceof MissingDataError) || (data.restaged ?? 0) >= 2) throw error;
              ctx.log("restage", { reason: describeError(error) });
              return { next: "stage", data: { ...data, restaged: (data.restaged ?? 0) + 1, missingPacks: [...(data.missingPacks ?? []), ...error.packs] } };
            }
            await releaseJobVaultLock(ctx.jobId);
            // WORM is the vault container's default policy, never a per-object call (the worker may not
            // set one: README, "Immutability"); the job says what the storage reports for its point.
            const { until, report: immutability } = await immutabilityOf(vault.store, `points/${drafts[drafts.length - 1].id}`);
            ctx.log(until ? "immutability" : "immutability-missing", { detail: immutability });
            return { next: "release", data: { ...data, committed: true, immutability } };
          });
        },
      },

      release: {
        async step(ctx, data) {
          if (data.kind === "sql") {
            await dropSqlCopy(env, data, ctx.jobId);
          } else {
            for (const disk of data.disks) {
              const old = disk.previousSnapshotId;
              if (old && old.toLowerCase() !== disk.snapshotId?.toLowerCase()) {
                await deleteSnapshot(env.azure, old).catch((error) => {
                  if (statusOf(error) !== 404) throw error;
                });
                ctx.log("retired-snapshot", { snapshot: old });
              }
            }
          }
          return { next: "retain", data };
        },
      },

      retain: {
        async step(ctx, data) {
          if (!data.retention || ruleIsEmpty(data.retention)) return { next: "cleanup", data };
          return withVault(data, async (vault) => {
            // Judged over every point of the vault: a disk point that a VM point (of another policy)
            // is made of is never this item's to remove.
            const kind = data.kind === "vm" ? "vm" : data.kind;
            const item = data.itemId.toLowerCase();
            const { remove, kept } = pointsBeyondRetention(
              await vault.listPoints(),
              data.retention!,
              (p) => p.kind === kind && p.source.path.toLowerCase() === item,
            );
            let removed = 0;
            for (const id of remove) {
              try {
                await forgetPoint(vault, id, `retention of ${data.tags.policy ? `policy ${data.tags.policy}` : "the job"} for ${data.itemId}`);
                removed++;
              } catch (error) {
                ctx.log("retention-kept", { point: id, reason: describeError(error) });
              }
            }
            return { next: "cleanup", data: { ...data, retained: { removed, kept } } };
          });
        },
      },

      cleanup: {
        async step(ctx, data) {
          await clearStaging(env.staging(ctx.jobId));
          await removeJobBlobs(env, ctx.jobId);
          return { done: true, data };
        },
      },
    },
  };
}

async function dropSqlCopy(env: WorkloadEnvironment, data: BackupJobData, jobId: string): Promise<void> {
  const db = parseResourceId(data.itemId);
  const sql = await env.azure.sql(db.subscriptionId);
  // Only the copy this job made (tagged with its id) is deleted; a failure is thrown, so the step is retried and reported.
  if (data.sqlCopyName) await dropCopy(sql, db, data.sqlCopyName, "bulwark-job", jobId);
  if (data.bacpacName) await env.transient.blob(data.bacpacName).deleteIfExists().catch(() => {});
}

/** Every transient blob of the job: BACPACs of every run (a dead worker's included), staging. */
async function removeJobBlobs(env: WorkloadEnvironment, jobId: string): Promise<void> {
  const prefix = `${env.transient.prefix}jobs/${jobId}/`;
  for await (const blob of env.transient.container.listBlobsFlat({ prefix })) {
    await env.transient.container.deleteBlob(blob.name, { deleteSnapshots: "include" }).catch(() => {});
  }
}

export type { StepContext };
