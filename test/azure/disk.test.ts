/**
 * Managed disks through the real CLI: a first backup reads only the allocated ranges, an incremental
 * one only the pages that the page-range diff names (written or cleared; a block mostly changed is
 * read whole, the rest of a partly changed one comes from the previous point), every point
 * restores byte-identical (to a local file, a new managed disk, a page blob), and after each backup
 * exactly one golden snapshot per disk stays and no read access is left open.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BLOCK, KiB, MiB, type AzureWorld, bulwarkSnapshots, diskIdIn, expectNothingLeaked, pattern, restoreToFile, startWorld,
  expectCallsAllowedByRole,
} from "./harness.ts";

let world: AzureWorld;
let vault: string;
let diskId: string;
const SIZE = 16 * MiB;

/** 64 KiB blocks touched by [start, end) ranges, times the block size: what an aligned reader must fetch. */
function blockBytes(ranges: Array<[number, number]>): number {
  const blocks = new Set<number>();
  for (const [start, end] of ranges) for (let b = Math.floor(start / BLOCK); b * BLOCK < end; b++) blocks.add(b);
  return blocks.size * BLOCK;
}

function allocatedRanges(id: string): Array<[number, number]> {
  const disk = [...world.emulator.compute.disks.values()].find((d) => d.id.toLowerCase() === id.toLowerCase())!;
  return disk.image.validRanges().map((r) => [r.start, r.end + 1]);
}

function sum(ranges: Array<[number, number]>): number {
  return ranges.reduce((s, [a, b]) => s + b - a, 0);
}

/** What the emulator itself served through every SAS of a snapshot: page bytes read, and reads. */
function served(snapshotId: string): { bytesRead: number; reads: number } {
  const usage = world.emulator.control.sasUsage(snapshotId);
  return { bytesRead: usage.reduce((n, u) => n + u.bytesRead, 0), reads: usage.reduce((n, u) => n + u.reads, 0) };
}

beforeAll(async () => {
  // Page-range answers of at most 5 ranges: the runtime must follow truncated responses.
  world = await startWorld({ seed: false, maxRangesPerResponse: 5 });
  vault = await world.newVault("vault");
  const disk = world.emulator.compute.createDisk(world.group, "app-disk", SIZE);
  diskId = disk.id;
  // Scattered writes, as a file system leaves them: 12 ranges, some crossing block boundaries.
  for (let i = 0; i < 12; i++) {
    const offset = i * 1.25 * MiB + (i % 3) * 40 * KiB;
    world.emulator.control.writeDisk(diskId, offset, pattern(100 + i, (i % 4 + 1) * 24 * KiB));
  }
});

afterAll(async () => {
  await world?.stop();
});

