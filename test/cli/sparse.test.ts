/**
 * Multi-GiB sparse disk images through the real CLI: data in several tree nodes of the block map
 * (a node covers 4096 blocks of 64 KiB, 256 MiB), an image whose size is not a multiple of the
 * block size, an incremental backup that writes into new and existing nodes and zeroes a region,
 * and every point restores with exactly the source's bytes (holes where it was zero), and
 * `verify --read-data` reads it all. The images are sparse files (a few MiB on disk), and the
 * restored ones are checked region by region plus their allocation, never read whole.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { GiB, ImageLayout, TREE_NODE_BYTES, compareWithLayout, patchImage, writeSparseImage } from "../support/sparse.ts";
import { LocalVaults, MIB, cli, cliJson, pseudoRandom, tempFolder, verifyClean, type BackupSummary } from "./vaults.ts";

// 2 GiB and a bit: eight full tree nodes and a ninth with a partial last block.
const SIZE = 2 * GiB + 5 * MIB + 4096;
const NODE = TREE_NODE_BYTES;

describe("multi-GiB sparse images, local vault", () => {
  let vaults: LocalVaults;
  let scratch: string;
  let vault: string;
  let image: string;
  const layouts: ImageLayout[] = [];
  const points: BackupSummary[] = [];

  beforeAll(async () => {
    vaults = await LocalVaults.create();
    scratch = await tempFolder("sparse");
    vault = vaults.newLocation("sparse");
    expect((await cli(vaults, vault, ["init"])).code).toBe(0);
    image = path.join(scratch, "big.img");
  });

  afterAll(async () => {
    await vaults?.close();
  });

  test("a first backup of a 2 GiB sparse image with data in six tree nodes restores byte-identical", async () => {
    const layout = new ImageLayout(SIZE);
    layout.set(0, pseudoRandom("first/0", 3 * MIB));
    layout.set(NODE - MIB, pseudoRandom("first/straddle", 2 * MIB)); // across the first node boundary
    layout.set(3 * NODE + 17 * 64 * 1024, pseudoRandom("first/3", MIB));
    layout.set(5 * NODE + 40 * MIB, pseudoRandom("first/5", 4 * MIB));
    layout.set(7 * NODE + NODE - 64 * 1024, pseudoRandom("first/7-last-block", 64 * 1024));
    layout.set(SIZE - 4096 - MIB, pseudoRandom("first/tail", MIB + 4096)); // the partial last block
    expect(layout.treeNodes.length).toBeGreaterThanOrEqual(6);
    await writeSparseImage(image, SIZE, layout.all);

    const first = await cliJson<BackupSummary>(vaults, vault, ["backup", image]);
    expect(first.size).toBe(SIZE);
    expect(first.bytesRead).toBe(SIZE);
    // Only the data is new: zero blocks are not stored (a few blocks of slack for alignment).
    expect(first.bytesNew).toBeGreaterThanOrEqual(layout.dataBytes);
    expect(first.bytesNew).toBeLessThan(layout.dataBytes + 16 * 64 * 1024);
    layouts.push(layout);
    points.push(first);

    const restored = path.join(scratch, "first-restored.img");
    expect((await cli(vaults, vault, ["restore", first.id, "--to", restored])).code).toBe(0);
    expect(await compareWithLayout(restored, layout)).toBeUndefined();
  });

  test("an incremental backup that writes into new and existing nodes and zeroes a region stores only those blocks; both points restore", async () => {
    const layout = layouts[0]!.copy();
    const changes = [
      layout.set(3 * NODE + 17 * 64 * 1024, pseudoRandom("second/3", MIB)), // rewritten in place
      layout.set(5 * NODE + 40 * MIB, Buffer.alloc(4 * MIB)), // zeroed: must restore as zeros
      layout.set(6 * NODE + 123 * 64 * 1024, pseudoRandom("second/6", 2 * MIB)), // a node that was empty
      layout.set(8 * NODE + 64 * 1024, pseudoRandom("second/8", 64 * 1024)), // the partial ninth node
    ];
    await patchImage(image, changes);

    const second = await cliJson<BackupSummary>(vaults, vault, ["backup", image]);
    expect(second.size).toBe(SIZE);
    const changedData = MIB + 2 * MIB + 64 * 1024;
    expect(second.bytesNew).toBeGreaterThanOrEqual(changedData);
    expect(second.bytesNew).toBeLessThan(changedData + 16 * 64 * 1024);
    layouts.push(layout);
    points.push(second);

    for (const [i, point] of points.entries()) {
      const restored = path.join(scratch, `restored-${i}.img`);
      expect((await cli(vaults, vault, ["restore", point.id, "--to", restored])).code).toBe(0);
      expect(await compareWithLayout(restored, layouts[i]!), `point ${i}`).toBeUndefined();
    }
  });

  test("verify --read-data reads every pack of the multi-GiB points", async () => {
    const report = await verifyClean(vaults, vault);
    expect(report.points).toBe(2);
    expect(report.packsRead).toBe(report.packs);
    expect(report.chunksChecked).toBeGreaterThan(0);
  });
});
