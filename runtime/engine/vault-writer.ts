/**
 * Adds chunks to a vault: deduplicates against the index, has the codec pool compress and seal
 * new chunks (in batches), appends them to packs, commits packs, and then writes index objects
 * naming them. Nothing it writes is referenced until the caller writes a point manifest after
 * finish(), so an interrupted writer leaves only unreferenced packs that prune removes.
 */
import type { ObjectStore, ObjectWriter } from "../store/store.ts";
import type { CodecPool, EncodeItem } from "./codec-pool.ts";
import type { EncodedChunk } from "./chunk-codec.ts";
import { randomHex } from "./crypto.ts";
import { encodeIndex, type IndexedPack } from "./index-file.ts";
import { encodePackTrailer, packKey, type PackEntry } from "./pack.ts";
import type { Vault } from "./vault.ts";

/** Index objects are written every this many packs, so a long backup that dies keeps most of its work findable. */
const PACKS_PER_INDEX = 64;
/** Sealed chunks are gathered and written to the pack in pieces of this size. */
const WRITE_BYTES = 4 * 1024 * 1024;

interface OpenPack {
  id: string;
  writer: ObjectWriter;
  entries: PackEntry[];
  size: number;
  pending: Buffer[];
  pendingBytes: number;
}

export interface WriterStats {
  chunksNew: number;
  bytesNew: number;
  bytesStored: number;
}

export class VaultWriter {
  readonly stats: WriterStats = { chunksNew: 0, bytesNew: 0, bytesStored: 0 };
  readonly indexObjectsWritten: string[] = [];
  readonly packsWritten: string[] = [];
  /** Packs committed so far, with their entries (what an index object would name), when writeIndex is off. */
  readonly committedPacks: IndexedPack[] = [];
  private readonly vault: Vault;
  /** Where new chunks are compressed and sealed (a backup also hashes its reads there). */
  readonly pool: CodecPool;
  private readonly store: ObjectStore;
  private readonly writesIndex: boolean;
  /** Batches (of encoding work or appends) in flight at once. */
  private readonly maxInFlight: number;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private idle: (() => void)[] = [];
  private failure: unknown;
  private current: OpenPack | undefined;
  /** Appends to the current pack happen one after another on this chain. */
  private appendChain: Promise<void> = Promise.resolve();
  private readonly committing = new Set<Promise<void>>();
  private committedSinceIndex: IndexedPack[] = [];
  private readonly indexWrites: Promise<void>[] = [];

  /**
   * packStore: where packs go (default: the vault's store; a job stages them in the region's
   * transient storage). writeIndex false: no index objects are written; the caller names the
   * committed packs in the vault once it has promoted them.
   */
  constructor(vault: Vault, pool: CodecPool, options: { maxInFlight?: number; packStore?: ObjectStore; writeIndex?: boolean } = {}) {
    this.vault = vault;
    this.pool = pool;
    this.store = options.packStore ?? vault.store;
    this.writesIndex = options.writeIndex ?? true;
    this.maxInFlight = options.maxInFlight ?? Math.max(4, pool.threads * 3);
  }

  /** True if the chunk is already stored (or on its way); such a chunk costs nothing. The id must be prepared (vault.index.prepare). */
  known(id: Uint8Array): boolean {
    return this.vault.index.has(id);
  }

  /**
   * Stores the chunks of one buffer that the vault does not have yet (the others cost nothing).
   * The buffer is handed over: the caller must not use it afterwards. Returns once the work is
   * accepted; it goes on in the background with bounded memory, and errors surface on a later
   * call or in finish().
   */
  async putBatch(type: number, buffer: Uint8Array, candidates: EncodeItem[]): Promise<number> {
    this.throwIfFailed();
    // The ids' index blocks are fetched a slice at a time (a batch may need more than the cache
    // holds); each id's lookup and markPending run together, with no yield between them.
    const fresh: EncodeItem[] = [];
    await this.vault.index.forEachLocation(
      candidates.map((item) => item.id),
      (_, location, i) => {
        if (location !== undefined) return;
        const item = candidates[i];
        this.vault.index.markPending(item.id);
        // Ids travel by structured clone, which copies a view's whole underlying buffer: give each its own.
        const id = item.id.byteLength === item.id.buffer.byteLength ? item.id : new Uint8Array(item.id);
        fresh.push({ id, offset: item.offset, length: item.length });
      },
    );
    if (fresh.length === 0) return 0;
    await this.acquire();
    this.throwIfFailed();
    const rawLengths = fresh.map((item) => item.length);
    this.pool.encodeBatch(type, buffer, fresh).then(
      (encoded) => this.enqueueAppend(type, fresh, rawLengths, encoded),
      (error) => {
        this.fail(error);
        this.release();
      },
    );
    return fresh.length;
  }

  /** Stores one chunk unless the vault has it (the caller keeps its buffer). */
  async put(type: number, id: Uint8Array, raw: Uint8Array): Promise<boolean> {
    return (await this.putBatch(type, new Uint8Array(raw), [{ id: Buffer.from(id), offset: 0, length: raw.length }])) > 0;
  }

