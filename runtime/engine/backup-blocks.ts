/**
 * Backs up a disk (a raw image, a block device, a snapshot) as a block map. Without a base, every
 * block is read; with a base point and the ranges that changed since it (from Azure's page-range
 * diff, or a disk's allocated ranges for a first backup), only those blocks are read and the rest
 * of the map is carried over, so the result is again a synthetic full.
 */
import { isZeroId, keyedId, secretKey, ID_BYTES } from "./crypto.ts";
import { CHUNK_DATA, CHUNK_TREE } from "./chunk-codec.ts";
import { ENTRIES_PER_NODE, type BlockLayout } from "./point.ts";
import type { Vault } from "./vault.ts";
import type { VaultWriter } from "./vault-writer.ts";

export interface BlockSource {
  readonly size: number;
  /** Reads exactly `length` bytes at `offset` (the caller never reads past the end). */
  read(offset: number, length: number): Promise<Buffer>;
}

/** Half-open byte ranges [start, end), sorted, not overlapping. */
export type ByteRange = [start: number, end: number];

export interface BlockBackupResult {
  content: BlockLayout;
  bytesRead: number;
}

const READ_BYTES = 4 * 1024 * 1024;

/** A read whose blocks' ids the codec pool computed (block-ids.ts). */
interface HashedRead {
  data: Buffer;
  ids: Buffer;
}

export async function backupBlocks(
  vault: Vault,
  writer: VaultWriter,
  source: BlockSource,
  options: {
    base?: { content: BlockLayout; size: number };
    changed?: ByteRange[];
    onProgress?: (bytesDone: number) => void;
    /** Reads in flight ahead of the one being hashed (remote sources want more). */
    readAhead?: number;
  } = {},
): Promise<BlockBackupResult> {
  const base = options.base;
  const blockSize = base?.content.blockSize ?? vault.config.blockSize;
  const size = source.size;
  const totalBlocks = Math.ceil(size / blockSize);
  const nodes = Math.ceil(totalBlocks / ENTRIES_PER_NODE);
  const idKey = secretKey(vault.master.idKey);
  const tree: string[] = [];
  let bytesRead = 0;

  const changed = options.changed ? blockSetOf(options.changed, blockSize, totalBlocks, base?.size ?? size, size) : undefined;
  const readPlan = (first: number, end: number): [number, number][] => {
    // Runs of blocks to read within [first, end): all of them without a change list.
    if (!changed) return [[first, end]];
    return changed.runsWithin(first, end);
  };

  /** Records the ids of one hashed read's blocks and hands the read to the writer (it is consumed). */
  const store = async ({ data, ids: readIds }: HashedRead, firstBlock: number, ids: Buffer, nodeFirst: number) => {
    const candidates: { id: Buffer; offset: number; length: number }[] = [];
    for (let i = 0, at = 0; at < data.length; i++, at += blockSize) {
      const id = readIds.subarray(i * ID_BYTES, (i + 1) * ID_BYTES);
      id.copy(ids, (firstBlock + i - nodeFirst) * ID_BYTES);
      if (!isZeroId(id)) candidates.push({ id, offset: at, length: Math.min(blockSize, data.length - at) });
    }
    await writer.putBatch(CHUNK_DATA, data, candidates);
  };

  for (let node = 0; node < nodes; node++) {
    const nodeFirst = node * ENTRIES_PER_NODE;
    const nodeEnd = Math.min(nodeFirst + ENTRIES_PER_NODE, totalBlocks);
    const runs = base || changed ? readPlan(nodeFirst, nodeEnd) : [[nodeFirst, nodeEnd] as [number, number]];
    const baseNodeId = base?.content.tree[node];
    const baseCoversNode = baseNodeId !== undefined && nodeEnd * blockSize <= base!.size;
    if (runs.length === 0 && baseCoversNode && node < base!.content.tree.length && sameNodeShape(base!, node, nodeEnd, totalBlocks)) {
      tree.push(baseNodeId);
      options.onProgress?.(Math.min(nodeEnd * blockSize, size));
      continue;
    }
    const ids = Buffer.alloc((nodeEnd - nodeFirst) * ID_BYTES);
    if (base && baseNodeId !== undefined) {
      const previous = await vault.readChunk(CHUNK_TREE, Buffer.from(baseNodeId, "hex"));
      previous.copy(ids, 0, 0, Math.min(previous.length, ids.length));
    }
    // Read in large aligned requests, one ahead of the one being hashed.
    const reads: [number, number][] = [];
    for (const [runStart, runEnd] of runs) {
      const step = Math.max(1, Math.floor(READ_BYTES / blockSize));
      for (let b = runStart; b < runEnd; b += step) reads.push([b, Math.min(b + step, runEnd)]);
    }
    // Each read is hashed on the codec pool as soon as it arrives; enough are in flight to keep
    // every thread hashing while this one deduplicates and packs the earliest, in order.
    const fetchAndHash = (i: number): Promise<HashedRead> => {
      const [b, e] = reads[i];
      const offset = b * blockSize;
      const hashed = source
        .read(offset, Math.min(e * blockSize, size) - offset)
        .then((data) => writer.pool.hashBlocks(data, blockSize))
        .then(({ buffer, ids }) => ({ data: buffer, ids }));
      // Awaited in turn below; a failure is thrown there, not reported as unhandled meanwhile.
      hashed.catch(() => {});
      return hashed;
    };
    const ahead = Math.max(1, options.readAhead ?? 1, writer.pool.threads + 1);
    const pending: Promise<HashedRead>[] = [];
    for (let i = 0; i < Math.min(ahead, reads.length); i++) pending.push(fetchAndHash(i));
    for (let i = 0; i < reads.length; i++) {
      const hashed = await pending.shift()!;
      if (i + ahead < reads.length) pending.push(fetchAndHash(i + ahead));
      bytesRead += hashed.data.length;
      await store(hashed, reads[i][0], ids, nodeFirst);
      options.onProgress?.(Math.min(reads[i][1] * blockSize, size));
    }
    const nodeId = keyedId(idKey, ids);
    await writer.put(CHUNK_TREE, nodeId, ids);
    tree.push(nodeId.toString("hex"));
  }
  return { content: { layout: "blocks", blockSize, blocksPerNode: ENTRIES_PER_NODE, tree }, bytesRead };
}

