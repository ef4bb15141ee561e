/**
 * Restores a point's content to a target, driven by where the data lies: for each tree chunk, the
 * chunks it needs are grouped by pack and read in large ranges, decoded on the codec pool and
 * written at their offsets, so a restore reads each pack region once whatever the output order.
 */
import { Readable } from "node:stream";
import { CHUNK_DATA, CHUNK_TREE } from "./chunk-codec.ts";
import type { ChunkLocation } from "./chunk-index.ts";
import type { CodecPool } from "./codec-pool.ts";
import { ID_BYTES, isZeroId } from "./crypto.ts";
import { packKey } from "./pack.ts";
import { STREAM_TREE_ENTRY, type PointManifest, type StreamLayout } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";

/**
 * Where a restore writes. The buffers given are reused once the returned promise settles: a
 * target copies what it keeps beyond that.
 */
export interface RestoreTarget {
  /** Whether zero blocks must be written (a device or an existing disk) or may stay holes. */
  readonly needsZeros: boolean;
  write(offset: number, data: Buffer): Promise<void>;
  /** Adjacent buffers in one call, without joining them first (a file: one pwritev). */
  writev?(offset: number, data: Buffer[]): Promise<void>;
}

interface Need {
  id: Buffer;
  offset: number;
  length: number;
  rawLength: number;
  targets: number[];
}

/** Sealed bytes read from a pack at once. */
const MAX_RANGE = 4 * 1024 * 1024;
/**
 * Raw bytes a range decodes to: bounds a range's memory whatever the compression (64 KiB of one
 * repeated byte seals to a few dozen bytes, so 4 MiB of them would decode to gigabytes).
 */
const MAX_RANGE_RAW = 8 * 1024 * 1024;
const MAX_GAP = 256 * 1024;

/** One read of a pack range and the chunks in it. */
interface RangeTask {
  pack: string;
  needs: Need[];
}

/**
 * Ranges read, decoded and written at once: enough to keep every worker busy across tree nodes.
 * Each range is decoded by one worker as one batch, from the buffer it was read into (handed
 * over, not copied) into an output buffer of the restore's (see OutputBuffers); the ranges in
 * flight spread over the workers.
 */
const RANGES_IN_FLIGHT = 6;

/**
 * The buffers ranges decode into, MAX_RANGE_RAW bytes each, lent to a worker and written from,
 * then taken back for the next range: a restore allocates RANGES_IN_FLIGHT of them, not one per
 * chunk (fresh memory costs page faults and garbage collection on every chunk).
 */
class OutputBuffers {
  private readonly free: ArrayBuffer[] = [];

  /** A buffer of at least `bytes` (more than MAX_RANGE_RAW only for a range of one chunk that large: not kept). */
  take(bytes: number): ArrayBuffer {
    if (bytes > MAX_RANGE_RAW) return new ArrayBuffer(bytes);
    return this.free.pop() ?? new ArrayBuffer(MAX_RANGE_RAW);
  }

  give(buffer: ArrayBuffer): void {
    if (buffer.byteLength === MAX_RANGE_RAW) this.free.push(buffer);
  }
}

export async function restoreContent(
  vault: Vault,
  pool: CodecPool,
  point: PointManifest,
  target: RestoreTarget,
  options: { onProgress?: (bytesDone: number) => void } = {},
): Promise<void> {
  const content = point.content;
  if (!content) throw new Error(`point ${point.id} has no content of its own (a ${point.kind} point groups others)`);
  let done = 0;

  // Tree chunk by tree chunk, the ranges to read, grouped by pack; the next tree chunk is planned
  // while ranges of the previous one are still in flight, so the workers never wait between them.
  async function* ranges(): AsyncGenerator<RangeTask> {
    let streamOffset = 0;
    for (let n = 0; n < content!.tree.length; n++) {
      const node = await vault.readChunk(CHUNK_TREE, Buffer.from(content!.tree[n], "hex"));
      const byPack = new Map<string, Map<string, Need>>();
      const zeros: [number, number][] = [];
      const wanted: { id: Buffer; targetOffset: number }[] = [];
      const want = (id: Buffer, targetOffset: number, length: number) => {
        if (isZeroId(id)) zeros.push([targetOffset, length]);
        else wanted.push({ id, targetOffset });
      };
      const place = ({ id, targetOffset }: { id: Buffer; targetOffset: number }, location: ChunkLocation) => {
        let pack = byPack.get(location.pack);
        if (!pack) byPack.set(location.pack, (pack = new Map()));
        const key = id.toString("hex");
        const need = pack.get(key);
        if (need) need.targets.push(targetOffset);
        else pack.set(key, { id, offset: location.offset, length: location.length, rawLength: location.rawLength, targets: [targetOffset] });
      };
      if (content!.layout === "blocks") {
        const first = n * content!.blocksPerNode;
        for (let i = 0; i * ID_BYTES < node.length; i++) {
          const offset = (first + i) * content!.blockSize;
          want(node.subarray(i * ID_BYTES, (i + 1) * ID_BYTES), offset, Math.min(content!.blockSize, point.size - offset));
        }
      } else {
        for (let at = 0; at < node.length; at += STREAM_TREE_ENTRY) {
          const length = node.readUInt32LE(at + ID_BYTES);
          want(node.subarray(at, at + ID_BYTES), streamOffset, length);
          streamOffset += length;
        }
      }
      // Prepared a slice at a time: with a sharded index, one index block per chunk not in memory.
      await vault.index.forEachLocation(
        wanted.map((w) => w.id),
        (id, location, i) => {
          if (!location || location === "pending") vault.locate(id); // throws, naming the chunk
          else place(wanted[i], location);
        },
        { present: true },
      );
      if (target.needsZeros) {
        for (const [offset, length] of zeros) await target.write(offset, zeroBlock(length));
      }
      for (const [pack, needs] of byPack) {
        for (const range of coalesce([...needs.values()].sort((a, b) => a.offset - b.offset))) yield { pack, needs: range };
      }
    }
  }

  const outputs = new OutputBuffers();
  const restoreRange = async ({ pack, needs }: RangeTask) => {
    const start = needs[0].offset;
    const end = needs.at(-1)!.offset + needs.at(-1)!.length;
    const bytes = await vault.store.getRange(packKey(pack), start, end - start);
    // Not re-hashed: GCM with the id as associated data authenticates every byte; verify --read-data re-hashes.
    const { output, errors } = await pool.decodeInto(
      bytes,
      needs.map((need) => ({ type: CHUNK_DATA, id: need.id, offset: need.offset - start, length: need.length, rawLength: need.rawLength })),
      `pack ${pack}`,
      outputs.take(needs.reduce((sum, need) => sum + need.rawLength, 0)),
    );
    try {
      const failed = errors.find((e) => e !== null);
      if (failed) throw failed;
      const writes: { offset: number; data: Buffer }[] = [];
      let at = 0;
      for (const need of needs) {
        const raw = Buffer.from(output, at, need.rawLength);
        for (const offset of need.targets) writes.push({ offset, data: raw });
        done += need.rawLength * need.targets.length;
        at += need.rawLength;
      }
      await writeCoalesced(target, writes);
    } finally {
      outputs.give(output);
    }
    options.onProgress?.(done);
  };

  // A bounded set of range tasks drawing from the plan; the first failure stops the rest.
  const plan = ranges();
  let failure: unknown;
  await Promise.all(
    Array.from({ length: RANGES_IN_FLIGHT }, async () => {
      while (!failure) {
        const next = await plan.next().catch((error) => {
          failure ??= error;
          return { done: true as const, value: undefined };
        });
        if (next.done) return;
        await restoreRange(next.value).catch((error) => {
          failure ??= error;
        });
      }
    }),
  );
  if (failure) throw failure;
}

