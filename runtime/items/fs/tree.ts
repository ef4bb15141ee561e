/**
 * A folder point ("tree", issue 12) as a FileSystem, so `ls`, `find` and `restore --path` browse
 * it as they browse a volume (browse.ts opens it as the point's root). A folder's listing reads
 * only the entry chunks that hold its children (engine/tree-entries.ts keeps them together); a
 * file's content is its data chunks, fetched a few ahead and yielded in runs of at most
 * MAX_RUN_BYTES, a run of zeros as a hole so a restore writes it sparse.
 *
 * Node ids: a folder's or file's path in the point (so each folder is walked once), a file with
 * several names its "dev:ino" link (so restore links its names again). Special files are "other":
 * listed with their mode, owner and times, never read.
 */
import { IntegrityError } from "../../errors.ts";
import { CHUNK_DATA } from "../../engine/chunk-codec.ts";
import type { TreeLayout } from "../../engine/point.ts";
import { comparePaths, entryPath, type TreeEntry } from "../../engine/tree-entries.ts";
import { TreeEntriesReader } from "../../engine/tree-reader.ts";
import type { Vault } from "../../engine/vault.ts";
import { MAX_RUN_BYTES, type DirEntry, type FileRun, type FileSystem, type FsNode, type NodeType } from "./types.ts";

const ZEROS = Buffer.alloc(MAX_RUN_BYTES);
/** Data chunks fetched ahead of the one being yielded (at most 4 MiB each). */
const READ_AHEAD = 4;

interface TreeNode extends FsNode {
  readonly entry: TreeEntry;
}

export class TreeFileSystem implements FileSystem {
  readonly filesystem = "tree";
  readonly label = "";
  private readonly vault: Vault;
  private readonly reader: TreeEntriesReader;
  /** Bytes of data chunks fetched, as stored. */
  private dataFetched = 0;

  constructor(vault: Vault, layout: TreeLayout) {
    this.vault = vault;
    this.reader = new TreeEntriesReader(vault, layout);
  }

  /** Bytes fetched from the vault so far (as stored: compressed and sealed). */
  get bytesRead(): number {
    return this.reader.bytesFetched + this.dataFetched;
  }

  async root(): Promise<FsNode> {
    for await (const entry of this.reader.all()) {
      if (entry.dir !== "" || entry.name !== "" || entry.type !== "d") break;
      return treeNode(entry);
    }
    throw new IntegrityError("the folder point's first entry is not its top folder: the point is damaged");
  }

  async list(dir: FsNode): Promise<DirEntry[]> {
    const folder = entryPath((dir as TreeNode).entry);
    const out: DirEntry[] = [];
    for await (const entry of this.reader.from({ dir: folder, name: "" })) {
      const order = comparePaths(entry.dir, folder);
      if (order > 0) break;
      // The chunk may start before the folder's children; the top folder is an entry of its own.
      if (order < 0 || entry.name === "") continue;
      out.push({ name: entry.name, node: treeNode(entry) });
    }
    return out;
  }

  async *read(file: FsNode): AsyncIterable<FileRun> {
    const entry = (file as TreeNode).entry;
    const refs = this.reader.dataChunks(entry);
    const pending: Array<Promise<{ hex: string; length: number; data: Buffer }>> = [];
    let listed = false;
    let offset = 0;
    for (;;) {
      // Chunks are fetched READ_AHEAD at a time (a remote vault answers each after a round trip).
      while (!listed && pending.length < READ_AHEAD) {
        const next = await refs.next();
        if (next.done) listed = true;
        else pending.push(this.fetchData(next.value[0], next.value[1]));
      }
      const fetched = pending.shift();
      if (!fetched) return;
      const { hex, length, data } = await fetched;
      if (data.length !== length) throw new IntegrityError(`${entryPath(entry)}: chunk ${hex.slice(0, 16)} holds ${data.length} bytes, its entry says ${length}: the point is damaged`);
      for (let at = 0; at < data.length; at += MAX_RUN_BYTES) {
        const piece = data.subarray(at, Math.min(at + MAX_RUN_BYTES, data.length));
        yield piece.equals(ZEROS.subarray(0, piece.length))
          ? { offset: offset + at, length: piece.length, hole: true }
          : { offset: offset + at, length: piece.length, hole: false, data: piece };
      }
      offset += data.length;
    }
  }

  private fetchData(hex: string, length: number): Promise<{ hex: string; length: number; data: Buffer }> {
    const id = Buffer.from(hex, "hex");
    this.dataFetched += this.vault.locate(id).length;
    const fetched = this.vault.readChunk(CHUNK_DATA, id).then((data) => ({ hex, length, data }));
    // A reader that stops early leaves fetches behind: their failures are not its errors.
    fetched.catch(() => {});
    return fetched;
  }
}

function treeNode(entry: TreeEntry): TreeNode {
  const path = entryPath(entry);
  return {
    entry,
    id: entry.link !== undefined && entry.type === "f" ? `#${entry.link}` : `/${path}`,
    type: nodeType(entry),
    size: entry.size,
    mode: entry.mode,
    mtime: millis(entry.mtime),
    atime: millis(entry.atime),
    uid: entry.uid,
    gid: entry.gid,
    nlink: entry.nlink,
    ...(entry.target !== undefined ? { target: entry.target } : {}),
  };
}

function nodeType(entry: TreeEntry): NodeType {
  if (entry.type === "d") return "dir";
  if (entry.type === "f") return "file";
  if (entry.type === "l") return "symlink";
  return "other";
}

/** Nanoseconds (a decimal string) as milliseconds, keeping microseconds. */
function millis(nanos: string): number {
  return Number(BigInt(nanos) / 1000n) / 1000;
}
