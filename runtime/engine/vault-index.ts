/**
 * A vault's chunk index as every command sees it: the index objects written since the newest
 * generation (the delta: backups since the last prune), loaded whole into memory, over the
 * generation's shards (index-shards.ts), read block by block on demand. A vault with no
 * generation is the delta alone, as before shards existed.
 *
 * Lookups stay synchronous (they run per chunk in hot loops); what the shards hold is answered
 * only after an async prepare(ids) fetched the blocks those ids fall in. Looking up an id that
 * was not prepared throws IndexNotPreparedError, never "absent": absent would make a writer store
 * the chunk again at best and a reader report it missing at worst, for nothing but a bug.
 */
import { ChunkIndex, type ChunkLocation } from "./chunk-index.ts";
import type { IndexGeneration, ShardReader } from "./index-shards.ts";

/** Ids prepared and looked up together by forEachLocation: their blocks fit the cache many times. */
const SLICE = 256;

export class VaultIndex {
  /** Index objects loaded whole, and what this process added (packs it wrote, staging, verify). */
  readonly delta = new ChunkIndex();
  private shards: ShardReader | undefined;
  /** Packs found missing: shard entries in them are forgotten too (their chunks must be stored again). */
  private readonly droppedPacks = new Set<string>();

  /** The generation whose shards back this index (still set once loadWhole() read them), if any. */
  readonly generation: IndexGeneration | undefined;

  constructor(shards?: ShardReader) {
    this.shards = shards;
    this.generation = shards?.generation;
  }

  /** Entries held in memory (the delta); shard entries are not counted. */
  get size(): number {
    return this.delta.size;
  }

  /**
   * Makes the ids answerable by has() and lookup() (at most PREPARE_MAX of them at once: the cache
   * holds what one prepare fetches, not more, so more ids go through forEachLocation).
   */
  async prepare(ids: readonly Uint8Array[], options: { present?: boolean } = {}): Promise<void> {
    if (!this.shards || ids.length === 0) return;
    await this.shards.prepare(ids.filter((id) => !this.delta.has(id)), options);
  }

  /** Prepares and looks up any number of ids, a slice at a time, in order. */
  async forEachLocation(
    ids: readonly Uint8Array[],
    visit: (id: Uint8Array, location: ChunkLocation | "pending" | undefined, index: number) => void,
    options: { present?: boolean } = {},
  ): Promise<void> {
    for (let at = 0; at < ids.length; at += SLICE) {
      const slice = ids.slice(at, at + SLICE);
      await this.prepare(slice, options);
      slice.forEach((id, i) => visit(id, this.lookup(id), at + i));
    }
  }

  has(id: Uint8Array): boolean {
    return this.lookup(id) !== undefined;
  }

  lookup(id: Uint8Array): ChunkLocation | "pending" | undefined {
    const local = this.delta.lookup(id);
    if (local !== undefined || !this.shards) return local;
    const entry = this.shards.find(id);
    return entry && !this.droppedPacks.has(entry.pack) ? entry : undefined;
  }

  markPending(id: Uint8Array): void {
    this.delta.markPending(id);
  }

  add(id: Uint8Array, location: ChunkLocation): void {
    this.delta.add(id, location);
  }

  addEntry(id: Uint8Array, pack: string, offset: number, length: number, rawLength: number, type: number): void {
    this.delta.addEntry(id, pack, offset, length, rawLength, type);
  }

  dropPending(id: Uint8Array): void {
    this.delta.dropPending(id);
  }

  dropPacks(packIds: ReadonlySet<string>): number {
    if (this.shards) for (const pack of packIds) this.droppedPacks.add(pack);
    return this.delta.dropPacks(packIds);
  }

  /** The delta's entries only (the shards are read by loadWhole). */
  entries(): Iterable<[Buffer, ChunkLocation]> {
    return this.delta.entries();
  }

  /**
   * Reads every shard into memory (prune and verify act on the whole index; bounding their memory
   * is not done yet). An entry in the delta wins over the shards' (it is newer). Each shard entry is
   * passed to `visit` too. Afterwards every lookup is answered from memory.
   */
  async loadWhole(visit?: (id: Buffer, location: ChunkLocation) => void): Promise<void> {
    const shards = this.shards;
    if (!shards) return;
    for await (const [id, location] of shards.entries()) {
      visit?.(id, location);
      if (!this.delta.has(id) && !this.droppedPacks.has(location.pack)) this.delta.add(id, location);
    }
    this.shards = undefined;
  }
}
