/**
 * The ext2/ext3/ext4 reader on volumes made by mke2fs from one source folder (nested folders, a
 * folder of 500 files hashed into an htree by e2fsck -D, empty, small and inline-sized files, a
 * 3 MiB pseudorandom file, a sparse file, a file of 24 extents, a hard link, fast and slow
 * symlinks, setuid and private modes, a time before 1970, owners 1234:5678): ext4 (4 KiB blocks,
 * 256-byte inodes), ext4 with inline_data, ext3 (1 KiB blocks, 128-byte inodes: the large file
 * reaches its double-indirect block), ext4 with meta_bg, and ext2. Every node of each volume is
 * compared with the source (names, types, sizes, modes, mtimes, owners, link targets, content
 * hashes, holes) and with what blkid and debugfs say. Then what only debugfs or the kernel writes:
 * nanoseconds and times after 2038, uninitialised extents, an inline folder spilling into
 * system.data; journals holding the last transactions (written by debugfs, and by the kernel in a
 * snapshot copied while mounted), read as e2fsck's replay leaves the volume, revoked blocks not
 * replayed. Damage (an extent header, a directory record, an indirect pointer, the journal
 * superblock) fails the reads that touch it and leaves the rest readable; an unknown incompat
 * feature is refused by name.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, chmod, chown, lchown, lutimes, mkdir, open, readdir, readFile, readlink, symlink, link, truncate, utimes, writeFile, lstat } from "node:fs/promises";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import { extFormat } from "../../runtime/items/fs/ext.ts";
import { MAX_RUN_BYTES, PROBE_BYTES, UnreadableItemError, type FileRun, type FileSystem, type FsNode } from "../../runtime/items/fs/types.ts";
import { MIB, pseudoRandom, tempFolder } from "../cli/vaults.ts";
import { imageAccess } from "./disk-points.ts";

const TOOLS = ["mke2fs", "e2fsck", "debugfs", "dumpe2fs", "blkid", "mount", "umount", "touch"];
const MANY_FILES = 500;
const FRAGMENTS = 24;
const SPARSE_SIZE = 2 * MIB + 100 * 1024;
/** Where the sparse file has data; everything else is a hole. */
const SPARSE_DATA = [
  { offset: 256 * 1024, length: 8 * 1024 },
  { offset: MIB, length: 4096 + 100 },
];
/** Before the epoch: 32-bit signed seconds keep it. (mke2fs -d keeps whole seconds, so the source's times are whole.) */
const BEFORE_1970 = new Date(Date.UTC(1960, 1, 29, 12, 34, 56));
const LONG_TARGET = `${"a-rather-long-folder-name/".repeat(8)}target-that-does-not-exist`;

interface Volume {
  kind: string;
  filesystem: "ext2" | "ext3" | "ext4";
  blockSize: number;
  inodeSize: number;
  image: string;
  mke2fs: string[];
  /**
   * mke2fs 1.47.0 with inline_data copies a sparse file with its first block allocated and its size
   * cut at its last data block (an e2fsprogs bug): there the sparse file is checked against what
   * debugfs reads of it, not against the source.
   */
  sparseAsDebugfsReadsIt?: boolean;
}

/** What a node should be, from lstat of the source folder. */
interface Expected {
  type: FsNode["type"];
  size: number;
  mode: number;
  mtimeNs: bigint;
  uid: number;
  gid: number;
  ino: number;
  nlink: number;
  target?: string;
  sha256?: string;
}

interface Listed {
  node: FsNode;
  path: string;
}

function requireTools(): void {
  const missing = TOOLS.filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
  if (missing.length > 0) throw new Error(`the ext reader's tests need ${missing.join(", ")} (Debian packages e2fsprogs and util-linux): install them`);
}

