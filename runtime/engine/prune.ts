/**
 * Removes what no point references. Run under an exclusive lock, in memory bounded whatever the
 * vault's size (see pruneVault). Order makes an interruption harmless: live chunks of mostly-dead packs are copied (still sealed) into new packs; the index of
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
import type { CodecPool } from "./codec-pool.ts";
import { ID_BYTES, isZeroId, randomHex } from "./crypto.ts";
import { decodeIndex, encodeIndex, forEachIndexEntry, splitIndex, type IndexedPack } from "./index-file.ts";
import {
  encodeGeneration,
  encodeShard,
  GENERATION_PREFIX,
  generationName,
  packEntry,
  prefixBitsFor,
  prefixOf,
  SHARD_ENTRY_BYTES,
  SHARD_PREFIX,
  sequenceOf,
  shardName,
  ShardReader,
  shardTuning,
  type ShardInfo,
} from "./index-shards.ts";
import type { ChunkLocation } from "./chunk-index.ts";
import { epochsNoLongerStored } from "./keyring.ts";
import { STALE_AFTER_MS, type VaultLock } from "./locks.ts";
import { packIdOfKey, packKey, readPackHeader, type PackEntry } from "./pack.ts";
import { STREAM_TREE_ENTRY, type PointManifest } from "./point.ts";
import { ReferencedFilter } from "./referenced-filter.ts";
import { mapLimit, type Vault } from "./vault.ts";
import { VaultWriter } from "./vault-writer.ts";

/** Repack a pack once more than this share of its bytes is dead. */
const REPACK_DEAD_SHARE = 0.2;
/**
 * Entries per index object prune writes (about 45 MiB). One object for the whole index failed past
 * about 47 million chunks: Node's AES-GCM seals at most 2^31 - 1 bytes in one call.
 */
const CONSOLIDATED_ENTRIES = 1 << 20;
/** Tree nodes remembered as read already (about 100 MiB of names): past that, forgotten and read again. */
const NODES_REMEMBERED = 1 << 20;

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
 *
 * Memory stays bounded whatever the vault's size: the referenced chunks are a Bloom filter
 * (referenced-filter.ts), the index is walked shard by shard and index object by index object
 * (once to weigh each pack, again to copy what a repacked pack keeps, again to write the kept
 * entries), and the new generation is written one shard at a time. What it still holds whole: the
 * delta (the index objects since the last prune, as every command does), a tally per pack and the
 * store's listing of packs.
 */
