/**
 * Removes what no point references. Run under an exclusive lock. Order makes an interruption
 * harmless: live chunks of mostly-dead packs are copied (still sealed) into new packs; the index of
 * every kept chunk is written (index objects, or, once the vault is large or already sharded, a new
 * generation of shards and then its generation object, the commit point: index-shards.ts); only then
 * are the old index objects (and older generations' shards) deleted, and only then the packs nothing
 * names any more. Objects still under immutability are left for a later
 * prune, and so are the packs an undeletable index object still names. The catalog's entries of
 * points that are gone go too (catalog.ts).
 */
import { describeError, IntegrityError, VaultBusyError } from "../errors.ts";
import { completeCatalog, removeStaleEntries } from "./catalog.ts";
import { CHUNK_TREE } from "./chunk-codec.ts";
import { ChunkIndex } from "./chunk-index.ts";
import type { CodecPool } from "./codec-pool.ts";
import { ID_BYTES, isZeroId, randomHex } from "./crypto.ts";
import { decodeIndex, encodeIndex, splitIndex, type IndexedPack } from "./index-file.ts";
import { GENERATION_PREFIX, SHARD_PREFIX, sequenceOf, shardTuning, writeGeneration } from "./index-shards.ts";
import type { ChunkLocation } from "./chunk-index.ts";
import { epochsNoLongerStored } from "./keyring.ts";
import { STALE_AFTER_MS, type VaultLock } from "./locks.ts";
import { packIdOfKey, packKey, type PackEntry } from "./pack.ts";
import { STREAM_TREE_ENTRY } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";
import { VaultWriter } from "./vault-writer.ts";

/** Repack a pack once more than this share of its bytes is dead. */
const REPACK_DEAD_SHARE = 0.2;
/**
 * Entries per index object prune writes (about 45 MiB). One object for the whole index failed past
 * about 47 million chunks: Node's AES-GCM seals at most 2^31 - 1 bytes in one call.
 */
const CONSOLIDATED_ENTRIES = 1 << 20;

export interface PruneReport {
  packsDeleted: number;
  packsRepacked: number;
  bytesFreed: number;
  unindexedPacksDeleted: number;
  kept: string[];
}

/**
 * `lock` is the vault lock the caller holds (exclusive, or shared for a dry run): ages of objects
 * are judged on the store's clock it knows (never this host's), and before anything is deleted the
 * lock must still be held; if it lapsed (a backup may have started and committed meanwhile, its
 * points unseen here), the prune gives up.
 */
