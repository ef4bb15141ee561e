/**
 * The XFS reader on filesystems made by mkfs.xfs and written through the Linux driver (a loop
 * mount). The main volume: every directory format (short-form, block, leaf, and node with its
 * extents in a bmbt), small, multi-MiB, empty, sparse, preallocated (unwritten) and fragmented
 * files (one whose extents overflow the inode into a bmbt), inline and remote symlinks, a hard
 * link, a FIFO, and attribute forks that shorten the data fork. A volume of 1 KiB blocks with
 * 64-bit extent counters (nrext64), 16 KiB directory blocks and a bmbt of two levels; a sparse
 * 2 TiB volume whose inode numbers pass 2^32. The tree walked from root() is compared with what
 * the mounted filesystem reported (names, types, sizes, modes, times, owners, link counts,
 * targets, contents, holes); xfs_db says which on-disk format each case took, so the test knows
 * it covers them. Damage (magics, CRCs, and fields rewritten by xfs_db with correct CRCs) fails
 * only the read that meets it; XFS v4 and an unknown incompatible feature are refused by name.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, open, readdir, readFile, readlink, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import { MAX_RUN_BYTES, UnreadableItemError, type FileSystem, type FsNode } from "../../runtime/items/fs/types.ts";
import { xfsFormat } from "../../runtime/items/fs/xfs.ts";
import { MIB, pseudoRandom, tempFolder, text } from "../cli/vaults.ts";
import { fileBytes, imageAccess } from "./disk-points.ts";

/** mkfs.xfs 6.1 refuses data sections under 300 MiB; the image is sparse, so this costs little. */
const IMAGE_BYTES = 320 * MIB;
const BLOCK = 4096;
/** mkfs.xfs's default inode size for v5. */
const INODE_BYTES = 512;
const LABEL = "bulwark-xfs";
const TOOLS = ["mkfs.xfs", "xfs_db", "xfs_io", "mount", "umount", "mkfifo"];
/** Names given an extended attribute after the volume is written: one of each data fork format. */
const WITH_ATTRIBUTE = ["/fragmented.bin", "/big.bin", "/shortform", "/inline-link"];

interface Expected {
  type: FsNode["type"];
  id: string;
  size: number;
  mode: number;
  mtime: number;
  atime: number;
  uid: number;
  gid: number;
  nlink: number;
  target?: string;
  sha256?: string;
  /** File ranges [start, end) that hold data; the rest of the file is holes. */
  data?: [number, number][];
}

/** What was written where, for files whose holes the test checks. */
const sparseLayout: Record<string, { size: number; data: [number, number][] }> = {
  "sparse.bin": { size: 12 * MIB + 100, data: [[0, 64 * 1024], [6 * MIB, 6 * MIB + 100 * 1024]] },
  // Every other 4 KiB block of 8 MiB: 1024 extents, far more than the inode holds, so a bmbt.
  "fragmented.bin": { size: 8 * MIB, data: Array.from({ length: 1024 }, (_, i): [number, number] => [i * 2 * BLOCK, i * 2 * BLOCK + BLOCK]) },
};
/** Every other 1 KiB block, on the volume of 1 KiB blocks: 2048 extents, a bmbt of two levels. */
const fragmented1k = { size: 4 * MIB, data: Array.from({ length: 2048 }, (_, i): [number, number] => [i * 2048, i * 2048 + 1024]) };
const holeLayouts: Record<string, { size: number; data: [number, number][] }> = { ...sparseLayout, "fragmented-1k.bin": fragmented1k };

function requireTools(): void {
  const missing = TOOLS.filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
  if (missing.length > 0) throw new Error(`the XFS tests need ${missing.join(", ")}: install xfsprogs, util-linux and coreutils (CI installs xfsprogs)`);
  if (process.getuid?.() !== 0) throw new Error("the XFS tests mount an image through a loop device, which needs root");
}

