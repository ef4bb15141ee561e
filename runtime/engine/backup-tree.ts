/**
 * Backs up a folder as a "tree" point (issue 12, "Files and folders"; format in tree-entries.ts).
 * Regular files go through the same content-defined chunking as file points; folders, symlinks,
 * hard links (one content, every name), special files (type and rdev, never read), modes, owners
 * and times (ns) are entries. Against the source's previous tree point (its chain: same host and
 * path), a file whose size, mtime, ctime and inode are unchanged takes its content references
 * from there without being read. What cannot be read is reported and left out; the rest goes on,
 * and the point is committed.
 */
import os from "node:os";
import type { BigIntStats } from "node:fs";
import { CHUNK_DATA, CHUNK_TREE } from "./chunk-codec.ts";
import { Chunker } from "./chunker.ts";
import { keyedId, secretKey, ID_BYTES } from "./crypto.ts";
import { manifestOf, withWriter, type BackupOptions, type PointDescription } from "./backup.ts";
import { nextInChain } from "./chain.ts";
import { commitPoint } from "./commit.ts";
import { ENTRIES_PER_NODE, STREAM_TREE_ENTRY, type PointManifest, type TreeLayout } from "./point.ts";
import {
  compareKeys,
  encodeLine,
  entryPath,
  ENTRY_CHUNK_MAX,
  ENTRY_CHUNK_MIN,
  ENTRY_CUT_MASK,
  INDEX_RECORDS,
  INLINE_CHUNKS,
  type ChunkRef,
  type EntryType,
  type IndexRecord,
  type TreeEntry,
} from "./tree-entries.ts";
import { TreeEntriesReader } from "./tree-reader.ts";
import type { Vault } from "./vault.ts";
import type { VaultWriter } from "./vault-writer.ts";
import { describeError, ObjectNotFoundError, SourceError } from "../errors.ts";
import { readFolderFile, walkFolder, type FolderItem } from "../sources/folder.ts";

export interface TreeProblem {
  path: string;
  error: string;
}

export interface TreeBackupReport {
  folders: number;
  files: number;
  /** Files whose content was read (new or changed). */
  filesRead: number;
  /** Files whose content was taken from the previous point without reading them. */
  filesUnchanged: number;
  symlinks: number;
  hardLinks: number;
  special: number;
  /** Items left out, with why (they vanished, could not be read). */
  problems: TreeProblem[];
}

export interface TreeBackupOptions extends BackupOptions {
  exclude?: readonly string[];
  onProblem?: (problem: TreeProblem) => void;
}

type KeyedId = ReturnType<typeof secretKey>;

/** Every chunk the point references, as stream-tree entries in chunks of ENTRIES_PER_NODE. */
class References {
  readonly tree: string[] = [];
  private node = Buffer.alloc(ENTRIES_PER_NODE * STREAM_TREE_ENTRY);
  private count = 0;

  private readonly writer: VaultWriter;
  private readonly idKey: KeyedId;

  constructor(writer: VaultWriter, idKey: KeyedId) {
    this.writer = writer;
    this.idKey = idKey;
  }

  async add(id: Buffer, length: number): Promise<void> {
    id.copy(this.node, this.count * STREAM_TREE_ENTRY);
    this.node.writeUInt32LE(length, this.count * STREAM_TREE_ENTRY + ID_BYTES);
    if (++this.count === ENTRIES_PER_NODE) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.count === 0) return;
    const bytes = Buffer.from(this.node.subarray(0, this.count * STREAM_TREE_ENTRY));
    const id = keyedId(this.idKey, bytes);
    await this.writer.put(CHUNK_TREE, id, bytes);
    this.tree.push(id.toString("hex"));
    this.count = 0;
  }
}

/** Metadata chunks (entry chunks, index chunks) written as whole lines and referenced. */
class EntryChunks {
  readonly index: string[] = [];
  private lines: Buffer[] = [];
  private bytes = 0;
  private first: TreeEntry | undefined;
  private count = 0;
  private records: Buffer[] = [];

  private readonly writer: VaultWriter;
  private readonly idKey: KeyedId;
  private readonly references: References;

  constructor(writer: VaultWriter, idKey: KeyedId, references: References) {
    this.writer = writer;
    this.idKey = idKey;
    this.references = references;
  }

  async add(entry: TreeEntry): Promise<void> {
    const line = encodeLine(entry);
    this.first ??= entry;
    this.lines.push(line);
    this.bytes += line.length;
    this.count++;
    const cut = this.bytes >= ENTRY_CHUNK_MAX || (this.bytes >= ENTRY_CHUNK_MIN && (keyedId(this.idKey, line).readUInt32LE(0) & ENTRY_CUT_MASK) === 0);
    if (cut) await this.cut();
  }

  async finish(): Promise<void> {
    await this.cut();
    await this.flushIndex();
  }

  private async cut(): Promise<void> {
    if (this.count === 0) return;
    const id = await this.store(Buffer.concat(this.lines));
    const record: IndexRecord = { id: id.toString("hex"), dir: this.first!.dir, name: this.first!.name, entries: this.count };
    this.records.push(encodeLine(record));
    this.lines = [];
    this.bytes = 0;
    this.count = 0;
    this.first = undefined;
    if (this.records.length === INDEX_RECORDS) await this.flushIndex();
  }

