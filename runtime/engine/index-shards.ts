/**
 * The sharded chunk index (issue 13): what a vault's whole index becomes when prune compacts it, so
 * that a job reads a few blocks of it instead of loading all of it.
 *
 *   index-shards/<generation>/<prefix>   the entries whose ids begin with <prefix> (its first
 *                                        `prefixBits` bits, in hex), sorted by id, as sealed pieces:
 *       block n     "BWSB" u8 version, then entries (32-byte id, 16-byte pack id, u32 offset,
 *                   u32 length, u32 raw length, u8 type), at most BLOCK_ENTRIES of them
 *       filter n    a Bloom filter of block n's ids (~10 bits an id, 7 probes): "absent" only
 *       index       "BWSI" u8 version, u32 entries, u32 blocks, then per block: first id, offset
 *                   and length of the block, offset and length of its filter, u32 entries
 *   index-gen/<generation>               sealed JSON: the prefix bits, every shard's entries,
 *                                        size and where its index lies, and the index objects
 *                                        (index/<name>) the generation covers
 *
 * Every piece is sealed with the vault's object sealing, its generation, prefix and place (block n,
 * filter n, index) in the associated data, so a shard copied to another prefix or generation, or a
 * block moved within its shard, fails authentication. A generation object is sealed under its own
 * name, so one copied to another sequence is refused too. A reader fetches a shard's index once
 * (cached), then per id the filter of the one block the id can lie in, then, when the filter says
 * "maybe", that block: ranged reads, never the whole shard. A piece that is missing or fails to
 * open is an IntegrityError naming the shard, never an "absent" answer.
 */
import { IntegrityError, ObjectNotFoundError, VaultBusyError } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import type { ChunkLocation } from "./chunk-index.ts";
import { ID_BYTES, labelAssociatedData, openObject, sealObject, type DataKey, type SealFormat } from "./crypto.ts";

export const GENERATION_PREFIX = "index-gen/";
export const SHARD_PREFIX = "index-shards/";

const BLOCK_MAGIC = Buffer.from("BWSB\x01", "latin1");
const INDEX_MAGIC = Buffer.from("BWSI\x01", "latin1");
/** id, pack id, offset, length, raw length, type. */
export const SHARD_ENTRY_BYTES = ID_BYTES + 16 + 4 + 4 + 4 + 1;
const INDEX_HEAD_BYTES = INDEX_MAGIC.length + 8;
const INDEX_BLOCK_BYTES = ID_BYTES + 4 * 5;
const FILTER_BITS_PER_ENTRY = 10;
const FILTER_PROBES = 7;
const MAX_PREFIX_BITS = 20;
/**
 * Bounds on what a generation object may claim, so a damaged or forged one cannot make a reader
 * allocate or fetch more than a real shard could be: entries a shard may hold (256 times the
 * production target), and bytes per entry and per shard beyond any seal's overhead.
 */
const MAX_SHARD_ENTRIES = 1 << 24;
const SEAL_OVERHEAD_MAX = 256;
function maxIndexBytes(entries: number): number {
  return SEAL_OVERHEAD_MAX + INDEX_HEAD_BYTES + entries * INDEX_BLOCK_BYTES;
}
function maxShardBytes(entries: number): number {
  // At worst a block per entry: its block and filter sealed, and its row in the block index.
  return maxIndexBytes(entries) + entries * (2 * SEAL_OVERHEAD_MAX + BLOCK_MAGIC.length + SHARD_ENTRY_BYTES + 16);
}
/** Ids one prepare() may ask for: the cache must hold what they fetch until they are looked up. */
export const PREPARE_MAX = 1024;

/**
 * Sizes, settable by tests (small vaults, small shards). Production: blocks of 512 entries
 * (~31 KiB), shards of about 64k entries (2,048 shards at 100 million chunks), a cache of 48 MiB.
 */