async function makeSource(root: string): Promise<void> {
  await mkdir(path.join(root, "nested/a/b"), { recursive: true });
  await mkdir(path.join(root, "many"));
  await writeFile(path.join(root, "nested/a/b/deep.txt"), "three folders down\n");
  await writeFile(path.join(root, "nested/sibling.txt"), "next to a\n");
  for (let i = 0; i < MANY_FILES; i++) await writeFile(path.join(root, "many", `entry-${String(i).padStart(4, "0")}.txt`), `file number ${i}\n`);
  await writeFile(path.join(root, "empty"), "");
  await writeFile(path.join(root, "small.txt"), "a small text file\n");
  // Longer than i_block's 60 bytes but short enough for the system.data attribute of a 256-byte inode.
  await writeFile(path.join(root, "medium.txt"), "m".repeat(50) + " fits beside i_block in the inode's attribute area\n");
  await writeFile(path.join(root, "big.bin"), pseudoRandom("ext big file", 3 * MIB));
  await writeFile(path.join(root, "sparse.bin"), "");
  await truncate(path.join(root, "sparse.bin"), SPARSE_SIZE);
  const sparse = await open(path.join(root, "sparse.bin"), "r+");
  try {
    for (const [i, region] of SPARSE_DATA.entries()) await sparse.write(pseudoRandom(`sparse ${i}`, region.length), 0, region.length, region.offset);
  } finally {
    await sparse.close();
  }
  // More extents than the inode's four slots: an extent tree of depth 1 on ext4. Data at both ends, so mke2fs's inline_data quirk (below) does not apply.
  const fragmented = await open(path.join(root, "fragmented.bin"), "w");
  try {
    for (let i = 0; i < FRAGMENTS; i++) await fragmented.write(pseudoRandom(`fragment ${i}`, 4096), 0, 4096, i * 16 * 1024);
  } finally {
    await fragmented.close();
  }
  await writeFile(path.join(root, "linked.txt"), "one inode, two names\n");
  await link(path.join(root, "linked.txt"), path.join(root, "nested/also-linked.txt"));
  await symlink("nested/a/b/deep.txt", path.join(root, "short-link"));
  await symlink(LONG_TARGET, path.join(root, "long-link"));
  await writeFile(path.join(root, "setuid.bin"), "#!/bin/sh\n");
  await chmod(path.join(root, "setuid.bin"), 0o4755);
  await writeFile(path.join(root, "private.txt"), "for the owner only\n");
  await chmod(path.join(root, "private.txt"), 0o600);
  await writeFile(path.join(root, "owned.txt"), "owned by someone else\n");
  await chown(path.join(root, "owned.txt"), 1234, 5678);
  await chown(path.join(root, "nested/a"), 1234, 5678);
  await lchown(path.join(root, "short-link"), 1234, 5678);
  await writeFile(path.join(root, "old.txt"), "from 1960\n");
  // Times last: writing into a folder changes its mtime. (Node takes a negative number of seconds as "now": a Date says 1960.)
  await utimes(path.join(root, "old.txt"), BEFORE_1970, BEFORE_1970);
  await utimes(path.join(root, "nested/a/b"), 1_000_000_000, 1_000_000_000);
  await lutimes(path.join(root, "long-link"), 1_500_000_000, 1_500_000_000);
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

/** Every node under the source folder, by path from the root ("/many/entry-0001.txt"). */
async function sourceTree(root: string): Promise<Map<string, Expected>> {
  const found = new Map<string, Expected>();
  const walk = async (folder: string, prefix: string) => {
    for (const name of (await readdir(folder)).sort()) {
      const full = path.join(folder, name);
      const stat = await lstat(full, { bigint: true });
      const type = stat.isDirectory() ? "dir" : stat.isFile() ? "file" : stat.isSymbolicLink() ? "symlink" : "other";
      const expected: Expected = {
        type,
        size: Number(stat.size),
        mode: Number(stat.mode) & 0o7777,
        mtimeNs: stat.mtimeNs,
        uid: Number(stat.uid),
        gid: Number(stat.gid),
        ino: Number(stat.ino),
        nlink: Number(stat.nlink),
      };
      if (type === "symlink") expected.target = await readlink(full);
      if (type === "file") expected.sha256 = createHash("sha256").update(await readFile(full)).digest("hex");
      found.set(`${prefix}/${name}`, expected);
      if (type === "dir") await walk(full, `${prefix}/${name}`);
    }
  };
  await walk(root, "");
  return found;
}

/** Every node of the volume from root(), by path, listing each directory once. */
async function volumeTree(fs: FileSystem): Promise<Map<string, Listed>> {
  const found = new Map<string, Listed>();
  const walk = async (dir: FsNode, prefix: string) => {
    for (const entry of await fs.list(dir)) {
      const at = `${prefix}/${entry.name}`;
      found.set(at, { node: entry.node, path: at });
      if (entry.node.type === "dir") await walk(entry.node, at);
    }
  };
  await walk(await fs.root(), "");
  return found;
}

/** One line per node (path, id, type, size, mtime, target): two readings of a volume compared at a glance. */
function treeSummary(tree: Map<string, Listed>): string[] {
  return [...tree.values()].map(({ path: at, node }) => `${at} ${node.id} ${node.type} ${node.size} ${node.mtime} ${node.target ?? ""}`).sort();
}

/** A file's runs, checked to cover [0, size) in order with data runs of at most MAX_RUN_BYTES. */
async function readRuns(fs: FileSystem, node: FsNode): Promise<FileRun[]> {
  const runs: FileRun[] = [];
  let offset = 0;
  for await (const run of fs.read(node)) {
    expect(run.offset).toBe(offset);
    if (!run.hole) {
      expect(run.data.length).toBe(run.length);
      expect(run.length).toBeLessThanOrEqual(MAX_RUN_BYTES);
    }
    runs.push(run);
    offset += run.length;
  }
  expect(offset).toBe(node.size);
  return runs;
}

async function contentHash(fs: FileSystem, node: FsNode): Promise<string> {
  const hash = createHash("sha256");
  for (const run of await readRuns(fs, node)) hash.update(run.hole ? Buffer.alloc(run.length) : run.data);
  return hash.digest("hex");
}

/** Holes as [start, end) ranges, adjacent runs of a kind merged. */
function holeRanges(runs: FileRun[]): [number, number][] {
  const holes: [number, number][] = [];
  for (const run of runs) {
    if (!run.hole) continue;
    const last = holes.at(-1);
    if (last && last[1] === run.offset) last[1] = run.offset + run.length;
    else holes.push([run.offset, run.offset + run.length]);
  }
  return holes;
}

/** The sparse file's holes as a filesystem of this block size keeps them: data rounded out to whole blocks. */
function expectedHoles(blockSize: number): [number, number][] {
  const holes: [number, number][] = [];
  let at = 0;
  for (const region of SPARSE_DATA) {
    const start = Math.floor(region.offset / blockSize) * blockSize;
    if (start > at) holes.push([at, start]);
    at = Math.ceil((region.offset + region.length) / blockSize) * blockSize;
  }
  if (at < SPARSE_SIZE) holes.push([at, SPARSE_SIZE]);
  return holes;
}

/** The mtime mke2fs -d (1.47) writes: whole seconds, without nanoseconds (in ms). */
function keptMtime(ns: bigint): number {
  return Number(floorDiv(ns, 1_000_000_000n) * 1000n);
}

function debugfs(image: string, request: string): string {
  const run = spawnSync("debugfs", ["-R", request, image], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`debugfs -R "${request}" ${image} exited ${run.status}: ${run.stderr}`);
  return run.stdout;
}

/** A file as debugfs reads it: its size, the sha256 of what `dump` writes, and its holes from the EXTENTS list of `stat`. */
function debugfsFile(image: string, file: string, blockSize: number, dumpTo: string): { size: number; sha256: string; holes: [number, number][] } {
  const stat = debugfs(image, `stat ${file}`);
  const size = Number(/\bSize: (\d+)/.exec(stat)![1]);
  debugfs(image, `dump ${file} ${dumpTo}`);
  const sha256 = createHash("sha256").update(readFileSync(dumpTo)).digest("hex");
  const holes: [number, number][] = [];
  let at = 0;
  // "(0):1421, (64-65):1422-1423": logical blocks, then where they lie.
  for (const [, first, last] of stat.slice(stat.indexOf("EXTENTS:")).matchAll(/\((\d+)(?:-(\d+))?\):/g)) {
    const start = Number(first) * blockSize;
    if (start > at) holes.push([at, Math.min(start, size)]);
    at = (Number(last ?? first) + 1) * blockSize;
  }
  if (at < size) holes.push([at, size]);
  return { size, sha256, holes };
}

function run(command: string, args: string[], needs: string): void {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${result.status} (${needs}): ${result.stderr}`);
}

/** Runs debugfs -w on a script of requests (the journal commands need one session: jo, jw, jc). */
function debugfsScript(image: string, requests: string[]): void {
  const script = `${image}.debugfs`;
  writeFileSync(script, requests.join("\n") + "\n");
  const result = spawnSync("debugfs", ["-w", "-f", script, image], { encoding: "utf8" });
  if (result.status !== 0 || /error|invalid|not found|usage/i.test(result.stderr)) throw new Error(`debugfs -w -f (${requests.join("; ")}) on ${image} failed: ${result.stderr}`);
}

/** The blocks of `after` that differ from `before`, with their new bytes (small test images only). */
async function changedBlocks(before: string, after: string, blockSize: number): Promise<{ number: number; bytes: Buffer }[]> {
  const [a, b] = [await readFile(before), await readFile(after)];
  const changed: { number: number; bytes: Buffer }[] = [];
  for (let at = 0; at < b.length; at += blockSize) {
    const bytes = b.subarray(at, at + blockSize);
    if (!bytes.equals(a.subarray(at, at + blockSize))) changed.push({ number: at / blockSize, bytes });
  }
  return changed;
}

function debugfsWrite(image: string, request: string): void {
  const run = spawnSync("debugfs", ["-w", "-R", request, image], { encoding: "utf8" });
  if (run.status !== 0 || /error|invalid|not found/i.test(run.stderr)) throw new Error(`debugfs -w -R "${request}" ${image} failed: ${run.stderr}`);
}

async function writeAt(image: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(image, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

async function openImage(image: string): Promise<FileSystem> {
  const access = await imageAccess(image);
  const head = await access.read(0, Math.min(PROBE_BYTES, access.size));
  expect(extFormat.probe(head)).toBe(true);
  return extFormat.open(access);
}

describe("ext2, ext3 and ext4 volumes made by mke2fs", () => {
  let scratch: string;
  let source: string;
  let expected: Map<string, Expected>;
  const volumes: Volume[] = [
    { kind: "ext4 (4 KiB blocks, 256-byte inodes)", filesystem: "ext4", blockSize: 4096, inodeSize: 256, image: "", mke2fs: ["-t", "ext4", "-b", "4096", "-I", "256"] },
    { kind: "ext4 with inline_data", filesystem: "ext4", blockSize: 4096, inodeSize: 256, image: "", mke2fs: ["-t", "ext4", "-b", "4096", "-I", "256", "-O", "inline_data"], sparseAsDebugfsReadsIt: true },
    { kind: "ext3 (1 KiB blocks, 128-byte inodes)", filesystem: "ext3", blockSize: 1024, inodeSize: 128, image: "", mke2fs: ["-t", "ext3", "-b", "1024", "-I", "128"] },
    // 24 groups of 1024 blocks and 32 inodes: the files' inodes reach past the 16 groups of the first meta group.
    { kind: "ext4 with meta_bg (1 KiB blocks, 24 groups)", filesystem: "ext4", blockSize: 1024, inodeSize: 256, image: "", mke2fs: ["-t", "ext4", "-b", "1024", "-g", "1024", "-N", "700", "-O", "meta_bg,^resize_inode"] },
    { kind: "ext2", filesystem: "ext2", blockSize: 4096, inodeSize: 256, image: "", mke2fs: ["-t", "ext2", "-b", "4096", "-I", "256"] },
  ];

  /** A loop mount still in place when a test failed half-way: unmounted after the file. */
  let mounted: string | undefined;
  const volumeOf = (kind: string): Volume => volumes.find((volume) => volume.kind.startsWith(kind))!;

  beforeAll(async () => {
    requireTools();
    scratch = await tempFolder("ext");
    source = path.join(scratch, "source");
    await mkdir(source);
    await makeSource(source);
    expected = await sourceTree(source);
    for (const [i, volume] of volumes.entries()) {
      volume.image = path.join(scratch, `volume-${i}.img`);
      execFileSync("mke2fs", ["-q", "-F", ...volume.mke2fs, "-L", `vol-${volume.filesystem}`, "-d", source, volume.image, "24M"], { stdio: "pipe" });
      // mke2fs -d writes linear directories; e2fsck -D indexes those of more than one block (htree).
      const fsck = spawnSync("e2fsck", ["-fyD", volume.image], { encoding: "utf8" });
      if (fsck.status !== 0 && fsck.status !== 1) throw new Error(`e2fsck -fyD ${volume.image} exited ${fsck.status}: ${fsck.stdout}${fsck.stderr}`);
    }
  });

  afterAll(() => {
    if (mounted) spawnSync("umount", [mounted]);
  });

  /** Mounts the image through a loop device for `use`, and unmounts it after, even when `use` fails. */
  async function withLoopMount(image: string, use: (mountPoint: string) => Promise<void>): Promise<void> {
    const mountPoint = `${image}.mnt`;
    await mkdir(mountPoint);
    run("mount", ["-o", "loop", image, mountPoint], "mounting needs root and the loop driver");
    mounted = mountPoint;
    try {
      await use(mountPoint);
    } finally {
      run("umount", [mountPoint], "umount");
      mounted = undefined;
    }
  }

  describe.each(volumes.map((volume, index) => ({ kind: volume.kind, index })))("$kind", ({ index }) => {
    const volume = () => volumes[index];

    test("is named as blkid names it, with the label mke2fs gave", async () => {
      const fs = await openImage(volume().image);
      const blkid = execFileSync("blkid", ["-o", "value", "-s", "TYPE", volume().image], { encoding: "utf8" }).trim();
      expect(fs.filesystem).toBe(volume().filesystem);
      expect(fs.filesystem).toBe(blkid);
      expect(fs.label).toBe(`vol-${volume().filesystem}`);
    });

    test("every name, type, size, mode, mtime, owner, link target and content equals the source folder's", async () => {
      const fs = await openImage(volume().image);
      const tree = await volumeTree(fs);
      expect(tree.get("/lost+found")?.node.type).toBe("dir");
      tree.delete("/lost+found");
      expect([...tree.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [at, source] of expected) {
        const { node } = tree.get(at)!;
        const want = at === "/sparse.bin" && volume().sparseAsDebugfsReadsIt ? { ...source, ...debugfsFile(volume().image, at, volume().blockSize, path.join(scratch, "dumped")) } : source;
        const got = { path: at, type: node.type, mode: node.mode, uid: node.uid, gid: node.gid, target: node.target };
        expect(got).toEqual({ path: at, type: want.type, mode: want.mode, uid: want.uid, gid: want.gid, target: want.target });
        if (want.type !== "dir") expect({ at, size: node.size }).toEqual({ at, size: want.size });
        expect({ at, mtime: node.mtime }).toEqual({ at, mtime: keptMtime(want.mtimeNs) });
        if (want.type === "file") expect({ at, sha256: await contentHash(fs, node) }).toEqual({ at, sha256: want.sha256 });
      }
    });

    test("two names of one inode share its id, and its link count says two", async () => {
      const fs = await openImage(volume().image);
      const tree = await volumeTree(fs);
      const first = tree.get("/linked.txt")!.node;
      const second = tree.get("/nested/also-linked.txt")!.node;
      expect(first.id).toBe(second.id);
      expect(first.nlink).toBe(2);
      expect(tree.get("/small.txt")!.node.id).not.toBe(first.id);
    });

    test("the sparse file reads as holes where the source had holes, and its data where it had data", async () => {
      const fs = await openImage(volume().image);
      const sparse = (await volumeTree(fs)).get("/sparse.bin")!.node;
      const runs = await readRuns(fs, sparse);
      const holes = volume().sparseAsDebugfsReadsIt ? debugfsFile(volume().image, "/sparse.bin", volume().blockSize, path.join(scratch, "dumped")).holes : expectedHoles(volume().blockSize);
      expect(holeRanges(runs)).toEqual(holes);
      for (const [i, region] of SPARSE_DATA.entries()) {
        const run = runs.find((r) => !r.hole && r.offset <= region.offset && r.offset + r.length >= region.offset + region.length);
        if (!run || run.hole) throw new Error(`no data run holds bytes ${region.offset} to ${region.offset + region.length}`);
        expect(run.data.subarray(region.offset - run.offset, region.offset - run.offset + region.length).equals(pseudoRandom(`sparse ${i}`, region.length))).toBe(true);
      }
    });

    test("the root's entries and inode numbers are those debugfs lists", async () => {
      const fs = await openImage(volume().image);
      const ours = (await fs.list(await fs.root())).map((entry) => `${entry.node.id} ${entry.name}`).sort();
      // `ls -p`: /inode/mode/uid/gid/name/size/ per entry.
      const theirs = debugfs(volume().image, "ls -p /")
        .split("\n")
        .filter((line) => line.startsWith("/"))
        .map((line) => line.split("/"))
        .filter((fields) => fields[5] !== "." && fields[5] !== "..")
        .map((fields) => `${fields[1]} ${fields[5]}`)
        .sort();
      expect(ours).toEqual(theirs);
    });
  });

  test("the folder of 500 files is a hashed (htree) directory on ext4 and is listed whole", async () => {
    const image = volumeOf("ext4 (4 KiB").image;
    expect(debugfs(image, "htree /many")).toContain("Root node dump");
    const fs = await openImage(image);
    const many = (await fs.list(await fs.root())).find((entry) => entry.name === "many")!.node;
    const names = (await fs.list(many)).map((entry) => entry.name).sort();
    expect(names).toEqual(Array.from({ length: MANY_FILES }, (_, i) => `entry-${String(i).padStart(4, "0")}.txt`));
  });

  test("with inline_data, small files and a small folder live in their inodes and read whole", async () => {
    const image = volumeOf("ext4 with inline_data").image;
    for (const inline of ["/small.txt", "/medium.txt", "/nested/a"]) expect(debugfs(image, `stat ${inline}`)).toContain("Size of inline data");
    // medium.txt is longer than i_block: its tail is the system.data attribute.
    expect(expected.get("/medium.txt")!.size).toBeGreaterThan(60);
  });

  test("with meta_bg, inodes of groups past the first meta group are found through that group's own descriptor block", async () => {
    const volume = volumeOf("ext4 with meta_bg");
    const header = execFileSync("dumpe2fs", ["-h", volume.image], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    expect(header).toMatch(/Filesystem features:.*\bmeta_bg\b/);
    const inodesPerGroup = Number(/Inodes per group:\s+(\d+)/.exec(header)![1]);
    const descriptorsPerBlock = volume.blockSize / 64;
    const fs = await openImage(volume.image);
    const ids = [...(await volumeTree(fs)).values()].map((listed) => Number(listed.node.id));
    expect(Math.max(...ids)).toBeGreaterThan(descriptorsPerBlock * inodesPerGroup);
  });

  test("a file of 24 extents has an extent tree of depth 1 on ext4, and reads whole", async () => {
    const image = volumeOf("ext4 (4 KiB").image;
    // ETB0: an extent tree block at level 0 below the inode's root (debugfs stat).
    expect(debugfs(image, "stat /fragmented.bin")).toMatch(/\(ETB0\)/);
    const fs = await openImage(image);
    const node = (await fs.list(await fs.root())).find((entry) => entry.name === "fragmented.bin")!.node;
    const runs = await readRuns(fs, node);
    expect(runs.filter((run) => !run.hole)).toHaveLength(FRAGMENTS);
    expect(await contentHash(fs, node)).toBe(expected.get("/fragmented.bin")!.sha256);
  });

  test("on ext3 with 1 KiB blocks the 3 MiB file is mapped through a double-indirect block", async () => {
    expect(debugfs(volumeOf("ext3").image, "stat /big.bin")).toContain("(DIND)");
  });

  test("ext4's 256-byte inodes keep nanoseconds and times before 1970 and after 2038 (set by debugfs)", async () => {
    const image = path.join(scratch, "times.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, image);
    // mke2fs -d keeps whole seconds only: debugfs writes the extra fields, (nanoseconds << 2) | epoch bits.
    debugfsWrite(image, "set_inode_field /old.txt mtime_extra " + String(123_456_789 * 4));
    debugfsWrite(image, "set_inode_field /small.txt mtime 21000101000001");
    debugfsWrite(image, "set_inode_field /small.txt mtime_extra " + String(500_000_000 * 4 + 1));
    const fs = await openImage(image);
    const root = await fs.list(await fs.root());
    const mtime = (name: string) => root.find((entry) => entry.name === name)!.node.mtime;
    expect(mtime("old.txt")).toBe(Date.UTC(1960, 1, 29, 12, 34, 56, 123));
    expect(mtime("small.txt")).toBe(Date.UTC(2100, 0, 1, 0, 0, 1, 500));
  });

  test("a file with uninitialised extents (debugfs fallocate) reads them as zeros, as holes", async () => {
    const image = path.join(scratch, "fallocated.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, image);
    debugfsWrite(image, "fallocate /sparse.bin 10 40");
    expect(debugfs(image, "stat /sparse.bin")).toMatch(/\(10-\d+\[u\]\)/);
    const fs = await openImage(image);
    const sparse = (await fs.list(await fs.root())).find((entry) => entry.name === "sparse.bin")!.node;
    expect(await contentHash(fs, sparse)).toBe(expected.get("/sparse.bin")!.sha256);
    expect(holeRanges(await readRuns(fs, sparse))).toEqual(expectedHoles(4096));
  });

  test("what the Linux kernel wrote through a loop mount reads back: an inline folder spilling into system.data, a 5 MiB file, a time after 2038 with nanoseconds", async () => {
    const image = path.join(scratch, "kernel.img");
    await copyFile(volumeOf("ext4 with inline_data").image, image);
    const kernelFile = pseudoRandom("written by the kernel", 5 * MIB);
    const names = ["one", "two", "three", "four", "five", "six"];
    await withLoopMount(image, async (mountPoint) => {
      await mkdir(path.join(mountPoint, "kdir"));
      for (const name of names) await writeFile(path.join(mountPoint, "kdir", name), `${name}\n`);
      await writeFile(path.join(mountPoint, "kernel.bin"), kernelFile);
      run("touch", ["-m", "-d", "2100-01-01 00:00:01.5 UTC", path.join(mountPoint, "small.txt")], "coreutils touch");
    });
    expect(debugfs(image, "stat /kdir")).toMatch(/Size of inline data: (6\d|[7-9]\d|\d{3,})\b/);
    const fs = await openImage(image);
    const root = await fs.list(await fs.root());
    const node = (name: string) => root.find((entry) => entry.name === name)!.node;
    const kdir = await fs.list(node("kdir"));
    expect(kdir.map((entry) => entry.name).sort()).toEqual([...names].sort());
    for (const entry of kdir) expect(Buffer.concat((await readRuns(fs, entry.node)).map((r) => (r.hole ? Buffer.alloc(r.length) : r.data))).toString()).toBe(`${entry.name}\n`);
    expect(await contentHash(fs, node("kernel.bin"))).toBe(createHash("sha256").update(kernelFile).digest("hex"));
    expect(node("small.txt").mtime).toBe(Date.UTC(2100, 0, 1, 0, 0, 1, 500));
  });

  test("a damaged double-indirect pointer on ext3 fails the read of its file, and the others still read", async () => {
    const image = path.join(scratch, "damaged-ext3.img");
    await copyFile(volumeOf("ext3").image, image);
    // i_block[13], the double-indirect pointer, 0x28 + 13 * 4 into the 128-byte inode.
    const imap = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfs(image, "imap /big.bin"))!;
    await writeAt(image, Number(imap[1]) * 1024 + parseInt(imap[2], 16) + 0x28 + 13 * 4, Buffer.from([0x00, 0xff, 0xff, 0x0f]));
    const fs = await openImage(image);
    const root = await fs.list(await fs.root());
    const node = (name: string) => root.find((entry) => entry.name === name)!.node;
    await expect(contentHash(fs, node("big.bin"))).rejects.toThrow(IntegrityError);
    await expect(contentHash(fs, node("big.bin"))).rejects.toThrow(/block pointer 13 of inode \d+ points at blocks 268435200 to 268435200, outside the volume/);
    expect(await contentHash(fs, node("sparse.bin"))).toBe(expected.get("/sparse.bin")!.sha256);
  });

  test("a volume whose last transaction is only in its journal (needs_recovery) reads as e2fsck's replay leaves it", async () => {
    const before = path.join(scratch, "journal-before.img");
    const after = path.join(scratch, "journal-after.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, before);
    await copyFile(before, after);
    // The change, made by debugfs on a copy; its blocks then go into the first copy's journal only.
    const newFile = pseudoRandom("written just before the snapshot", 10_000);
    await writeFile(path.join(scratch, "new-file"), newFile);
    debugfsWrite(after, "mkdir /nested/made-before-the-crash");
    debugfsWrite(after, `write ${path.join(scratch, "new-file")} /nested/new-file`);
    const changed = await changedBlocks(before, after, 4096);
    expect(changed.length).toBeGreaterThan(3);
    await writeFile(path.join(scratch, "transaction"), Buffer.concat(changed.map((block) => block.bytes)));
    debugfsScript(before, ["jo", `jw -b ${changed.map((block) => block.number).join(",")} ${path.join(scratch, "transaction")}`, "jc"]);
    expect(execFileSync("dumpe2fs", ["-h", before], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })).toMatch(/Filesystem features:.*\bneeds_recovery\b/);
    expect(debugfs(before, "ls /nested")).not.toContain("new-file");

    const fs = await openImage(before);
    const nested = (await fs.list(await fs.root())).find((entry) => entry.name === "nested")!.node;
    const entries = await fs.list(nested);
    expect(entries.map((entry) => entry.name)).toEqual(expect.arrayContaining(["made-before-the-crash", "new-file", "sibling.txt", "a"]));
    const written = entries.find((entry) => entry.name === "new-file")!.node;
    expect(await contentHash(fs, written)).toBe(createHash("sha256").update(newFile).digest("hex"));

    const replayed = path.join(scratch, "journal-replayed.img");
    await copyFile(before, replayed);
    const fsck = spawnSync("e2fsck", ["-fy", replayed], { encoding: "utf8" });
    expect([0, 1]).toContain(fsck.status);
    expect(treeSummary(await volumeTree(fs))).toEqual(treeSummary(await volumeTree(await openImage(replayed))));
  });

  test("a snapshot taken while the kernel has the volume mounted (its last transaction in the journal, not yet in place) reads as e2fsck's replay leaves it", async () => {
    const image = path.join(scratch, "live.img");
    const snapshot = path.join(scratch, "live-snapshot.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, image);
    const contents = ["first", "second", "third"].map((name) => ({ name, bytes: pseudoRandom(`written while mounted: ${name}`, 20_000) }));
    await withLoopMount(image, async (mountPoint) => {
      await mkdir(path.join(mountPoint, "written-while-mounted"));
      for (const { name, bytes } of contents) {
        const handle = await open(path.join(mountPoint, "written-while-mounted", name), "w");
        await handle.write(bytes);
        // fsync commits the running transaction to the journal; its blocks reach their homes only at writeback (or unmount).
        await handle.sync();
        await handle.close();
      }
      await copyFile(image, snapshot);
    });
    const header = execFileSync("dumpe2fs", ["-h", snapshot], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    expect(header).toMatch(/Filesystem features:.*\bneeds_recovery\b/);
    expect(header).toMatch(/Journal features:.*\bjournal_checksum_v3\b/);
    expect(debugfs(snapshot, "ls /")).not.toContain("written-while-mounted");

    const fs = await openImage(snapshot);
    const folder = (await fs.list(await fs.root())).find((entry) => entry.name === "written-while-mounted")!.node;
    const files = await fs.list(folder);
    expect(files.map((entry) => entry.name).sort()).toEqual(contents.map((file) => file.name).sort());
    for (const { name, bytes } of contents) {
      expect(await contentHash(fs, files.find((entry) => entry.name === name)!.node)).toBe(createHash("sha256").update(bytes).digest("hex"));
    }
    const replayed = path.join(scratch, "live-replayed.img");
    await copyFile(snapshot, replayed);
    expect([0, 1]).toContain(spawnSync("e2fsck", ["-fy", replayed]).status);
    expect(treeSummary(await volumeTree(fs))).toEqual(treeSummary(await volumeTree(await openImage(replayed))));
  });

  test("a block revoked by a later transaction is not replayed, as e2fsck does not replay it", async () => {
    const image = path.join(scratch, "revoked.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, image);
    const block = Number(debugfs(image, "blocks /small.txt").trim());
    const replacement = Buffer.alloc(4096);
    replacement.write("journalled, then revoked\n");
    await writeFile(path.join(scratch, "replacement"), replacement);
    debugfsScript(image, ["jo", `jw -b ${block} ${path.join(scratch, "replacement")}`, "jc", "jo", `jw -r ${block}`, "jc"]);
    expect(debugfs(image, "logdump")).toContain("revoke table");
    const fs = await openImage(image);
    const small = (await fs.list(await fs.root())).find((entry) => entry.name === "small.txt")!.node;
    expect(await contentHash(fs, small)).toBe(expected.get("/small.txt")!.sha256);
    const replayed = path.join(scratch, "revoked-replayed.img");
    await copyFile(image, replayed);
    spawnSync("e2fsck", ["-fy", replayed]);
    expect(debugfs(replayed, "cat /small.txt")).toBe(await readFile(path.join(source, "small.txt"), "utf8"));
  });

  test("a volume that needs recovery but whose journal superblock is damaged is refused as damaged, naming the journal", async () => {
    const image = path.join(scratch, "damaged-journal.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, image);
    const block = Number(debugfs(image, "blocks /small.txt").trim());
    await writeFile(path.join(scratch, "same-block"), (await readFile(image)).subarray(block * 4096, (block + 1) * 4096));
    debugfsScript(image, ["jo", `jw -b ${block} ${path.join(scratch, "same-block")}`, "jc"]);
    // bmap <8> 0: where the journal inode's block 0, its superblock, lies.
    const journalSuperblock = Number(debugfs(image, "bmap <8> 0").trim());
    await writeAt(image, journalSuperblock * 4096, Buffer.from("not a journal"));
    await expect(openImage(image)).rejects.toThrow(IntegrityError);
    await expect(openImage(image)).rejects.toThrow(/journal superblock/);
  });

  test("a damaged extent header fails the read of its file, a damaged directory record the listing of its folder, and the rest still reads", async () => {
    const image = path.join(scratch, "damaged.img");
    await copyFile(volumeOf("ext4 (4 KiB").image, image);
    // imap: "located at block B, offset 0xO"; the extent header is i_block, 0x28 into the inode.
    const imap = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfs(image, "imap /big.bin"))!;
    await writeAt(image, Number(imap[1]) * 4096 + parseInt(imap[2], 16) + 0x28, Buffer.from([0xde, 0xad]));
    // blocks: the folder's first block; its first record is ".", whose rec_len is at byte 4.
    const nestedBlock = Number(debugfs(image, "blocks /nested").trim().split(/\s+/)[0]);
    await writeAt(image, nestedBlock * 4096 + 4, Buffer.from([0x05, 0x00]));

    const fs = await openImage(image);
    const root = await fs.root();
    const entries = await fs.list(root);
    const node = (name: string) => entries.find((entry) => entry.name === name)!.node;
    await expect(contentHash(fs, node("big.bin"))).rejects.toThrow(IntegrityError);
    await expect(contentHash(fs, node("big.bin"))).rejects.toThrow(/extent root of inode \d+ has extent header magic 0xadde/);
    await expect(fs.list(node("nested"))).rejects.toThrow(IntegrityError);
    await expect(fs.list(node("nested"))).rejects.toThrow(/record length 5/);
    const many = await fs.list(node("many"));
    expect(many).toHaveLength(MANY_FILES);
    expect(await contentHash(fs, node("small.txt"))).toBe(expected.get("/small.txt")!.sha256);
    expect(await contentHash(fs, node("sparse.bin"))).toBe(expected.get("/sparse.bin")!.sha256);
  });

  test("a volume with an incompat feature this reader does not know is refused, naming the feature", async () => {
    const image = path.join(scratch, "compressed.img");
    await copyFile(volumeOf("ext2").image, image);
    const handle = await open(image, "r");
    const incompat = Buffer.alloc(4);
    try {
      await handle.read(incompat, 0, 4, 1024 + 0x60);
    } finally {
      await handle.close();
    }
    // s_feature_incompat's 0x1 is INCOMPAT_COMPRESSION (super.rst).
    incompat.writeUInt32LE(incompat.readUInt32LE(0) | 0x1);
    await writeAt(image, 1024 + 0x60, incompat);
    const access = await imageAccess(image);
    await expect(extFormat.open(access)).rejects.toThrow(UnreadableItemError);
    await expect(extFormat.open(access)).rejects.toThrow(/compression/);
  });
});