  private async flushIndex(): Promise<void> {
    if (this.records.length === 0) return;
    this.index.push((await this.store(Buffer.concat(this.records))).toString("hex"));
    this.records = [];
  }

  private async store(bytes: Buffer): Promise<Buffer> {
    const id = keyedId(this.idKey, bytes);
    await this.writer.put(CHUNK_TREE, id, bytes);
    await this.references.add(id, bytes.length);
    return id;
  }
}

/** The previous point's entries, read beside the walk in the same order (a merge). */
class PreviousEntries {
  private readonly iterator: AsyncGenerator<TreeEntry> | undefined;
  private current: TreeEntry | undefined;
  private done = false;

  readonly reader: TreeEntriesReader | undefined;

  constructor(reader: TreeEntriesReader | undefined) {
    this.reader = reader;
    this.iterator = reader?.all();
  }

  /** The previous point's entry at this key, if it had one. */
  async at(key: { dir: string; name: string }): Promise<TreeEntry | undefined> {
    if (!this.iterator) return undefined;
    while (!this.done && (!this.current || compareKeys(this.current, key) < 0)) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
      else this.current = next.value;
    }
    return this.current && compareKeys(this.current, key) === 0 ? this.current : undefined;
  }
}

/** A file's content as the entry records it. */
type Content = Pick<TreeEntry, "chunks" | "contentTree"> & { size: number };

export async function backupTree(
  vault: Vault,
  top: string,
  description: PointDescription,
  options: TreeBackupOptions = {},
): Promise<{ point: PointManifest; report: TreeBackupReport }> {
  const started = Date.now();
  const previous = await previousTreePoint(vault, description);
  const report: TreeBackupReport = { folders: 0, files: 0, filesRead: 0, filesUnchanged: 0, symlinks: 0, hardLinks: 0, special: 0, problems: [] };
  let manifest: PointManifest | undefined;
  await withWriter(
    vault,
    options,
    (writer) => writeTree(vault, writer, top, previous, report, options),
    async (result, writer, lock) => {
      const details = { ...report, problems: report.problems.length };
      manifest = manifestOf({ ...description, parent: previous?.id, details }, result.size, result.content, result.bytesRead, writer, started);
      await commitPoint(vault, manifest, lock);
    },
  );
  return { point: manifest!, report };
}

/** The newest point of this folder (the source's chain), if it is a tree point that still exists. */
async function previousTreePoint(vault: Vault, description: PointDescription): Promise<PointManifest | undefined> {
  // nextInChain reads only the kind and source of the point it is given.
  const probe = { kind: description.kind, source: { host: os.hostname(), ...description.source } } as PointManifest;
  const { previous } = await nextInChain(vault, probe);
  if (!previous) return undefined;
  const point = await vault.readPoint(previous).catch((error) => {
    // A deleted newest point: this backup reads everything (verify and `points` report the gap).
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  });
  return point?.content?.layout === "tree" ? point : undefined;
}