export const shardTuning = {
  blockEntries: 512,
  shardEntries: 1 << 16,
  /** A vault without a generation is sharded by prune from this many kept entries on; below, one index object loads faster. */
  shardFromEntries: 1 << 20,
  cacheBytes: 48 * 1024 * 1024,
};

export interface ShardInfo {
  prefix: number;
  entries: number;
  size: number;
  indexOffset: number;
  indexLength: number;
}

export interface IndexGeneration {
  sequence: number;
  prefixBits: number;
  shards: ShardInfo[];
  /** The index objects (index/<name>) whose entries the shards hold. */
  covers: string[];
}

/** A lookup of a shard-covered id that was not prepared: a bug in the caller, never an answer. */
export class IndexNotPreparedError extends Error {
  constructor(id: Uint8Array) {
    super(`chunk ${Buffer.from(id).toString("hex").slice(0, 16)} was looked up in the sharded index without prepare(): a Bulwark bug, please report it`);
    this.name = "IndexNotPreparedError";
  }
}

export function generationName(sequence: number): string {
  return `${GENERATION_PREFIX}${String(sequence).padStart(12, "0")}`;
}

export function shardName(sequence: number, prefixBits: number, prefix: number): string {
  return `${SHARD_PREFIX}${String(sequence).padStart(12, "0")}/${prefix.toString(16).padStart(Math.max(1, Math.ceil(prefixBits / 4)), "0")}`;
}

/** The sequence a generation or shard object name carries, or undefined for a name that is neither. */
export function sequenceOf(key: string): number | undefined {
  const match = /^index-(?:gen\/(\d{12})|shards\/(\d{12})\/[0-9a-f]+)$/.exec(key);
  return match ? Number(match[1] ?? match[2]) : undefined;
}

export function prefixOf(id: Uint8Array, prefixBits: number): number {
  if (prefixBits === 0) return 0;
  return (((id[0] << 16) | (id[1] << 8) | id[2]) >>> (24 - prefixBits)) & ((1 << prefixBits) - 1);
}

/** Bits of prefix so that shards hold about shardTuning.shardEntries each. */
export function prefixBitsFor(entries: number): number {
  let bits = 0;
  while (bits < MAX_PREFIX_BITS && entries / 2 ** bits > shardTuning.shardEntries) bits++;
  return bits;
}

function pieceData(sequence: number, prefixBits: number, prefix: number, place: string): Buffer {
  return labelAssociatedData("index-shard", `${shardName(sequence, prefixBits, prefix)}/${place}`);
}

// ---- writing ----

/** Writes one entry into a shard's packed plaintext of entries (SHARD_ENTRY_BYTES each). */
export function packEntry(into: Buffer, at: number, id: Uint8Array, location: ChunkLocation): void {
  into.set(id.subarray(0, ID_BYTES), at);
  into.write(location.pack, at + ID_BYTES, 16, "hex");
  into.writeUInt32LE(location.offset, at + ID_BYTES + 16);
  into.writeUInt32LE(location.length, at + ID_BYTES + 20);
  into.writeUInt32LE(location.rawLength, at + ID_BYTES + 24);
  into[at + ID_BYTES + 28] = location.type;
}

/**
 * One shard object from its entries (packed as packEntry lays them out, sorted by id, no id
 * twice, every id of this prefix): the bytes to store and where its block index lies.
 */
