/**
 * Checks a vault. Structure, always: every index object opens, every indexed pack exists and is
 * long enough, every point opens and every chunk it references is indexed, every point has its
 * catalog entry (catalog.ts). Data, when asked (all
 * packs or a random share of them): every pack is read whole, its header must agree with the
 * index, and every chunk must authenticate and hash back to its id.
 */
import { IntegrityError, describeError } from "../errors.ts";
import { pointsWithoutEntries } from "./catalog.ts";
import { CHUNK_TREE, decodeChunk } from "./chunk-codec.ts";
import type { CodecPool } from "./codec-pool.ts";
import { ID_BYTES, isZeroId } from "./crypto.ts";
import { forEachIndexEntry } from "./index-file.ts";
import { prefixOf, readNewestGeneration, ShardReader, type ShardInfo } from "./index-shards.ts";
import { readKeyObjects } from "./keyring.ts";
import { STALE_AFTER_MS } from "./locks.ts";
import { packIdOfKey, packKey, readPackHeader, type PackEntry } from "./pack.ts";
import { STREAM_TREE_ENTRY, type PointManifest } from "./point.ts";
import { describeMissing, missingPoints } from "./chain.ts";
import { mapLimit, type Vault } from "./vault.ts";

export interface VerifyReport {
  points: number;
  indexObjects: number;
  packs: number;
  packsRead: number;
  chunksChecked: number;
  /** Packs no index names: left by an interrupted backup, removed by prune. Not an error. */
  unindexedPacks: number;
  /** Of those, how many the next prune removes, and when the last of the others becomes removable. */
  unindexedRemovableNow: number;
  unindexedRemovableAfter?: string;
  /** Points gone without retention removing them (see chain.ts). */
  missingPoints: number;
  problems: string[];
}

