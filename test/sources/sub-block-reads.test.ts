/**
 * Issue 13, cloud incrementals at their real size: a changed block that is only partly changed is
 * patched, its changed pages read from the source and the rest taken from the base point's chunk
 * (backup-blocks.ts). The point must be exactly what reading every changed block whole would give:
 * the same block map, byte-identical on restore. A base chunk that cannot be read (tampered with,
 * its pack deleted) makes the backup read that block whole and say so; a first backup (no base)
 * reads whole blocks as before.
 */
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { backupBlocks, planBlock, type BlockSource, type ByteRange } from "../../runtime/engine/backup-blocks.ts";
import { backupDisk, manifestOf, withWriter } from "../../runtime/engine/backup.ts";
import { commitPoint } from "../../runtime/engine/commit.ts";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { ID_BYTES } from "../../runtime/engine/crypto.ts";
import { packKey } from "../../runtime/engine/pack.ts";
import type { BlockLayout, PointManifest } from "../../runtime/engine/point.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openFileTarget } from "../../runtime/sources/local.ts";
import { openStore } from "../../runtime/store/open.ts";
import { pattern } from "../support/bytes.ts";

const KiB = 1024;
const BLOCK = 64 * KiB;
let dir: string;
let vault: Vault;

/** 48 blocks: data, with holes at every seventh block. */
function firstImage(seed: number): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; i < 48; i++) blocks.push(i % 7 === 3 ? Buffer.alloc(BLOCK) : pattern(seed * 1000 + i, BLOCK));
  return Buffer.concat(blocks);
}

