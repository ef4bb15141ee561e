/**
 * FAT12, FAT16 and FAT32 volumes made by mkfs.vfat and filled by mtools from a source tree (nested
 * folders, long and Unicode names, short names in lower and mixed case, an empty file, a read-only
 * file, 300 entries in the root, a file of a few MiB fragmented between other files' clusters, an
 * empty folder made by mmd), read back by the FAT reader and compared with the source: names,
 * types, sizes, modes, mtimes to 2 seconds, and every file's bytes. Damage: a FAT chain made into
 * a loop fails that file only; a long name whose checksum does not match shows the short name. An
 * EFI system partition (sgdisk EF00, mkfs.vfat -F 32 on the partition) is read through the GPT.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFile, mkdir, open, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import type { RandomAccess } from "../../runtime/items/block-reader.ts";
import { fatFormat } from "../../runtime/items/fs/fat.ts";
import { MAX_RUN_BYTES, PROBE_BYTES, type FileSystem, type FsNode } from "../../runtime/items/fs/types.ts";
import { partitionBytes, readPartitionTable } from "../../runtime/items/partitions.ts";
import { writeSparseImage } from "../support/sparse.ts";
import { MIB, pseudoRandom, sha256, tempFolder, text } from "../cli/vaults.ts";
import { imageAccess } from "./disk-points.ts";

const TOOLS = ["mkfs.vfat", "mcopy", "mmd", "mdel", "mattrib", "mshowfat", "sgdisk"];
/** mtools: no geometry check on image files, times in UTC (FAT stores local time, the reader reads it as UTC), UTF-8 names. */
const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: "1", TZ: "UTC", LC_ALL: "C.UTF-8" };
const BIG_FILE = "big.bin";
const LOOP_FILE = "loop.bin";
const CHECKSUM_NAME = "Check sum.txt";
const FILLER_BYTES = MIB;

interface Seen {
  type: string;
  size: number;
  mode: number;
  mtime: number;
  sha?: string;
}

function requireTools(): void {
  const missing = TOOLS.filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
  if (missing.length > 0) throw new Error(`the FAT tests need ${missing.join(", ")}: install dosfstools, mtools and gdisk`);
}

function mtools(tool: string, args: string[]): string {
  return execFileSync(tool, args, { env: MTOOLS_ENV, encoding: "utf8" });
}

/** An mtime with odd seconds, so the 2-second resolution shows. */
function mtimeOf(index: number): Date {
  return new Date(Date.UTC(2021, index % 12, 1 + (index % 27), index % 24, (index * 7) % 60, 1 + ((index * 2) % 58)));
}

/** The source tree every volume gets (apart from the big file and the read-only bit, added by mtools). */
async function makeSourceTree(root: string): Promise<void> {
  const files: [string, Buffer][] = [
    ["Documents/Reports/2024/summary.txt", text("summary", 5000)],
    ["Documents/Reports/notes.md", text("notes", 1200)],
    ["Documents/Photos from the trip/beach sunset.raw", pseudoRandom("beach", 70_000)],
    ["A long file name with spaces.txt", text("long", 300)],
    ["Ünïcödé ☃ naïve.txt", text("unicode", 2048)],
    ["lower.txt", text("lower", 10)],
    ["UPPER.TXT", text("upper", 20)],
    ["Mixed.Txt", text("mixed", 30)],
    ["lowbase.TXT", text("lowbase", 40)],
    ["UPEXT.txt", text("upext", 50)],
    ["empty.dat", Buffer.alloc(0)],
    ["readonly.txt", text("readonly", 600)],
    [CHECKSUM_NAME, text("checksum", 700)],
    [LOOP_FILE, pseudoRandom("loop", 5000)],
  ];
  for (let i = 0; i < 300; i++) files.push([`n${String(i).padStart(3, "0")}.dat`, text(`many ${i}`, 100 + i)]);
  let index = 0;
  for (const [name, bytes] of files) {
    const file = path.join(root, name);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, bytes);
    await utimes(file, mtimeOf(index), mtimeOf(index));
    index++;
  }
}

/**
 * Makes a FAT volume of the tree (mkfs.vfat, mcopy -s -m, a read-only bit, an empty folder by
 * mmd), then fills its free space with 1 MiB files in `fillers/`, deletes every other one and
 * writes the big file, so its chain runs through the holes they left (mtools takes the first free
 * clusters, or on FAT32 wraps round from its next-free hint at the end of the volume).
 */