/**
 * Writes adjacent pieces as one write (pack order is usually disk order, so most are adjacent);
 * pieces that also follow each other in memory (chunks decoded back to back) become one buffer.
 */
async function writeCoalesced(target: RestoreTarget, writes: { offset: number; data: Buffer }[]): Promise<void> {
  writes.sort((a, b) => a.offset - b.offset);
  let run: Buffer[] = [];
  let runStart = 0;
  let runEnd = 0;
  const flush = async () => {
    if (run.length === 0) return;
    if (run.length === 1) await target.write(runStart, run[0]);
    else if (target.writev) await target.writev(runStart, run);
    else await target.write(runStart, Buffer.concat(run, runEnd - runStart));
    run = [];
  };
  for (const { offset, data } of writes) {
    if (run.length > 0 && offset === runEnd && runEnd - runStart < MAX_RANGE_RAW) {
      const last = run.at(-1)!;
      if (last.buffer === data.buffer && last.byteOffset + last.length === data.byteOffset) {
        run[run.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + data.length);
      } else run.push(data);
      runEnd += data.length;
      continue;
    }
    await flush();
    run = [data];
    runStart = offset;
    runEnd = offset + data.length;
  }
  await flush();
}

let zeros = Buffer.alloc(0);

/** Zero bytes to write (one buffer shared by every zero block; targets do not keep what they are given). */
function zeroBlock(length: number): Buffer {
  if (zeros.length < length) zeros = Buffer.alloc(length);
  return zeros.subarray(0, length);
}

function coalesce(sorted: Need[]): Need[][] {
  const ranges: Need[][] = [];
  let current: Need[] = [];
  let currentRaw = 0;
  for (const need of sorted) {
    const last = current.at(-1);
    if (
      last &&
      need.offset - (last.offset + last.length) <= MAX_GAP &&
      need.offset + need.length - current[0].offset <= MAX_RANGE &&
      currentRaw + need.rawLength <= MAX_RANGE_RAW
    ) {
      current.push(need);
      currentRaw += need.rawLength;
    } else {
      if (current.length) ranges.push(current);
      current = [need];
      currentRaw = need.rawLength;
    }
  }
  if (current.length) ranges.push(current);
  return ranges;
}

/**
 * A stream point's bytes in order, as a Node stream (to upload a BACPAC, say), with a bounded
 * window of chunks being fetched and decoded ahead.
 */
export function streamContent(vault: Vault, pool: CodecPool, point: PointManifest, window = 8): Readable {
  const content = point.content as StreamLayout | undefined;
  if (!content || content.layout !== "stream") throw new Error(`point ${point.id} is not a stream point`);
  async function* chunks(): AsyncIterable<Buffer> {
    const ahead: Promise<Buffer>[] = [];
    const fetch = async (id: Buffer) => {
      await vault.index.prepare([id], { present: true });
      const location = vault.locate(id);
      const sealed = await vault.store.getRange(packKey(location.pack), location.offset, location.length);
      return pool.decode(CHUNK_DATA, id, sealed, location.rawLength, `pack ${location.pack}`);
    };
    for (const nodeHex of content!.tree) {
      const node = await vault.readChunk(CHUNK_TREE, Buffer.from(nodeHex, "hex"));
      for (let at = 0; at < node.length; at += STREAM_TREE_ENTRY) {
        ahead.push(fetch(Buffer.from(node.subarray(at, at + ID_BYTES))));
        if (ahead.length >= window) yield await ahead.shift()!;
      }
    }
    while (ahead.length) yield await ahead.shift()!;
  }
  return Readable.from(chunks(), { objectMode: false });
}

export type { StreamLayout };
