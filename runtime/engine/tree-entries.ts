/**
 * The entries of a folder point ("tree", issue 12): one record per folder, file, symlink, hard
 * link or special file, in one sorted stream cut into chunks.
 *
 * Order: by the entry's folder (its path compared component by component, so a folder comes
 * before everything under it), then by name. That is a depth-first walk that writes each folder's
 * children together, so one folder's entries are contiguous and `ls` reads only the chunks that
 * hold them, and a backup reads the previous point's entries in the same order beside its own walk
 * (a merge, one chunk at a time) to find unchanged files.
 *
 * Each entry is one line of JSON (a JSON string holds no raw newline); a chunk is whole lines,
 * cut after an entry whose keyed hash says so (once the chunk holds ENTRY_CHUNK_MIN bytes) or at
 * ENTRY_CHUNK_MAX, so an edit in one folder changes the chunks around it and the others dedup.
 * Index chunks list, in order, each entry chunk's first key and id. Everything is read back as
 * untrusted: a record that is not what this module writes is an IntegrityError naming the chunk.
 */
import { IntegrityError } from "../errors.ts";
import { hexId } from "./chunk-codec.ts";

/** d folder, f regular file, l symlink, p fifo, c/b character/block device, s socket. */
export type EntryType = "d" | "f" | "l" | "p" | "c" | "b" | "s";

/** A file's content: data chunks listed inline, or (for many chunks) stream-tree chunks listing them. */
export type ChunkRef = [id: string, length: number];

export interface TreeEntry {
  /** The folder holding it, relative to the backed-up folder ("" for the top; the top itself has dir "" and name ""). */
  dir: string;
  name: string;
  type: EntryType;
  /** st_mode's permission bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** A file's bytes; a symlink's target length. */
  size: number;
  /** Nanoseconds since the Unix epoch, as decimal strings (beyond 2^53). */
  mtime: string;
  atime: string;
  ctime: string;
  ino: number;
  nlink: number;
  /** Devices: st_rdev. */
  rdev?: number;
  target?: string;
  /** A file with several names: "dev:ino", the same for every name of it in the point. */
  link?: string;
  chunks?: ChunkRef[];
  /** Hex ids of stream-tree chunks (32-byte id + u32 length entries) listing the data chunks. */
  contentTree?: string[];
}

/** One record of an index chunk: an entry chunk, the key of its first entry, and how many it holds. */
export interface IndexRecord {
  id: string;
  dir: string;
  name: string;
  entries: number;
}

export const ENTRY_CHUNK_MIN = 32 * 1024;
export const ENTRY_CHUNK_MAX = 1024 * 1024;
/** Cut after an entry whose hash has these low bits clear: about every 512 entries past the minimum. */
export const ENTRY_CUT_MASK = 511;
/** Records per index chunk: an index chunk covers about two million entries. */
export const INDEX_RECORDS = 4096;
/** A file's data chunks are listed inline up to this many, else through stream-tree chunks. */
export const INLINE_CHUNKS = 64;
/** A single entry line longer than this is damage (a file of 4 TiB lists about 64 content-tree ids). */
const MAX_LINE = 256 * 1024;

const TYPES = new Set<string>(["d", "f", "l", "p", "c", "b", "s"]);
const HEX_ID = /^[0-9a-f]{64}$/;
const NANOS = /^-?\d{1,22}$/;

/** Paths compared component by component: "/" sorts before every other character. */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1;
    if (y === 0x2f) return 1;
    return x - y;
  }
  return a.length - b.length;
}

export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function compareKeys(a: { dir: string; name: string }, b: { dir: string; name: string }): number {
  return comparePaths(a.dir, b.dir) || compareNames(a.name, b.name);
}

/** The entry's path relative to the backed-up folder ("" for the top). */
export function entryPath(entry: { dir: string; name: string }): string {
  return entry.dir === "" ? entry.name : `${entry.dir}/${entry.name}`;
}

export function encodeLine(value: TreeEntry | IndexRecord): Buffer {
  return Buffer.from(`${JSON.stringify(value)}\n`);
}

