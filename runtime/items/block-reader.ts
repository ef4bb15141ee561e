/**
 * Random access into a disk point: the bytes of any range of the disk, read through the vault
 * (each chunk decrypted and authenticated) without restoring the disk. A read fetches only the
 * tree nodes and blocks it covers; zero blocks (the all-zero id, stored as nothing) read as zeros.
 * Recently read blocks and tree nodes stay in small LRU caches bounded in bytes, because a
 * filesystem reader comes back to the same metadata blocks again and again.
 */
import { CHUNK_DATA, CHUNK_TREE } from "../engine/chunk-codec.ts";
import { ID_BYTES, isZeroId } from "../engine/crypto.ts";
import type { BlockLayout, PointManifest } from "../engine/point.ts";
import { mapLimit, type Vault } from "../engine/vault.ts";
import { IntegrityError, UsageError } from "../errors.ts";

/** Bytes at any offset of a disk (a point, a partition of it, an image file in a test). */
export interface RandomAccess {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export interface DiskPointReader extends RandomAccess {
  readonly point: PointManifest;
  /** What the reads cost so far: chunks fetched from the vault (tree nodes and blocks) and their bytes. */
  readonly fetched: { chunks: number; bytes: number };
}

export interface DiskPointOptions {
  /** Bytes of decoded blocks kept for later reads (default 8 MiB). */
  cacheBytes?: number;
}

const DEFAULT_CACHE_BYTES = 8 * 1024 * 1024;
/** Blocks of one read fetched at once: enough to overlap the store's latency, few enough to stay in the cache. */
const BLOCKS_IN_FLIGHT = 8;
/** Tree nodes kept: each is 128 KiB and covers 256 MiB of disk at 64 KiB blocks. */
const TREE_CACHE_BYTES = 1024 * 1024;

/** Opens a disk point (an id, a unique prefix or "latest") of the vault for random reads. */
export async function openDiskPoint(vault: Vault, pointId: string, options: DiskPointOptions = {}): Promise<DiskPointReader> {
  return diskPointReader(vault, await vault.resolvePoint(pointId), options);
}

/** A disk point already read (a VM point's member, say) for random reads. */
export function diskPointReader(vault: Vault, point: PointManifest, options: DiskPointOptions = {}): DiskPointReader {
  const content = point.content;
  if (point.kind !== "disk" || !content || content.layout !== "blocks") {
    throw new UsageError(`point ${point.id.slice(0, 12)} is a ${point.kind} point, not a disk point: give the id of a disk point (a VM point's disks are its members)`);
  }
  return new BlockMapReader(vault, point, content, options.cacheBytes ?? DEFAULT_CACHE_BYTES);
}

class BlockMapReader implements DiskPointReader {
  readonly size: number;
  readonly point: PointManifest;
  readonly fetched = { chunks: 0, bytes: 0 };
  private readonly vault: Vault;
  private readonly layout: BlockLayout;
  private readonly blocks: ByteBoundedCache;
  private readonly nodes = new ByteBoundedCache(TREE_CACHE_BYTES);

  constructor(vault: Vault, point: PointManifest, layout: BlockLayout, cacheBytes: number) {
    this.vault = vault;
    this.point = point;
    this.layout = layout;
    this.size = point.size;
    this.blocks = new ByteBoundedCache(cacheBytes);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const out = Buffer.alloc(length);
    const { blockSize } = this.layout;
    const first = Math.floor(offset / blockSize);
    const last = Math.floor((offset + length - 1) / blockSize);
    const indexes = Array.from({ length: length === 0 ? 0 : last - first + 1 }, (_, i) => first + i);
    await mapLimit(indexes, BLOCKS_IN_FLIGHT, async (index) => {
      const block = await this.block(index);
      const blockStart = index * blockSize;
      const from = Math.max(offset, blockStart);
      const to = Math.min(offset + length, blockStart + blockSize);
      // A zero block is undefined: `out` is already zeros there.
      block?.copy(out, from - offset, from - blockStart, to - blockStart);
    });
    return out;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new UsageError(`cannot read ${length} bytes at offset ${offset} of disk point ${this.point.id.slice(0, 12)}: offset and length must be whole numbers, not negative`);
    }
    if (offset + length > this.size) {
      throw new UsageError(
        `cannot read ${length} bytes at offset ${offset} of disk point ${this.point.id.slice(0, 12)}: the disk holds ${this.size} bytes, so the read ends ${offset + length - this.size} bytes past its end`,
      );
    }
  }

  /** A block's bytes, or undefined for a zero block. */
  private async block(index: number): Promise<Buffer | undefined> {
    const { blockSize, blocksPerNode } = this.layout;
    const node = await this.node(Math.floor(index / blocksPerNode));
    const at = (index % blocksPerNode) * ID_BYTES;
    const id = node.subarray(at, at + ID_BYTES);
    if (id.length !== ID_BYTES) throw new IntegrityError(`the block map of point ${this.point.id.slice(0, 12)} has no entry for block ${index}: the point is damaged. Run \`bulwark verify\`.`);
    if (isZeroId(id)) return undefined;
    const expected = Math.min(blockSize, this.size - index * blockSize);
    const bytes = await this.blocks.get(id.toString("hex"), () => this.fetch(CHUNK_DATA, id));
    if (bytes.length !== expected) {
      throw new IntegrityError(`block ${index} of point ${this.point.id.slice(0, 12)} holds ${bytes.length} bytes, not ${expected}: the point is damaged. Run \`bulwark verify\`.`);
    }
    return bytes;
  }

  private node(n: number): Promise<Buffer> {
    const hex = this.layout.tree[n];
    if (hex === undefined) throw new IntegrityError(`the block map of point ${this.point.id.slice(0, 12)} has no tree node ${n}: the point is damaged. Run \`bulwark verify\`.`);
    return this.nodes.get(hex, () => this.fetch(CHUNK_TREE, Buffer.from(hex, "hex")));
  }

  private async fetch(type: number, id: Uint8Array): Promise<Buffer> {
    // readChunk authenticates the chunk (AES-GCM with its id as associated data) before returning it.
    const bytes = await this.vault.readChunk(type, id);
    this.fetched.chunks++;
    this.fetched.bytes += this.vault.locate(id).length;
    return bytes;
  }
}

/**
 * Least recently used entries evicted first once their bytes pass the bound. Concurrent reads of
 * one key share a single fetch; a failed fetch is not kept.
 */
class ByteBoundedCache {
  private readonly entries = new Map<string, Promise<Buffer>>();
  private readonly sizes = new Map<string, number>();
  private readonly maxBytes: number;
  private bytes = 0;

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get(key: string, load: () => Promise<Buffer>): Promise<Buffer> {
    const cached = this.entries.get(key);
    if (cached) {
      // Map order is insertion order: re-inserting makes this the most recently used.
      this.entries.delete(key);
      this.entries.set(key, cached);
      return cached;
    }
    const loading = load();
    this.entries.set(key, loading);
    loading.then(
      (value) => {
        if (this.entries.get(key) !== loading) return;
        this.sizes.set(key, value.length);
        this.bytes += value.length;
        this.evict();
      },
      () => {
        if (this.entries.get(key) === loading) this.entries.delete(key);
      },
    );
    return loading;
  }

  private evict(): void {
    for (const key of this.entries.keys()) {
      if (this.bytes <= this.maxBytes) return;
      const size = this.sizes.get(key);
      // Still loading: its size is not known yet, and a reader is waiting on it.
      if (size === undefined) continue;
      this.entries.delete(key);
      this.sizes.delete(key);
      this.bytes -= size;
    }
  }
}