export function encodeShard(
  dataKey: DataKey,
  format: SealFormat,
  sequence: number,
  prefixBits: number,
  prefix: number,
  packed: Buffer,
): { bytes: Buffer; info: ShardInfo } {
  const count = packed.length / SHARD_ENTRY_BYTES;
  const pieces: Buffer[] = [];
  let size = 0;
  const blocks = Math.ceil(count / shardTuning.blockEntries);
  const index = Buffer.alloc(INDEX_HEAD_BYTES + blocks * INDEX_BLOCK_BYTES);
  INDEX_MAGIC.copy(index, 0);
  index.writeUInt32LE(count, INDEX_MAGIC.length);
  index.writeUInt32LE(blocks, INDEX_MAGIC.length + 4);
  for (let n = 0; n < blocks; n++) {
    const first = n * shardTuning.blockEntries;
    const inBlock = Math.min(shardTuning.blockEntries, count - first);
    const entries = packed.subarray(first * SHARD_ENTRY_BYTES, (first + inBlock) * SHARD_ENTRY_BYTES);
    for (let i = 0; i < inBlock; i++) {
      const id = entries.subarray(i * SHARD_ENTRY_BYTES, i * SHARD_ENTRY_BYTES + ID_BYTES);
      if (prefixOf(id, prefixBits) !== prefix) throw new Error(`an entry of prefix ${prefixOf(id, prefixBits)} was given to shard ${prefix}`);
      const before = first + i > 0 ? packed.subarray((first + i - 1) * SHARD_ENTRY_BYTES, (first + i - 1) * SHARD_ENTRY_BYTES + ID_BYTES) : undefined;
      if (before && Buffer.compare(before, id) >= 0) throw new Error("shard entries must be sorted by id, each id once");
    }
    const block = sealObject(dataKey, Buffer.concat([BLOCK_MAGIC, entries]), pieceData(sequence, prefixBits, prefix, `block/${n}`), format);
    const filter = sealObject(dataKey, buildFilter(entries, inBlock), pieceData(sequence, prefixBits, prefix, `filter/${n}`), format);
    const at = INDEX_HEAD_BYTES + n * INDEX_BLOCK_BYTES;
    entries.copy(index, at, 0, ID_BYTES);
    index.writeUInt32LE(size, at + ID_BYTES);
    index.writeUInt32LE(block.length, at + ID_BYTES + 4);
    index.writeUInt32LE(size + block.length, at + ID_BYTES + 8);
    index.writeUInt32LE(filter.length, at + ID_BYTES + 12);
    index.writeUInt32LE(inBlock, at + ID_BYTES + 16);
    pieces.push(block, filter);
    size += block.length + filter.length;
  }
  const sealedIndex = sealObject(dataKey, index, pieceData(sequence, prefixBits, prefix, "index"), format);
  pieces.push(sealedIndex);
  const info = { prefix, entries: count, size: size + sealedIndex.length, indexOffset: size, indexLength: sealedIndex.length };
  return { bytes: Buffer.concat(pieces), info };
}

/**
 * The sealed generation object. It lists every prefix: one with no entries as an empty shard of
 * size 0 (no object), so a reader can refuse a list that leaves a prefix out instead of answering
 * "absent" for its chunks.
 */
export function encodeGeneration(dataKey: DataKey, format: SealFormat, generation: IndexGeneration): Buffer {
  const listed = new Map(generation.shards.map((s) => [s.prefix, s]));
  if (listed.size !== generation.shards.length || generation.shards.some((s) => s.prefix >= 2 ** generation.prefixBits)) {
    throw new Error(`generation ${generation.sequence} was given a shard twice or out of its prefixes: a Bulwark bug`);
  }
  const shards = Array.from({ length: 2 ** generation.prefixBits }, (_, prefix) => listed.get(prefix) ?? emptyShard(prefix)).map((s) => [
    s.prefix,
    s.entries,
    s.size,
    s.indexOffset,
    s.indexLength,
  ]);
  const plain = Buffer.from(JSON.stringify({ format: "bulwark-index-generation", sequence: generation.sequence, prefixBits: generation.prefixBits, shards, covers: generation.covers }));
  return sealObject(dataKey, plain, labelAssociatedData("index-gen", generationName(generation.sequence)), format);
}

/**
 * Writes a whole generation: every shard, then (the commit point) the generation object. Entries
 * are [id, location] pairs, any order, each id once. Returns the names written, generation last.
 */