export async function verifyVault(
  vault: Vault,
  pool: CodecPool,
  options: { readDataPercent: number; onProgress?: (bytesDone: number) => void; storeNow?: number },
): Promise<VerifyReport> {
  const problems: string[] = [];
  const report: VerifyReport = { points: 0, indexObjects: 0, packs: 0, packsRead: 0, chunksChecked: 0, unindexedPacks: 0, unindexedRemovableNow: 0, missingPoints: 0, problems };

  // Key objects: the vault opened with one of them; a damaged other one is still a problem.
  for (const key of (await readKeyObjects(vault.store)).damaged) problems.push(`key object ${key} is damaged and no longer opens the vault: put back a copy of it, or delete it and add that key again`);
  for (const key of vault.foreignKeyObjects) {
    problems.push(`key object ${key} opens with the given key but holds master keys that are not this vault's: someone without the vault's keys wrote it. Investigate, then remove it`);
  }
  // Data-key epochs (keyring.ts): a refused epoch object is never used to seal or open.
  for (const { name, reason } of vault.epochs.refused) {
    problems.push(`epoch object ${name} is refused: ${reason}. It is never used; if it was a real epoch, put back a copy of it (what it sealed does not open without it), else investigate who wrote it`);
  }

  // Index objects: opened here (not at vault open) so that one damaged object is reported, not
  // fatal. Their entries join the delta (they are what a vault loads whole at open anyway).
  const packs = new Map<string, PackTally>();
  const tallyEntry = (packId: string, end: number) => {
    const tally = packs.get(packId) ?? { entries: 0, end: 0 };
    tally.entries++;
    tally.end = Math.max(tally.end, end);
    packs.set(packId, tally);
  };
  const names: string[] = [];
  for await (const info of vault.store.list("index/")) names.push(info.key);
  report.indexObjects = names.length;
  await mapLimit(names, 8, async (name) => {
    try {
      forEachIndexEntry(vault.master.dataKey, name, await vault.store.get(name), (packId, type, id, offset, length, rawLength) => {
        tallyEntry(packId, offset + length);
        vault.index.addEntry(id, packId, offset, length, rawLength, type);
      });
    } catch (error) {
      problems.push(`index object ${name}: ${describeError(error)}`);
    }
  });

  // The newest generation's shards (index-shards.ts), one at a time: each read whole, every piece
  // checked, a damaged one named; only a tally per pack is kept.
  let shards: ShardReader | undefined;
  try {
    const generation = await readNewestGeneration(vault.store, vault.master.dataKey);
    shards = generation && new ShardReader(vault.store, vault.master.dataKey, generation);
  } catch (error) {
    problems.push(`index generation: ${describeError(error)}`);
  }
  const damagedShards = new Set<ShardInfo>();
  for (const shard of shards?.generation.shards ?? []) {
    try {
      for await (const [, location] of shards!.entriesOf(shard)) tallyEntry(location.pack, location.offset + location.length);
    } catch (error) {
      damagedShards.add(shard);
      problems.push(`index shard ${shards!.shardName(shard)}: ${describeError(error)}`);
    }
  }

  const packSizes = new Map<string, number>();
  const packTimes = new Map<string, number>();
  for await (const info of vault.store.list("data/")) {
    const packId = packIdOfKey(info.key);
    if (packId) {
      packSizes.set(packId, info.size);
      packTimes.set(packId, info.lastModified.getTime());
    }
    else problems.push(`unexpected object ${info.key} among the packs`);
  }
  report.packs = packSizes.size;
  for (const [packId, tally] of packs) {
    const size = packSizes.get(packId);
    if (size === undefined) {
      problems.push(`pack ${packId} is named by the index (${tally.entries} chunks) but missing from storage`);
      continue;
    }
    if (tally.end > size) problems.push(`pack ${packId} is shorter than the index says (${size} bytes)`);
  }
  // Left over: what prune removes, and when (the same rule prune applies: unindexed and older than
  // the stale period, on the store's clock).
  for (const packId of packSizes.keys()) {
    if (packs.has(packId)) continue;
    report.unindexedPacks++;
    const removableAt = packTimes.get(packId)! + STALE_AFTER_MS;
    if (options.storeNow !== undefined && removableAt <= options.storeNow) report.unindexedRemovableNow++;
    else report.unindexedRemovableAfter = new Date(Math.max(removableAt, Date.parse(report.unindexedRemovableAfter ?? "1970-01-01T00:00:00Z"))).toISOString();
  }

  // Points, then the chunks they reference: each must be indexed. Exact, in passes by id prefix.
  const ids = await vault.listPointIds();
  report.points = ids.length;
  const manifests: PointManifest[] = [];
  for (const id of ids) {
    try {
      const point = await vault.readPoint(id);
      manifests.push(point);
      for (const member of point.members ?? []) {
        if (!ids.includes(member.point)) problems.push(`point ${id}: member point ${member.point} (${member.role}) is missing`);
      }
    } catch (error) {
      problems.push(`point ${id}: ${describeError(error)}`);
    }
  }
  await checkReferencedChunks(vault, shards, damagedShards, manifests, problems);

  // Points deleted outside retention: their chain markers, or later points, still name them.
  const missing = await missingPoints(vault, manifests, (problem) => problems.push(problem));
  for (const m of missing) problems.push(describeMissing(m));
  report.missingPoints = missing.length;
  for (const point of await pointsWithoutEntries(vault, manifests)) {
    problems.push(
      `point ${point.id} has no catalog entry (deleted in storage?): lookups of its source's latest point pass it by, so backups base on an older point. \`bulwark prune\` writes the entry again`,
    );
  }

  // Data: the chosen packs in batches, each batch's index entries gathered by one walk of the index.
  const packIds = [...packs.keys()].filter((p) => packSizes.has(p));
  const chosen = options.readDataPercent >= 100 ? packIds : sample(packIds, options.readDataPercent);
  let bytesDone = 0;
  for (const batch of batchesOf(chosen, packs)) {
    const indexed = await entriesOfPacks(vault, names, shards, damagedShards, new Set(batch));
    await mapLimit(batch, 2, async (packId) => {
      const size = packSizes.get(packId)!;
      try {
        const bytes = await vault.store.get(packKey(packId));
        if (bytes.length !== size) throw new IntegrityError(`pack ${packId} changed size while being read`);
        const header = await readPackHeader(vault.master.dataKey, packId, size, async (offset, length) => bytes.subarray(offset, offset + length));
        const byId = new Map(header.map((e) => [e.id.toString("hex"), e]));
        for (const entry of indexed.get(packId) ?? []) {
          const inHeader = byId.get(entry.id.toString("hex"));
          if (!inHeader || inHeader.offset !== entry.offset || inHeader.length !== entry.length || inHeader.type !== entry.type) {
            problems.push(`pack ${packId}: the index and the pack header disagree about chunk ${entry.id.toString("hex").slice(0, 16)}`);
          }
        }
        // The whole pack in one batch (the buffer goes to a worker; it is not used here afterwards).
        const { errors } = await pool.decodeBatch(bytes, header, `pack ${packId}`);
        report.chunksChecked += header.length;
        const bad = errors.filter((e) => e !== null);
        if (bad.length > 0) problems.push(`pack ${packId}: ${bad.length} of ${header.length} chunks are damaged (${describeError(bad[0])})`);
      } catch (error) {
        problems.push(`pack ${packId}: ${describeError(error)}`);
      }
      report.packsRead++;
      bytesDone += size;
      options.onProgress?.(bytesDone);
    });
  }
  return report;
}

