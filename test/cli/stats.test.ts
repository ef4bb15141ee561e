/**
 * `bulwark stats`: every figure checked against what the vault folder holds and what the backups
 * were. One vault: two backups of one disk image (the second with one block changed) and one file.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import type { VaultStats } from "../../runtime/cli/stats-command.ts";
import { runCli, runJson } from "../support/cli.ts";
import { diskImage, LocalVaults, MIB, pseudoRandom, tempFolder } from "./vaults.ts";

const BLOCK = 64 * 1024;
const IMAGE_MIB = 4;

describe("bulwark stats on a vault with two points of one image and one of a file", () => {
  let vault: string;
  let image: string;
  let file: string;
  let before: Map<string, number>;
  let stats: VaultStats;
  const sizes = { image: IMAGE_MIB * MIB, file: 300_000 };
  const times: Record<string, string> = {};

  beforeAll(async () => {
    const scratch = await tempFolder("stats");
    vault = path.join(scratch, "vault");
    image = path.join(scratch, "disk.img");
    file = path.join(scratch, "notes.dat");
    // 1 MiB regions: zeros, text, random, zeros: 32 distinct non-zero blocks of 64 KiB.
    const bytes = diskImage("stats", IMAGE_MIB);
    await writeFile(image, bytes);
    await writeFile(file, pseudoRandom("stats file", sizes.file));
    expect((await runCli(["init", "--vault", vault])).code).toBe(0);
    times.first = (await runJson<{ time: string }>(["backup", image, "--vault", vault])).time;
    // The known change: one block of the last (zero) region becomes random data.
    pseudoRandom("stats change", BLOCK).copy(bytes, 3 * MIB + 5 * BLOCK);
    await writeFile(image, bytes);
    times.second = (await runJson<{ time: string }>(["backup", image, "--vault", vault])).time;
    await runJson(["backup", file, "--vault", vault]);
    before = await (await LocalVaults.create()).objects(vault);
    stats = await runJson<VaultStats>(["stats", "--vault", vault]);
  }, 120_000);

  function listed(prefix: string): { objects: number; bytes: number } {
    const keys = [...before].filter(([key]) => key.startsWith(prefix));
    return { objects: keys.length, bytes: keys.reduce((sum, [, size]) => sum + size, 0) };
  }

  test("packs, index, points and keys are the objects and bytes the vault folder holds", () => {
    expect(stats.packs).toEqual(listed("data/"));
    expect(stats.index).toEqual(listed("index/"));
    expect(stats.points).toEqual({ objects: 3, bytes: listed("points/").bytes });
    expect(stats.keys).toEqual(listed("keys/"));
    expect(stats.totalBytes).toBe(stats.packs.bytes + stats.index.bytes + stats.points.bytes + stats.keys.bytes);
  });

  test("logical bytes are the points' sizes; distinct chunks are the non-zero blocks once, the changed block, two block maps and the file", () => {
    expect(stats.logicalBytes).toBe(2 * sizes.image + sizes.file);
    // The image: 32 distinct blocks, one changed block, and a block map (one tree chunk of 64 ids of 32 bytes) per point.
    const imageRaw = 33 * BLOCK + 2 * (IMAGE_MIB * MIB / BLOCK) * 32;
    // The file: content-defined chunks of its 300,000 bytes (smaller than one chunk) and its stream tree.
    expect(stats.chunks.rawBytes - imageRaw).toBeGreaterThanOrEqual(sizes.file);
    expect(stats.chunks.rawBytes - imageRaw).toBeLessThan(sizes.file + 1024);
    expect(stats.dedupRatio).toBeCloseTo(stats.logicalBytes / stats.chunks.rawBytes, 10);
  });

  test("the sealed chunks fit in the packs, and the text compressed: the compression ratio is above 1", () => {
    expect(stats.chunks.sealedBytes).toBeLessThanOrEqual(stats.packs.bytes);
    expect(stats.compressionRatio).toBeCloseTo(stats.chunks.rawBytes / stats.chunks.sealedBytes, 10);
    expect(stats.compressionRatio).toBeGreaterThan(1.1);
  });

  test("points per source: the image's two with its newest point's time, the file's one", () => {
    expect(stats.sources.map((s) => [s.source, s.kind, s.points])).toEqual([
      [image, "disk", 2],
      [file, "file", 1],
    ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))));
    expect(stats.sources.find((s) => s.source === image)?.newest).toBe(times.second);
  });

  test("the text names each figure, and nothing in the vault changed", async () => {
    const result = await runCli(["stats", "--vault", vault]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\s+packs\s+\d+\s+[\d.]+ (KiB|MiB)$/m);
    expect(result.stdout).toMatch(/^logical 8\.3 MiB \(the points' sizes\), stored [\d.]+ MiB in packs$/m);
    expect(result.stdout).toMatch(/^dedup ratio \d+\.\d\dx .* compression ratio \d+\.\d\dx/m);
    expect(result.stdout).toContain(`  ${image}`);
    expect(await (await LocalVaults.create()).objects(vault)).toEqual(before);
  });

  test("a point manifest someone with write access replaced is named, exit 5, and left out of the figures", async () => {
    const copy = await tempFolder("stats-damaged");
    const damagedVault = path.join(copy, "vault");
    await runCli(["init", "--vault", damagedVault]);
    await runJson(["backup", file, "--vault", damagedVault]);
    await writeFile(path.join(damagedVault, "points", "0123456789abcdef0123456789abcdef"), pseudoRandom("not a point", 200));
    const result = await runCli(["stats", "--vault", damagedVault, "--json"]);
    expect(result.code).toBe(5);
    expect(result.stderr).toMatch(/^bulwark stats: point 0123456789abcdef0123456789abcdef: .*run `bulwark verify`/m);
    const damaged = JSON.parse(result.stdout) as VaultStats;
    expect(damaged.logicalBytes).toBe(sizes.file);
    expect(damaged.sources).toHaveLength(1);
  });
});
