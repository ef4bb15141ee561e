/**
 * The NTFS reader on a volume made by mkntfs and filled through ntfs-3g (FUSE): nested folders, a
 * folder of 300 files (its index in INDX records), resident and multi-MiB files, two files written
 * in turns so their runs interleave, a sparse file, hard links (twenty of them, so the names spill
 * into extension records named by an $ATTRIBUTE_LIST), ntfs-3g's default symlink (Interix), a
 * relative symlink and a junction as reparse points, a long name with a DOS 8.3 twin, a read-only
 * file, a compressed one, and 400 files added once the volume is nearly full, so the MFT grows in
 * pieces between their clusters. The volume is then mounted read-only and what ntfs-3g shows there
 * is what the reader, reading the image's bytes, must give back; a damaged MFT record and a damaged
 * INDX record fail as damaged where they are, and nowhere else; a boot sector with impossible sizes
 * is refused. A second, small volume of 64 KiB clusters checks index records smaller than a cluster.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { copyFile, link, lstat, mkdir, open, readdir, readFile, readlink, statfs, symlink, truncate, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import type { RandomAccess } from "../../runtime/items/block-reader.ts";
import { ntfsFormat } from "../../runtime/items/fs/ntfs.ts";
import { MAX_RUN_BYTES, PROBE_BYTES, UnreadableItemError, type FileRun, type FileSystem, type FsNode } from "../../runtime/items/fs/types.ts";
import { MIB, pseudoRandom, tempFolder, text } from "../cli/vaults.ts";
import { imageAccess } from "./disk-points.ts";

const IMAGE_BYTES = 24 * MIB;
const LABEL = "Bulwark Data";
const TOOLS = ["mkntfs", "ntfs-3g", "ntfsinfo", "python3"];
/** Names given to the one file with twenty hard links: long, so their $FILE_NAMEs overflow its record. */
const LINK_NAMES = Array.from({ length: 20 }, (_, i) => `the same file under a rather long name, number ${String(i).padStart(2, "0")}.txt`);
const MANY_NAMES = Array.from({ length: 300 }, (_, i) => `entry-${String(i).padStart(3, "0")}.txt`);
/** Files made once the volume is nearly full, so the MFT grows in pieces between their clusters. */
const CROWD_FILES = 400;
const FREE_BYTES_LEFT = 3.5 * MIB;
const DATED_MTIME = new Date("2001-02-03T04:05:06.789Z");
const DATED_ATIME = new Date("1999-12-31T23:59:58.5Z");
const SPARSE_BYTES = 8 * MIB;
const SPARSE_DATA = [
  { offset: 1 * MIB, data: pseudoRandom("sparse one", 100 * 1024) },
  { offset: 7 * MIB + 123, data: Buffer.from("end") },
];

/** What ntfs-3g shows of one path on the read-only mount. */
interface Seen {
  type: "dir" | "file" | "symlink" | "other";
  size: number;
  mtime: number;
  ino: number;
  nlink: number;
  target?: string;
  sha256?: string;
}

function requireTools(): void {
  const missing = TOOLS.filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
  if (missing.length > 0) throw new Error(`the NTFS tests need ${missing.join(", ")} (Debian packages ntfs-3g and python3) to make and fill a real NTFS volume`);
  if (process.getuid?.() !== 0) throw new Error("the NTFS tests mount an image with ntfs-3g (FUSE), which needs root here");
}

/** Sets an extended attribute through ntfs-3g (its system.ntfs_* attributes set NTFS attributes, DOS names and reparse data). */
function setXattr(file: string, name: string, value: Buffer): void {
  execFileSync("python3", ["-c", "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]))", file, name, value.toString("hex")]);
}

/** A reparse buffer ([MS-FSCC] 2.1.2.4 symbolic link, 2.1.2.5 mount point): substitute name, then print name. */
function reparseBuffer(tag: number, substitute: string, print: string, symlinkFlags?: number): Buffer {
  const names = Buffer.concat([Buffer.from(substitute, "utf16le"), Buffer.from(print, "utf16le")]);
  const header = Buffer.alloc(symlinkFlags === undefined ? 8 : 12);
  header.writeUInt16LE(0, 0);
  header.writeUInt16LE(substitute.length * 2, 2);
  header.writeUInt16LE(substitute.length * 2, 4);
  header.writeUInt16LE(print.length * 2, 6);
  if (symlinkFlags !== undefined) header.writeUInt32LE(symlinkFlags, 8);
  const body = Buffer.concat([header, names]);
  const top = Buffer.alloc(8);
  top.writeUInt32LE(tag, 0);
  top.writeUInt16LE(body.length, 4);
  return Buffer.concat([top, body]);
}