export async function pruneVault(vault: Vault, pool: CodecPool, options: { dryRun?: boolean; lock: VaultLock }): Promise<PruneReport> {
  const report: PruneReport = { packsDeleted: 0, packsRepacked: 0, bytesFreed: 0, unindexedPacksDeleted: 0, kept: [] };
  const now = options.lock.storeNow();
  if (!options.dryRun && options.lock.kind !== "exclusive") throw new Error("prune needs the vault's exclusive lock");

  // What the remaining points reference.
  const referenced = new ChunkIndex();
  const points = await vault.listPoints();
  for (const point of points) {
    const content = point.content;
    if (!content) continue;
    const entryBytes = content.layout === "blocks" ? ID_BYTES : STREAM_TREE_ENTRY;
    for (const nodeHex of new Set(content.tree)) {
      const nodeId = Buffer.from(nodeHex, "hex");
      referenced.markPending(nodeId);
      const node = await vault.readChunk(CHUNK_TREE, nodeId);
      for (let at = 0; at < node.length; at += entryBytes) {
        const id = node.subarray(at, at + ID_BYTES);
        if (!isZeroId(id)) referenced.markPending(id);
      }
    }
  }

  // Every pack as the index describes it; a chunk is live in the pack the index points at. The
  // shards are read whole into memory: prune's memory still grows with the vault.
  const packs = new Map<string, PackEntry[]>();
  const addToPack = (packId: string, entry: PackEntry) => {
    const list = packs.get(packId);
    if (list) list.push(entry);
    else packs.set(packId, [entry]);
  };
  const oldGeneration = vault.index.generation;
  await vault.index.loadWhole((id, location) => addToPack(location.pack, { type: location.type, id, offset: location.offset, length: location.length, rawLength: location.rawLength }));
  const oldIndexObjects = [...vault.indexObjects];
  for (const name of oldIndexObjects) {
    for (const pack of decodeIndex(vault.master.dataKey, name, await vault.store.get(name))) {
      for (const entry of pack.entries) addToPack(pack.packId, entry);
    }
  }
  // Index objects the generation covers that a prune stopped before deleting: covered again, then deleted.
  const coveredLeft: string[] = [];
  if (oldGeneration) {
    const covered = new Set(oldGeneration.covers);
    for await (const info of vault.store.list("index/")) if (covered.has(info.key)) coveredLeft.push(info.key);
  }
  const packSizes = new Map<string, { size: number; lastModified: Date }>();
  for await (const info of vault.store.list("data/")) {
    const packId = packIdOfKey(info.key);
    if (packId) packSizes.set(packId, { size: info.size, lastModified: info.lastModified });
  }

  const drop: string[] = [];
  const repack: string[] = [];
  for (const [packId, entries] of packs) {
    const size = packSizes.get(packId)?.size ?? 0;
    let liveBytes = 0;
    for (const entry of entries) if (isLive(vault, referenced, packId, entry)) liveBytes += entry.length;
    if (liveBytes === 0) drop.push(packId);
    else if (size > 0 && 1 - liveBytes / size > REPACK_DEAD_SHARE) repack.push(packId);
  }
  const unindexed = [...packSizes.entries()]
    .filter(([packId, info]) => !packs.has(packId) && now - info.lastModified.getTime() > STALE_AFTER_MS)
    .map(([packId]) => packId);

  if (options.dryRun) {
    report.packsDeleted = drop.length;
    report.packsRepacked = repack.length;
    report.unindexedPacksDeleted = unindexed.length;
    report.bytesFreed = [...drop, ...unindexed].reduce((sum, p) => sum + (packSizes.get(p)?.size ?? 0), 0);
    return report;
  }

  await stillHeld(options.lock);
  // 0. The catalog: every point has its entry (older vaults), and no entry outlives its point.
  await completeCatalog(vault, points);
  await removeStaleEntries(vault, new Set(points.map((point) => point.id)));

  // 1. Copy live chunks out of packs being repacked.
  const writer = new VaultWriter(vault, pool);
  try {
    for (const packId of repack) {
      for (const entry of packs.get(packId)!) {
        if (!isLive(vault, referenced, packId, entry)) continue;
        const sealed = await vault.store.getRange(packKey(packId), entry.offset, entry.length);
        await writer.putSealed(entry.type, entry.id, sealed, entry.rawLength, { replace: true });
      }
    }
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }

  // 2. The index of every chunk that stays (live or not) in a pack that stays.
  const leaving = new Set([...drop, ...repack]);
  const kept: [Buffer, ChunkLocation][] = [];
  for (const entry of vault.index.entries()) if (!leaving.has(entry[1].pack)) kept.push(entry);
  const replaced = [...oldIndexObjects, ...writer.indexObjectsWritten, ...coveredLeft];
  const written =
    oldGeneration !== undefined || kept.length >= shardTuning.shardFromEntries
      ? await writeGeneration(vault.store, vault.master.dataKey, vault.master.format, (await newestSequence(vault)) + 1, kept, replaced)
      : await writeIndexObjects(vault, kept);

  await stillHeld(options.lock);
  await refuseLostEpochs(vault, [...written, ...writer.indexObjectsWritten]);
  // 3. Old index objects, then other generations' shards and generation objects (orphans of an
  // interrupted prune too); a pack that an undeletable index object still names must stay.
  const stillNamed = new Set<string>();
  for (const old of replaced) {
    try {
      await vault.store.delete(old);
    } catch (error) {
      report.kept.push(`${old}: ${describeError(error)}`);
      for (const pack of decodeIndex(vault.master.dataKey, old, await vault.store.get(old))) stillNamed.add(pack.packId);
    }
  }
  await removeOtherGenerations(vault, new Set(written), report);

  await stillHeld(options.lock);
  // 4. Packs nothing names any more.
  await mapLimit([...drop, ...repack, ...unindexed], 8, async (packId) => {
    if (stillNamed.has(packId)) return;
    try {
      await vault.store.delete(packKey(packId));
      report.bytesFreed += packSizes.get(packId)?.size ?? 0;
      if (unindexed.includes(packId)) report.unindexedPacksDeleted++;
      else if (repack.includes(packId)) report.packsRepacked++;
      else report.packsDeleted++;
    } catch (error) {
      report.kept.push(`pack ${packId}: ${describeError(error)}`);
    }
  });
  return report;
}