function sample<T>(items: T[], percent: number): T[] {
  if (percent <= 0) return [];
  const count = Math.max(1, Math.ceil((items.length * percent) / 100));
  const shuffled = [...items];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  return shuffled.slice(0, count);
}

/** Ids whose presence one pass of checkReferencedChunks holds (32 bytes each: 128 MiB). Settable by tests. */
export const verifyTuning = { passEntries: 1 << 22, dataBatchEntries: 1 << 20 };

/** Tree nodes whose count of missing chunks a pass remembers (about 100 MiB of names). */
const NODES_REMEMBERED = 1 << 20;

interface PackTally {
  entries: number;
  /** The end of its furthest chunk, as the index says. */
  end: number;
}

/**
 * Every chunk a point references (its tree nodes' entries) must be indexed: a missing one is
 * counted against the point, exactly (no filter). The ids are split by the generation's shard
 * prefixes into passes of about verifyTuning.passEntries indexed ids: per pass the ids its shards
 * hold (each shard read once in all), sorted, then every point's tree walked for the references
 * that fall in the pass, each looked up there or in the delta (in memory already). Memory: one
 * pass's ids; cost: the trees read once a pass.
 */
async function checkReferencedChunks(
  vault: Vault,
  shards: ShardReader | undefined,
  damagedShards: ReadonlySet<ShardInfo>,
  manifests: PointManifest[],
  problems: string[],
): Promise<void> {
  const prefixBits = shards?.generation.prefixBits ?? 0;
  const missing = new Map<string, number>();
  const unreadable = new Set<string>();
  for (const pass of passesOf(shards, prefixBits)) {
    // A node's missing count in this pass: points of one source share most of their tree.
    const nodeMissing = new Map<string, number>();
    const held = new SortedIds();
    for (const shard of pass.shards) {
      if (damagedShards.has(shard)) continue;
      for await (const [id] of shards!.entriesOf(shard)) held.push(id);
    }
    for (const point of manifests) {
      const content = point.content;
      if (!content || unreadable.has(point.id)) continue;
      const entryBytes = content.layout === "blocks" ? ID_BYTES : STREAM_TREE_ENTRY;
      try {
        for (const nodeHex of new Set(content.tree)) {
          let inNode = nodeMissing.get(nodeHex);
          if (inNode === undefined) {
            inNode = 0;
            const node = await readTreeNode(vault, shards, Buffer.from(nodeHex, "hex"));
            for (let at = 0; at < node.length; at += entryBytes) {
              const chunk = node.subarray(at, at + ID_BYTES);
              if (isZeroId(chunk)) continue;
              const prefix = prefixOf(chunk, prefixBits);
              if (prefix >= pass.from && prefix < pass.to && !held.has(chunk) && !vault.index.delta.has(chunk)) inNode++;
            }
            if (nodeMissing.size >= NODES_REMEMBERED) nodeMissing.clear();
            nodeMissing.set(nodeHex, inNode);
          }
          if (inNode > 0) missing.set(point.id, (missing.get(point.id) ?? 0) + inNode);
        }
      } catch (error) {
        unreadable.add(point.id);
        problems.push(`point ${point.id}: ${describeError(error)}`);
      }
    }
  }
  for (const [id, count] of missing) if (!unreadable.has(id)) problems.push(`point ${id}: ${count} referenced chunks are not in the vault`);
}

/**
 * A tree node, located in the index objects verify read or in the generation it read (the vault
 * may have been opened without its index), read by range and authenticated.
 */
