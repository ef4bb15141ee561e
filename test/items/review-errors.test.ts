/**
 * What `ls` and `restore --path` say about volumes they cannot read (issue 11: "one clear message,
 * exit codes as elsewhere"): a GPT disk made by sgdisk with an empty partition, an ext4 one
 * (mke2fs -d) and an ext4 one whose superblock was then damaged, and the same disk with both GPT
 * headers damaged; an NTFS partition (mkntfs, ntfscp) holds a name too long for Linux. Each failure is one line on stderr saying what to do, with the exit code of its
 * kind: 2 for a volume holding nothing Bulwark reads, 4 for a path the point does not hold, 5 for
 * damage.
 */
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { MIB, tempFolder } from "../cli/vaults.ts";
import { PointVault } from "./disk-points.ts";

const SECTOR = 512;
const PART_START = MIB;
const PART_SIZE = 4 * MIB;
const DISK_SIZE = PART_START + 4 * PART_SIZE + MIB;
/** 100 characters of 3 bytes: a name NTFS holds (100 UTF-16 units) and Linux cannot (300 bytes of UTF-8). */
const NTFS_LONG_NAME = "文".repeat(100);

function run(tool: string, args: string[]): void {
  const result = spawnSync(tool, args, { encoding: "utf8" });
  if (result.error) throw new Error(`${tool} is needed to make this test's disk (CI installs it): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
}

function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split("\n");
  expect(lines, stderr).toHaveLength(1);
  return lines[0];
}

describe("volumes that cannot be read, and a damaged partition table: one line each, the exit code of its kind", () => {
  let vaults: PointVault;
  let pointId: string;
  let brokenTableId: string;

  beforeAll(async () => {
    const work = await tempFolder("review-errors");
    await mkdir(path.join(work, "tree"));
    await writeFile(path.join(work, "tree/hello.txt"), "hello\n");
    const ext = path.join(work, "ext.img");
    run("mke2fs", ["-q", "-F", "-t", "ext4", "-b", "1024", "-d", path.join(work, "tree"), ext, `${PART_SIZE / 1024}k`]);
    const damagedExt = path.join(work, "damaged.img");
    const bytes = await readFile(ext);
    // s_log_block_size (superblock at 1024, field at 0x18): blocks of 1024 << 30 bytes.
    bytes.writeUInt32LE(30, 1024 + 0x18);
    await writeFile(damagedExt, bytes);
    const ntfs = path.join(work, "ntfs.img");
    run("truncate", ["-s", String(PART_SIZE), ntfs]);
    run("mkntfs", ["-F", "-Q", "-q", ntfs]);
    await writeFile(path.join(work, "kept.txt"), "kept\n");
    run("ntfscp", ["-f", ntfs, path.join(work, "kept.txt"), "kept.txt"]);
    run("ntfscp", ["-f", ntfs, path.join(work, "kept.txt"), NTFS_LONG_NAME]);
    const disk = path.join(work, "disk.img");
    run("truncate", ["-s", String(DISK_SIZE), disk]);
    const partition = (n: number) => ["-n", `${n}:${(PART_START + (n - 1) * PART_SIZE) / SECTOR}:+${PART_SIZE / 1024}K`];
    run("sgdisk", [...partition(1), ...partition(2), ...partition(3), ...partition(4), disk]);
    for (const [image, n] of [[ext, 2], [damagedExt, 3], [ntfs, 4]] as const) {
      run("dd", [`if=${image}`, `of=${disk}`, "bs=1M", `seek=${(PART_START + (n - 1) * PART_SIZE) / MIB}`, "conv=notrunc", "status=none"]);
    }
    // Both GPT headers' MyLBA field changed: their CRCs no longer match.
    const brokenTable = path.join(work, "broken-table.img");
    await copyFile(disk, brokenTable);
    const table = await readFile(brokenTable);
    table[SECTOR + 24] ^= 0xff;
    table[DISK_SIZE - SECTOR + 24] ^= 0xff;
    await writeFile(brokenTable, table);
    vaults = await PointVault.create("review-errors");
    pointId = (await vaults.backup(disk)).id;
    brokenTableId = (await vaults.backup(brokenTable)).id;
  }, 60_000);

  afterAll(async () => {
    await vaults?.close();
  });

  test("ls of a volume without a filesystem Bulwark reads: exit 2, naming bulwark mount", async () => {
    const listed = await vaults.run(["ls", pointId, "/part1"]);
    expect(listed.code).toBe(2);
    expect(oneLine(listed.stderr)).toMatch(/\/part1 cannot be browsed: no filesystem Bulwark reads.*bulwark mount/);
  });

  test("ls of a volume whose filesystem is damaged: exit 5, naming the damaged field", async () => {
    const listed = await vaults.run(["ls", pointId, "/part3"]);
    expect(listed.code).toBe(5);
    expect(oneLine(listed.stderr)).toContain("s_log_block_size 30");
  });

  test("restore --path of a damaged volume exits 5 and of a volume without a filesystem 6, each named on one line, the readable one restored", async () => {
    const out = await tempFolder("review-errors-out");
    const damaged = await vaults.run(["restore", pointId, "--path", "/part3", "--path", "/part2/hello.txt", "--to", out]);
    expect(damaged.code).toBe(5);
    expect(oneLine(damaged.stderr)).toMatch(/^bulwark restore: \/part3 was not restored: .*s_log_block_size 30/);
    expect(await readFile(path.join(out, "part2/hello.txt"), "utf8")).toBe("hello\n");
    const empty = await vaults.run(["restore", pointId, "--path", "/part1", "--to", out]);
    expect(empty.code).toBe(6);
    expect(oneLine(empty.stderr)).toMatch(/^bulwark restore: \/part1 was not restored: no filesystem Bulwark reads/);
  });

  test("find names a damaged volume on one line and exits 5, finding what the others hold", async () => {
    const found = await vaults.run(["find", pointId, "*.txt"]);
    expect(found.code).toBe(5);
    expect(found.stdout.trim().split("\n")).toEqual(["/part2/hello.txt", "/part4/kept.txt"]);
    expect(oneLine(found.stderr)).toMatch(/^bulwark find: \/part3 could not be read: .*s_log_block_size 30/);
  });

  test("a name longer than this system allows (an NTFS name of 300 bytes of UTF-8) is not restored, named with why, the rest restored, exit 6", async () => {
    const out = await tempFolder("review-errors-long");
    const restored = await vaults.run(["restore", pointId, "--path", "/part4", "--to", out]);
    expect(restored.code).toBe(6);
    expect(oneLine(restored.stderr)).toBe(`bulwark restore: /part4/${NTFS_LONG_NAME} was not restored: its name is 300 bytes long, and names here hold at most 255`);
    expect(await readFile(path.join(out, "part4/kept.txt"), "utf8")).toBe("kept\n");
  });

  test("a path the point does not hold: exit 4, listing what is there", async () => {
    const listed = await vaults.run(["ls", pointId, "/part9/etc"]);
    expect(listed.code).toBe(4);
    expect(oneLine(listed.stderr)).toContain("/part9 is not in point");
  });

  test("a damaged partition table: exit 5, saying how to repair it", async () => {
    const listed = await vaults.run(["ls", brokenTableId]);
    expect(listed.code).toBe(5);
    expect(oneLine(listed.stderr)).toMatch(/partition table is damaged.*gdisk/);
  });
});