async function writeTree(
  vault: Vault,
  writer: VaultWriter,
  top: string,
  previous: PointManifest | undefined,
  report: TreeBackupReport,
  options: TreeBackupOptions,
): Promise<{ content: TreeLayout; size: number; bytesRead: number }> {
  const idKey = secretKey(vault.master.idKey);
  const chunker = new Chunker(vault.master.idKey, vault.config.chunker);
  const references = new References(writer, idKey);
  const entries = new EntryChunks(writer, idKey, references);
  const before = new PreviousEntries(previous ? new TreeEntriesReader(vault, previous.content as TreeLayout) : undefined);
  /** Files with several names, by "dev:ino": later names take the first name's content and times (one inode) without a read. */
  const linked = new Map<string, Content & Pick<TreeEntry, "mtime" | "atime" | "ctime">>();
  let size = 0;
  let bytesRead = 0;
  const problem = (path: string, error: unknown) => {
    const p = { path, error: describeError(error) };
    report.problems.push(p);
    options.onProblem?.(p);
  };

  /** A file's data chunks, written, and its content as the entry records it. */
  const chunkFile = async (item: FolderItem): Promise<Content> => {
    /** The data chunks not yet in a content-tree chunk (at most ENTRIES_PER_NODE). */
    let refs: ChunkRef[] = [];
    const contentTree: string[] = [];
    let fileSize = 0;
    const flushNode = async () => {
      const bytes = Buffer.alloc(refs.length * STREAM_TREE_ENTRY);
      refs.forEach(([hex, length], i) => {
        bytes.write(hex, i * STREAM_TREE_ENTRY, "hex");
        bytes.writeUInt32LE(length, i * STREAM_TREE_ENTRY + ID_BYTES);
      });
      const id = keyedId(idKey, bytes);
      await writer.put(CHUNK_TREE, id, bytes);
      await references.add(id, bytes.length);
      contentTree.push(id.toString("hex"));
      refs = [];
    };
    const emit = async (chunk: Buffer) => {
      const id = keyedId(idKey, chunk);
      await writer.put(CHUNK_DATA, id, chunk);
      await references.add(id, chunk.length);
      refs.push([id.toString("hex"), chunk.length]);
      if (refs.length === ENTRIES_PER_NODE) await flushNode();
    };
    let buffered: Buffer = Buffer.alloc(0);
    const cut = async (final: boolean) => {
      let at = 0;
      for (;;) {
        const length = chunker.next(buffered.subarray(at), final);
        if (length === 0) break;
        // Copy so the chunk does not pin the whole read buffer while it waits to be encoded.
        await emit(Buffer.from(buffered.subarray(at, at + length)));
        at += length;
        if (at === buffered.length) break;
      }
      buffered = buffered.subarray(at);
    };
    // Pieces are gathered until there is enough to cut, then joined once.
    let pieces: Buffer[] = [];
    let piecesBytes = 0;
    const join = () => {
      if (pieces.length > 0) buffered = Buffer.concat([buffered, ...pieces]);
      pieces = [];
      piecesBytes = 0;
    };
    for await (const piece of readFolderFile(item)) {
      fileSize += piece.length;
      bytesRead += piece.length;
      options.onProgress?.(bytesRead);
      pieces.push(piece);
      piecesBytes += piece.length;
      if (buffered.length + piecesBytes >= vault.config.chunker.max * 2) {
        join();
        await cut(false);
      }
    }
    join();
    await cut(true);
    if (contentTree.length === 0 && refs.length <= INLINE_CHUNKS) return { size: fileSize, chunks: refs };
    if (refs.length > 0) await flushNode();
    return { size: fileSize, contentTree };
  };

  /** The previous point's content of this file, when it is unchanged (and its references, recorded again). */
  const unchangedContent = async (item: FolderItem, stats: BigIntStats): Promise<Content | undefined> => {
    const old = await before.at(item);
    if (!old || old.type !== "f" || old.size !== Number(stats.size) || old.ino !== Number(stats.ino)) return undefined;
    if (old.mtime !== String(stats.mtimeNs) || old.ctime !== String(stats.ctimeNs)) return undefined;
    let dataChunks = 0;
    for await (const [hex, length] of before.reader!.dataChunks(old)) {
      await references.add(Buffer.from(hex, "hex"), length);
      dataChunks++;
    }
    // Content-tree chunks are full (ENTRIES_PER_NODE entries) but the last.
    for (const [i, hex] of (old.contentTree ?? []).entries()) {
      await references.add(Buffer.from(hex, "hex"), Math.min(ENTRIES_PER_NODE, dataChunks - i * ENTRIES_PER_NODE) * STREAM_TREE_ENTRY);
    }
    return { size: old.size, chunks: old.chunks, contentTree: old.contentTree };
  };

  for await (const item of walkFolder(top, { exclude: options.exclude ?? [], onProblem: problem })) {
    const stats = item.stats;
    const type = entryType(stats);
    const entry: TreeEntry = {
      dir: item.dir,
      name: item.name,
      type,
      mode: Number(stats.mode) & 0o7777,
      uid: Number(stats.uid),
      gid: Number(stats.gid),
      size: 0,
      mtime: String(stats.mtimeNs),
      atime: String(stats.atimeNs),
      ctime: String(stats.ctimeNs),
      ino: Number(stats.ino),
      nlink: Number(stats.nlink),
    };
    if (type === "d") report.folders++;
    else if (type === "l") {
      entry.target = item.target;
      entry.size = Buffer.byteLength(item.target ?? "");
      report.symlinks++;
    } else if (type === "f") {
      const link = stats.nlink > 1n ? `${stats.dev}:${stats.ino}` : undefined;
      let content: Content | undefined = link ? linked.get(link) : undefined;
      if (content) report.hardLinks++;
      else {
        try {
          content = await unchangedContent(item, stats);
          if (content) report.filesUnchanged++;
          else {
            content = await chunkFile(item);
            report.filesRead++;
          }
        } catch (error) {
          if (!(error instanceof SourceError)) throw error;
          problem(entryPath(item), error);
          continue;
        }
        if (link) linked.set(link, { ...content, mtime: entry.mtime, atime: entry.atime, ctime: entry.ctime });
      }
      if (link) entry.link = link;
      Object.assign(entry, content);
      size += content.size;
      report.files++;
    } else {
      if (type === "c" || type === "b") entry.rdev = Number(stats.rdev);
      report.special++;
    }
    await entries.add(entry);
  }
  await entries.finish();
  await references.flush();
  return { content: { layout: "tree", index: entries.index, tree: references.tree }, size, bytesRead };
}

function entryType(stats: BigIntStats): EntryType {
  if (stats.isDirectory()) return "d";
  if (stats.isFile()) return "f";
  if (stats.isSymbolicLink()) return "l";
  if (stats.isFIFO()) return "p";
  if (stats.isCharacterDevice()) return "c";
  if (stats.isBlockDevice()) return "b";
  return "s";
}