  /** Stores an already sealed chunk as it is (prune copies live chunks out of old packs this way). */
  async putSealed(type: number, id: Uint8Array, sealed: Buffer, rawLength: number, options: { replace?: boolean } = {}): Promise<boolean> {
    this.throwIfFailed();
    if (!options.replace) await this.vault.index.prepare([id]);
    if (!options.replace && this.vault.index.has(id)) return false;
    this.vault.index.markPending(id);
    await this.acquire();
    this.enqueueAppend(type, [{ id: Buffer.from(id), offset: 0, length: rawLength }], [rawLength], [{ sealed, compressed: false }], false);
    return true;
  }

  /** Commits every pack and writes the index objects naming them. */
  async finish(): Promise<void> {
    await this.drain();
    this.appendChain = this.appendChain.then(() => this.closeCurrent());
    await this.appendChain;
    await Promise.all(this.committing);
    this.throwIfFailed();
    this.writeIndexObject();
    await Promise.all(this.indexWrites);
    this.throwIfFailed();
  }

  /** Gives up: aborts the open pack; committed packs stay as unreferenced garbage for prune. */
  async abort(): Promise<void> {
    this.failure ??= new Error("aborted");
    await this.appendChain.catch(() => {});
    await this.current?.writer.abort();
    this.current = undefined;
    await Promise.allSettled(this.committing);
  }

  private enqueueAppend(type: number, items: EncodeItem[], rawLengths: number[], encoded: EncodedChunk[], counts = true): void {
    this.appendChain = this.appendChain
      .then(async () => {
        for (let i = 0; i < items.length; i++) {
          if (counts) {
            this.stats.chunksNew++;
            this.stats.bytesNew += rawLengths[i];
          }
          await this.append(type, Buffer.from(items[i].id), encoded[i].sealed, rawLengths[i]);
        }
      })
      .catch((error) => this.fail(error))
      .finally(() => this.release());
  }

  private async append(type: number, id: Buffer, sealed: Buffer, rawLength: number): Promise<void> {
    if (this.failure) return;
    let pack = this.current;
    if (!pack) {
      const packId = randomHex(16);
      pack = { id: packId, writer: this.store.createWriter(packKey(packId)), entries: [], size: 0, pending: [], pendingBytes: 0 };
      this.current = pack;
    }
    pack.pending.push(sealed);
    pack.pendingBytes += sealed.length;
    pack.entries.push({ type, id, offset: pack.size, length: sealed.length, rawLength });
    pack.size += sealed.length;
    this.stats.bytesStored += sealed.length;
    if (pack.pendingBytes >= WRITE_BYTES) await this.flushPending(pack);
    if (pack.size >= this.vault.config.packSize) await this.closeCurrent();
  }

  private async flushPending(pack: OpenPack): Promise<void> {
    if (pack.pendingBytes === 0) return;
    const joined = pack.pending.length === 1 ? pack.pending[0] : Buffer.concat(pack.pending, pack.pendingBytes);
    pack.pending = [];
    pack.pendingBytes = 0;
    await pack.writer.write(joined);
  }

  private async closeCurrent(): Promise<void> {
    const pack = this.current;
    if (!pack) return;
    this.current = undefined;
    if (this.failure) {
      await pack.writer.abort();
      return;
    }
    const trailer = encodePackTrailer(this.vault.master.dataKey, pack.id, pack.entries, this.vault.master.format);
    pack.pending.push(trailer);
    pack.pendingBytes += trailer.length;
    await this.flushPending(pack);
    this.stats.bytesStored += trailer.length;
    // Commit in the background; bound the packs being committed at once.
    const commit = pack.writer.commit().then(
      () => this.committed(pack),
      async (error) => {
        await pack.writer.abort();
        this.fail(error);
      },
    );
    const tracked = commit.finally(() => this.committing.delete(tracked));
    this.committing.add(tracked);
    if (this.committing.size >= 3) await Promise.race(this.committing);
  }

  private committed(pack: OpenPack): void {
    this.packsWritten.push(pack.id);
    for (const entry of pack.entries) {
      this.vault.index.add(entry.id, { pack: pack.id, offset: entry.offset, length: entry.length, rawLength: entry.rawLength, type: entry.type });
    }
    this.committedSinceIndex.push({ packId: pack.id, entries: pack.entries });
    // Kept only when the caller names the packs itself (staging): otherwise it would grow with the backup.
    if (!this.writesIndex) this.committedPacks.push({ packId: pack.id, entries: pack.entries });
    if (this.committedSinceIndex.length >= PACKS_PER_INDEX) this.writeIndexObject();
  }

  private writeIndexObject(): void {
    if (!this.writesIndex) {
      this.committedSinceIndex = [];
      return;
    }
    if (this.committedSinceIndex.length === 0) return;
    const packs = this.committedSinceIndex;
    this.committedSinceIndex = [];
    const name = `index/${randomHex(16)}`;
    const write = this.vault.store.create(name, encodeIndex(this.vault.master.dataKey, name, packs, this.vault.master.format)).then(
      () => {
        this.indexObjectsWritten.push(name);
      },
      (error) => this.fail(error),
    );
    this.indexWrites.push(write);
  }

  private acquire(): Promise<void> {
    if (this.inFlight < this.maxInFlight || this.failure) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private release(): void {
    const next = this.waiters.shift();
    if (next) next(); // the slot passes straight to the next waiter
    else this.inFlight--;
    if (this.inFlight === 0) for (const idle of this.idle.splice(0)) idle();
  }

  private async drain(): Promise<void> {
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  private fail(error: unknown): void {
    this.failure ??= error;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}