async function makeVolume(image: string, mkfsArgs: string[], size: number, source: string, big: string, fillers: string): Promise<void> {
  await writeSparseImage(image, size, []);
  execFileSync("mkfs.vfat", [...mkfsArgs, image], { stdio: "ignore" });
  const names = await readdir(source);
  mtools("mcopy", ["-s", "-m", "-i", image, ...names.map((n) => path.join(source, n)), "::/"]);
  mtools("mattrib", ["-i", image, "+r", "::/readonly.txt"]);
  mtools("mmd", ["-i", image, "::/empty folder"]);
  const free = Number(/([\d ]+) bytes free/.exec(mtools("mdir", ["-i", image, "::/"]))![1].replaceAll(" ", ""));
  // One filler less than would fit: the fillers' own folder takes clusters too.
  const count = Math.floor(free / FILLER_BYTES) - 1;
  const folder = path.join(fillers, "fillers");
  await mkdir(folder, { recursive: true });
  const written: string[] = [];
  for (let i = 0; i < count; i++) {
    const filler = path.join(folder, `filler${String(i).padStart(2, "0")}.bin`);
    await writeFile(filler, pseudoRandom(`filler ${i}`, FILLER_BYTES));
    await utimes(filler, mtimeOf(500 + i), mtimeOf(500 + i));
    written.push(filler);
  }
  // Named one by one, so they are written in this order (a folder is copied in readdir's order).
  mtools("mmd", ["-i", image, "::/fillers"]);
  mtools("mcopy", ["-m", "-i", image, ...written, "::/fillers/"]);
  const deleted = Array.from({ length: Math.ceil(count / 2) }, (_, i) => `filler${String(i * 2).padStart(2, "0")}.bin`);
  mtools("mdel", ["-i", image, ...deleted.map((name) => `::/fillers/${name}`)]);
  for (const name of deleted) await rm(path.join(folder, name));
  mtools("mcopy", ["-m", "-i", image, big, "::/"]);
}

/** What the reader shows of the whole tree, path by path. */
async function readTree(fs: FileSystem): Promise<Map<string, Seen>> {
  const seen = new Map<string, Seen>();
  async function walk(dir: FsNode, prefix: string): Promise<void> {
    for (const { name, node } of await fs.list(dir)) {
      const at = `${prefix}${name}`;
      if (node.type === "dir") {
        seen.set(at, { type: "dir", size: 0, mode: node.mode, mtime: 0 });
        await walk(node, `${at}/`);
      } else {
        seen.set(at, { type: node.type, size: node.size, mode: node.mode, mtime: node.mtime, sha: sha256(await contentOf(fs, node)) });
      }
    }
  }
  await walk(await fs.root(), "");
  return seen;
}

async function contentOf(fs: FileSystem, node: FsNode): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let next = 0;
  for await (const run of fs.read(node)) {
    expect(run.offset).toBe(next);
    expect(run.length).toBeLessThanOrEqual(MAX_RUN_BYTES);
    expect(run.hole).toBe(false);
    if (!run.hole) pieces.push(run.data);
    next += run.length;
  }
  expect(next).toBe(node.size);
  return Buffer.concat(pieces);
}

/** What the volume should show: the source tree, with the read-only file's mode, the empty folder and the big file. */
async function expectedTree(source: string, big: string, fillers: string): Promise<Map<string, Seen>> {
  const expected = new Map<string, Seen>();
  async function walk(dir: string, prefix: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const at = `${prefix}${entry.name}`;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        expected.set(at, { type: "dir", size: 0, mode: 0o755, mtime: 0 });
        await walk(full, `${at}/`);
      } else {
        expected.set(at, await fileSeen(full, at === "readonly.txt" ? 0o444 : 0o644));
      }
    }
  }
  await walk(source, "");
  await walk(fillers, "");
  expected.set("empty folder", { type: "dir", size: 0, mode: 0o755, mtime: 0 });
  expected.set(BIG_FILE, await fileSeen(big, 0o644));
  return expected;
}

async function fileSeen(file: string, mode: number): Promise<Seen> {
  const info = await stat(file);
  // FAT keeps mtimes in 2-second units.
  const mtime = Math.floor(info.mtimeMs / 2000) * 2000;
  return { type: "file", size: info.size, mode, mtime, sha: sha256(await readFile(file)) };
}

