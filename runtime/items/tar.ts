/**
 * A tar archive written as a stream: how a files restore run by the agents hands its files back as
 * one blob (restore-files.ts), keeping paths of any length, modes, owners, times, symlinks and hard
 * links. Holes are written as zeros (the archive is the plain POSIX format every `tar` extracts).
 *
 * Source: IEEE Std 1003.1-2017 (POSIX), "pax — portable archive interchange", sections "ustar
 * Interchange Format" (the 512-byte header: name 100, mode 8, uid 8, gid 8, size 12, mtime 12,
 * chksum 8, typeflag 1, linkname 100, magic "ustar\0", version "00", uname 32, gname 32, devmajor
 * 8, devminor 8, prefix 155; numbers in octal; the checksum is the sum of the header's bytes with
 * the checksum field taken as spaces; typeflags '0' file, '1' hard link, '2' symlink, '5'
 * directory; the archive ends with two zero blocks) and "pax Extended Header" (typeflag 'x', records
 * "<length> <keyword>=<value>\n" for path, linkpath, size, mtime, uid, gid that do not fit ustar).
 */
import type { Writable } from "node:stream";
import { once } from "node:events";

const BLOCK = 512;
/** Largest values ustar's octal fields hold: 11 digits for size and mtime, 7 for mode, uid and gid. */
const MAX_OCTAL_11 = 0o77777777777;
const MAX_OCTAL_7 = 0o7777777;

export interface TarEntry {
  path: string;
  type: "file" | "dir" | "symlink" | "hardlink";
  mode: number;
  uid: number;
  gid: number;
  /** Milliseconds since the Unix epoch. */
  mtime: number;
  size?: number;
  /** A symlink's target, or a hard link's first path in the archive. */
  linkTo?: string;
}

export class TarWriter {
  private readonly out: Writable;
  private written = 0;
  private open?: { remaining: number };

  constructor(out: Writable) {
    this.out = out;
  }

  /** Bytes of archive written so far. */
  get bytes(): number {
    return this.written;
  }

  /** Starts an entry; a file's `size` bytes follow through write(), then end(). */
  async begin(entry: TarEntry): Promise<void> {
    if (this.open) throw new Error("tar: the previous entry is not finished");
    const name = entry.type === "dir" && !entry.path.endsWith("/") ? `${entry.path}/` : entry.path;
    const size = entry.type === "file" ? (entry.size ?? 0) : 0;
    const extended: Array<[string, string]> = [];
    const ustarName = splitUstarName(name);
    if (!ustarName) extended.push(["path", name]);
    if (entry.linkTo !== undefined && Buffer.byteLength(entry.linkTo) > 100) extended.push(["linkpath", entry.linkTo]);
    if (size > MAX_OCTAL_11) extended.push(["size", String(size)]);
    const seconds = Math.floor(entry.mtime / 1000);
    if (entry.mtime % 1000 !== 0 || seconds < 0 || seconds > MAX_OCTAL_11) extended.push(["mtime", (entry.mtime / 1000).toFixed(3)]);
    if (entry.uid > MAX_OCTAL_7) extended.push(["uid", String(entry.uid)]);
    if (entry.gid > MAX_OCTAL_7) extended.push(["gid", String(entry.gid)]);
    if (extended.length > 0) {
      const records = Buffer.from(extended.map(([k, v]) => paxRecord(k, v)).join(""));
      await this.push(header({ name: "PaxHeader", mode: 0o644, uid: 0, gid: 0, size: records.length, mtime: 0, type: "x", linkName: "" }));
      await this.push(padded(records));
    }
    const typeflag = { file: "0", dir: "5", symlink: "2", hardlink: "1" }[entry.type];
    await this.push(
      header({
        name: ustarName ?? { name: truncateBytes(name, 100), prefix: "" },
        mode: entry.mode & 0o7777,
        uid: Math.min(entry.uid, MAX_OCTAL_7),
        gid: Math.min(entry.gid, MAX_OCTAL_7),
        size: Math.min(size, MAX_OCTAL_11),
        mtime: Math.max(0, Math.min(seconds, MAX_OCTAL_11)),
        type: typeflag,
        linkName: truncateBytes(entry.linkTo ?? "", 100),
      }),
    );
    if (size > 0) this.open = { remaining: size };
  }