export async function writeGeneration(
  store: ObjectStore,
  dataKey: DataKey,
  format: SealFormat,
  sequence: number,
  entries: [Uint8Array, ChunkLocation][],
  covers: string[],
): Promise<string[]> {
  const prefixBits = prefixBitsFor(entries.length);
  const byPrefix = new Map<number, [Uint8Array, ChunkLocation][]>();
  for (const entry of entries) {
    const prefix = prefixOf(entry[0], prefixBits);
    const list = byPrefix.get(prefix);
    if (list) list.push(entry);
    else byPrefix.set(prefix, [entry]);
  }
  const written: string[] = [];
  const shards: ShardInfo[] = [];
  for (const prefix of [...byPrefix.keys()].sort((a, b) => a - b)) {
    const list = byPrefix.get(prefix)!.sort((a, b) => Buffer.compare(a[0], b[0]));
    const packed = Buffer.allocUnsafe(list.length * SHARD_ENTRY_BYTES);
    list.forEach(([id, location], i) => packEntry(packed, i * SHARD_ENTRY_BYTES, id, location));
    const { bytes, info } = encodeShard(dataKey, format, sequence, prefixBits, prefix, packed);
    const name = shardName(sequence, prefixBits, prefix);
    await store.create(name, bytes);
    written.push(name);
    shards.push(info);
  }
  const name = generationName(sequence);
  await store.create(name, encodeGeneration(dataKey, format, { sequence, prefixBits, shards, covers }));
  written.push(name);
  return written;
}

/** A prefix no id has: listed, with no object to read. */
function emptyShard(prefix: number): ShardInfo {
  return { prefix, entries: 0, size: 0, indexOffset: 0, indexLength: 0 };
}

// ---- reading ----

/** The newest generation object, opened and checked; undefined when the vault has none. */
export async function readNewestGeneration(store: ObjectStore, dataKey: DataKey, names?: string[]): Promise<IndexGeneration | undefined> {
  let newest: string | undefined;
  for (const key of names ?? (await listGenerations(store))) if (!newest || key > newest) newest = key;
  if (!newest) return undefined;
  return openGeneration(dataKey, newest, await store.get(newest));
}

export async function listGenerations(store: ObjectStore): Promise<string[]> {
  const names: string[] = [];
  for await (const info of store.list(GENERATION_PREFIX)) names.push(info.key);
  return names;
}