export async function pruneVault(vault: Vault, pool: CodecPool, options: { dryRun?: boolean; lock: VaultLock }): Promise<PruneReport> {
  const report: PruneReport = { packsDeleted: 0, packsRepacked: 0, bytesFreed: 0, unindexedPacksDeleted: 0, kept: [] };
  const now = options.lock.storeNow();
  if (!options.dryRun && options.lock.kind !== "exclusive") throw new Error("prune needs the vault's exclusive lock");

  const oldGeneration = vault.index.generation;
  const shards = oldGeneration && new ShardReader(vault.store, vault.master.dataKey, oldGeneration);
  const oldIndexObjects = [...vault.indexObjects];
  const points = await vault.listPoints();
  const referenced = await referencedChunks(vault, points, (shards?.entryCount ?? 0) + vault.index.size);
  const isLive = (id: Uint8Array, canonical: boolean) => canonical && referenced.mayHold(id);

  // Every pack as the index describes it; a chunk is live in the pack the index points at.
  const packs = new Map<string, PackTally>();
  await walkIndex(vault, shards, oldIndexObjects, (packId, entry, canonical) => {
    const tally = packs.get(packId) ?? { liveBytes: 0, entries: 0 };
    tally.entries++;
    if (isLive(entry.id, canonical)) tally.liveBytes += entry.length;
    packs.set(packId, tally);
  });
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
  let keptEntries = 0;
  for (const [packId, { liveBytes, entries }] of packs) {
    const size = packSizes.get(packId)?.size ?? 0;
    if (liveBytes === 0) drop.push(packId);
    else if (size > 0 && 1 - liveBytes / size > REPACK_DEAD_SHARE) repack.push(packId);
    else keptEntries += entries;
  }
  const unindexed = await deletableUnindexed(
    vault,
    points,
    [...packSizes.entries()].filter(([packId, info]) => !packs.has(packId) && now - info.lastModified.getTime() > STALE_AFTER_MS).map(([packId]) => packId),
    packSizes,
    referenced,
    report,
  );
  packs.clear();

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
  const repacking = new Set(repack);
  try {
    if (repacking.size > 0) {
      await walkIndex(vault, shards, oldIndexObjects, async (packId, entry, canonical) => {
        if (!repacking.has(packId) || !isLive(entry.id, canonical)) return;
        const sealed = await vault.store.getRange(packKey(packId), entry.offset, entry.length);
        await writer.putSealed(entry.type, entry.id, sealed, entry.rawLength, { replace: true });
        keptEntries++;
      });
    }
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }

  // 2. The index of every chunk that stays (live or not) in a pack that stays.
  const leaving = new Set([...drop, ...repack]);
  const replaced = [...oldIndexObjects, ...writer.indexObjectsWritten, ...coveredLeft];
  const written =
    oldGeneration !== undefined || keptEntries >= shardTuning.shardFromEntries
      ? await writeKeptGeneration(vault, shards, leaving, {
          sequence: (await newestSequence(vault)) + 1,
          prefixBits: prefixBitsFor(keptEntries),
          covers: replaced,
          // The generation object drops the old shards' entries of leaving packs at once, as a
          // delete would: a backup that ran while the lock lapsed may have deduplicated against them.
          beforeCommit: () => stillHeld(options.lock),
        })
      : await writeIndexObjects(vault, [...vault.index.entries()].filter(([, location]) => !leaving.has(location.pack)));

  await stillHeld(options.lock);
  await refuseLostEpochs(vault, [...written, ...writer.indexObjectsWritten]);
  const ownSequence = written.map(sequenceOf).find((sequence) => sequence !== undefined) ?? 0;
  await refuseNewerGeneration(vault, ownSequence, oldGeneration?.sequence ?? 0);
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
  await removeOtherGenerations(vault, new Set(written), ownSequence, report);

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

/**
 * Another prune that ran while this one did (one of the two locks lapsed unnoticed: a paused
 * process) committed a generation newer than the one this prune started from and other than its
 * own: its view of what is live may differ, and deleting "older" index objects or "other" shards
 * now could delete what that generation needs. Stop before deleting anything: what this prune
 * wrote is harmless beside a newer generation (readers take the newest), and the next prune
 * removes it.
 */
async function refuseNewerGeneration(vault: Vault, ownSequence: number, startedFrom: number): Promise<void> {
  for await (const info of vault.store.list(GENERATION_PREFIX)) {
    const sequence = sequenceOf(info.key);
    if (sequence === undefined || sequence === ownSequence || sequence <= startedFrom) continue;
    throw new VaultBusyError(
      `prune stopped before deleting anything: another prune committed a newer index (${info.key}) while this one ran (one of them held a lock that had lapsed); run prune again`,
    );
  }
}

/**
 * Shards and generation objects older than the generation just written: older generations, and
 * orphan shards of an interrupted prune. Never one numbered at or above this prune's own (or any
 * at all when it wrote no generation): those can only be another prune's, written meanwhile.
 */
async function removeOtherGenerations(vault: Vault, keep: ReadonlySet<string>, ownSequence: number, report: PruneReport): Promise<void> {
  for (const prefix of [SHARD_PREFIX, GENERATION_PREFIX]) {
    const doomed: string[] = [];
    for await (const info of vault.store.list(prefix)) {
      if (!keep.has(info.key) && (sequenceOf(info.key) ?? Infinity) < ownSequence) doomed.push(info.key);
    }
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

interface PackTally {
  liveBytes: number;
  entries: number;
}

/**
 * The chunks the points reference (their tree nodes and every chunk those name), in a filter sized
 * for `indexed` ids. A point that cannot be read, or a tree node that cannot, stops the prune.
 */
async function referencedChunks(vault: Vault, points: PointManifest[], indexed: number): Promise<ReferencedFilter> {
  const referenced = new ReferencedFilter(indexed);
  await walkReferences(vault, points, (id) => referenced.add(id));
  return referenced;
}

/** Every chunk id the points reference (tree nodes and their entries; a shared node once while remembered). */
async function walkReferences(vault: Vault, points: PointManifest[], visit: (id: Uint8Array, point: PointManifest) => void): Promise<void> {
  const nodesSeen = new Set<string>();
  for (const point of points) {
    const content = point.content;
    if (!content) continue;
    const entryBytes = content.layout === "blocks" ? ID_BYTES : STREAM_TREE_ENTRY;
    for (const nodeHex of content.tree) {
      // Points of one source share most of their tree: a node is read once (while remembered).
      if (nodesSeen.has(nodeHex)) continue;
      if (nodesSeen.size >= NODES_REMEMBERED) nodesSeen.clear();
      nodesSeen.add(nodeHex);
      const nodeId = Buffer.from(nodeHex, "hex");
      visit(nodeId, point);
      const node = await vault.readChunk(CHUNK_TREE, nodeId);
      for (let at = 0; at < node.length; at += entryBytes) {
        const id = node.subarray(at, at + ID_BYTES);
        if (!isZeroId(id)) visit(id, point);
      }
    }
  }
}

/**
 * Of the packs no index names (old enough to be a crashed backup's), those prune may delete. A
 * pack no index names can still hold chunks a point references: its index object was deleted by
 * someone with write access to the vault (no key is needed for that). Each such pack's own sealed
 * header says what it holds; where the Bloom filter says a point may reference one of those chunks,
 * the points are walked again and checked exactly (only then: the filter's false positives would
 * otherwise keep most crashed packs). A pack holding a referenced chunk, or whose header does not
 * open, is kept and named in the report.
 */
async function deletableUnindexed(
  vault: Vault,
  points: PointManifest[],
  unindexed: string[],
  sizes: ReadonlyMap<string, { size: number }>,
  referenced: ReferencedFilter,
  report: PruneReport,
): Promise<string[]> {
  const suspects = new Map<string, string>(); // chunk id (hex) -> pack
  const unreadable = new Set<string>();
  await mapLimit(unindexed, 8, async (packId) => {
    try {
      const entries = await readPackHeader(vault.master.dataKey, packId, sizes.get(packId)?.size ?? 0, (offset, length) =>
        vault.store.getRange(packKey(packId), offset, length),
      );
      for (const entry of entries) if (referenced.mayHold(entry.id)) suspects.set(entry.id.toString("hex"), packId);
    } catch (error) {
      unreadable.add(packId);
      report.kept.push(`pack ${packId}: no index names it and its header does not open (${describeError(error)}); kept, run \`bulwark verify\``);
    }
  });
  const holding = new Map<string, string>(); // pack -> a point referencing one of its chunks
  if (suspects.size > 0) {
    await walkReferences(vault, points, (id, point) => {
      const packId = suspects.get(Buffer.from(id).toString("hex"));
      if (packId !== undefined && !holding.has(packId)) holding.set(packId, point.id);
    });
  }
  for (const [packId, pointId] of holding) {
    report.kept.push(
      `pack ${packId}: no index names it, yet point ${pointId} references chunks in it (an index object was removed?); kept, run \`bulwark verify\``,
    );
  }
  return unindexed.filter((packId) => !unreadable.has(packId) && !holding.has(packId));
}

/**
 * Every entry the index holds, one shard then one index object at a time. `canonical`: the entry is
 * the one lookups answer for its id (an index object's entry wins over a shard's, being newer; of an
 * id twice in index objects, the one loaded last); only a canonical entry keeps its chunk alive.
 */
async function walkIndex(
  vault: Vault,
  shards: ShardReader | undefined,
  indexObjects: readonly string[],
  visit: (packId: string, entry: PackEntry, canonical: boolean) => void | Promise<void>,
): Promise<void> {
  const delta = vault.index.delta;
  for (const shard of shards?.generation.shards ?? []) {
    for await (const [id, location] of shards!.entriesOf(shard)) {
      const entry = { type: location.type, id, offset: location.offset, length: location.length, rawLength: location.rawLength };
      await visit(location.pack, entry, delta.lookup(id) === undefined);
    }
  }
  for (const name of indexObjects) {
    const found: [string, PackEntry, boolean][] = [];
    forEachIndexEntry(vault.master.dataKey, name, await vault.store.get(name), (packId, type, id, offset, length, rawLength) => {
      const location = delta.lookup(id);
      const canonical = typeof location === "object" && location.pack === packId && location.offset === offset;
      found.push([packId, { type, id: Buffer.from(id), offset, length, rawLength }, canonical]);
    });
    for (const [packId, entry, canonical] of found) await visit(packId, entry, canonical);
  }
}

/**
 * The kept entries as a new generation, written one shard at a time: the old shards' entries in
 * id order (a shard's entries are sorted, and the shards are read in prefix order) merged with the
 * delta's (sorted here; it is in memory already), an entry of a leaving pack left out, the delta's
 * entry winning over a shard's for the same id. Then, if beforeCommit lets it, the generation
 * object, the commit point.
 */
async function writeKeptGeneration(
  vault: Vault,
  shards: ShardReader | undefined,
  leaving: ReadonlySet<string>,
  generation: GenerationPlan,
): Promise<string[]> {
  const delta = vault.index.delta;
  const fromDelta = [...delta.entries()].filter(([, location]) => !leaving.has(location.pack)).sort((a, b) => Buffer.compare(a[0], b[0]));
  async function* fromShards(): AsyncIterable<[Uint8Array, ChunkLocation]> {
    const inOrder = [...(shards?.generation.shards ?? [])].sort((a, b) => a.prefix - b.prefix);
    for (const shard of inOrder) {
      for await (const entry of shards!.entriesOf(shard)) if (!leaving.has(entry[1].pack) && delta.lookup(entry[0]) === undefined) yield entry;
    }
  }
  const builder = new GenerationBuilder(vault, generation);
  let next = 0;
  for await (const entry of fromShards()) {
    while (next < fromDelta.length && Buffer.compare(fromDelta[next][0], entry[0]) < 0) await builder.add(...fromDelta[next++]);
    await builder.add(...entry);
  }
  while (next < fromDelta.length) await builder.add(...fromDelta[next++]);
  return builder.finish();
}

interface GenerationPlan {
  sequence: number;
  prefixBits: number;
  covers: string[];
  /** Runs after the last shard, before the generation object (the commit point): throws to stop. */
  beforeCommit: () => Promise<void>;
}

/** Entries in id order in, shards out as each prefix fills: one shard's entries in memory at a time. */
class GenerationBuilder {
  private readonly vault: Vault;
  private readonly generation: GenerationPlan;
  private readonly shards: ShardInfo[] = [];
  private readonly written: string[] = [];
  private packed = Buffer.allocUnsafe(SHARD_ENTRY_BYTES * 1024);
  private count = 0;
  private prefix = -1;

  constructor(vault: Vault, generation: GenerationPlan) {
    this.vault = vault;
    this.generation = generation;
  }

  async add(id: Uint8Array, location: ChunkLocation): Promise<void> {
    const prefix = prefixOf(id, this.generation.prefixBits);
    if (prefix !== this.prefix) {
      await this.flush();
      this.prefix = prefix;
    }
    if ((this.count + 1) * SHARD_ENTRY_BYTES > this.packed.length) {
      const larger = Buffer.allocUnsafe(this.packed.length * 2);
      this.packed.copy(larger, 0, 0, this.count * SHARD_ENTRY_BYTES);
      this.packed = larger;
    }
    packEntry(this.packed, this.count * SHARD_ENTRY_BYTES, id, location);
    this.count++;
  }

  async finish(): Promise<string[]> {
    await this.flush();
    await this.generation.beforeCommit();
    const { sequence, prefixBits, covers } = this.generation;
    const name = generationName(sequence);
    await this.vault.store.create(name, encodeGeneration(this.vault.master.dataKey, this.vault.master.format, { sequence, prefixBits, shards: this.shards, covers }));
    return [...this.written, name];
  }

  private async flush(): Promise<void> {
    if (this.count === 0) return;
    const { sequence, prefixBits } = this.generation;
    const { dataKey, format } = this.vault.master;
    // encodeShard refuses entries out of order or of another prefix: a shard is never written wrong.
    const { bytes, info } = encodeShard(dataKey, format, sequence, prefixBits, this.prefix, this.packed.subarray(0, this.count * SHARD_ENTRY_BYTES));
    const name = shardName(sequence, prefixBits, this.prefix);
    await this.vault.store.create(name, bytes);
    this.written.push(name);
    this.shards.push(info);
    this.count = 0;
  }
}
