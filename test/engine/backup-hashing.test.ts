/**
 * Issue 13, engine speed: a disk backup hashes its reads on the codec pool's threads when they
 * have room (a second backup, mostly known blocks) and on its own thread when every worker is
 * compressing (a first backup). Wherever a block is hashed, the block map must be the same: the
 * same ids in the same places, zeros for holes, a short last block hashed as it is, and a point
 * that restores byte for byte; a second backup through the workers must find every unchanged block.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { backupDisk } from "../../runtime/engine/backup.ts";
import type { BlockSource } from "../../runtime/engine/backup-blocks.ts";
import { blockIds } from "../../runtime/engine/block-ids.ts";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { ID_BYTES, keyedId, secretKey } from "../../runtime/engine/crypto.ts";
import type { BlockLayout, PointManifest } from "../../runtime/engine/point.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openFileTarget } from "../../runtime/sources/local.ts";
import { openStore } from "../../runtime/store/open.ts";
import { pattern } from "../support/bytes.ts";

const BLOCK = 64 * 1024;
let dir: string;
let vault: Vault;

/** 9 MiB and a bit: random blocks, zero blocks, a repeated block, and a short last block. */
function image(seed: number): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; i < 144; i++) {
    if (i % 9 === 4) blocks.push(Buffer.alloc(BLOCK));
    else if (i % 31 === 7) blocks.push(pattern(5, BLOCK));
    else blocks.push(pattern(seed * 1000 + i, BLOCK));
  }
  blocks.push(pattern(seed * 1000 + 999, 5_000));
  return Buffer.concat(blocks);
}

function sourceOf(bytes: Buffer, reads: number[] = []): BlockSource {
  return {
    size: bytes.length,
    read: async (offset, length) => {
      reads.push(length);
      return Buffer.from(bytes.subarray(offset, offset + length));
    },
  };
}

async function blockMap(point: PointManifest): Promise<Buffer> {
  const content = point.content as BlockLayout;
  return Buffer.concat(await Promise.all(content.tree.map((id) => vault.readChunk(CHUNK_TREE, Buffer.from(id, "hex")))));
}

async function restored(point: PointManifest): Promise<Buffer> {
  const pool = new CodecPool(vault.master, { threads: 2 });
  const destination = path.join(dir, `${point.id}.img`);
  const target = await openFileTarget(destination, point.size);
  try {
    await restoreContent(vault, pool, point, target);
    await target.commit();
  } finally {
    await pool.close();
  }
  return readFile(destination);
}

const diskOf = (name: string) => ({ kind: "disk" as const, source: { type: "image" as const, path: `/${name}.img` }, tags: {} });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bulwark-backup-hashing-"));
  const { store } = await openStore(path.join(dir, "vault"));
  vault = await Vault.init(store, new PassphraseProvider("backup hashing test passphrase"));
}, 60_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("block ids hashed on the workers equal those hashed in process: keyed ids, zeros for holes, the short last block as it is", () => {
  const bytes = image(1);
  const idKey = secretKey(vault.master.idKey);
  const ids = blockIds(idKey, bytes, BLOCK);
  expect(ids.length).toBe(145 * ID_BYTES);
  for (let i = 0; i < 145; i++) {
    const piece = bytes.subarray(i * BLOCK, Math.min((i + 1) * BLOCK, bytes.length));
    const expected = i % 9 === 4 ? Buffer.alloc(ID_BYTES) : keyedId(idKey, piece);
    expect(Buffer.from(ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES)).equals(expected)).toBe(true);
  }
});

test("the same image backed up with worker threads and without gives the same block map, and a second backup through the workers reuses every unchanged block", async () => {
  const first = image(2);
  const viaWorkers = await backupDisk(vault, sourceOf(first), diskOf("workers"), { threads: 2 });
  const inProcess = await backupDisk(vault, sourceOf(first), diskOf("in-process"), { threads: 0 });
  expect((await blockMap(viaWorkers)).equals(await blockMap(inProcess))).toBe(true);
  expect((await restored(viaWorkers)).equals(first)).toBe(true);

  // Change three blocks, one of them to zeros: the rest is known, so the workers hash it.
  const second = Buffer.from(first);
  pattern(77, BLOCK).copy(second, 10 * BLOCK);
  Buffer.alloc(BLOCK).copy(second, 11 * BLOCK);
  pattern(78, BLOCK).copy(second, 100 * BLOCK);
  const reads: number[] = [];
  const next = await backupDisk(vault, sourceOf(second, reads), diskOf("workers"), { threads: 2, base: viaWorkers });
  expect(reads.reduce((sum, n) => sum + n, 0)).toBe(second.length);
  expect(next.stats.chunksNew).toBe(2 + 1); // the two new blocks and the one tree node
  expect((await restored(next)).equals(second)).toBe(true);
});