export function openGeneration(dataKey: DataKey, name: string, sealed: Uint8Array): IndexGeneration {
  const sequence = sequenceOf(name);
  const damaged = (why: string) =>
    new IntegrityError(`index generation object ${name} ${why}: the vault's index cannot be read. Run \`bulwark verify\`; if it was planted or damaged, delete it only once you know the generation before it is whole`);
  if (sequence === undefined || !name.startsWith(GENERATION_PREFIX)) throw damaged("has a name no generation has");
  const plain = openObject(dataKey, sealed, labelAssociatedData("index-gen", name), `index generation object ${name}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(plain.toString("utf8"));
  } catch {
    throw damaged("is not readable");
  }
  const body = parsed as { format?: unknown; sequence?: unknown; prefixBits?: unknown; shards?: unknown; covers?: unknown };
  if (body.format !== "bulwark-index-generation" || body.sequence !== sequence) throw damaged("does not hold its own generation");
  const prefixBits = body.prefixBits;
  if (typeof prefixBits !== "number" || !Number.isInteger(prefixBits) || prefixBits < 0 || prefixBits > MAX_PREFIX_BITS) throw damaged("has an impossible prefix size");
  if (!Array.isArray(body.covers) || !body.covers.every((c) => typeof c === "string" && c.startsWith("index/"))) throw damaged("names no valid index objects");
  if (!Array.isArray(body.shards)) throw damaged("lists no shards");
  const shards: ShardInfo[] = body.shards.map((row: unknown, n: number) => {
    const fields = Array.isArray(row) ? row : [];
    if (fields.length !== 5 || !fields.every((f) => typeof f === "number" && Number.isSafeInteger(f) && f >= 0)) throw damaged("lists a malformed shard");
    const [prefix, entries, size, indexOffset, indexLength] = fields as number[];
    // Every prefix once, in order: a prefix left out would make its chunks read as absent.
    if (prefix !== n) throw damaged(`lists no shard for prefix ${n.toString(16)}, or one twice`);
    if (size === 0 && entries === 0) return emptyShard(prefix);
    if (indexOffset + indexLength !== size || entries > MAX_SHARD_ENTRIES || size > maxShardBytes(entries) || indexLength > maxIndexBytes(entries)) {
      throw damaged(`lists shard ${prefix.toString(16)} with impossible sizes`);
    }
    return { prefix, entries, size, indexOffset, indexLength };
  });
  if (shards.length !== 2 ** prefixBits) throw damaged(`lists ${shards.length} shards where its ${prefixBits} prefix bits make ${2 ** prefixBits}`);
  return { sequence, prefixBits, shards, covers: body.covers as string[] };
}

interface BlockIndex {
  firstIds: Buffer;
  blocks: { offset: number; length: number; filterOffset: number; filterLength: number; entries: number }[];
}

/** An LRU of decoded pieces, bounded in bytes. */
class PieceCache {
  private readonly pieces = new Map<string, { bytes: number; value: Buffer | BlockIndex }>();
  private held = 0;
  private readonly maxBytes: number;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get<T extends Buffer | BlockIndex>(key: string): T | undefined {
    const found = this.pieces.get(key);
    if (!found) return undefined;
    this.pieces.delete(key);
    this.pieces.set(key, found);
    return found.value as T;
  }

  set(key: string, value: Buffer | BlockIndex, bytes: number): void {
    const old = this.pieces.get(key);
    if (old) this.held -= old.bytes;
    this.pieces.delete(key);
    this.pieces.set(key, { bytes, value });
    this.held += bytes;
    for (const [oldest, piece] of this.pieces) {
      if (this.held <= this.maxBytes) break;
      this.pieces.delete(oldest);
      this.held -= piece.bytes;
    }
  }
}

/** A shard entry located: what the index answers. */
export type ShardEntry = ChunkLocation;

/** Reads one generation's shards by ranges, through a bounded cache. */
export class ShardReader {
  readonly generation: IndexGeneration;
  readonly name: string;
  private readonly store: ObjectStore;
  private readonly dataKey: DataKey;
  private readonly shards = new Map<number, ShardInfo>();
  private readonly cache: PieceCache;
  /** Fetches in flight, shared by concurrent preparers. */
  private readonly fetching = new Map<string, Promise<void>>();

  constructor(store: ObjectStore, dataKey: DataKey, generation: IndexGeneration, cacheBytes = shardTuning.cacheBytes) {
    this.store = store;
    this.dataKey = dataKey;
    this.generation = generation;
    this.name = generationName(generation.sequence);
    // An empty shard has no object: its prefix answers "absent" without a read.
    for (const shard of generation.shards) if (shard.size > 0) this.shards.set(shard.prefix, shard);
    this.cache = new PieceCache(cacheBytes);
  }

  get entryCount(): number {
    return this.generation.shards.reduce((sum, s) => sum + s.entries, 0);
  }

  /**
   * Fetches what find() needs to answer for these ids: each shard's block index, then the filter
   * of each id's block, then the blocks the filters do not rule out (`present`: the caller expects
   * the ids to be there, as a restore does, so filters are skipped).
   */
  async prepare(ids: readonly Uint8Array[], options: { present?: boolean } = {}): Promise<void> {
    if (ids.length > PREPARE_MAX) throw new Error(`prepare() takes at most ${PREPARE_MAX} ids at once, was given ${ids.length}: a Bulwark bug`);
    const located = ids.map((id) => ({ id, shard: this.shards.get(prefixOf(id, this.generation.prefixBits)) })).filter((x) => x.shard !== undefined);
    const shards = [...new Set(located.map((x) => x.shard!))];
    const indexes = new Map<ShardInfo, BlockIndex>();
    await this.fetchAll(shards.map(async (shard) => void indexes.set(shard, await this.indexOf(shard))));
    const inBlocks = located
      .map(({ id, shard }) => ({ id, shard: shard!, block: blockOf(indexes.get(shard!)!, id) }))
      .filter((x) => x.block >= 0);
    let maybe = inBlocks;
    if (!options.present) {
      await this.fetchAll(inBlocks.map((x) => this.fetchPiece(x.shard, "filter", x.block)));
      maybe = inBlocks.filter((x) => {
        const filter = this.cache.get<Buffer>(pieceKey(x.shard, "filter", x.block));
        return !filter || filterMayHold(filter, x.id);
      });
    }
    await this.fetchAll(maybe.map((x) => this.fetchPiece(x.shard, "block", x.block)));
  }

  /** The entry for an id, or undefined; throws IndexNotPreparedError when prepare() did not cover it. */
  find(id: Uint8Array): ShardEntry | undefined {
    const shard = this.shards.get(prefixOf(id, this.generation.prefixBits));
    if (!shard) return undefined;
    const index = this.cache.get<BlockIndex>(indexKey(shard));
    if (!index) throw new IndexNotPreparedError(id);
    const n = blockOf(index, id);
    if (n < 0) return undefined;
    const block = this.cache.get<Buffer>(pieceKey(shard, "block", n));
    if (block) return searchBlock(block, id);
    const filter = this.cache.get<Buffer>(pieceKey(shard, "filter", n));
    if (filter && !filterMayHold(filter, id)) return undefined;
    throw new IndexNotPreparedError(id);
  }

  /** Every entry, shard by shard (each shard read whole once, its pieces checked). */
  async *entries(): AsyncIterable<[Buffer, ChunkLocation]> {
    for (const shard of this.generation.shards) yield* this.entriesOf(shard);
  }

  /** One shard's entries, the shard read whole and every piece of it checked. */
  async *entriesOf(shard: ShardInfo): AsyncIterable<[Buffer, ChunkLocation]> {
    if (shard.size === 0) return;
    const bytes = await this.read(shard, 0, shard.size);
    const index = this.decodeIndex(shard, bytes.subarray(shard.indexOffset));
    for (let n = 0; n < index.blocks.length; n++) {
      const { offset, length } = index.blocks[n];
      const block = this.decodeBlock(shard, index, n, bytes.subarray(offset, offset + length));
      for (let at = 0; at < block.length; at += SHARD_ENTRY_BYTES) {
        yield [Buffer.from(block.subarray(at, at + ID_BYTES)), entryAt(block, at)];
      }
    }
  }

  shardName(shard: ShardInfo): string {
    return shardName(this.generation.sequence, this.generation.prefixBits, shard.prefix);
  }

  private async fetchAll(fetches: Promise<void>[]): Promise<void> {
    const results = await Promise.allSettled(fetches);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  private async indexOf(shard: ShardInfo): Promise<BlockIndex> {
    const key = indexKey(shard);
    let index = this.cache.get<BlockIndex>(key);
    if (index) return index;
    await this.once(key, async () => {
      index = this.decodeIndex(shard, await this.read(shard, shard.indexOffset, shard.indexLength));
      this.cache.set(key, index, index.firstIds.length + index.blocks.length * 48);
    });
    return index ?? (await this.indexOf(shard));
  }

  private fetchPiece(shard: ShardInfo, kind: "block" | "filter", n: number): Promise<void> {
    const key = pieceKey(shard, kind, n);
    return this.once(key, async () => {
      const index = await this.indexOf(shard);
      const { offset, length, filterOffset, filterLength } = index.blocks[n];
      if (kind === "block") {
        const block = this.decodeBlock(shard, index, n, await this.read(shard, offset, length));
        this.cache.set(key, block, block.length);
      } else {
        const plain = this.open(shard, `filter/${n}`, await this.read(shard, filterOffset, filterLength));
        this.cache.set(key, plain, plain.length);
      }
    });
  }

  /** One fetch per piece at a time; a piece already cached is not fetched again. */
  private once(key: string, fetch: () => Promise<void>): Promise<void> {
    if (this.cache.get(key)) return Promise.resolve();
    let running = this.fetching.get(key);
    if (!running) {
      running = fetch().finally(() => this.fetching.delete(key));
      this.fetching.set(key, running);
    }
    return running;
  }

  private async read(shard: ShardInfo, offset: number, length: number): Promise<Buffer> {
    const name = this.shardName(shard);
    try {
      const bytes = await this.store.getRange(name, offset, length);
      if (bytes.length !== length) throw this.damaged(shard, `is shorter than generation ${this.generation.sequence} says`);
      return bytes;
    } catch (error) {
      if (error instanceof ObjectNotFoundError) {
        // A prune made a newer generation and deleted this one's shards while this ran: not damage.
        const newer = (await listGenerations(this.store)).filter((key) => key > this.name).sort().at(-1);
        if (newer) {
          throw new VaultBusyError(
            `the vault was pruned while this ran: its index was compacted into ${newer}, replacing ${this.name} whose shard ${name} this was reading; run it again`,
          );
        }
        throw new IntegrityError(
          `index shard ${name} of generation object ${this.name} is missing: the chunks it indexes cannot be found. Run \`bulwark verify\`; ` +
            "if a newer index-gen object was deleted, put it back",
        );
      }
      throw error;
    }
  }

  private open(shard: ShardInfo, place: string, sealed: Uint8Array): Buffer {
    const { sequence, prefixBits } = this.generation;
    return openObject(this.dataKey, sealed, pieceData(sequence, prefixBits, shard.prefix, place), `index shard ${this.shardName(shard)} (${place})`);
  }

  private damaged(shard: ShardInfo, why: string): IntegrityError {
    return new IntegrityError(`index shard ${this.shardName(shard)} ${why}: the vault's index is damaged. Run \`bulwark verify\``);
  }

  private decodeIndex(shard: ShardInfo, sealed: Uint8Array): BlockIndex {
    const plain = this.open(shard, "index", sealed);
    if (plain.length < INDEX_HEAD_BYTES || !plain.subarray(0, INDEX_MAGIC.length).equals(INDEX_MAGIC)) throw this.damaged(shard, "has an unknown block index format");
    const entries = plain.readUInt32LE(INDEX_MAGIC.length);
    const count = plain.readUInt32LE(INDEX_MAGIC.length + 4);
    if (entries !== shard.entries || plain.length !== INDEX_HEAD_BYTES + count * INDEX_BLOCK_BYTES) throw this.damaged(shard, "has a block index that does not match its generation");
    const firstIds = Buffer.alloc(count * ID_BYTES);
    const blocks: BlockIndex["blocks"] = [];
    let total = 0;
    for (let n = 0; n < count; n++) {
      const at = INDEX_HEAD_BYTES + n * INDEX_BLOCK_BYTES;
      plain.copy(firstIds, n * ID_BYTES, at, at + ID_BYTES);
      const block = {
        offset: plain.readUInt32LE(at + ID_BYTES),
        length: plain.readUInt32LE(at + ID_BYTES + 4),
        filterOffset: plain.readUInt32LE(at + ID_BYTES + 8),
        filterLength: plain.readUInt32LE(at + ID_BYTES + 12),
        entries: plain.readUInt32LE(at + ID_BYTES + 16),
      };
      if (block.offset + block.length > shard.indexOffset || block.filterOffset + block.filterLength > shard.indexOffset) throw this.damaged(shard, "has a block index pointing past its blocks");
      total += block.entries;
      blocks.push(block);
    }
    if (total !== entries) throw this.damaged(shard, "has a block index that does not add up");
    return { firstIds, blocks };
  }

  private decodeBlock(shard: ShardInfo, index: BlockIndex, n: number, sealed: Uint8Array): Buffer {
    const plain = this.open(shard, `block/${n}`, sealed);
    const entries = plain.subarray(BLOCK_MAGIC.length);
    if (!plain.subarray(0, BLOCK_MAGIC.length).equals(BLOCK_MAGIC) || entries.length !== index.blocks[n].entries * SHARD_ENTRY_BYTES) {
      throw this.damaged(shard, `has a block ${n} that does not match its index`);
    }
    if (entries.length > 0 && !entries.subarray(0, ID_BYTES).equals(index.firstIds.subarray(n * ID_BYTES, (n + 1) * ID_BYTES))) {
      throw this.damaged(shard, `has a block ${n} that does not begin where its index says`);
    }
    return entries;
  }
}

