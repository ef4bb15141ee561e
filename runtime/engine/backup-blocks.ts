/**
 * Backs up a disk (a raw image, a block device, a snapshot) as a block map. Without a base, every
 * block is read; with a base point and the ranges that changed since it (from Azure's page-range
 * diff, or a disk's allocated ranges for a first backup), only those blocks are read and the rest
 * of the map is carried over, so the result is again a synthetic full. A block only partly changed
 * is patched: its changed pages are read from the source and the rest comes from the base point's
 * chunk for that block (sub-block reads, see planBlock), so scattered small writes cost about what
 * changed, not a whole block each.
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
  /** Bytes read from the source. */
  bytesRead: number;
  /** Blocks built from the base point's chunk and their changed pages only. */
  blocksPatched: number;
  /**
   * Base chunks read from the vault to patch blocks (a base block of zeros costs no read), and their
   * bytes as decoded (the vault holds them compressed and sealed: fewer bytes for compressible data).
   */
  baseChunksRead: number;
  baseBytesRead: number;
  /** Base chunks that could not be read (pruned, damaged): those blocks were read whole instead. */
  baseReadsFailed: number;
}

const READ_BYTES = 4 * 1024 * 1024;

/**
 * When a changed block is patched instead of read whole. The changed ranges come at the source's
 * own granularity: Azure's Get Page Ranges with a previous snapshot returns the page ranges (written,
 * PageRange, or cleared, ClearRange) that changed between the two snapshots
 * (Azure/azure-rest-api-specs specification/storage/data-plane/Microsoft.BlobStorage/stable/2021-12-02/blob.json,
 * PageBlob_GetPageRangesDiff), and a page blob is a collection of 512-byte pages
 * (MicrosoftDocs/azure-docs articles/storage/blobs/storage-blob-pageblob-overview.md). A patched
 * block costs one source request per changed piece plus one vault read of the base chunk (stored
 * compressed; none when the base block was zeros); a whole read costs the whole block from the
 * source, in one request shared with its changed neighbours. So:
 *   - pieces closer than PIECE_GAP are read as one (a request costs more than a few KiB);
 *   - a block whose pieces cover more than half of it is read whole: the bytes saved no longer pay
 *     for the extra request and the base chunk's read;
 *   - a block of more than MAX_PIECES pieces is read whole (requests, not bytes, dominate);
 *   - a block past the end of the base or of the source, or the short last block, is read whole.
 */
const PIECE_GAP = 4 * 1024;
const MAX_PIECES = 4;

/** A read whose blocks' ids the codec pool computed (block-ids.ts). */
interface HashedRead {
  data: Buffer;
  ids: Buffer;
  sourceBytes: number;
  baseBytes: number;
}

/** Blocks [first, end) read whole, or one block patched from its base chunk and changed pieces. */
type PlannedRead = { first: number; end: number; patch?: BlockPatch };

interface BlockPatch {
  /** The base point's id of this block (all zeros: a hole). */
  baseId: Buffer;
  /** Changed pieces, as offsets within the block. */
  pieces: ByteRange[];
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
    /** Told once when base chunks could not be read (default: a process warning). */
    onWarning?: (message: string) => void;
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
  let blocksPatched = 0;
  let baseChunksRead = 0;
  let baseBytesRead = 0;
  const baseFailures: { count: number; first?: string } = { count: 0 };

  const changed = options.changed ? blockSetOf(options.changed, blockSize, totalBlocks, base?.size ?? size, size) : undefined;
  // Only blocks whole in the base and in the source can be patched: the base chunk then holds
  // exactly the block's unchanged bytes (a resized disk's edge blocks are read whole).
  const patchableEnd = base && changed ? Math.floor(Math.min(base.size, size) / blockSize) : 0;
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

