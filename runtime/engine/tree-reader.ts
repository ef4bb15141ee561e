/**
 * Reads a folder point's entries back (format: tree-entries.ts): in order from any key through its
 * index chunks, and a file's data chunks. Entry and index chunks are kept within a small bound, so
 * a walk of a tree of any size holds a few chunks at a time.
 */
import { IntegrityError } from "../errors.ts";
import { CHUNK_TREE } from "./chunk-codec.ts";
import { ID_BYTES } from "./crypto.ts";
import { STREAM_TREE_ENTRY, type TreeLayout } from "./point.ts";
import { compareKeys, decodeEntries, decodeIndex, type ChunkRef, type IndexRecord, type TreeEntry } from "./tree-entries.ts";
import type { Vault } from "./vault.ts";

/** Decoded chunks kept (entry and index chunks are at most 1 MiB each). */
const CHUNKS_KEPT = 8;

export class TreeEntriesReader {
  private readonly vault: Vault;
  private readonly layout: TreeLayout;
  private readonly kept = new Map<string, Promise<TreeEntry[] | IndexRecord[]>>();
  /** Bytes of chunks fetched from the vault, as stored (compressed and sealed). */
  bytesFetched = 0;

  constructor(vault: Vault, layout: TreeLayout) {
    this.vault = vault;
    this.layout = layout;
  }

  /** The entries from the entry chunk that holds `key` (or would), in order, to the end. */
  async *from(key: { dir: string; name: string }): AsyncGenerator<TreeEntry> {
    let started = false;
    let previous: IndexRecord | undefined;
    for await (const record of this.records()) {
      if (!started && compareKeys(record, key) <= 0) {
        previous = record;
        continue;
      }
      if (!started) {
        started = true;
        if (previous) yield* await this.entries(previous);
      }
      yield* await this.entries(record);
    }
    if (!started && previous) yield* await this.entries(previous);
  }

  /** Every entry, in order. */
  async *all(): AsyncGenerator<TreeEntry> {
    for await (const record of this.records()) yield* await this.entries(record);
  }

  /** A file's data chunks, in order. */
  async *dataChunks(entry: TreeEntry): AsyncGenerator<ChunkRef> {
    if (entry.chunks) {
      yield* entry.chunks;
      return;
    }
    for (const nodeHex of entry.contentTree ?? []) {
      const node = await this.fetch(nodeHex);
      if (node.length % STREAM_TREE_ENTRY !== 0) throw new IntegrityError(`content tree chunk ${nodeHex} of ${entry.name} is not whole entries: the point is damaged`);
      for (let at = 0; at < node.length; at += STREAM_TREE_ENTRY) {
        yield [node.toString("hex", at, at + ID_BYTES), node.readUInt32LE(at + ID_BYTES)];
      }
    }
  }

  private async *records(): AsyncGenerator<IndexRecord> {
    let previous: IndexRecord | undefined;
    for (const indexHex of this.layout.index) {
      const records = (await this.decoded(indexHex, (chunk, id) => decodeIndex(chunk, id))) as IndexRecord[];
      for (const record of records) {
        if (previous && compareKeys(previous, record) >= 0) throw new IntegrityError(`index chunk ${indexHex} does not follow on from the one before: the point is damaged`);
        previous = record;
        yield record;
      }
    }
  }

  private async entries(record: IndexRecord): Promise<TreeEntry[]> {
    const entries = (await this.decoded(record.id, (chunk, id) => decodeEntries(chunk, id))) as TreeEntry[];
    if (entries.length !== record.entries || (entries.length > 0 && compareKeys(entries[0], record) !== 0)) {
      throw new IntegrityError(`entry chunk ${record.id} does not hold what the index says: the point is damaged`);
    }
    return entries;
  }

  private decoded(hex: string, decode: (chunk: Buffer, id: Buffer) => TreeEntry[] | IndexRecord[]): Promise<TreeEntry[] | IndexRecord[]> {
    let found = this.kept.get(hex);
    if (found) {
      this.kept.delete(hex);
      this.kept.set(hex, found);
      return found;
    }
    found = this.fetch(hex).then((chunk) => decode(chunk, Buffer.from(hex, "hex")));
    this.kept.set(hex, found);
    found.catch(() => this.kept.delete(hex));
    if (this.kept.size > CHUNKS_KEPT) this.kept.delete(this.kept.keys().next().value!);
    return found;
  }

  private async fetch(hex: string): Promise<Buffer> {
    const id = Buffer.from(hex, "hex");
    // readChunk first: it prepares the id's index block (sharded index), which locate needs.
    const chunk = await this.vault.readChunk(CHUNK_TREE, id);
    this.bytesFetched += this.vault.locate(id).length;
    return chunk;
  }
}