/** A source over bytes that records each read as [offset, length]. */
function sourceOf(bytes: Buffer, reads: Array<[number, number]> = []): BlockSource {
  return {
    size: bytes.length,
    read: async (offset, length) => {
      reads.push([offset, length]);
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
  };
}

/** Writes `data` into `image` and records the range as changed (Azure's diff would list it). */
function change(image: Buffer, changed: ByteRange[], offset: number, data: Buffer): void {
  data.copy(image, offset);
  changed.push([offset, offset + data.length]);
}

const total = (ranges: Array<[number, number]>, lengthOf: (r: [number, number]) => number) => ranges.reduce((sum, r) => sum + lengthOf(r), 0);
const diskOf = (name: string) => ({ kind: "disk" as const, source: { type: "image" as const, path: `/${name}.img` }, tags: {} });

async function blockMap(point: PointManifest): Promise<Buffer> {
  const content = point.content as BlockLayout;
  return Buffer.concat(await Promise.all(content.tree.map((id) => vault.readChunk(CHUNK_TREE, Buffer.from(id, "hex")))));
}

async function restored(point: PointManifest): Promise<Buffer> {
  const pool = new CodecPool(vault.master, { threads: 1 });
  const destination = path.join(dir, `${point.id}.img`);
  const target = await openFileTarget(destination, point.size);
  try {
    await restoreContent(vault, pool, point, target);
    await target.commit();
  } finally {
    await pool.close();
  }
  const bytes = await readFile(destination);
  await rm(destination);
  return bytes;
}

/** The same image read whole, without a base: what the patched point must equal. */
async function fullRead(image: Buffer, name: string): Promise<PointManifest> {
  return backupDisk(vault, sourceOf(image), diskOf(name), { threads: 1 });
}

/** One incremental through backupBlocks, committed as a disk backup commits it, with its read statistics. */
async function incremental(image: Buffer, base: PointManifest, changed: ByteRange[], reads: Array<[number, number]>, warnings: string[] = []) {
  const started = Date.now();
  let point: PointManifest | undefined;
  const { result } = await withWriter(
    vault,
    { threads: 1 },
    (writer) =>
      backupBlocks(vault, writer, sourceOf(image, reads), {
        base: { content: base.content as BlockLayout, size: base.size },
        changed,
        onWarning: (message) => warnings.push(message),
      }),
    async (done, writer, lock) => {
      point = manifestOf({ ...diskOf("incremental"), parent: base.id }, image.length, done.content, done.bytesRead, writer, started);
      await commitPoint(vault, point, lock);
    },
  );
  return { result, point: point! };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bulwark-sub-block-"));
  const { store } = await openStore(path.join(dir, "vault"));
  vault = await Vault.init(store, new PassphraseProvider("sub-block reads test passphrase"));
}, 60_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("which changed blocks are patched", () => {
  test("a few changed pages are read as they are; pieces under 4 KiB apart are read as one", () => {
    expect(planBlock([[4 * KiB, 8 * KiB]], BLOCK)).toEqual([[4 * KiB, 8 * KiB]]);
    expect(planBlock([[0, 512], [2 * KiB, 3 * KiB], [40 * KiB, 41 * KiB]], BLOCK)).toEqual([[0, 3 * KiB], [40 * KiB, 41 * KiB]]);
  });

  test("a block more than half changed, or changed in more than four separate pieces, is read whole", () => {
    expect(planBlock([[0, 32 * KiB + 512]], BLOCK)).toBeUndefined();
    expect(planBlock([[0, 32 * KiB]], BLOCK)).toEqual([[0, 32 * KiB]]);
    const scattered: ByteRange[] = [0, 10, 20, 30, 40].map((k) => [k * KiB, k * KiB + 512]);
    expect(planBlock(scattered, BLOCK)).toBeUndefined();
    expect(planBlock(scattered.slice(0, 4), BLOCK)).toEqual(scattered.slice(0, 4));
  });
});

describe("an incremental backup with sub-block reads", () => {
  let v1: Buffer;
  let first: PointManifest;

  beforeAll(async () => {
    v1 = firstImage(1);
    first = await fullRead(v1, "disk");
  }, 60_000);

  test("scattered 4 KiB writes, a page written into a hole and pages trimmed to zeros read only those bytes, and the point equals a full re-read", async () => {
    const v2 = Buffer.from(v1);
    const changed: ByteRange[] = [];
    for (const block of [1, 9, 20, 33, 46]) change(v2, changed, block * BLOCK + 12 * KiB, pattern(500 + block, 4 * KiB));
    change(v2, changed, 10 * BLOCK + 512, pattern(600, 512)); // block 10 was a hole in the base
    change(v2, changed, 14 * BLOCK + 60 * KiB, Buffer.alloc(4 * KiB)); // trimmed: reads as zeros now
    changed.sort((a, b) => a[0] - b[0]);

    const reads: Array<[number, number]> = [];
    const { result, point } = await incremental(v2, first, changed, reads);
    expect(reads.sort((a, b) => a[0] - b[0])).toEqual(changed.map(([a, b]) => [a, b - a]));
    expect(result.bytesRead).toBe(total(changed, ([a, b]) => b - a));
    expect(result.blocksPatched).toBe(7);
    // Six base chunks read from the vault; the hole's base is zeros, read from nowhere.
    expect(result.baseChunksRead).toBe(6);
    expect(result.baseBytesRead).toBe(6 * BLOCK);
    expect(result.baseReadsFailed).toBe(0);

    const full = await fullRead(v2, "disk-full");
    expect((await blockMap(point)).equals(await blockMap(full))).toBe(true);
    expect(point.content).toEqual(full.content);
    expect((await restored(point)).equals(v2)).toBe(true);
  });

  test("a block more than half rewritten and the blocks beside a patched one are read whole, in the same reads as before", async () => {
    const v2 = Buffer.from(v1);
    const changed: ByteRange[] = [];
    change(v2, changed, 5 * BLOCK + 8 * KiB, pattern(700, 40 * KiB)); // 40 of 64 KiB: whole
    change(v2, changed, 6 * BLOCK, pattern(701, 2 * BLOCK)); // blocks 6 and 7 rewritten whole
    change(v2, changed, 8 * BLOCK + 4 * KiB, pattern(702, 4 * KiB)); // patched
    const reads: Array<[number, number]> = [];
    const { result, point } = await incremental(v2, first, changed, reads);
    expect(reads.sort((a, b) => a[0] - b[0])).toEqual([
      [5 * BLOCK, 3 * BLOCK],
      [8 * BLOCK + 4 * KiB, 4 * KiB],
    ]);
    expect(result.blocksPatched).toBe(1);
    expect(point.content).toEqual((await fullRead(v2, "disk-full")).content);
  });

  test("a base chunk tampered with in the vault is never patched onto: that block is read whole, the backup warns, and the point restores byte-identical", async () => {
    const v2 = Buffer.from(v1);
    const changed: ByteRange[] = [];
    change(v2, changed, 2 * BLOCK + 4 * KiB, pattern(800, 4 * KiB));
    change(v2, changed, 4 * BLOCK + 4 * KiB, pattern(801, 4 * KiB));
    // A person with write access to the vault flips one byte inside block 2's sealed chunk.
    const ids = await blockMap(first);
    const location = vault.locate(ids.subarray(2 * ID_BYTES, 3 * ID_BYTES));
    const file = await open(path.join(vault.store.location, packKey(location.pack)), "r+");
    try {
      const byte = Buffer.alloc(1);
      const at = location.offset + Math.floor(location.length / 2);
      await file.read(byte, 0, 1, at);
      byte[0] ^= 0xff;
      await file.write(byte, 0, 1, at);
    } finally {
      await file.close();
    }

    const reads: Array<[number, number]> = [];
    const warnings: string[] = [];
    const { result, point } = await incremental(v2, first, changed, reads, warnings);
    expect(result.baseReadsFailed).toBe(1);
    expect(result.blocksPatched).toBe(1);
    expect(reads).toContainEqual([2 * BLOCK, BLOCK]);
    expect(warnings).toEqual([expect.stringMatching(/1 chunk\(s\) of the base point could not be read .*read whole from the source.*bulwark verify/)]);
    expect(point.content).toEqual((await fullRead(v2, "disk-full")).content);
    expect((await restored(point)).equals(v2)).toBe(true);
  });
  test("a base point whose data pack was deleted under it (pruned): each changed block is read whole, the blocks equal a full read's, and the commit is refused naming the missing pack", async () => {
    // A base whose block map node sits in a newer pack than its unchanged blocks' chunks.
    const v2 = Buffer.from(v1);
    const baseChanges: ByteRange[] = [];
    change(v2, baseChanges, 0, pattern(840, BLOCK));
    const { point: base } = await incremental(v2, first, baseChanges, []);
    const ids = await blockMap(base);
    const packs = new Set([12, 25, 40].map((b) => vault.locate(ids.subarray(b * ID_BYTES, (b + 1) * ID_BYTES)).pack));
    expect(packs.has(vault.locate(Buffer.from((base.content as BlockLayout).tree[0], "hex")).pack)).toBe(false);
    for (const pack of packs) await rm(path.join(vault.store.location, packKey(pack)));

    const v3 = Buffer.from(v2);
    const changed: ByteRange[] = [];
    for (const block of [12, 25, 40]) change(v3, changed, block * BLOCK + 20 * KiB, pattern(850 + block, 4 * KiB));
    const reads: Array<[number, number]> = [];
    const warnings: string[] = [];
    // The point cannot be committed (its unchanged blocks are gone: commit.ts refuses it), but the
    // blocks it read are those of a full read, never a block patched onto missing bytes.
    const attempt = incremental(v3, base, changed, reads, warnings);
    await expect(attempt).rejects.toThrow(/would reference 1 packs that are not in the vault/);
    // The changed pages, read while the base chunk was fetched, and then each block whole.
    expect(reads.sort((a, b) => a[0] - b[0])).toEqual([12, 25, 40].flatMap((b) => [[b * BLOCK, BLOCK], [b * BLOCK + 20 * KiB, 4 * KiB]]));
    expect(warnings).toEqual([expect.stringMatching(/^3 chunk\(s\) of the base point could not be read \(first: [0-9a-f]+: object data\/.* is missing/)]);
    const { result } = await withWriter(vault, { threads: 1 }, (writer) =>
      backupBlocks(vault, writer, sourceOf(v3), { base: { content: base.content as BlockLayout, size: base.size }, changed, onWarning: () => {} }),
    );
    const { result: full } = await withWriter(vault, { threads: 1 }, (writer) => backupBlocks(vault, writer, sourceOf(v3)));
    expect(result.baseReadsFailed).toBe(3);
    expect(result.blocksPatched).toBe(0);
    expect(result.content).toEqual(full.content);
  });
});

describe("backups that are not patched", () => {
  test("a first backup (no base) given the allocated ranges reads their blocks whole, as before", async () => {
    const image = Buffer.alloc(24 * BLOCK);
    const allocated: ByteRange[] = [];
    change(image, allocated, 3 * BLOCK + 4 * KiB, pattern(900, 4 * KiB));
    change(image, allocated, 10 * BLOCK, pattern(901, 3 * BLOCK));
    const reads: Array<[number, number]> = [];
    const point = await backupDisk(vault, sourceOf(image, reads), diskOf("first"), { threads: 1, changed: allocated });
    expect(reads.sort((a, b) => a[0] - b[0])).toEqual([
      [3 * BLOCK, BLOCK],
      [10 * BLOCK, 3 * BLOCK],
    ]);
    expect(point.content).toEqual((await fullRead(image, "first-full")).content);
  });

  test("a grown disk whose base ended in a short block reads that block whole and patches only blocks whole in both", async () => {
    const base = Buffer.concat([firstImage(3).subarray(0, 8 * BLOCK), pattern(950, 5000)]);
    const basePoint = await fullRead(base, "grown");
    const grown = Buffer.concat([base, Buffer.alloc(4 * BLOCK - 5000)]);
    const changed: ByteRange[] = [];
    change(grown, changed, 2 * BLOCK + 8 * KiB, pattern(951, 4 * KiB));
    change(grown, changed, 8 * BLOCK + 1024, pattern(952, 512)); // inside the base's short last block
    const reads: Array<[number, number]> = [];
    const { result, point } = await incremental(grown, basePoint, changed, reads);
    expect(result.blocksPatched).toBe(1);
    expect(reads.sort((a, b) => a[0] - b[0])).toEqual([
      [2 * BLOCK + 8 * KiB, 4 * KiB],
      [8 * BLOCK, 4 * BLOCK],
    ]);
    expect(point.content).toEqual((await fullRead(grown, "grown-full")).content);
    expect((await restored(point)).equals(grown)).toBe(true);
  });
});