async function readTreeNode(vault: Vault, shards: ShardReader | undefined, id: Buffer): Promise<Buffer> {
  let location = vault.index.delta.lookup(id);
  if (location === undefined && shards) {
    await shards.prepare([id], { present: true });
    location = shards.find(id);
  }
  if (typeof location !== "object") throw new IntegrityError(`tree chunk ${id.toString("hex").slice(0, 16)} is not in the index`);
  if (location.type !== CHUNK_TREE) throw new IntegrityError(`chunk ${id.toString("hex").slice(0, 16)} has the wrong type in the index`);
  const sealed = await vault.store.getRange(packKey(location.pack), location.offset, location.length);
  return decodeChunk(vault.master, CHUNK_TREE, id, sealed, location.rawLength, `pack ${location.pack}`);
}

/** Consecutive prefix ranges [from, to) of about verifyTuning.passEntries indexed ids, with their shards. */
function passesOf(shards: ShardReader | undefined, prefixBits: number): { from: number; to: number; shards: ShardInfo[] }[] {
  const inOrder = [...(shards?.generation.shards ?? [])].sort((a, b) => a.prefix - b.prefix);
  const passes: { from: number; to: number; shards: ShardInfo[] }[] = [];
  let current: { from: number; to: number; shards: ShardInfo[] } = { from: 0, to: 2 ** prefixBits, shards: [] };
  let entries = 0;
  for (const shard of inOrder) {
    if (entries > 0 && entries + shard.entries > verifyTuning.passEntries) {
      current.to = shard.prefix;
      passes.push(current);
      current = { from: shard.prefix, to: 2 ** prefixBits, shards: [] };
      entries = 0;
    }
    current.shards.push(shard);
    entries += shard.entries;
  }
  passes.push(current);
  return passes;
}

/** Ids pushed in ascending order (a shard's, shard after shard), found by binary search. */
class SortedIds {
  private ids = Buffer.allocUnsafe(1024 * ID_BYTES);
  private count = 0;

  push(id: Uint8Array): void {
    if ((this.count + 1) * ID_BYTES > this.ids.length) {
      const larger = Buffer.allocUnsafe(this.ids.length * 2);
      this.ids.copy(larger, 0, 0, this.count * ID_BYTES);
      this.ids = larger;
    }
    this.ids.set(id.subarray(0, ID_BYTES), this.count * ID_BYTES);
    this.count++;
  }

  has(id: Uint8Array): boolean {
    let low = 0;
    let high = this.count - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const order = Buffer.compare(this.ids.subarray(middle * ID_BYTES, (middle + 1) * ID_BYTES), id);
      if (order === 0) return true;
      if (order < 0) low = middle + 1;
      else high = middle - 1;
    }
    return false;
  }
}

/** The chosen packs in batches of about verifyTuning.dataBatchEntries indexed chunks. */
function batchesOf(chosen: string[], packs: ReadonlyMap<string, PackTally>): string[][] {
  const batches: string[][] = [];
  let batch: string[] = [];
  let entries = 0;
  for (const packId of chosen) {
    const inPack = packs.get(packId)!.entries;
    if (batch.length > 0 && entries + inPack > verifyTuning.dataBatchEntries) {
      batches.push(batch);
      batch = [];
      entries = 0;
    }
    batch.push(packId);
    entries += inPack;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/** The index entries (index objects and readable shards) of these packs, every copy of an id. */
async function entriesOfPacks(
  vault: Vault,
  indexObjects: readonly string[],
  shards: ShardReader | undefined,
  damagedShards: ReadonlySet<ShardInfo>,
  wanted: ReadonlySet<string>,
): Promise<Map<string, PackEntry[]>> {
  const found = new Map<string, PackEntry[]>();
  const add = (packId: string, entry: PackEntry) => {
    const list = found.get(packId);
    if (list) list.push(entry);
    else found.set(packId, [entry]);
  };
  for (const name of indexObjects) {
    const sealed = await vault.store.get(name).catch(() => undefined);
    try {
      if (sealed) {
        forEachIndexEntry(vault.master.dataKey, name, sealed, (packId, type, id, offset, length, rawLength) => {
          if (wanted.has(packId)) add(packId, { type, id: Buffer.from(id), offset, length, rawLength });
        });
      }
    } catch {
      // Reported already, when the index objects were first read.
    }
  }
  for (const shard of shards?.generation.shards ?? []) {
    if (damagedShards.has(shard)) continue;
    for await (const [id, location] of shards!.entriesOf(shard)) {
      if (wanted.has(location.pack)) add(location.pack, { type: location.type, id, offset: location.offset, length: location.length, rawLength: location.rawLength });
    }
  }
  return found;
}