async function patch(image: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(image, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

/** The clusters of a file as mshowfat prints them: "<first-last> <first-last>". */
function clusterRanges(image: string, file: string): [number, number][] {
  const out = mtools("mshowfat", ["-i", image, `::/${file}`]);
  return [...out.matchAll(/<(\d+)(?:-(\d+))?>/g)].map((m) => [Number(m[1]), Number(m[2] ?? m[1])]);
}

/** Where the one long entry of "Check sum.txt" is (order 0x41: first and last, attributes 0x0F, starting "Check"). */
function longEntryOfCheckSum(image: Buffer): number {
  const marker = Buffer.concat([Buffer.from([0x41]), Buffer.from("Check", "utf16le")]);
  let at = image.indexOf(marker);
  while (at >= 0 && (at % 32 !== 0 || image[at + 11] !== 0x0f)) at = image.indexOf(marker, at + 1);
  if (at < 0) throw new Error(`no long entry of ${CHECKSUM_NAME} in the image`);
  return at;
}

async function opened(image: string): Promise<{ fs: FileSystem; access: RandomAccess }> {
  const access = await imageAccess(image);
  const head = await access.read(0, Math.min(PROBE_BYTES, access.size));
  expect(fatFormat.probe(head)).toBe(true);
  return { fs: await fatFormat.open(access), access };
}

async function child(fs: FileSystem, name: string): Promise<FsNode> {
  const found = (await fs.list(await fs.root())).find((e) => e.name === name);
  if (!found) throw new Error(`${name} is not in the root folder`);
  return found.node;
}

describe("FAT volumes made by mkfs.vfat and mtools", () => {
  let scratch: string;
  let source: string;
  let big: string;
  const images: Record<string, string> = {};
  const fillersOf = (kind: string) => path.join(scratch, `fillers-${kind}`);

  beforeAll(async () => {
    requireTools();
    scratch = await tempFolder("fat");
    source = path.join(scratch, "source");
    await makeSourceTree(source);
    big = path.join(scratch, "extra", BIG_FILE);
    await mkdir(path.dirname(big), { recursive: true });
    await writeFile(big, pseudoRandom("big", 2 * MIB + 12345));
    await utimes(big, mtimeOf(999), mtimeOf(999));
    const volumes: [string, string[], number][] = [
      ["FAT12", ["-F", "12", "-s", "8", "-r", "512", "-n", "SMALL12"], 8 * MIB],
      ["FAT16", ["-F", "16", "-s", "2", "-n", "MIDDLE16"], 16 * MIB],
      ["FAT32", ["-F", "32", "-s", "1", "-n", "LARGE32"], 40 * MIB],
    ];
    for (const [kind, args, size] of volumes) {
      images[kind] = path.join(scratch, `${kind}.img`);
      await makeVolume(images[kind], args, size, source, big, fillersOf(kind));
    }
  });

  test.each([
    ["FAT12", "SMALL12"],
    ["FAT16", "MIDDLE16"],
    ["FAT32", "LARGE32"],
  ])("a %s volume shows the tree mcopy put there: names, types, sizes, modes, mtimes to 2 s, contents", async (kind, label) => {
    const { fs } = await opened(images[kind]);
    expect(fs.filesystem).toBe("vfat");
    expect(fs.label).toBe(label);
    const seen = await readTree(fs);
    const expected = await expectedTree(source, big, fillersOf(kind));
    expect([...seen.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [at, want] of expected) expect({ at, ...seen.get(at) }).toEqual({ at, ...want });
  });

  test("the big file's clusters are fragmented on every volume (the premise of the tree test, which reads it back whole)", async () => {
    for (const image of Object.values(images)) {
      expect(clusterRanges(image, BIG_FILE).length).toBeGreaterThan(1);
    }
  });

  test("short names show their case bits as Linux does; a name no 8.3 case fits has a long name", async () => {
    const { fs } = await opened(images.FAT16);
    const names = (await fs.list(await fs.root())).map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(["lower.txt", "UPPER.TXT", "Mixed.Txt", "lowbase.TXT", "UPEXT.txt"]));
  });

  test("times: an mtime keeps its 2-second unit, an access time is a date at midnight, the root folder is at the epoch", async () => {
    const { fs } = await opened(images.FAT32);
    const root = await fs.root();
    expect(root.mtime).toBe(0);
    const summary = await child(fs, "lower.txt");
    expect(summary.mtime).toBe(Math.floor(mtimeOf(5).getTime() / 2000) * 2000);
    expect(summary.atime % 86_400_000).toBe(0);
    expect(summary.uid).toBe(0);
    expect(summary.gid).toBe(0);
  });

  test("a FAT chain made into a loop fails that file as damaged, and the other files still read", async () => {
    const image = path.join(scratch, "loop.img");
    await copyFile(images.FAT16, image);
    const ranges = clusterRanges(image, LOOP_FILE);
    const first = ranges[0][0];
    const last = ranges.at(-1)![1];
    const boot = await readFile(image).then((b) => b.subarray(0, 512));
    const bytesPerSector = boot.readUInt16LE(11);
    const reserved = boot.readUInt16LE(14);
    const fatSectors = boot.readUInt16LE(22);
    const entry = Buffer.alloc(2);
    entry.writeUInt16LE(first);
    // Both FATs: the last cluster of the file now points back at its first.
    for (let copy = 0; copy < boot[16]; copy++) await patch(image, (reserved + copy * fatSectors) * bytesPerSector + last * 2, entry);

    const { fs } = await opened(image);
    const looped = await child(fs, LOOP_FILE);
    await expect(contentOf(fs, looped)).rejects.toThrow(IntegrityError);
    await expect(contentOf(fs, looped)).rejects.toThrow(/loop/);
    const other = await child(fs, "A long file name with spaces.txt");
    expect(sha256(await contentOf(fs, other))).toBe(sha256(text("long", 300)));
  });

  test("a long name whose checksum does not match its short entry falls back to the short name", async () => {
    const image = path.join(scratch, "checksum.img");
    await copyFile(images.FAT12, image);
    const bytes = await readFile(image);
    // The short entry comes right after the long one.
    const at = longEntryOfCheckSum(bytes);
    const short = bytes.subarray(at + 32, at + 43).toString("latin1");
    const shortName = `${short.slice(0, 8).trimEnd()}.${short.slice(8).trimEnd()}`;
    await patch(image, at + 13, Buffer.from([bytes[at + 13] ^ 0xff]));

    const { fs } = await opened(image);
    const names = (await fs.list(await fs.root())).map((e) => e.name);
    expect(names).not.toContain(CHECKSUM_NAME);
    expect(names).toContain(shortName);
    expect(shortName).toMatch(/^CHECKS~\d\.TXT$/);
  });

  test("a long name rewritten to hold a '/' (its checksum still matching) is not used: the short name stands, so a restore stays in its folder", async () => {
    const image = path.join(scratch, "slash.img");
    await copyFile(images.FAT12, image);
    const at = longEntryOfCheckSum(await readFile(image));
    // "Check sum.txt" becomes "../ck sum.txt"; the checksum covers the short name only.
    await patch(image, at + 1, Buffer.from("../", "utf16le"));

    const { fs } = await opened(image);
    const names = (await fs.list(await fs.root())).map((e) => e.name);
    expect(names.filter((n) => n.includes("/"))).toEqual([]);
    expect(names.some((n) => /^CHECKS~\d\.TXT$/.test(n))).toBe(true);
  });

  test("an EFI system partition (sgdisk EF00, mkfs.vfat -F 32 on the partition) reads through the GPT", async () => {
    const image = path.join(scratch, "esp-disk.img");
    await writeSparseImage(image, 48 * MIB, []);
    execFileSync("sgdisk", ["-n", "1:2048:+40M", "-t", "1:EF00", "-c", "1:EFI system partition", image], { stdio: "ignore" });
    execFileSync("mkfs.vfat", ["-F", "32", "-s", "1", "-n", "ESP", "--offset", "2048", image, String(40 * 1024)], { stdio: "ignore" });
    const loader = path.join(scratch, "BOOTX64.EFI");
    await writeFile(loader, pseudoRandom("loader", 300_000));
    const onPartition = `${image}@@${2048 * 512}`;
    mtools("mmd", ["-i", onPartition, "::/EFI", "::/EFI/BOOT"]);
    mtools("mcopy", ["-i", onPartition, loader, "::/EFI/BOOT/BOOTX64.EFI"]);

    const disk = await imageAccess(image);
    const table = await readPartitionTable(disk);
    expect(table.scheme).toBe("gpt");
    const esp = partitionBytes(disk, table.partitions[0]);
    expect(fatFormat.probe(await esp.read(0, PROBE_BYTES))).toBe(true);
    const fs = await fatFormat.open(esp);
    expect(fs.label).toBe("ESP");
    const efi = await child(fs, "EFI");
    const boot = (await fs.list(efi)).find((e) => e.name === "BOOT")!.node;
    const file = (await fs.list(boot)).find((e) => e.name === "BOOTX64.EFI")!.node;
    expect(file.size).toBe(300_000);
    expect(sha256(await contentOf(fs, file))).toBe(sha256(pseudoRandom("loader", 300_000)));
  });
});
