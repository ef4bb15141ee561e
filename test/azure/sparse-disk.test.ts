/**
 * A 3 GiB managed disk with data in several tree nodes of the block map (a node covers 4096
 * blocks of 64 KiB, 256 MiB) through the real CLI: a first backup fetches only the allocated
 * blocks, an incremental one only the blocks of written and cleared pages (in new and existing
 * nodes), every point restores with the disk's bytes at its time (to a local file, and to a new
 * managed disk), and `verify --read-data` reads it all. Nothing here holds a whole image in memory:
 * the disk's content is known by its regions.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GiB, ImageLayout, TREE_NODE_BYTES, compareWithLayout } from "../support/sparse.ts";
import { pseudoRandom } from "../cli/vaults.ts";
import { BLOCK, KiB, MiB, type AzureWorld, diskIdIn, expectNothingLeaked, startWorld } from "./harness.ts";
import path from "node:path";
import { rm } from "node:fs/promises";

const SIZE = 3 * GiB;
const NODE = TREE_NODE_BYTES;
let world: AzureWorld;
let vault: string;
let diskId: string;

beforeAll(async () => {
  world = await startWorld({ seed: false });
  vault = await world.newVault("vault");
  diskId = world.emulator.compute.createDisk(world.group, "big-disk", SIZE).id;
});

afterAll(async () => {
  await world?.stop();
});

function write(layout: ImageLayout, offset: number, data: Buffer): void {
  layout.set(offset, data);
  world.emulator.control.writeDisk(diskId, offset, data);
}

/** Checks a managed disk against a layout: each region, and zeros in every other valid range. */
function diskMatches(id: string, layout: ImageLayout): string | undefined {
  const disk = [...world.emulator.compute.disks.values()].find((d) => d.id.toLowerCase() === id.toLowerCase());
  if (!disk) return `no disk ${id}`;
  if (disk.image.size !== layout.size) return `size ${disk.image.size}, expected ${layout.size}`;
  for (const r of layout.all) if (!disk.image.read(r.offset, r.data.length).equals(r.data)) return `the ${r.data.length} bytes at ${r.offset} differ`;
  const inRegion = (at: number) => layout.all.some((r) => at >= r.offset && at < r.offset + r.data.length);
  for (const range of disk.image.validRanges()) {
    for (let at = range.start; at <= range.end; at += 512) {
      if (inRegion(at)) continue;
      if (disk.image.read(at, 512).some((b) => b !== 0)) return `non-zero bytes at ${at}, outside every region`;
    }
  }
  return undefined;
}

describe("a multi-GiB managed disk through the CLI", () => {
  const layouts: ImageLayout[] = [];
  const points: string[] = [];

  it("a first backup of a 3 GiB disk with data in seven tree nodes fetches only the allocated blocks and restores byte-identical", async () => {
    const layout = new ImageLayout(SIZE);
    write(layout, 0, pseudoRandom("disk/0", 2 * MiB));
    write(layout, NODE - 64 * KiB, pseudoRandom("disk/straddle", 128 * KiB)); // across the first node boundary
    write(layout, 2 * NODE + 300 * BLOCK, pseudoRandom("disk/2", MiB));
    write(layout, 4 * NODE + 7 * MiB, pseudoRandom("disk/4", 3 * MiB));
    write(layout, 7 * NODE + BLOCK, pseudoRandom("disk/7", 4 * KiB)); // one page run inside a block
    write(layout, SIZE - MiB, pseudoRandom("disk/tail", MiB)); // the last node's last blocks
    expect(layout.treeNodes.length).toBeGreaterThanOrEqual(6);

    const first = await world.json(["backup", diskId, "--vault", vault]);
    expect(first.mode).toBe("first");
    expect(first.size ?? SIZE).toBe(SIZE);
    // Whole 64 KiB blocks around the data: the 4 KiB write costs one block.
    expect(first.bytesFetched).toBe(layout.dataBytes - 4 * KiB + BLOCK);
    layouts.push(layout);
    points.push(first.id);

    const file = path.join(world.dir, "first.img");
    await world.json(["restore", first.id, "--vault", vault, "--to", file]);
    expect(await compareWithLayout(file, layout)).toBeUndefined();
    await rm(file, { force: true });
    await expectNothingLeaked(world, [diskId]);
  });

  it("an incremental backup fetches only the blocks of written and cleared pages, in new and existing nodes; both points restore", async () => {
    const layout = layouts[0]!.copy();
    write(layout, 2 * NODE + 300 * BLOCK, pseudoRandom("disk/2-again", MiB)); // rewritten in place
    write(layout, 5 * NODE + 11 * BLOCK, pseudoRandom("disk/5", 256 * KiB)); // a node that was empty
    // Trimmed pages read as zeros: the new point must not bring back the old bytes.
    layout.set(4 * NODE + 7 * MiB, Buffer.alloc(3 * MiB));
    world.emulator.control.clearDisk(diskId, 4 * NODE + 7 * MiB, 3 * MiB);

    const second = await world.json(["backup", diskId, "--vault", vault]);
    expect(second.mode).toBe("incremental");
    expect(second.fallbackReason).toBeUndefined();
    expect(second.bytesFetched).toBe(MiB + 256 * KiB + 3 * MiB);
    layouts.push(layout);
    points.push(second.id);

    for (const [i, point] of points.entries()) {
      const file = path.join(world.dir, `restored-${i}.img`);
      await world.json(["restore", point, "--vault", vault, "--to", file]);
      expect(await compareWithLayout(file, layouts[i]!), `point ${i}`).toBeUndefined();
      await rm(file, { force: true });
    }
    await expectNothingLeaked(world, [diskId]);
  });

  it("the incremental point restores to a new 3 GiB managed disk with the source's bytes", async () => {
    const target = diskIdIn(world, world.group, "big-disk-restored");
    const restored = await world.json(["restore", points[1]!, "--vault", vault, "--to", target]);
    expect(restored.kind).toBe("managed-disk");
    expect(diskMatches(target, layouts[1]!)).toBeUndefined();
    await expectNothingLeaked(world, [diskId]);
  });

  it("verify --read-data reads every pack of the multi-GiB points", async () => {
    const report = await world.json(["verify", "--vault", vault, "--read-data"]);
    expect(report.ok).toBe(true);
    expect(report.points).toBe(2);
    expect(report.packsRead).toBe(report.packs);
  });
});