/** The block an id can only lie in (the last whose first id is not above it), or -1. */
function blockOf(index: BlockIndex, id: Uint8Array): number {
  let low = 0;
  let high = index.blocks.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (Buffer.compare(index.firstIds.subarray(middle * ID_BYTES, (middle + 1) * ID_BYTES), id) <= 0) {
      found = middle;
      low = middle + 1;
    } else high = middle - 1;
  }
  return found;
}

function indexKey(shard: ShardInfo): string {
  return `${shard.prefix}/index`;
}

function pieceKey(shard: ShardInfo, kind: "block" | "filter", n: number): string {
  return `${shard.prefix}/${kind}/${n}`;
}

function entryAt(block: Buffer, at: number): ChunkLocation {
  return {
    pack: block.toString("hex", at + ID_BYTES, at + ID_BYTES + 16),
    offset: block.readUInt32LE(at + ID_BYTES + 16),
    length: block.readUInt32LE(at + ID_BYTES + 20),
    rawLength: block.readUInt32LE(at + ID_BYTES + 24),
    type: block[at + ID_BYTES + 28],
  };
}

function searchBlock(block: Buffer, id: Uint8Array): ChunkLocation | undefined {
  let low = 0;
  let high = block.length / SHARD_ENTRY_BYTES - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const at = middle * SHARD_ENTRY_BYTES;
    const order = Buffer.compare(block.subarray(at, at + ID_BYTES), id);
    if (order === 0) return entryAt(block, at);
    if (order < 0) low = middle + 1;
    else high = middle - 1;
  }
  return undefined;
}