  /** The base point's bytes of a block: zeros for a hole, else its chunk, checked against its id. */
  const baseBlock = async (baseId: Buffer): Promise<Buffer | undefined> => {
    if (isZeroId(baseId)) return Buffer.alloc(blockSize);
    try {
      const chunk = await vault.readChunk(CHUNK_DATA, baseId);
      if (chunk.length !== blockSize) throw new Error(`it holds ${chunk.length} bytes, not a whole ${blockSize}-byte block`);
      baseChunksRead++;
      baseBytesRead += chunk.length;
      return chunk;
    } catch (error) {
      baseFailures.count++;
      baseFailures.first ??= `${baseId.toString("hex")}: ${(error as Error).message}`;
      return undefined;
    }
  };

  /**
   * One block's bytes from its base chunk and its changed pieces (read meanwhile); the whole block
   * from the source when the base chunk cannot be read, so a block is never built on wrong bytes.
   */
  const patchedBlock = async (block: number, patch: BlockPatch): Promise<{ data: Buffer; sourceBytes: number; baseBytes: number }> => {
    const offset = block * blockSize;
    const pieces = Promise.all(patch.pieces.map(([a, b]) => source.read(offset + a, b - a)));
    // Awaited below unless the base is unreadable; a failure then is not reported as unhandled.
    pieces.catch(() => {});
    const baseBefore = baseBytesRead;
    const data = await baseBlock(patch.baseId);
    const piecesBytes = patch.pieces.reduce((sum, [a, b]) => sum + (b - a), 0);
    if (!data) {
      const whole = await source.read(offset, blockSize);
      return { data: whole, sourceBytes: blockSize + piecesBytes, baseBytes: 0 };
    }
    const read = await pieces;
    patch.pieces.forEach(([a], i) => read[i].copy(data, a));
    blocksPatched++;
    return { data, sourceBytes: piecesBytes, baseBytes: baseBytesRead - baseBefore };
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
    const baseIdOf = (block: number) => Buffer.from(ids.subarray((block - nodeFirst) * ID_BYTES, (block - nodeFirst + 1) * ID_BYTES));
    const reads = planReads(runs, blockSize, (block) => {
      if (block >= patchableEnd || baseNodeId === undefined) return undefined;
      const pieces = planBlock(changed!.piecesWithin(block * blockSize, (block + 1) * blockSize), blockSize);
      return pieces && { baseId: baseIdOf(block), pieces };
    });
    // Each read is hashed on the codec pool as soon as it arrives; enough are in flight to keep
    // every thread hashing while this one deduplicates and packs the earliest, in order.
    const fetchAndHash = (i: number): Promise<HashedRead> => {
      const { first, end, patch } = reads[i];
      const offset = first * blockSize;
      const length = Math.min(end * blockSize, size) - offset;
      const fetched = patch ? patchedBlock(first, patch) : source.read(offset, length).then((data) => ({ data, sourceBytes: length, baseBytes: 0 }));
      const hashed = fetched.then(({ data, sourceBytes, baseBytes }) =>
        writer.pool.hashBlocks(data, blockSize).then(({ buffer, ids }) => ({ data: buffer, ids, sourceBytes, baseBytes })),
      );
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
      bytesRead += hashed.sourceBytes;
      await store(hashed, reads[i].first, ids, nodeFirst);
      options.onProgress?.(Math.min(reads[i].end * blockSize, size));
    }
    const nodeId = keyedId(idKey, ids);
    await writer.put(CHUNK_TREE, nodeId, ids);
    tree.push(nodeId.toString("hex"));
  }
  if (baseFailures.count > 0) {
    const warn = options.onWarning ?? ((message: string) => process.emitWarning(message));
    warn(
      `${baseFailures.count} chunk(s) of the base point could not be read (first: ${baseFailures.first}); ` +
        "those blocks were read whole from the source instead, so this point is complete, but the vault may be damaged: run `bulwark verify`",
    );
  }
  return {
    content: { layout: "blocks", blockSize, blocksPerNode: ENTRIES_PER_NODE, tree },
    bytesRead,
    blocksPatched,
    baseChunksRead,
    baseBytesRead,
    baseReadsFailed: baseFailures.count,
  };
}

/**
 * The reads of one node's changed runs: consecutive blocks read whole in aligned requests of up to
 * READ_BYTES, each block that `patchOf` plans as a patch on its own.
 */