function beInt32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value);
  return bytes;
}

/** ntfs-3g in the foreground, so its exit (after it wrote everything back on unmount) can be waited for. */
class Ntfs3gMount {
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  readonly mountpoint: string;

  private constructor(child: ChildProcess, mountpoint: string) {
    this.child = child;
    this.mountpoint = mountpoint;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  static async mount(image: string, mountpoint: string, options: string): Promise<Ntfs3gMount> {
    const child = spawn("ntfs-3g", ["-o", `no_detach,${options}`, image, mountpoint], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const mount = new Ntfs3gMount(child, mountpoint);
    await mount.until(() => isMounted(mountpoint) || child.exitCode !== null, `ntfs-3g to mount ${image}`);
    if (!isMounted(mountpoint)) throw new Error(`ntfs-3g ${image} ${mountpoint} exited ${child.exitCode}: ${stderr}`);
    return mount;
  }

  async unmount(): Promise<void> {
    if (isMounted(this.mountpoint)) execFileSync("umount", [this.mountpoint]);
    if (this.child.exitCode === null && this.child.signalCode === null) await this.exited;
  }

  /** Waits for a condition only the kernel's mount table can tell (it raises no event), bounded. */
  private async until(condition: () => boolean, what: string): Promise<void> {
    for (let waited = 0; !condition(); waited += 20) {
      if (waited > 20_000) throw new Error(`gave up waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

function isMounted(mountpoint: string): boolean {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((line) => line.split(" ")[4] === mountpoint);
}

async function makeVolume(image: string, bytes: number, mkntfsOptions: string[]): Promise<void> {
  await writeFile(image, "");
  await truncate(image, bytes);
  execFileSync("mkntfs", ["-F", "-Q", ...mkntfsOptions, image], { stdio: "ignore" });
}

/** The tree as written through ntfs-3g (mounted with compression allowed). */
async function fillVolume(root: string): Promise<void> {
  const at = (name: string) => path.join(root, name);
  // First, on the empty volume: ntfs-3g then allocates the two files' clusters in the order written.
  writeInTurns(at("frag-a.bin"), at("frag-b.bin"));
  await mkdir(at("docs/notes/deep"), { recursive: true });
  await writeFile(at("docs/notes/deep/readme.txt"), text("readme", 3000));
  await writeFile(at("docs/données ☃.txt"), "accents and a snowman\n");
  await mkdir(at("many"));
  for (const name of MANY_NAMES) await writeFile(at(`many/${name}`), `${name} holds a few resident bytes\n`);
  await writeFile(at("tiny.txt"), "hi\n");
  await link(at("tiny.txt"), at("docs/also tiny.txt"));
  await writeFile(at("big.bin"), pseudoRandom("big", 3 * MIB + 12345));
  await writeSparse(at("sparse.bin"));
  await mkdir(at("links"));
  await writeFile(at(`links/${LINK_NAMES[0]}`), text("linked", 5000));
  for (const name of LINK_NAMES.slice(1)) await link(at(`links/${LINK_NAMES[0]}`), at(`links/${name}`));
  await symlink("docs/notes/deep/readme.txt", at("readme link"));
  await writeFile(at("reparse link"), "");
  setXattr(at("reparse link"), "system.ntfs_reparse_data", reparseBuffer(0xa000000c, "tiny.txt", "tiny.txt", 1));
  await mkdir(at("junction"));
  setXattr(at("junction"), "system.ntfs_reparse_data", reparseBuffer(0xa0000003, "\\??\\C:\\Users", "C:\\Users"));
  await writeFile(at("Long File Name.txt"), "a Win32 name with a DOS twin\n");
  setXattr(at("Long File Name.txt"), "system.ntfs_dos_name", Buffer.from("LONGFI~1.TXT"));
  await writeFile(at("readonly.txt"), "do not touch\n");
  setXattr(at("readonly.txt"), "system.ntfs_attrib_be", beInt32(0x20 | 0x01)); // ARCHIVE | READONLY
  await mkdir(at("packed"));
  setXattr(at("packed"), "system.ntfs_attrib_be", beInt32(0x10 | 0x800)); // DIRECTORY | COMPRESSED: new files inside are compressed
  await writeFile(at("packed/log.txt"), text("compressed", 200_000));
  await writeFile(at("dated.txt"), "old\n");
  await utimes(at("dated.txt"), DATED_ATIME, DATED_MTIME);
  await crowdVolume(root);
}

/**
 * Fills the volume but a few MiB, then adds files of a cluster each: the MFT zone is taken, so
 * each time the MFT grows its new records land between the files' clusters (a fragmented MFT).
 */
async function crowdVolume(root: string): Promise<void> {
  const { bavail, bsize } = await statfs(root);
  const handle = await open(path.join(root, "filler.bin"), "w");
  try {
    for (let left = bavail * bsize - FREE_BYTES_LEFT; left > 0; left -= MIB) await handle.write(Buffer.alloc(Math.min(MIB, left)));
  } finally {
    await handle.close();
  }
  await mkdir(path.join(root, "crowd"));
  for (let i = 0; i < CROWD_FILES; i++) await writeFile(path.join(root, `crowd/file-${i}.txt`), text(`crowd ${i}`, 2000));
}

/** Two files written 64 KiB at a time in turns, so ntfs-3g allocates their clusters interleaved. */
function writeInTurns(a: string, b: string): void {
  const fa = openSync(a, "w");
  const fb = openSync(b, "w");
  try {
    for (let i = 0; i < 16; i++) {
      writeSync(fa, pseudoRandom(`frag a ${i}`, 64 * 1024));
      writeSync(fb, pseudoRandom(`frag b ${i}`, 64 * 1024));
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

async function writeSparse(file: string): Promise<void> {
  await writeFile(file, "");
  await truncate(file, SPARSE_BYTES);
  const handle = await open(file, "r+");
  try {
    for (const { offset, data } of SPARSE_DATA) await handle.write(data, 0, data.length, offset);
  } finally {
    await handle.close();
  }
}

/** Every path under the mount as ntfs-3g shows it. */
async function snapshot(root: string, relative = ""): Promise<Map<string, Seen>> {
  const seen = new Map<string, Seen>();
  for (const name of await readdir(path.join(root, relative))) {
    const rel = relative ? `${relative}/${name}` : name;
    const full = path.join(root, rel);
    const info = await lstat(full);
    const type = info.isDirectory() ? "dir" : info.isFile() ? "file" : info.isSymbolicLink() ? "symlink" : "other";
    const entry: Seen = { type, size: info.size, mtime: Math.floor(info.mtimeMs), ino: info.ino, nlink: info.nlink };
    if (type === "symlink") entry.target = await readlink(full);
    if (type === "file") entry.sha256 = createHash("sha256").update(await readFile(full)).digest("hex");
    seen.set(rel, entry);
    if (type === "dir") for (const [k, v] of await snapshot(root, rel)) seen.set(k, v);
  }
  return seen;
}

/** Every node under a folder of the reader, by path. */
async function walk(fs: FileSystem, dir: FsNode, relative = ""): Promise<Map<string, FsNode>> {
  const nodes = new Map<string, FsNode>();
  for (const { name, node } of await fs.list(dir)) {
    const rel = relative ? `${relative}/${name}` : name;
    nodes.set(rel, node);
    if (node.type === "dir") for (const [k, v] of await walk(fs, node, rel)) nodes.set(k, v);
  }
  return nodes;
}

async function runsOf(fs: FileSystem, node: FsNode): Promise<FileRun[]> {
  const runs: FileRun[] = [];
  for await (const run of fs.read(node)) runs.push(run);
  return runs;
}

/** The content the runs describe, holes as zeros (test files are a few MiB). */
function contentOf(runs: FileRun[]): Buffer {
  return Buffer.concat(runs.map((r) => (r.hole ? Buffer.alloc(r.length) : r.data)));
}

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The reader's tree matches ntfs-3g's view of it, path by path. */
async function expectWhatNtfs3gShows(fs: FileSystem, nodes: Map<string, FsNode>, seen: Map<string, Seen>): Promise<void> {
  expect([...nodes.keys()].sort()).toEqual([...seen.keys()].sort());
  for (const [rel, expected] of seen) {
    const node = nodes.get(rel)!;
    const where = `${rel}: ${JSON.stringify(node)}`;
    expect(node.type, where).toBe(expected.type);
    expect(node.id, where).toBe(String(expected.ino));
    expect(node.mtime, where).toBe(expected.mtime);
    expect([node.uid, node.gid], where).toEqual([0, 0]);
    if (node.type === "dir") expect([node.size, node.mode], where).toEqual([expected.size, 0o755]);
    if (node.type === "file") {
      expect([node.size, node.mode], where).toEqual([expected.size, rel === "readonly.txt" ? 0o444 : 0o644]);
      // ntfs-3g counts the DOS twin of a Win32 name as a link; it names no other path.
      if (rel !== "Long File Name.txt") expect(node.nlink, where).toBe(expected.nlink);
      if (!node.unreadable) expect(sha256(contentOf(await runsOf(fs, node))), where).toBe(expected.sha256);
    }
  }
}

/** Overwrites bytes of an image file (damage, as a bad sector or a stray write would do). */
async function damage(image: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(image, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

async function imageBytes(image: string, offset: number, length: number): Promise<Buffer> {
  return (await imageAccess(image)).read(offset, length);
}

/** Where an MFT record lies in the image, from the boot sector (the records of a fresh volume sit in the MFT's first run). */
async function mftRecordOffset(image: string, record: number): Promise<{ offset: number; size: number }> {
  const boot = await imageBytes(image, 0, 512);
  const clusterSize = boot.readUInt16LE(0x0b) * boot[0x0d];
  const sizeField = boot.readInt8(0x40);
  const size = sizeField > 0 ? sizeField * clusterSize : 2 ** -sizeField;
  const offset = Number(boot.readBigUInt64LE(0x30)) * clusterSize + record * size;
  const bytes = await imageBytes(image, offset, size);
  expect(bytes.toString("latin1", 0, 4)).toBe("FILE");
  expect(bytes.readUInt32LE(0x2c)).toBe(record);
  return { offset, size };
}

/** The first cluster of a folder's $INDEX_ALLOCATION, as ntfsinfo prints its runlist. */
function firstIndexCluster(image: string, folder: string): { lcn: number; clusterSize: number } {
  const out = execFileSync("ntfsinfo", ["-v", "-F", folder, image], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const allocation = out.slice(out.indexOf("$INDEX_ALLOCATION"));
  const run = /Runlist:\s+VCN\s+LCN\s+Length\s+0x0\s+0x([0-9a-f]+)/i.exec(allocation);
  if (!run) throw new Error(`ntfsinfo shows no runlist of ${folder}'s $INDEX_ALLOCATION:\n${allocation.slice(0, 800)}`);
  const clusterSize = Number(/Cluster Size:\s+(\d+)/.exec(execFileSync("ntfsinfo", ["-m", image], { encoding: "utf8" }))![1]);
  return { lcn: parseInt(run[1], 16), clusterSize };
}

/** The runs of the MFT's own $DATA, as ntfsinfo prints them: [vcn, lcn, clusters]. */
function mftRuns(image: string): number[][] {
  const out = execFileSync("ntfsinfo", ["-v", "-i", "0", image], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const data = out.slice(out.indexOf("Dumping attribute $DATA"));
  const lines = data.slice(data.indexOf("Runlist:")).split("\n").slice(1);
  const runs: number[][] = [];
  for (const line of lines) {
    const run = /^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*$/i.exec(line);
    if (!run) break;
    runs.push([parseInt(run[1], 16), parseInt(run[2], 16), parseInt(run[3], 16)]);
  }
  return runs;
}

/** A RandomAccess over the image whose boot sector reads with some bytes changed. */
function withBootBytes(access: RandomAccess, changes: Record<number, number>): RandomAccess {
  return {
    size: access.size,
    async read(offset, length) {
      const bytes = await access.read(offset, length);
      for (const [at, value] of Object.entries(changes)) if (Number(at) >= offset && Number(at) < offset + length) bytes[Number(at) - offset] = value;
      return bytes;
    },
  };
}

describe("NTFS volumes made by mkntfs and ntfs-3g, read from their bytes", () => {
  let scratch: string;
  let image: string;
  let mountpoint: string;
  let mounted: Ntfs3gMount | undefined;
  let seen: Map<string, Seen>;
  let rootNames: string[];
  let compressedAttributes: number;
  let fs: FileSystem;
  let nodes: Map<string, FsNode>;

  beforeAll(async () => {
    requireTools();
    scratch = await tempFolder("ntfs");
    image = path.join(scratch, "ntfs.img");
    mountpoint = path.join(scratch, "mnt");
    await mkdir(mountpoint);
    await makeVolume(image, IMAGE_BYTES, ["-L", LABEL]);
    mounted = await Ntfs3gMount.mount(image, mountpoint, "compression");
    await fillVolume(mountpoint);
    await mounted.unmount();
    // Read-only, in a fresh mount: what ntfs-3g reads back from the image, not what it cached.
    mounted = await Ntfs3gMount.mount(image, mountpoint, "ro");
    seen = await snapshot(mountpoint);
    rootNames = await readdir(mountpoint);
    const attributes = execFileSync("python3", ["-c", "import os, sys; print(os.getxattr(sys.argv[1], 'system.ntfs_attrib_be').hex())", path.join(mountpoint, "packed/log.txt")], { encoding: "utf8" });
    compressedAttributes = parseInt(attributes, 16);
    await mounted.unmount();
    mounted = undefined;
    fs = await ntfsFormat.open(await imageAccess(image));
    nodes = await walk(fs, await fs.root());
  });

  afterAll(async () => {
    await mounted?.unmount();
  });

  test("the volume is recognised from its first 64 KiB, opened as ntfs, and carries mkntfs's label", async () => {
    const head = await imageBytes(image, 0, PROBE_BYTES);
    expect(ntfsFormat.probe(head)).toBe(true);
    expect(ntfsFormat.probe(Buffer.alloc(PROBE_BYTES))).toBe(false);
    expect(fs.filesystem).toBe("ntfs");
    expect(fs.label).toBe(LABEL);
  });

  test("the root lists what ntfs-3g shows there, without the metadata files ($MFT, $Volume, $Extend ...)", async () => {
    const names = (await fs.list(await fs.root())).map((e) => e.name);
    expect([...names].sort()).toEqual([...rootNames].sort());
    expect(names.filter((n) => n.startsWith("$"))).toEqual([]);
  });

  test("every folder, file and link equals what ntfs-3g shows: type, size, mode, mtime, owner, id and content", async () => {
    await expectWhatNtfs3gShows(fs, nodes, seen);
  });

  test("times keep their milliseconds: mtime and atime set with utimes read back to the millisecond", () => {
    const dated = nodes.get("dated.txt")!;
    expect(dated.mtime).toBe(DATED_MTIME.getTime());
    expect(dated.atime).toBe(DATED_ATIME.getTime());
  });

  test("a folder of 300 files, indexed in INDX records, lists each name once in the index's order", async () => {
    expect(seen.get("many")!.size).toBeGreaterThan(0); // a non-empty $INDEX_ALLOCATION
    const entries = await fs.list(nodes.get("many")!);
    expect(entries.map((e) => e.name)).toEqual(MANY_NAMES);
    const first = entries[0];
    expect(contentOf(await runsOf(fs, first.node)).toString()).toBe(`${first.name} holds a few resident bytes\n`);
  });

  test("an MFT grown in pieces between files' clusters is read through its own runlist", async () => {
    const runs = mftRuns(image);
    expect(runs.length).toBeGreaterThan(2);
    const { size: recordSize } = await mftRecordOffset(image, 0);
    const clusterSize = firstIndexCluster(image, "/many").clusterSize;
    const recordsInFirstRun = (runs[0][2] * clusterSize) / recordSize;
    const crowd = await fs.list(nodes.get("crowd")!);
    expect(crowd).toHaveLength(CROWD_FILES);
    const beyond = crowd.filter((e) => Number(e.node.id) >= recordsInFirstRun);
    expect(beyond.length).toBeGreaterThan(10);
    const last = crowd.find((e) => e.name === "file-399.txt")!;
    expect(contentOf(await runsOf(fs, last.node)).equals(text("crowd 399", 2000))).toBe(true);
  });

  test("a file of several MiB reads in data runs of at most MAX_RUN_BYTES, covering it in order", async () => {
    const big = nodes.get("big.bin")!;
    const runs = await runsOf(fs, big);
    expect(runs.length).toBeGreaterThan(3);
    let offset = 0;
    for (const run of runs) {
      expect(run.offset).toBe(offset);
      expect(run.length).toBeLessThanOrEqual(MAX_RUN_BYTES);
      offset += run.length;
    }
    expect(offset).toBe(3 * MIB + 12345);
    expect(contentOf(runs).equals(pseudoRandom("big", 3 * MIB + 12345))).toBe(true);
  });

  test("two files written in turns are fragmented, and each reads back whole across its runs", async () => {
    for (const [name, seed] of [["frag-a.bin", "frag a"], ["frag-b.bin", "frag b"]]) {
      const fragments = Number(/fragments: (\d+)/.exec(execFileSync("ntfsinfo", ["-v", "-F", `/${name}`, image], { encoding: "utf8" }))![1]);
      expect(fragments, name).toBeGreaterThan(4);
      const expected = Buffer.concat(Array.from({ length: 16 }, (_, i) => pseudoRandom(`${seed} ${i}`, 64 * 1024)));
      expect(contentOf(await runsOf(fs, nodes.get(name)!)).equals(expected), name).toBe(true);
    }
  });

  test("a sparse file reads as holes where nothing was written, data where it was, and zeros past its initialized size", async () => {
    const runs = await runsOf(fs, nodes.get("sparse.bin")!);
    const expected = Buffer.alloc(SPARSE_BYTES);
    for (const { offset, data } of SPARSE_DATA) data.copy(expected, offset);
    expect(contentOf(runs).equals(expected)).toBe(true);
    const holeBytes = runs.filter((r) => r.hole).reduce((sum, r) => sum + r.length, 0);
    expect(holeBytes).toBeGreaterThan(SPARSE_BYTES - 512 * 1024);
    expect(runs[0]).toMatchObject({ offset: 0, hole: true });
    // The tail after the last write is never initialized: it reads as a hole, not as clusters.
    expect(runs.at(-1)).toMatchObject({ hole: true, offset: expect.any(Number) });
    expect(runs.at(-1)!.offset + runs.at(-1)!.length).toBe(SPARSE_BYTES);
  });

  test("hard links are one node under several names, and twenty names spilled into extension records all list", () => {
    expect(nodes.get("docs/also tiny.txt")!.id).toBe(nodes.get("tiny.txt")!.id);
    expect(nodes.get("tiny.txt")!.nlink).toBe(2);
    const ids = new Set(LINK_NAMES.map((name) => nodes.get(`links/${name}`)?.id));
    expect(ids.size).toBe(1);
    expect(ids.has(undefined)).toBe(false);
    expect(nodes.get(`links/${LINK_NAMES[7]}`)!.nlink).toBe(20);
    const listing = execFileSync("ntfsinfo", ["-F", `/links/${LINK_NAMES[0]}`, image], { encoding: "utf8" });
    expect(listing).toContain("$ATTRIBUTE_LIST");
  });

  test("symlinks list with their targets: ntfs-3g's default (Interix), a relative symlink and a junction as reparse points", () => {
    expect(nodes.get("readme link")).toMatchObject({ type: "symlink", target: "docs/notes/deep/readme.txt", size: 26, mode: 0o777 });
    expect(seen.get("readme link")!.target).toBe("docs/notes/deep/readme.txt");
    expect(nodes.get("reparse link")).toMatchObject({ type: "symlink", target: "tiny.txt" });
    expect(seen.get("reparse link")!.target).toBe("tiny.txt");
    // ntfs-3g shows a junction to another drive under its own .NTFS-3G folder; the reader keeps the Windows path as stored.
    expect(nodes.get("junction")).toMatchObject({ type: "symlink", target: "C:\\Users" });
    expect(seen.get("junction")!.target).toMatch(/C:\/Users$/);
  });

  test("a Win32 name with a DOS 8.3 twin lists once, under its long name", () => {
    expect(nodes.has("Long File Name.txt")).toBe(true);
    expect([...nodes.keys()].filter((n) => /LONGFI~1/i.test(n))).toEqual([]);
  });

  test("a read-only file lists with mode 0o444, its neighbours with 0o644", () => {
    expect(nodes.get("readonly.txt")!.mode).toBe(0o444);
    expect(nodes.get("tiny.txt")!.mode).toBe(0o644);
  });

  test("a compressed file lists as unreadable, saying why, and reading it throws UnreadableItemError", async () => {
    expect(compressedAttributes & 0x800).toBe(0x800); // ntfs-3g really compressed it
    const packed = nodes.get("packed/log.txt")!;
    expect(packed).toMatchObject({ type: "file", size: 200_000 });
    expect(packed.unreadable).toMatch(/compressed/);
    await expect(runsOf(fs, packed)).rejects.toThrow(UnreadableItemError);
  });

  test("a boot sector giving impossible MFT record sizes is refused as damaged", async () => {
    const access = withBootBytes(await imageAccess(image), { 0x40: 0xe0 }); // 2^32-byte records
    await expect(ntfsFormat.open(access)).rejects.toThrow(IntegrityError);
    await expect(ntfsFormat.open(access)).rejects.toThrow(/boot sector.*MFT records/);
  });

  describe("damaged metadata", () => {
    let damagedImage: string;

    beforeAll(async () => {
      damagedImage = path.join(scratch, "damaged.img");
      await copyFile(image, damagedImage);
    });

    test("an MFT record whose update sequence does not match fails that file alone with IntegrityError", async () => {
      const big = nodes.get("big.bin")!;
      const { offset } = await mftRecordOffset(damagedImage, Number(big.id));
      await damage(damagedImage, offset + 510, Buffer.from([0xde, 0xad]));
      const damagedFs = await ntfsFormat.open(await imageAccess(damagedImage));
      const entries = await damagedFs.list(await damagedFs.root());
      const listed = entries.find((e) => e.name === "big.bin")!.node;
      expect(listed.unreadable).toMatch(new RegExp(`MFT record ${big.id} is damaged: sector 0 ends with update sequence`));
      await expect(runsOf(damagedFs, listed)).rejects.toThrow(IntegrityError);
      const tiny = entries.find((e) => e.name === "tiny.txt")!.node;
      expect(contentOf(await runsOf(damagedFs, tiny)).toString()).toBe("hi\n");
    });

    test("an INDX record whose update sequence does not match fails listing that folder with IntegrityError, and only that folder", async () => {
      const { lcn, clusterSize } = firstIndexCluster(image, "/many"); // the copy's layout is the image's
      await damage(damagedImage, lcn * clusterSize + 510, Buffer.from([0xbe, 0xef]));
      const damagedFs = await ntfsFormat.open(await imageAccess(damagedImage));
      const entries = await damagedFs.list(await damagedFs.root());
      const many = entries.find((e) => e.name === "many")!.node;
      await expect(damagedFs.list(many)).rejects.toThrow(IntegrityError);
      await expect(damagedFs.list(many)).rejects.toThrow(/INDX record at VCN \d+ of the index of folder \d+ is damaged/);
      const docs = entries.find((e) => e.name === "docs")!.node;
      expect((await damagedFs.list(docs)).map((e) => e.name).sort()).toEqual(["also tiny.txt", "données ☃.txt", "notes"]);
    });
  });

  test("a volume of 64 KiB clusters (index records smaller than a cluster, addressed in 512-byte units) reads as ntfs-3g shows it", async () => {
    const large = path.join(scratch, "64k.img");
    await makeVolume(large, 8 * MIB, ["-c", "65536"]);
    mounted = await Ntfs3gMount.mount(large, mountpoint, "rw");
    await mkdir(path.join(mountpoint, "folder"));
    // 80 entries of about 170 bytes need four or more 4 KiB INDX records in one 64 KiB cluster: VCNs 0, 8, 16...
    for (let i = 0; i < 80; i++) await writeFile(path.join(mountpoint, `folder/a file with a longer name, number ${i}.txt`), `file ${i}\n`);
    await writeFile(path.join(mountpoint, "folder/blob.bin"), pseudoRandom("blob", 300_000));
    await mounted.unmount();
    mounted = await Ntfs3gMount.mount(large, mountpoint, "ro");
    const largeSeen = await snapshot(mountpoint);
    await mounted.unmount();
    mounted = undefined;
    const largeFs = await ntfsFormat.open(await imageAccess(large));
    const largeNodes = await walk(largeFs, await largeFs.root());
    expect(largeSeen.get("folder")!.size).toBeGreaterThan(0); // its index went to INDX records
    await expectWhatNtfs3gShows(largeFs, largeNodes, largeSeen);
  });
});