/** The entries of one entry chunk, checked: well formed and in order. */
export function decodeEntries(chunk: Buffer, chunkId: Uint8Array): TreeEntry[] {
  const entries: TreeEntry[] = [];
  for (const record of lines(chunk, chunkId, "entry")) {
    const entry = checkedEntry(record, () => `entry chunk ${hexId(chunkId)}, entry ${entries.length}`);
    const previous = entries.at(-1);
    if (previous && compareKeys(previous, entry) >= 0) {
      throw new IntegrityError(`entry chunk ${hexId(chunkId)}: entry ${entries.length} (${entryPath(entry)}) is out of order: the point is damaged`);
    }
    entries.push(entry);
  }
  return entries;
}

export function decodeIndex(chunk: Buffer, chunkId: Uint8Array): IndexRecord[] {
  const records: IndexRecord[] = [];
  for (const raw of lines(chunk, chunkId, "index")) {
    const where = `index chunk ${hexId(chunkId)}, record ${records.length}`;
    const r = raw as Partial<IndexRecord>;
    if (typeof r.id !== "string" || !HEX_ID.test(r.id) || typeof r.dir !== "string" || typeof r.name !== "string" || !isCount(r.entries)) {
      throw new IntegrityError(`${where} is not an index record: the point is damaged`);
    }
    const record = { id: r.id, dir: r.dir, name: r.name, entries: r.entries };
    const previous = records.at(-1);
    if (previous && compareKeys(previous, record) >= 0) throw new IntegrityError(`${where} is out of order: the point is damaged`);
    records.push(record);
  }
  return records;
}

function* lines(chunk: Buffer, chunkId: Uint8Array, what: string): Generator<unknown> {
  let at = 0;
  while (at < chunk.length) {
    const end = chunk.indexOf(0x0a, at);
    if (end < 0 || end - at > MAX_LINE) throw new IntegrityError(`${what} chunk ${hexId(chunkId)}: a record at byte ${at} is unterminated or too long: the point is damaged`);
    try {
      yield JSON.parse(chunk.toString("utf8", at, end)) as unknown;
    } catch (cause) {
      if (!(cause instanceof SyntaxError)) throw cause;
      throw new IntegrityError(`${what} chunk ${hexId(chunkId)}: the record at byte ${at} is not JSON: the point is damaged`, { cause });
    }
    at = end + 1;
  }
}

function checkedEntry(raw: unknown, where: () => string): TreeEntry {
  const e = (raw ?? {}) as Partial<Record<keyof TreeEntry, unknown>>;
  const bad = (field: string) => new IntegrityError(`${where()}: its ${field} is not valid: the point is damaged`);
  if (typeof e.dir !== "string" || typeof e.name !== "string") throw bad("path");
  if (typeof e.type !== "string" || !TYPES.has(e.type)) throw bad("type");
  for (const field of ["mode", "uid", "gid", "size", "ino", "nlink"] as const) if (!isCount(e[field])) throw bad(field);
  if ((e.mode as number) > 0o7777) throw bad("mode");
  for (const field of ["mtime", "atime", "ctime"] as const) if (typeof e[field] !== "string" || !NANOS.test(e[field] as string)) throw bad(field);
  if (e.rdev !== undefined && !isCount(e.rdev)) throw bad("rdev");
  if (e.target !== undefined && typeof e.target !== "string") throw bad("target");
  if (e.type === "l" && typeof e.target !== "string") throw bad("target");
  if (e.link !== undefined && typeof e.link !== "string") throw bad("link");
  if (e.chunks !== undefined) {
    if (!Array.isArray(e.chunks) || e.chunks.length > INLINE_CHUNKS) throw bad("chunks");
    for (const ref of e.chunks as unknown[]) {
      if (!Array.isArray(ref) || ref.length !== 2 || typeof ref[0] !== "string" || !HEX_ID.test(ref[0]) || !isCount(ref[1])) throw bad("chunks");
    }
  }
  if (e.contentTree !== undefined) {
    if (!Array.isArray(e.contentTree) || !(e.contentTree as unknown[]).every((id) => typeof id === "string" && HEX_ID.test(id))) throw bad("contentTree");
  }
  if (e.type === "f" && (e.size as number) > 0 && e.chunks === undefined && e.contentTree === undefined) throw bad("content");
  return e as TreeEntry;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