function sameNodeShape(base: { content: BlockLayout; size: number }, node: number, nodeEnd: number, totalBlocks: number): boolean {
  const baseBlocks = Math.ceil(base.size / base.content.blockSize);
  const baseNodeEnd = Math.min((node + 1) * ENTRIES_PER_NODE, baseBlocks);
  return baseNodeEnd === nodeEnd && nodeEnd <= totalBlocks;
}

/** The set of blocks touched by the changed ranges, plus blocks whose shape differs from the base. */
function blockSetOf(ranges: ByteRange[], blockSize: number, totalBlocks: number, baseSize: number, size: number) {
  const runs: [number, number][] = [];
  const add = (start: number, end: number) => {
    if (end <= start) return;
    const first = Math.floor(start / blockSize);
    const last = Math.min(Math.ceil(end / blockSize), totalBlocks);
    if (first >= last) return;
    const tail = runs.at(-1);
    if (tail && first <= tail[1]) tail[1] = Math.max(tail[1], last);
    else runs.push([first, last]);
  };
  const extra: ByteRange[] = [];
  if (baseSize !== size) {
    // A resized disk: re-read from the old last (possibly partial) block to the new end.
    extra.push([Math.floor(Math.min(baseSize, size) / blockSize) * blockSize, size]);
  }
  const all = [...ranges, ...extra].sort((a, b) => a[0] - b[0]);
  for (const [start, end] of all) add(start, end);
  return {
    runsWithin(first: number, end: number): [number, number][] {
      const out: [number, number][] = [];
      for (const [a, b] of runs) {
        if (b <= first) continue;
        if (a >= end) break;
        out.push([Math.max(a, first), Math.min(b, end)]);
      }
      return out;
    },
  };
}
