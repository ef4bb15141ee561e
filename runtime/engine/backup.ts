/**
 * One backup, end to end: lock the vault (shared), write chunks and packs, commit index objects,
 * and only then, still under the lock, commit the point manifest (commit.ts proves its data first). Whatever fails before the manifest leaves the vault as
 * it was, plus unreferenced packs that prune removes.
 */
import os from "node:os";
import { VaultBusyError } from "../errors.ts";
import type { Readable } from "node:stream";
import { backupBlocks, type BlockSource, type ByteRange } from "./backup-blocks.ts";
import { backupStream } from "./backup-stream.ts";
import { CodecPool } from "./codec-pool.ts";
import { commitPoint } from "./commit.ts";
import { VaultLock } from "./locks.ts";
import type { BlockLayout, PointManifest } from "./point.ts";
import { newPointId, type Vault } from "./vault.ts";
import { VaultWriter } from "./vault-writer.ts";
import type { ObjectStore } from "../store/store.ts";

export interface PointDescription {
  kind: PointManifest["kind"];
  source: PointManifest["source"];
  tags?: Record<string, string>;
  details?: Record<string, unknown>;
  parent?: string;
}

export interface BackupOptions {
  onProgress?: (bytesDone: number) => void;
  threads?: number;
}

/**
 * Runs body with a writer under a shared vault lock, finishes what it wrote, then runs `then`
 * (which commits the point) while the lock is still held. With a packStore, packs go there instead
 * (staging) and no index object is written: see stage.ts. With `lock`, the caller's lock is used
 * (a job holds one from staging to commit) and left held.
 */
export async function withWriter<T>(
  vault: Vault,
  options: BackupOptions & { packStore?: ObjectStore; lock?: VaultLock },
  body: (writer: VaultWriter) => Promise<T>,
  then?: (result: T, writer: VaultWriter, lock: VaultLock) => Promise<void>,
): Promise<{ result: T; writer: VaultWriter }> {
  const ownLock = options.lock === undefined;
  const lock = options.lock ?? (await VaultLock.acquire(vault.store, "shared", "backup"));
  // The index was loaded before the lock: a prune that ran in between deleted index objects (and
  // packs) it names, and deduplicating against it would make a point reference deleted chunks.
  const present = new Set<string>();
  for await (const info of vault.store.list("index/")) present.add(info.key);
  const vanished = vault.indexObjects.filter((name) => !present.has(name));
  if (vanished.length > 0) {
    if (ownLock) await lock.release().catch(() => {});
    throw new VaultBusyError(`the vault at ${vault.store.location} was pruned while this backup was starting; run the backup again`);
  }
  const pool = new CodecPool(vault.master, { threads: options.threads, zstdLevel: vault.config.zstdLevel });
  const writer = new VaultWriter(vault, pool, options.packStore ? { packStore: options.packStore, writeIndex: false } : {});
  try {
    let finished = false;
    try {
      const result = await body(writer);
      await writer.finish();
      finished = true;
      await then?.(result, writer, lock);
      return { result, writer };
    } catch (error) {
      if (!finished) await writer.abort();
      throw error;
    }
  } finally {
    await pool.close();
    if (ownLock) await lock.release().catch(() => {});
  }
}

export function manifestOf(
  description: PointDescription,
  size: number,
  content: PointManifest["content"],
  bytesRead: number,
  writer: VaultWriter,
  started: number,
  id = newPointId(),
): PointManifest {
  return {
    version: 1,
    id,
    time: new Date().toISOString(),
    kind: description.kind,
    source: { host: os.hostname(), ...description.source },
    size,
    tags: description.tags ?? {},
    content,
    parent: description.parent,
    details: description.details,
    stats: {
      bytesRead,
      bytesNew: writer.stats.bytesNew,
      bytesStored: writer.stats.bytesStored,
      chunksNew: writer.stats.chunksNew,
      durationMs: Date.now() - started,
    },
  };
}

/** A disk: every block, or with a base point only the changed ranges. */
export async function backupDisk(
  vault: Vault,
  source: BlockSource,
  description: PointDescription,
  /** recordPatching: the point's details say what patching partly changed blocks cost (blocksPatched, baseChunksRead, baseBytesRead, baseReadsFailed). */
  options: BackupOptions & { base?: PointManifest; changed?: ByteRange[]; readAhead?: number; recordPatching?: boolean } = {},
): Promise<PointManifest> {
  const started = Date.now();
  const base =
    options.base?.content?.layout === "blocks" ? { content: options.base.content as BlockLayout, size: options.base.size } : undefined;
  let manifest: PointManifest | undefined;
  await withWriter(
    vault,
    options,
    (writer) => backupBlocks(vault, writer, source, { base, changed: options.changed, onProgress: options.onProgress, readAhead: options.readAhead }),
    async (result, writer, lock) => {
      const { blocksPatched, baseChunksRead, baseBytesRead, baseReadsFailed } = result;
      const details = options.recordPatching ? { ...description.details, blocksPatched, baseChunksRead, baseBytesRead, baseReadsFailed } : description.details;
      manifest = manifestOf({ ...description, details, parent: description.parent ?? options.base?.id }, source.size, result.content, result.bytesRead, writer, started);
      await commitPoint(vault, manifest, lock);
    },
  );
  return manifest!;
}

/** A file or any byte stream, through content-defined chunking. */
export async function backupFileStream(
  vault: Vault,
  input: AsyncIterable<Uint8Array> | Readable,
  description: PointDescription,
  options: BackupOptions = {},
): Promise<PointManifest> {
  const started = Date.now();
  let manifest: PointManifest | undefined;
  await withWriter(
    vault,
    options,
    (writer) => backupStream(vault, writer, input, { onProgress: options.onProgress }),
    async (result, writer, lock) => {
      manifest = manifestOf(description, result.bytesRead, result.content, result.bytesRead, writer, started);
      await commitPoint(vault, manifest, lock);
    },
  );
  return manifest!;
}