describe("managed disk backups through the CLI", () => {
  const images: Buffer[] = [];
  const points: string[] = [];

  it("reads only the allocated blocks in a first backup, and keeps one golden snapshot", async () => {
    const allocated = allocatedRanges(diskId);
    images.push(world.emulator.control.readImage(diskId));
    const first = await world.json(["backup", diskId, "--vault", vault]);
    points.push(first.id);
    expect(first.mode).toBe("first");
    expect(first.changedBytes).toBe(sum(allocated));
    expect(first.bytesFetched).toBe(blockBytes(allocated));
    expect(first.bytesFetched).toBeLessThan(SIZE / 4);
    // The runtime's claim, held against what the emulator counted it serve.
    expect(served(bulwarkSnapshots(world)[0]!.id).bytesRead).toBe(first.bytesFetched);
    await expectNothingLeaked(world, [diskId]);
  });

  it("reads only the written and cleared pages in an incremental backup", async () => {
    const control = world.emulator.control;
    const golden = bulwarkSnapshots(world)[0]!.id;
    const goldenServed = served(golden).bytesRead;
    const writes: Array<[number, number]> = [
      [MiB + 512, MiB + 512 + 4 * KiB],               // inside one block
      [5 * MiB - 8 * KiB, 5 * MiB + 92 * KiB],         // across a block boundary: 3 blocks
      [15 * MiB, 15 * MiB + 512],                      // a fresh page where nothing was
    ];
    for (const [i, [start, end]] of writes.entries()) control.writeDisk(diskId, start, pattern(200 + i, end - start));
    // Trimmed pages read as zeros now: a restore of the next point must not bring back the old bytes.
    const cleared: [number, number] = [2.5 * MiB + 80 * KiB, 2.5 * MiB + 96 * KiB];
    expect(world.emulator.control.readImage(diskId).subarray(cleared[0], cleared[1]).some((b) => b !== 0)).toBe(true);
    control.clearDisk(diskId, cleared[0], cleared[1] - cleared[0]);
    images.push(control.readImage(diskId));

    const second = await world.json(["backup", diskId, "--vault", vault]);
    points.push(second.id);
    expect(second.mode).toBe("incremental");
    expect(second.fallbackReason).toBeUndefined();
    expect(second.changedBytes).toBe(sum(writes) + sum([cleared]));
    // Only the changed pages: each partly changed block is patched from the previous point (backup-blocks.ts).
    expect(second.bytesFetched).toBe(sum(writes) + sum([cleared]));
    expect(second.bytesFetched).toBeLessThanOrEqual(6 * BLOCK);
    expect(second.bytesFetched).toBeLessThan(SIZE / 40);
    // Counted by the emulator: the new snapshot served exactly those bytes, the previous one none (diff only).
    expect(served(bulwarkSnapshots(world)[0]!.id).bytesRead).toBe(sum(writes) + sum([cleared]));
    expect(served(golden).bytesRead).toBe(goldenServed);
    // The previous golden snapshot was retired for the new one.
    const now = bulwarkSnapshots(world);
    expect(now).toHaveLength(1);
    expect(now[0]!.id).not.toBe(golden);
    await expectNothingLeaked(world, [diskId]);
  });

  it("reads nothing when nothing changed", async () => {
    images.push(world.emulator.control.readImage(diskId));
    const third = await world.json(["backup", diskId, "--vault", vault]);
    points.push(third.id);
    expect(third.mode).toBe("incremental");
    expect(third.changedBytes).toBe(0);
    expect(third.bytesFetched).toBe(0);
    expect(served(bulwarkSnapshots(world)[0]!.id)).toEqual({ bytesRead: 0, reads: 0 });
    await expectNothingLeaked(world, [diskId]);
  });

  it("restores every point byte-identical to the disk at its time, to a local file", async () => {
    expect(images[1]!.equals(images[0]!)).toBe(false);
    for (const [i, point] of points.entries()) {
      const restored = await restoreToFile(world, vault, point, `point-${i}.img`);
      expect(restored.length).toBe(SIZE);
      expect(restored.equals(images[i]!), `point ${i}`).toBe(true);
    }
    const verified = await world.json(["verify", "--vault", vault, "--read-data"]);
    expect(verified.ok).toBe(true);
  });

  it("restores a point to a new managed disk (rounded up to Azure's 20 MiB upload minimum, and says so), and refuses an existing one", async () => {
    const target = diskIdIn(world, world.group, "app-disk-restored");
    const restored = await world.json(["restore", points[1]!, "--vault", vault, "--to", target]);
    expect(restored.kind).toBe("managed-disk");
    // A 16 MiB image goes into a 20 MiB upload disk (test/emulator/arm/compute.ts cites the rule).
    expect(restored.diskSizeBytes).toBe(20 * MiB);
    expect(restored.note).toMatch(/16777216 bytes.*20971520 bytes.*read as zeros/);
    const disk = world.emulator.control.inventory().disks.find((d) => d.id === target)!;
    expect(disk).toMatchObject({ diskState: "Unattached", provisioningState: "Succeeded", sizeBytes: 20 * MiB });
    const content = world.emulator.control.readImage(target);
    expect(content.subarray(0, SIZE).equals(images[1]!)).toBe(true);
    expect(content.subarray(SIZE).every((b) => b === 0)).toBe(true);

    const again = await world.cli(["restore", points[0]!, "--vault", vault, "--to", target]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists; restores never overwrite/);
    // The refused restore changed nothing.
    expect(world.emulator.control.readImage(target).equals(content)).toBe(true);
    await expectNothingLeaked(world, [diskId]);
  });

  it("restores a point to a page blob (a fixed VHD), and refuses an existing blob", async () => {
    const url = `${world.blobs.getContainerClient("restores").url}/app-disk-0.vhd`;
    await world.json(["restore", points[0]!, "--vault", vault, "--to", url]);
    const blob = await world.blobs.getContainerClient("restores").getPageBlobClient("app-disk-0.vhd").downloadToBuffer();
    expect(blob.length).toBe(SIZE + 512);
    expect(blob.subarray(0, SIZE).equals(images[0]!)).toBe(true);
    expect(blob.subarray(SIZE, SIZE + 8).toString("latin1")).toBe("conectix");
    expect(blob.readBigUInt64BE(SIZE + 48)).toBe(BigInt(SIZE));

    const again = await world.cli(["restore", points[2]!, "--vault", vault, "--to", url]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
  });

  it("made only Azure calls that the backup role allows", () => {
    expectCallsAllowedByRole(world);
  });
});
