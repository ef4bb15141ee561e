/**
 * Checks a vault. Structure, always: every index object opens, every indexed pack exists and is
 * long enough, every point opens and every chunk it references is indexed, every point has its
 * catalog entry (catalog.ts). Data, when asked (all
 * packs or a random share of them): every pack is read whole, its header must agree with the
 * index, and every chunk must authenticate and hash back to its id.
 */
import { IntegrityError, describeError } from "../errors.ts";
import { pointsWithoutEntries } from "./catalog.ts";
import { CHUNK_TREE } from "./chunk-codec.ts";
import type { CodecPool } from "./codec-pool.ts";
import { ID_BYTES, isZeroId } from "./crypto.ts";
import { decodeIndex, type IndexedPack } from "./index-file.ts";
import { readNewestGeneration, ShardReader } from "./index-shards.ts";
import { readKeyObjects } from "./keyring.ts";
import { STALE_AFTER_MS } from "./locks.ts";
import { packIdOfKey, packKey, readPackHeader } from "./pack.ts";
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

  // Index objects: opened here (not at vault open) so that one damaged object is reported, not fatal.
  const indexed = new Map<string, IndexedPack["entries"]>();
  const names: string[] = [];
  for await (const info of vault.store.list("index/")) names.push(info.key);
  report.indexObjects = names.length;
  await mapLimit(names, 8, async (name) => {
    try {
      for (const pack of decodeIndex(vault.master.dataKey, name, await vault.store.get(name))) {
        const entries = indexed.get(pack.packId) ?? [];
        entries.push(...pack.entries);
        indexed.set(pack.packId, entries);
        for (const entry of pack.entries) {
          vault.index.add(entry.id, { pack: pack.packId, offset: entry.offset, length: entry.length, rawLength: entry.rawLength, type: entry.type });
        }
      }
    } catch (error) {
      problems.push(`index object ${name}: ${describeError(error)}`);
    }
  });

  // The newest generation's shards (index-shards.ts), each read whole: a damaged one is named.
  try {
    const generation = await readNewestGeneration(vault.store, vault.master.dataKey);
    const reader = generation && new ShardReader(vault.store, vault.master.dataKey, generation);
    for (const shard of generation?.shards ?? []) {
      try {
        for await (const [id, location] of reader!.entriesOf(shard)) {
          const entries = indexed.get(location.pack) ?? [];
          entries.push({ type: location.type, id, offset: location.offset, length: location.length, rawLength: location.rawLength });
          indexed.set(location.pack, entries);
          vault.index.add(id, location);
        }
      } catch (error) {
        problems.push(`index shard ${reader!.shardName(shard)}: ${describeError(error)}`);
      }
    }
  } catch (error) {
    problems.push(`index generation: ${describeError(error)}`);
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
  for (const [packId, entries] of indexed) {
    const size = packSizes.get(packId);
    if (size === undefined) {
      problems.push(`pack ${packId} is named by the index (${entries.length} chunks) but missing from storage`);
      continue;
    }
    if (entries.some((e) => e.offset + e.length > size)) problems.push(`pack ${packId} is shorter than the index says (${size} bytes)`);
  }
  // Left over: what prune removes, and when (the same rule prune applies: unindexed and older than
  // the stale period, on the store's clock).
  for (const packId of packSizes.keys()) {
    if (indexed.has(packId)) continue;
    report.unindexedPacks++;
    const removableAt = packTimes.get(packId)! + STALE_AFTER_MS;
    if (options.storeNow !== undefined && removableAt <= options.storeNow) report.unindexedRemovableNow++;
    else report.unindexedRemovableAfter = new Date(Math.max(removableAt, Date.parse(report.unindexedRemovableAfter ?? "1970-01-01T00:00:00Z"))).toISOString();
  }

  // Points and the chunks they reference.
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
      const content = point.content;
      if (!content) continue;
      let missing = 0;
      const entryBytes = content.layout === "blocks" ? ID_BYTES : STREAM_TREE_ENTRY;
      for (const nodeHex of new Set(content.tree)) {
        const node = await vault.readChunk(CHUNK_TREE, Buffer.from(nodeHex, "hex"));
        for (let at = 0; at < node.length; at += entryBytes) {
          const chunk = node.subarray(at, at + ID_BYTES);
          if (!isZeroId(chunk) && !vault.index.has(chunk)) missing++;
        }
      }
      if (missing > 0) problems.push(`point ${id}: ${missing} referenced chunks are not in the vault`);
    } catch (error) {
      problems.push(`point ${id}: ${describeError(error)}`);
    }
  }

  // Points deleted outside retention: their chain markers, or later points, still name them.
  const missing = await missingPoints(vault, manifests, (problem) => problems.push(problem));
  for (const m of missing) problems.push(describeMissing(m));
  report.missingPoints = missing.length;
  for (const point of await pointsWithoutEntries(vault, manifests)) {
    problems.push(
      `point ${point.id} has no catalog entry (deleted in storage?): lookups of its source's latest point pass it by, so backups base on an older point. \`bulwark prune\` writes the entry again`,
    );
  }

  // Data.
  const packIds = [...indexed.keys()].filter((p) => packSizes.has(p));
  const chosen = options.readDataPercent >= 100 ? packIds : sample(packIds, options.readDataPercent);
  let bytesDone = 0;
  await mapLimit(chosen, 2, async (packId) => {
    const size = packSizes.get(packId)!;
    try {
      const bytes = await vault.store.get(packKey(packId));
      if (bytes.length !== size) throw new IntegrityError(`pack ${packId} changed size while being read`);
      const header = await readPackHeader(vault.master.dataKey, packId, size, async (offset, length) => bytes.subarray(offset, offset + length));
      const byId = new Map(header.map((e) => [e.id.toString("hex"), e]));
      for (const entry of indexed.get(packId)!) {
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