function planReads(runs: [number, number][], blockSize: number, patchOf: (block: number) => BlockPatch | undefined): PlannedRead[] {
  const reads: PlannedRead[] = [];
  const step = Math.max(1, Math.floor(READ_BYTES / blockSize));
  const wholeRun = (first: number, end: number) => {
    for (let b = first; b < end; b += step) reads.push({ first: b, end: Math.min(b + step, end) });
  };
  for (const [runStart, runEnd] of runs) {
    let wholeFrom = runStart;
    for (let block = runStart; block < runEnd; block++) {
      const patch = patchOf(block);
      if (!patch) continue;
      wholeRun(wholeFrom, block);
      reads.push({ first: block, end: block + 1, patch });
      wholeFrom = block + 1;
    }
    wholeRun(wholeFrom, runEnd);
  }
  return reads;
}

/**
 * The pieces of a block to read when patching it (offsets within the block), or undefined to read
 * it whole: see PIECE_GAP and MAX_PIECES.
 */
export function planBlock(changedInBlock: ByteRange[], blockSize: number): ByteRange[] | undefined {
  const pieces: ByteRange[] = [];
  for (const [a, b] of changedInBlock) {
    const last = pieces.at(-1);
    if (last && a - last[1] < PIECE_GAP) last[1] = Math.max(last[1], b);
    else pieces.push([a, b]);
  }
  const covered = pieces.reduce((sum, [a, b]) => sum + (b - a), 0);
  if (pieces.length === 0 || pieces.length > MAX_PIECES || covered * 2 > blockSize) return undefined;
  return pieces;
}

function sameNodeShape(base: { content: BlockLayout; size: number }, node: number, nodeEnd: number, totalBlocks: number): boolean {
  const baseBlocks = Math.ceil(base.size / base.content.blockSize);
  const baseNodeEnd = Math.min((node + 1) * ENTRIES_PER_NODE, baseBlocks);
  return baseNodeEnd === nodeEnd && nodeEnd <= totalBlocks;
}

/**
 * The set of blocks touched by the changed ranges, plus blocks whose shape differs from the base;
 * and, for a block, the changed bytes within it.
 */
function blockSetOf(ranges: ByteRange[], blockSize: number, totalBlocks: number, baseSize: number, size: number) {
  const extra: ByteRange[] = [];
  if (baseSize !== size) {
    // A resized disk: re-read from the old last (possibly partial) block to the new end.
    extra.push([Math.floor(Math.min(baseSize, size) / blockSize) * blockSize, size]);
  }
  const merged: ByteRange[] = [];
  for (const [start, end] of [...ranges, ...extra].sort((a, b) => a[0] - b[0])) {
    if (end <= start) continue;
    const tail = merged.at(-1);
    if (tail && start <= tail[1]) tail[1] = Math.max(tail[1], end);
    else merged.push([start, end]);
  }
  const runs: [number, number][] = [];
  for (const [start, end] of merged) {
    const first = Math.floor(start / blockSize);
    const last = Math.min(Math.ceil(end / blockSize), totalBlocks);
    if (first >= last) continue;
    const tail = runs.at(-1);
    if (tail && first <= tail[1]) tail[1] = Math.max(tail[1], last);
    else runs.push([first, last]);
  }
  /** The index of the first of `list` whose end is past `at` (list sorted by end as by start). */
  const firstEndingAfter = (list: [number, number][], at: number): number => {
    let low = 0;
    let high = list.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (list[middle][1] <= at) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  return {
    runsWithin(first: number, end: number): [number, number][] {
      const out: [number, number][] = [];
      for (let i = firstEndingAfter(runs, first); i < runs.length && runs[i][0] < end; i++) {
        out.push([Math.max(runs[i][0], first), Math.min(runs[i][1], end)]);
      }
      return out;
    },
    /** The changed bytes within [start, end), as offsets from start. */
    piecesWithin(start: number, end: number): ByteRange[] {
      const out: ByteRange[] = [];
      for (let i = firstEndingAfter(merged, start); i < merged.length && merged[i][0] < end; i++) {
        out.push([Math.max(merged[i][0], start) - start, Math.min(merged[i][1], end) - start]);
      }
      return out;
    },
  };
}