// Ids are keyed hashes (uniform), so their middle bytes serve as the filter's two hashes.
function filterProbe(id: Uint8Array, probe: number, bits: number): number {
  const h1 = ((id[16] << 24) | (id[17] << 16) | (id[18] << 8) | id[19]) >>> 0;
  const h2 = (((id[20] << 24) | (id[21] << 16) | (id[22] << 8) | id[23]) | 1) >>> 0;
  return (h1 + probe * h2) % bits;
}

function buildFilter(entries: Buffer, count: number): Buffer {
  const filter = Buffer.alloc(Math.max(8, Math.ceil((count * FILTER_BITS_PER_ENTRY) / 8)));
  const bits = filter.length * 8;
  for (let i = 0; i < count; i++) {
    const id = entries.subarray(i * SHARD_ENTRY_BYTES, i * SHARD_ENTRY_BYTES + ID_BYTES);
    for (let p = 0; p < FILTER_PROBES; p++) {
      const bit = filterProbe(id, p, bits);
      filter[bit >> 3] |= 1 << (bit & 7);
    }
  }
  return filter;
}

function filterMayHold(filter: Buffer, id: Uint8Array): boolean {
  const bits = filter.length * 8;
  for (let p = 0; p < FILTER_PROBES; p++) {
    const bit = filterProbe(id, p, bits);
    if ((filter[bit >> 3] & (1 << (bit & 7))) === 0) return false;
  }
  return true;
}