  /** Content of the file begun last, in order. */
  async write(data: Buffer): Promise<void> {
    if (!this.open || data.length > this.open.remaining) throw new Error("tar: more content than the entry's size");
    this.open.remaining -= data.length;
    await this.push(data);
  }

  /** Ends the file begun last: what was not written is written as zeros, then the block padding. */
  async end(): Promise<void> {
    if (!this.open) return;
    const zeros = Buffer.alloc(64 * 1024);
    while (this.open.remaining > 0) await this.write(zeros.subarray(0, Math.min(zeros.length, this.open.remaining)));
    this.open = undefined;
    const tail = this.written % BLOCK;
    if (tail) await this.push(Buffer.alloc(BLOCK - tail));
  }

  /** The two zero blocks that end an archive. */
  async finish(): Promise<void> {
    await this.end();
    await this.push(Buffer.alloc(2 * BLOCK));
    this.out.end();
  }

  private async push(bytes: Buffer): Promise<void> {
    if (this.out.destroyed) throw this.out.errored ?? new Error("tar: the archive's stream was closed before the archive was finished");
    this.written += bytes.length;
    if (!this.out.write(bytes)) await drained(this.out);
  }
}

/** Resolves when the stream drains; rejects if it fails or closes first (a closed stream never drains). */
async function drained(out: Writable): Promise<void> {
  const stop = new AbortController();
  try {
    await Promise.race([
      once(out, "drain", { signal: stop.signal }),
      once(out, "close", { signal: stop.signal }).then(() => {
        throw out.errored ?? new Error("tar: the archive's stream was closed before the archive was finished");
      }),
    ]);
  } finally {
    stop.abort();
  }
}

/** The ustar name and prefix fields for a path, or undefined when it fits neither (a pax record holds it). */
function splitUstarName(name: string): { name: string; prefix: string } | undefined {
  if (Buffer.byteLength(name) <= 100) return { name, prefix: "" };
  for (let i = name.lastIndexOf("/", name.length - 2); i > 0; i = name.lastIndexOf("/", i - 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(rest) > 100) return undefined;
    if (Buffer.byteLength(prefix) <= 155) return { name: rest, prefix };
  }
  return undefined;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  // The length counts its own digits: grow until it is stable.
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

function header(h: { name: string | { name: string; prefix: string }; mode: number; uid: number; gid: number; size: number; mtime: number; type: string; linkName: string }): Buffer {
  const block = Buffer.alloc(BLOCK);
  const { name, prefix } = typeof h.name === "string" ? { name: h.name, prefix: "" } : h.name;
  block.write(name, 0, 100, "utf8");
  octal(block, 100, 8, h.mode);
  octal(block, 108, 8, h.uid);
  octal(block, 116, 8, h.gid);
  octal(block, 124, 12, h.size);
  octal(block, 136, 12, h.mtime);
  block.write(h.type, 156, 1, "latin1");
  block.write(h.linkName, 157, 100, "utf8");
  block.write("ustar\0", 257, 6, "latin1");
  block.write("00", 263, 2, "latin1");
  block.write(prefix, 345, 155, "utf8");
  block.fill(" ", 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
  return block;
}

function octal(block: Buffer, at: number, width: number, value: number): void {
  block.write(`${value.toString(8).padStart(width - 1, "0")}\0`, at, width, "latin1");
}

function padded(bytes: Buffer): Buffer {
  const tail = bytes.length % BLOCK;
  return tail ? Buffer.concat([bytes, Buffer.alloc(BLOCK - tail)]) : bytes;
}

function truncateBytes(text: string, max: number): string {
  let out = text;
  while (Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}