function run(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

/** xfs_db's answers about an inode of an unmounted image: its data fork format and its extents' file blocks. */
function xfsDbInode(image: string, ino: string): { format: number; forkOffset: number; fileBlocks: number[] } {
  const core = run("xfs_db", ["-r", "-c", `inode ${ino}`, "-c", "print core.format core.forkoff", image]);
  const bmap = run("xfs_db", ["-r", "-c", `inode ${ino}`, "-c", "bmap", image]);
  return {
    format: Number(/core\.format = (\d+)/.exec(core)![1]),
    forkOffset: Number(/core\.forkoff = (\d+)/.exec(core)![1]),
    fileBlocks: [...bmap.matchAll(/data offset (\d+) startblock/g)].map((m) => Number(m[1])),
  };
}

/** A byte of the image, as xfs_db converts it (an inode's, or the first block of an inode's first extent). */
function xfsDbByte(image: string, what: "inode" | "fsblock", value: string): number {
  return Number(/\((\d+)\)/.exec(run("xfs_db", ["-r", "-c", `convert ${what} ${value} byte`, image]))![1]);
}

function firstBlockOf(image: string, ino: string): string {
  return /startblock (\d+)/.exec(run("xfs_db", ["-r", "-c", `inode ${ino}`, "-c", "bmap", image]))![1];
}

async function overwrite(file: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(file, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

async function writeSparse(file: string, size: number, ranges: [number, number][], seed: string): Promise<void> {
  const handle = await open(file, "w");
  try {
    await handle.truncate(size);
    for (const [start, end] of ranges) await handle.write(pseudoRandom(`${seed}/${start}`, end - start), 0, end - start, start);
  } finally {
    await handle.close();
  }
}

/** Fills the mounted filesystem; every name the test checks, and the formats they should take. */
async function populate(root: string): Promise<void> {
  await writeFile(path.join(root, "small.txt"), text("small", 1000));
  await link(path.join(root, "small.txt"), path.join(root, "hard-link.txt"));
  await writeFile(path.join(root, "empty.txt"), "");
  await writeFile(path.join(root, "big.bin"), pseudoRandom("big", 5 * MIB + 12345));
  for (const [name, layout] of Object.entries(sparseLayout)) await writeSparse(path.join(root, name), layout.size, layout.data, name);
  // 4 KiB written, then 1 MiB allocated unwritten inside the file's size: reads as zeros.
  await writeFile(path.join(root, "preallocated.bin"), pseudoRandom("prealloc", BLOCK));
  run("xfs_io", ["-c", `falloc -k ${BLOCK} ${MIB}`, "-c", `truncate ${BLOCK + MIB}`, path.join(root, "preallocated.bin")]);
  await symlink("small.txt", path.join(root, "inline-link"));
  await symlink(`${"far/away/".repeat(80)}target`, path.join(root, "remote-link"));
  run("mkfifo", [path.join(root, "fifo")]);

  await mkdir(path.join(root, "shortform"));
  for (const name of ["one.txt", "two.txt", "three.txt"]) await writeFile(path.join(root, "shortform", name), text(name, 200));
  await mkdir(path.join(root, "block"));
  for (let i = 0; i < 30; i++) await writeFile(path.join(root, "block", `entry-${i}.txt`), text(`block/${i}`, i * 10));
  await mkdir(path.join(root, "leaf"));
  for (let i = 0; i < 200; i++) await writeFile(path.join(root, "leaf", `leaf-entry-${String(i).padStart(3, "0")}-with-a-longer-name.dat`), i % 20 === 0 ? pseudoRandom(`leaf/${i}`, 3000) : "");
  await mkdir(path.join(root, "node"));
  for (let i = 0; i < 2000; i++) {
    const name = path.join(root, "node", `node-entry-${String(i).padStart(4, "0")}-with-a-name-long-enough-to-fill-blocks.txt`);
    if (i % 25 === 24) await writeAllocated(name, pseudoRandom(`node/${i}`, BLOCK));
    else await writeFile(name, "");
  }

  await chmod(path.join(root, "small.txt"), 0o640);
  await chown(path.join(root, "small.txt"), 1001, 1002);
  await chmod(path.join(root, "big.bin"), 0o600);
  await chown(path.join(root, "big.bin"), 4242, 100);
  await chmod(path.join(root, "shortform"), 0o2750);
  await chown(path.join(root, "shortform"), 0, 1002);
  await chmod(path.join(root, "shortform", "one.txt"), 0o4755);
  await lchown(path.join(root, "remote-link"), 1003, 1004);
}

/**
 * Writes a file and makes XFS allocate its block now (fdatasync), between the directory's blocks:
 * the directory's blocks then lie apart, and its extents overflow the inode into a bmbt.
 */
async function writeAllocated(file: string, bytes: Buffer): Promise<void> {
  const handle = await open(file, "w");
  try {
    await handle.write(bytes);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** Gives every name a distinct atime and mtime, children before their directory (a change to a directory's entries sets its mtime). */
async function setTimes(dir: string, counter = { n: 0 }): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await setTimes(full, counter);
    else await stampTimes(full, counter);
  }
  await stampTimes(dir, counter);
}

async function stampTimes(file: string, counter: { n: number }): Promise<void> {
  const n = counter.n++;
  // Around 2020 and, for every tenth name, past 2038 (bigtime).
  const mtime = (n % 10 === 0 ? 2_200_000_000 : 1_600_000_000) + n * 7 + 0.125;
  await lutimes(file, mtime - 3600, mtime);
}

/** What the mounted filesystem says of every name under `dir`, keyed by path from the root ("/" for the root). */
async function describeTree(dir: string, relative = "/", out = new Map<string, Expected>()): Promise<Map<string, Expected>> {
  out.set(relative, await describeName(dir, relative));
  const entries = await readdir(dir, { withFileTypes: true });
  // A few names at once: 2000 small files one by one are most of this test's set-up time.
  for (let i = 0; i < entries.length; i += 16) {
    await Promise.all(entries.slice(i, i + 16).map(async (entry) => {
      const full = path.join(dir, entry.name);
      const rel = path.posix.join(relative, entry.name);
      if (entry.isDirectory()) await describeTree(full, rel, out);
      else out.set(rel, await describeName(full, rel));
    }));
  }
  return out;
}

async function describeName(file: string, relative: string): Promise<Expected> {
  const st = await lstat(file, { bigint: true });
  const type = st.isDirectory() ? "dir" : st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : "other";
  const expected: Expected = {
    type,
    id: String(st.ino),
    size: Number(st.size),
    mode: Number(st.mode & 0o7777n),
    mtime: Number(st.mtimeNs / 1_000_000n),
    atime: Number(st.atimeNs / 1_000_000n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    nlink: Number(st.nlink),
  };
  if (type === "symlink") expected.target = await readlink(file);
  if (type === "file") {
    expected.sha256 = createHash("sha256").update(await readFile(file)).digest("hex");
    const name = path.posix.basename(relative);
    expected.data = holeLayouts[name]?.data ?? (name === "preallocated.bin" ? [[0, BLOCK]] : Number(st.size) > 0 ? [[0, Number(st.size)]] : []);
  }
  return expected;
}

/** Reads a file through the reader: its sha256 (holes as zeros) and the ranges that came as data. */
async function readThrough(fs: FileSystem, node: FsNode): Promise<{ sha256: string; data: [number, number][] }> {
  const hash = createHash("sha256");
  const data: [number, number][] = [];
  let position = 0;
  for await (const run of fs.read(node)) {
    expect(run.offset).toBe(position);
    if (run.hole) {
      for (let left = run.length; left > 0; left -= MIB) hash.update(Buffer.alloc(Math.min(MIB, left)));
    } else {
      expect(run.data.length).toBe(run.length);
      expect(run.length).toBeLessThanOrEqual(MAX_RUN_BYTES);
      hash.update(run.data);
      const last = data.at(-1);
      if (last && last[1] === run.offset) last[1] += run.length;
      else data.push([run.offset, run.offset + run.length]);
    }
    position += run.length;
  }
  expect(position).toBe(node.size);
  return { sha256: hash.digest("hex"), data };
}

/** The merged data ranges of a layout (adjacent written ranges are one run of data). */
function merged(ranges: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [start, end] of ranges) {
    const last = out.at(-1);
    if (last && last[1] === start) last[1] = end;
    else out.push([start, end]);
  }
  return out;
}

/** Mount points still mounted, for afterAll to unmount when a test failed half-way. */
const mounted = new Set<string>();

/** A sparse image made by mkfs.xfs, filled through a loop mount, unmounted: what the mount said of each name. */
async function buildVolume(image: string, mkfsArgs: string[], fill: (root: string) => Promise<void>, bytes = IMAGE_BYTES): Promise<Map<string, Expected>> {
  const mountPoint = `${image}.mnt`;
  await writeSparse(image, bytes, [], "");
  run("mkfs.xfs", ["-q", ...mkfsArgs, image]);
  await mkdir(mountPoint);
  run("mount", ["-o", "loop,noatime", image, mountPoint]);
  mounted.add(mountPoint);
  await fill(mountPoint);
  await setTimes(mountPoint);
  const described = await describeTree(mountPoint);
  run("umount", [mountPoint]);
  mounted.delete(mountPoint);
  return described;
}

/** Walks the tree from root(), reading every file: what the reader says of each name, keyed like describeTree. */
async function walkTree(fs: FileSystem): Promise<Map<string, Expected>> {
  const seen = new Map<string, Expected>();
  async function walk(node: FsNode, relative: string): Promise<void> {
    const entry: Expected = { type: node.type, id: node.id, size: node.size, mode: node.mode, mtime: node.mtime, atime: node.atime, uid: node.uid, gid: node.gid, nlink: node.nlink };
    if (node.target !== undefined) entry.target = node.target;
    if (node.type === "file") Object.assign(entry, await readThrough(fs, node));
    seen.set(relative, entry);
    if (node.type === "dir") for (const child of await fs.list(node)) await walk(child.node, path.posix.join(relative, child.name));
  }
  await walk(await fs.root(), "/");
  return seen;
}

function expectSameTree(seen: Map<string, Expected>, expected: Map<string, Expected>): void {
  for (const value of expected.values()) if (value.data) value.data = merged(value.data);
  expect([...seen.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [relative, value] of expected) expect({ relative, ...seen.get(relative) }).toEqual({ relative, ...value });
}

describe("XFS v5 read from the bytes of a volume made by mkfs.xfs and written by Linux", () => {
  let scratch: string;
  let image: string;
  let expected: Map<string, Expected>;

  async function openImage(file = image): Promise<FileSystem> {
    return xfsFormat.open(await imageAccess(file));
  }

  async function lookup(fs: FileSystem, relative: string): Promise<FsNode> {
    let node = await fs.root();
    for (const name of relative.split("/").filter(Boolean)) {
      const entry = (await fs.list(node)).find((e) => e.name === name);
      if (!entry) throw new Error(`${relative}: no "${name}"`);
      node = entry.node;
    }
    return node;
  }

  beforeAll(async () => {
    requireTools();
    scratch = await tempFolder("xfs");
    image = path.join(scratch, "xfs.img");
    expected = await buildVolume(image, ["-L", LABEL], populate);
    // An extended attribute (set offline by xfs_db) gives these inodes an attribute fork: their
    // data fork is then shorter than the literal area, and a bmbt root's pointers move with it.
    for (const name of WITH_ATTRIBUTE) run("xfs_db", ["-x", "-c", `inode ${expected.get(name)!.id}`, "-c", "attr_set -v 64 note", image]);
  });

  afterAll(() => {
    // `mount -o loop` detaches its loop device at umount.
    for (const mountPoint of mounted) run("umount", [mountPoint]);
  });

  test("the superblock is recognised and gives the label; the root is the directory mkfs.xfs made", async () => {
    const head = await fileBytes(image, 0, 65536);
    expect(xfsFormat.probe(head)).toBe(true);
    expect(xfsFormat.probe(Buffer.alloc(65536))).toBe(false);
    const fs = await openImage();
    expect(fs.filesystem).toBe("xfs");
    expect(fs.label).toBe(LABEL);
    const root = await fs.root();
    expect(root).toMatchObject({ type: "dir", id: expected.get("/")!.id, mode: expected.get("/")!.mode, mtime: expected.get("/")!.mtime });
  });

  test("each case took the on-disk format it is meant to cover (xfs_db)", () => {
    const ino = (relative: string) => expected.get(relative)!.id;
    const leafBlock = (32 * 1024 ** 3) / BLOCK;
    const freeBlock = (64 * 1024 ** 3) / BLOCK;
    expect(xfsDbInode(image, ino("/shortform")).format).toBe(1);
    const block = xfsDbInode(image, ino("/block"));
    expect(block).toMatchObject({ format: 2, fileBlocks: [0] });
    const leaf = xfsDbInode(image, ino("/leaf"));
    expect(leaf.fileBlocks.some((b) => b >= leafBlock) && !leaf.fileBlocks.some((b) => b >= freeBlock)).toBe(true);
    const node = xfsDbInode(image, ino("/node"));
    expect(node.format).toBe(3);
    expect(node.fileBlocks.some((b) => b >= freeBlock)).toBe(true);
    expect(xfsDbInode(image, ino("/fragmented.bin")).format).toBe(3);
    expect(xfsDbInode(image, ino("/inline-link")).format).toBe(1);
    expect(xfsDbInode(image, ino("/remote-link")).format).toBe(2);
    for (const name of WITH_ATTRIBUTE) expect({ name, attributeFork: xfsDbInode(image, ino(name)).forkOffset > 0 }).toEqual({ name, attributeFork: true });
  });

  test("the whole tree walked from root() matches the mounted filesystem: names, types, sizes, modes, times, owners, links, targets, contents and holes", async () => {
    const seen = await walkTree(await openImage());
    expectSameTree(seen, expected);
    expect(seen.get("/hard-link.txt")!.id).toBe(seen.get("/small.txt")!.id);
    expect(seen.get("/small.txt")!.nlink).toBe(2);
    expect(seen.get("/fifo")!.type).toBe("other");
  });

  test("a directory's entries come in the order the filesystem keeps them, without . and ..", async () => {
    const fs = await openImage();
    const names = (await fs.list(await lookup(fs, "/node"))).map((e) => e.name);
    expect(names).toHaveLength(2000);
    expect(names).not.toContain(".");
    expect(names[0]).toBe("node-entry-0000-with-a-name-long-enough-to-fill-blocks.txt");
  });

  test("a damaged directory block's magic fails the listing of that directory only", async () => {
    const blockDir = expected.get("/block")!.id;
    const at = xfsDbByte(image, "fsblock", firstBlockOf(image, blockDir));
    const original = await fileBytes(image, at, 4);
    await overwrite(image, at, Buffer.from("JUNK"));
    try {
      const fs = await openImage();
      const root = await fs.root();
      const entries = await fs.list(root);
      const block = entries.find((e) => e.name === "block")!.node;
      const error = await fs.list(block).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IntegrityError);
      expect((error as Error).message).toMatch(new RegExp(`directory inode ${blockDir}.*not XDB3 or XDD3`));
      expect(await fs.list(entries.find((e) => e.name === "leaf")!.node)).toHaveLength(200);
      expect((await readThrough(fs, entries.find((e) => e.name === "big.bin")!.node)).sha256).toBe(expected.get("/big.bin")!.sha256);
    } finally {
      await overwrite(image, at, original);
    }
  });

  test("a damaged inode's magic fails the listing that reaches it, naming the inode, and nothing else", async () => {
    const victim = expected.get("/shortform/two.txt")!.id;
    const at = xfsDbByte(image, "inode", victim);
    const original = await fileBytes(image, at, 2);
    await overwrite(image, at, Buffer.from([0, 0]));
    try {
      const fs = await openImage();
      const shortform = await lookup(fs, "/shortform");
      const error = await fs.list(shortform).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IntegrityError);
      expect((error as Error).message).toContain(`inode ${victim}`);
      expect((error as Error).message).toContain('not "IN"');
      expect(await fs.list(await lookup(fs, "/block"))).toHaveLength(30);
    } finally {
      await overwrite(image, at, original);
    }
  });

  test("an inode whose CRC does not match is damage, not a wrong answer", async () => {
    const victim = expected.get("/small.txt")!.id;
    const at = xfsDbByte(image, "inode", victim);
    const original = await fileBytes(image, at + 8, 4);
    // The uid field changed behind the CRC's back: a reader that skipped the check would say 0x07070707.
    await overwrite(image, at + 8, Buffer.from([7, 7, 7, 7]));
    try {
      const fs = await openImage();
      const error = await fs.list(await fs.root()).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IntegrityError);
      expect((error as Error).message).toMatch(new RegExp(`inode ${victim} .*CRC32C`));
    } finally {
      await overwrite(image, at + 8, original);
    }
  });

  /** Rewrites an inode's field with xfs_db (which keeps the CRC right, as someone with write access could), runs `check`, then puts the inode back. */
  async function withInodeField(relative: string, field: string, value: string, check: (victim: string) => Promise<void>): Promise<void> {
    const victim = expected.get(relative)!.id;
    const at = xfsDbByte(image, "inode", victim);
    const original = await fileBytes(image, at, INODE_BYTES);
    run("xfs_db", ["-x", "-c", `inode ${victim}`, "-c", `write -d ${field} ${value}`, image]);
    try {
      await check(victim);
    } finally {
      await overwrite(image, at, original);
    }
  }

  test("a bmbt whose root repeats a pointer or claims a level its blocks do not have is damage, found without looping", async () => {
    const readFragmented = async () => readThrough(await openImage(), await lookup(await openImage(), "/fragmented.bin"));
    await withInodeField("/fragmented.bin", "u3.bmbt.ptrs[2]", firstBmbtPointer(), async (victim) => {
      await expect(readFragmented()).rejects.toThrow(new RegExp(`inode ${victim}'s extent at file block \\d+ overlaps or repeats`));
    });
    await withInodeField("/fragmented.bin", "u3.bmbt.level", "2", async (victim) => {
      await expect(readFragmented()).rejects.toThrow(new RegExp(`bmbt block \\d+ of inode ${victim} .*level 0 .*where level 1 was due`));
    });
    expect((await readFragmented()).sha256).toBe(expected.get("/fragmented.bin")!.sha256);

    function firstBmbtPointer(): string {
      const printed = run("xfs_db", ["-r", "-c", `inode ${expected.get("/fragmented.bin")!.id}`, "-c", "print u3.bmbt.ptrs", image]);
      return /1:(\d+)/.exec(printed)![1];
    }
  });

  test("a short-form directory that counts more entries than it holds is damage, not a read past its fork", async () => {
    await withInodeField("/shortform", "u3.sfdir3.hdr.count", "200", async (victim) => {
      const fs = await openImage();
      const error = await fs.list(await lookup(fs, "/shortform")).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IntegrityError);
      expect((error as Error).message).toMatch(new RegExp(`short-form directory inode ${victim}'s entry \\d+ runs past`));
    });
  });

  test("finding and reading one small file reads its path's metadata and the file, not the volume", async () => {
    const access = await imageAccess(image);
    const fs = await xfsFormat.open(access);
    const found = await lookup(fs, "/shortform/one.txt");
    expect((await readThrough(fs, found)).sha256).toBe(expected.get("/shortform/one.txt")!.sha256);
    expect(access.bytes).toBeLessThan(256 * 1024);
  });

  describe("1 KiB blocks, 64-bit extent counters and 16 KiB directory blocks (mkfs.xfs -b size=1024 -i nrext64=1 -n size=16384)", () => {
    let wide: string;
    let wideExpected: Map<string, Expected>;

    beforeAll(async () => {
      wide = path.join(scratch, "nrext64.img");
      wideExpected = await buildVolume(wide, ["-b", "size=1024", "-i", "nrext64=1", "-n", "size=16384"], async (root) => {
        await writeSparse(path.join(root, "fragmented-1k.bin"), fragmented1k.size, fragmented1k.data, "wide");
        await mkdir(path.join(root, "block"));
        for (let i = 0; i < 30; i++) await writeFile(path.join(root, "block", `entry-${i}.txt`), text(`wide/${i}`, 100));
        await mkdir(path.join(root, "leaf"));
        for (let i = 0; i < 600; i++) await writeFile(path.join(root, "leaf", `wide-entry-${String(i).padStart(3, "0")}-with-a-longer-name.dat`), "");
      });
    });

    test("inodes that count extents in 64 bits read the same: a bmbt of two levels; directory blocks of sixteen filesystem blocks, one and several", async () => {
      const fragmented = wideExpected.get("/fragmented-1k.bin")!.id;
      // A directory's size is the end of its data blocks: one block, and several.
      expect(wideExpected.get("/block")!.size).toBe(16384);
      expect(wideExpected.get("/leaf")!.size).toBeGreaterThanOrEqual(3 * 16384);
      expect(run("xfs_db", ["-r", "-c", `inode ${fragmented}`, "-c", "print core.format u3.bmbt.level v3.nrext64", wide])).toMatch(/core\.format = 3 \(btree\)\s+u3\.bmbt\.level = 2\s+v3\.nrext64 = 1/);
      expectSameTree(await walkTree(await openImage(wide)), wideExpected);
    });
  });

  describe("inode numbers past 32 bits (a sparse 2 TiB volume of three AGs, each past 2^31 inode numbers)", () => {
    let large: string;
    let largeExpected: Map<string, Expected>;

    beforeAll(async () => {
      large = path.join(scratch, "large.img");
      // A small log keeps what mkfs.xfs writes (and the disk it takes) to a few MiB.
      largeExpected = await buildVolume(large, ["-d", "agcount=3", "-l", "size=64m"], async (root) => {
        // Linux spreads new directories over the AGs: some land in AG 2, whose inode numbers pass 2^32.
        for (let i = 0; i < 6; i++) {
          await mkdir(path.join(root, `dir-${i}`));
          await writeFile(path.join(root, `dir-${i}`, "file.txt"), text(`large/${i}`, 500));
        }
      }, 2 * 1024 ** 4);
    });

    test("a short-form directory holding 8-byte inode numbers lists every entry, and their inodes are found", async () => {
      expect([...largeExpected.values()].some((e) => BigInt(e.id) >= 2n ** 32n)).toBe(true);
      const header = run("xfs_db", ["-r", "-c", `inode ${largeExpected.get("/")!.id}`, "-c", "print u3.sfdir3.hdr.count u3.sfdir3.hdr.i8count", large]);
      expect(header).toMatch(/count = 6\s+u3\.sfdir3\.hdr\.i8count = [1-5]\b/);
      expectSameTree(await walkTree(await openImage(large)), largeExpected);
    });
  });

  describe("volumes this reader refuses, by name", () => {
    let other: string;

    beforeAll(async () => {
      other = path.join(scratch, "other.img");
      await writeSparse(other, IMAGE_BYTES, [], "");
    });

    test("XFS v4 (mkfs.xfs -m crc=0) is refused as not read, saying it is version 4", async () => {
      run("mkfs.xfs", ["-q", "-f", "-m", "crc=0", other]);
      expect(xfsFormat.probe(await fileBytes(other, 0, 65536))).toBe(true);
      const error = await openImage(other).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UnreadableItemError);
      expect((error as Error).message).toContain("version 4");
    });

    test("an incompatible feature the reader does not know (set by xfs_db) is refused by its bit", async () => {
      run("mkfs.xfs", ["-q", "-f", other]);
      const features = Number(/features_incompat = (0x[0-9a-f]+)/.exec(run("xfs_db", ["-r", "-c", "sb 0", "-c", "print features_incompat", other]))![1]);
      run("xfs_db", ["-x", "-c", "sb 0", "-c", `write -d features_incompat ${features | (1 << 20)}`, other]);
      const error = await openImage(other).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UnreadableItemError);
      expect((error as Error).message).toContain("unknown feature bit 20");
    });
  });
});