/** Index objects of at most CONSOLIDATED_ENTRIES entries, grouped by pack; their names. */
async function writeIndexObjects(vault: Vault, kept: [Buffer, ChunkLocation][]): Promise<string[]> {
  const grouped = new Map<string, PackEntry[]>();
  for (const [id, location] of kept) {
    const list = grouped.get(location.pack) ?? [];
    list.push({ type: location.type, id, offset: location.offset, length: location.length, rawLength: location.rawLength });
    grouped.set(location.pack, list);
  }
  const consolidated: IndexedPack[] = [...grouped].map(([packId, entries]) => ({ packId, entries }));
  const written: string[] = [];
  for (const part of splitIndex(consolidated, CONSOLIDATED_ENTRIES)) {
    const name = `index/${randomHex(16)}`;
    await vault.store.create(name, encodeIndex(vault.master.dataKey, name, part, vault.master.format));
    written.push(name);
  }
  return written;
}

/** The highest generation sequence any generation object or shard (an orphan too) carries, or 0. */
async function newestSequence(vault: Vault): Promise<number> {
  let newest = 0;
  for (const prefix of [GENERATION_PREFIX, SHARD_PREFIX]) {
    for await (const info of vault.store.list(prefix)) newest = Math.max(newest, sequenceOf(info.key) ?? 0);
  }
  return newest;
}

/** Every shard and generation object but those just written: older generations, and orphan shards of an interrupted prune. */
async function removeOtherGenerations(vault: Vault, keep: ReadonlySet<string>, report: PruneReport): Promise<void> {
  for (const prefix of [SHARD_PREFIX, GENERATION_PREFIX]) {
    const doomed: string[] = [];
    for await (const info of vault.store.list(prefix)) if (!keep.has(info.key)) doomed.push(info.key);
    await mapLimit(doomed, 8, async (name) => {
      try {
        await vault.store.delete(name);
      } catch (error) {
        report.kept.push(`${name}: ${describeError(error)}`);
      }
    });
  }
}

async function stillHeld(lock: VaultLock): Promise<void> {
  if ((await lock.assertHeld()).lapsed) {
    throw new VaultBusyError(
      "prune stopped before deleting anything more: its exclusive lock on the vault lapsed (not refreshed in time), so a backup may have run meanwhile; run prune again",
    );
  }
}

/**
 * The index objects just written are sealed under the epoch this prune opened with. If that epoch's
 * object was deleted (or remade with another key) meanwhile, no one else can open them: deleting the
 * old index objects now would leave the vault with no index anyone can read, every point lost. So
 * the new ones go instead, and the old stay.
 */
async function refuseLostEpochs(vault: Vault, written: string[]): Promise<void> {
  const lost = await epochsNoLongerStored(vault.store, vault.master, vault.config.id, vault.epochs.valid);
  if (lost.length === 0) return;
  // A generation object first: without it its shards are orphans nobody reads.
  const generations = written.filter((name) => name.startsWith(GENERATION_PREFIX));
  await mapLimit(generations, 8, (name) => vault.store.delete(name).catch(() => {}));
  await mapLimit(written.filter((name) => !generations.includes(name)), 8, (name) => vault.store.delete(name).catch(() => {}));
  throw new IntegrityError(
    `prune stopped before deleting any index object or pack: data-key epoch object ${lost.join(", ")}, which it opened the vault with, is gone or holds another key now ` +
      "(deleted or replaced while it ran), so the index it wrote would open for no one else; it removed that index and kept the old one. " +
      "Put back a copy of the epoch object if there is one, run `bulwark verify`, and investigate who removed it",
  );
}

function isLive(vault: Vault, referenced: ChunkIndex, packId: string, entry: PackEntry): boolean {
  if (!referenced.has(entry.id)) return false;
  const location = vault.index.lookup(entry.id);
  return typeof location === "object" && location.pack === packId && location.offset === entry.offset;
}
