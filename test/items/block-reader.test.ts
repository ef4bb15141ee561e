/**
 * Random access into a disk point backed up by the real CLI: any range reads back the image's
 * bytes (within a block, across blocks, across a tree node of the block map, zero blocks, the
 * partial last block, the very end), a read past the end fails with one clear message, and a
 * small read fetches a few chunks of the vault, not the point; the block cache keeps to its bound;
 * a damaged block fails as damaged; a point that is not a disk is refused.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { openDiskPoint, type DiskPointReader } from "../../runtime/items/block-reader.ts";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { ID_BYTES } from "../../runtime/engine/crypto.ts";
import { packKey } from "../../runtime/engine/pack.ts";
import type { BlockLayout } from "../../runtime/engine/point.ts";
import { IntegrityError, UsageError } from "../../runtime/errors.ts";
import { TREE_NODE_BYTES, writeSparseImage } from "../support/sparse.ts";
import { MIB, pseudoRandom, tempFolder, text } from "../cli/vaults.ts";
import { fileBytes, PointVault, type StoreReads } from "./disk-points.ts";

const BLOCK = 64 * 1024;
// One full tree node (256 MiB) and a second with a partial last block.
const SIZE = TREE_NODE_BYTES + 3 * MIB + 777;

describe("random reads of a disk point", () => {
  let vaults: PointVault;
  let image: string;
  let disk: DiskPointReader;
  let reads: StoreReads;
  let pointId: string;

  beforeAll(async () => {
    vaults = await PointVault.create("block-reader");
    image = path.join(await tempFolder("block-reader"), "disk.img");
    await writeSparseImage(image, SIZE, [
      { offset: 0, data: pseudoRandom("head", MIB) },
      { offset: 2 * MIB + 100, data: text("text", 300 * 1024) },
      { offset: TREE_NODE_BYTES - 200 * 1024, data: pseudoRandom("across the node boundary", 400 * 1024) },
      { offset: SIZE - MIB - 777, data: pseudoRandom("tail", MIB + 777) },
    ]);
    const point = await vaults.backup(image);
    expect(point.size).toBe(SIZE);
    pointId = point.id;
    const opened = await vaults.open();
    reads = opened.reads;
    disk = await openDiskPoint(opened.vault, point.id.slice(0, 12), { cacheBytes: 2 * MIB });
  });

  afterAll(async () => {
    await vaults?.close();
  });

  test("ranges within a block, across blocks and tree nodes, in zero blocks and at the end read the image's bytes", async () => {
    expect(disk.size).toBe(SIZE);
    const ranges: [number, number][] = [
      [0, 512],
      [BLOCK - 10, 20], // across a block boundary
      [MIB - 5, 10], // data then a zero block
      [MIB + 4096, 8192], // inside a zero block
      [2 * MIB, 64 * 1024 + 300], // zeros, then text, across a block boundary
      [TREE_NODE_BYTES - 1000, 2000], // across the block map's first tree node
      [TREE_NODE_BYTES - 200 * 1024, 400 * 1024],
      [SIZE - 777 - 10, 787], // into the partial last block, to the very end
      [SIZE - 1, 1],
      [SIZE, 0],
    ];
    // And random ranges anywhere, the same on every run.
    const random = pseudoRandom("ranges", 8 * 64);
    for (let i = 0; i < 64; i++) {
      const length = 1 + (random.readUInt32LE(i * 8 + 4) % (3 * BLOCK));
      ranges.push([random.readUInt32LE(i * 8) % (SIZE - length), length]);
    }
    for (const [offset, length] of ranges) {
      const got = await disk.read(offset, length);
      expect(got.length, `read of ${length} at ${offset}`).toBe(length);
      expect(got.equals(await fileBytes(image, offset, length)), `read of ${length} at ${offset}`).toBe(true);
    }
  });

  test("a read past the end of the disk fails with a message that names the disk's size", async () => {
    await expect(disk.read(SIZE - 10, 11)).rejects.toThrow(UsageError);
    await expect(disk.read(SIZE - 10, 11)).rejects.toThrow(`the disk holds ${SIZE} bytes, so the read ends 1 bytes past its end`);
    await expect(disk.read(SIZE + 1, 0)).rejects.toThrow(/past its end/);
    await expect(disk.read(-1, 10)).rejects.toThrow(/not negative/);
  });

  test("a small read fetches its tree node and blocks only, and reading it again fetches nothing", async () => {
    const before = { ...reads };
    const fetchedBefore = { ...disk.fetched };
    // Two data blocks in the second tree node: at most its node and the two blocks.
    const offset = SIZE - MIB;
    expect((await disk.read(offset - 100, 200)).equals(await fileBytes(image, offset - 100, 200))).toBe(true);
    expect(reads.ranges - before.ranges).toBeLessThanOrEqual(3);
    expect(disk.fetched.chunks - fetchedBefore.chunks).toBe(reads.ranges - before.ranges);
    // A few blocks' worth of the vault, never the point's ~2 MiB of data.
    expect(reads.bytes - before.bytes).toBeLessThan(3 * BLOCK + 200 * 1024);

    const again = reads.ranges;
    await disk.read(offset - 50, 100);
    expect(reads.ranges).toBe(again);
  });

  test("the block cache holds no more than its bound: after reading more than it, the first blocks are fetched again and the last are not", async () => {
    // 2 MiB of cache; read 1 MiB of data blocks at the head, then 1.3 MiB of text and the node boundary.
    await disk.read(0, MIB);
    await disk.read(2 * MIB, 400 * 1024);
    await disk.read(TREE_NODE_BYTES - 200 * 1024, 400 * 1024);
    await disk.read(SIZE - MIB - 777, MIB + 777);
    const settled = reads.ranges;
    await disk.read(SIZE - 100, 100); // among the most recent: still cached
    expect(reads.ranges).toBe(settled);
    await disk.read(0, 100); // the least recent: evicted, fetched again
    expect(reads.ranges).toBe(settled + 1);
  });

  test("a block whose stored bytes are damaged fails the read as damaged, and the blocks around it still read", async () => {
    const { vault } = await vaults.open();
    const manifest = await vault.readPoint(pointId);
    const layout = manifest.content as BlockLayout;
    const node = await vault.readChunk(CHUNK_TREE, Buffer.from(layout.tree[0], "hex"));
    const block = 3; // in the pseudo-random first MiB
    const where = vault.locate(node.subarray(block * ID_BYTES, (block + 1) * ID_BYTES));
    const key = packKey(where.pack);
    const original = await vaults.readObject(key);
    const damaged = Buffer.from(original);
    damaged[where.offset + Math.floor(where.length / 2)] ^= 0x01;
    await vaults.replaceObject(key, damaged);
    try {
      const fresh = await openDiskPoint(vault, pointId);
      await expect(fresh.read(block * BLOCK + 100, 10)).rejects.toThrow(IntegrityError);
      expect((await fresh.read(2 * BLOCK, BLOCK)).equals(await fileBytes(image, 2 * BLOCK, BLOCK))).toBe(true);
    } finally {
      await vaults.replaceObject(key, original);
    }
  });

  test("a point that is not a disk point is refused with a message naming its kind", async () => {
    const file = path.join(await tempFolder("block-reader-file"), "notes.txt");
    await writeFile(file, text("notes", 10_000));
    const point = await vaults.backup(file, "file");
    const { vault } = await vaults.open();
    const refusal = openDiskPoint(vault, point.id);
    await expect(refusal).rejects.toThrow(UsageError);
    await expect(refusal).rejects.toThrow(`point ${point.id.slice(0, 12)} is a file point, not a disk point`);
  });
});
