/**
 * The sharded chunk index (runtime/engine/index-shards.ts, vault-index.ts; issue 13): prune
 * compacts the index into sealed shards and a generation object, and a job reads only the blocks
 * it needs. Shards here are tiny (blocks of 2 entries, shards of about 8-16) so a few small disks
 * spread over several shards and blocks. Scenarios: lookups after compaction (restore, dedup,
 * ranged reads, an unprepared lookup throws, copy out of the vault); a crash between the shards and the generation
 * object, and one after it before the deletes; a backup that commits during a prune; a damaged
 * block, a missing shard, a shard copied to another prefix or generation, blocks swapped (and
 * verify naming it); a rolled-back or planted generation object; another process's prune seen by reloadIndex.
 */
import { randomBytes } from "node:crypto";
import { cp, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { backupDisk } from "../../runtime/engine/backup.ts";
import { CHUNK_DATA, CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { copyPoints } from "../../runtime/engine/copy.ts";
import { ID_BYTES, keyedId, labelAssociatedData, sealObject } from "../../runtime/engine/crypto.ts";
import {
  encodeShard,
  IndexNotPreparedError,
  packEntry,
  prefixOf,
  PREPARE_MAX,
  SHARD_ENTRY_BYTES,
  shardName,
  ShardReader,
  shardTuning,
} from "../../runtime/engine/index-shards.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { verifyVault } from "../../runtime/engine/verify.ts";
import { VaultWriter } from "../../runtime/engine/vault-writer.ts";
import { IntegrityError } from "../../runtime/errors.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { tempFolder } from "../cli/vaults.ts";
import { BLOCK, disk, HookedStore, keysUnder, prune, restore, ShardFixture, source, useTinyShards } from "./shard-vaults.ts";

const provider = new PassphraseProvider("index shards test passphrase");
/** The fixture: two points, not yet compacted; `copyOf` gives each scenario its own copy to damage. */
const vaults = new ShardFixture(provider, "shards");
const tuning = { ...shardTuning };

const { disks, points, open, copyOf } = vaults;

/** The first data chunk of a point and the shard that holds it (in the vault's newest generation). */
async function firstChunkShard(folder: string, vault: Vault, point: PointManifest): Promise<{ id: Buffer; shard: string }> {
  const node = await vault.readChunk(CHUNK_TREE, Buffer.from(point.content!.tree[0], "hex"));
  const id = Buffer.from(node.subarray(0, ID_BYTES));
  const generation = vault.index.generation!;
  const prefix = prefixOf(id, generation.prefixBits).toString(16).padStart(Math.max(1, Math.ceil(generation.prefixBits / 4)), "0");
  const shard = (await keysUnder(folder, "index-shards/")).find((key) => key === `index-shards/${String(generation.sequence).padStart(12, "0")}/${prefix}`);
  return { id, shard: shard! };
}

async function compacted(label: string): Promise<{ folder: string; vault: Vault }> {
  const folder = await copyOf(label);
  await prune(await open(folder));
  return { folder, vault: await open(folder) };
}

beforeAll(async () => {
  useTinyShards(16);
  await vaults.backUp(["a", "b"], 16);
});

afterAll(() => {
  Object.assign(shardTuning, tuning);
});

test("a shard at the production block size (512 entries): every id found where it lies, other ids absent, a lookup reading one filter and one block by range", async () => {
  const saved = shardTuning.blockEntries;
  shardTuning.blockEntries = 512;
  try {
    const folder = await tempFolder("shards-format");
    const store = new HookedStore(new LocalFolderStore(folder), {});
    const dataKey = randomBytes(32);
    const ids = Array.from({ length: 2000 }, () => randomBytes(ID_BYTES)).sort(Buffer.compare);
    const locationOf = (i: number) => ({ pack: (i % 7).toString(16).padStart(32, "0"), offset: i * 100, length: 90 + (i % 5), rawLength: 4096 + i, type: i % 2 });
    const packed = Buffer.alloc(ids.length * SHARD_ENTRY_BYTES);
    ids.forEach((id, i) => packEntry(packed, i * SHARD_ENTRY_BYTES, id, locationOf(i)));
    const { bytes, info } = encodeShard(dataKey, 5, 1, 0, 0, packed);
    await store.create(shardName(1, 0, 0), bytes);
    const reader = new ShardReader(store, dataKey, { sequence: 1, prefixBits: 0, shards: [info], covers: [] });
    await reader.prepare([ids[1500]]);
    expect(store.reads.map((r) => r.kind)).toEqual(["range", "range", "range"]); // block index, filter, block
    expect(reader.find(ids[1500])).toEqual(locationOf(1500));
    for (let at = 0; at < ids.length; at += PREPARE_MAX) await reader.prepare(ids.slice(at, at + PREPARE_MAX));
    ids.forEach((id, i) => expect(reader.find(id)).toEqual(locationOf(i)));
    const others = Array.from({ length: 1000 }, () => randomBytes(ID_BYTES));
    await reader.prepare(others);
    expect(others.filter((id) => reader.find(id) !== undefined)).toEqual([]);
    let entries = 0;
    for await (const _ of reader.entries()) entries++;
    expect(entries).toBe(ids.length);
  } finally {
    shardTuning.blockEntries = saved;
  }
});

describe("a compacted index", () => {
  test("prune writes shards and a generation object, deletes the index objects, and a restore from the shards gives the same bytes, reading blocks by range", async () => {
    const { folder } = await compacted("restore");
    expect(await keysUnder(folder, "index/")).toEqual([]);
    expect(await keysUnder(folder, "index-gen/")).toEqual(["index-gen/000000000001"]);
    expect((await keysUnder(folder, "index-shards/")).length).toBeGreaterThan(2);
    const store = new HookedStore(new LocalFolderStore(folder), {});
    const vault = await open(folder, store);
    expect(vault.index.size).toBe(0); // nothing loaded whole
    expect(await restore(vault, points.a)).toEqual(disks.a);
    const shardReads = store.reads.filter((r) => r.key.startsWith("index-shards/"));
    expect(shardReads.length).toBeGreaterThan(0);
    expect(shardReads.every((r) => r.kind === "range")).toBe(true);
  });

  test("a synchronous lookup of a shard-held id that was not prepared throws, and after prepare it answers (an unknown id: absent)", async () => {
    const { folder, vault } = await compacted("prepare");
    const { id } = await firstChunkShard(folder, vault, points.b);
    const fresh = await open(folder);
    expect(() => fresh.index.lookup(id)).toThrow(IndexNotPreparedError);
    expect(() => fresh.locate(id)).toThrow(IndexNotPreparedError);
    await fresh.index.prepare([id]);
    expect(fresh.locate(id).length).toBeGreaterThan(0);
    const unknown = randomBytes(ID_BYTES);
    await fresh.index.prepare([unknown]);
    expect(fresh.index.has(unknown)).toBe(false);
  });

  test("a backup of known data after compaction dedups against the shards: no new chunk, no new pack", async () => {
    const { folder, vault } = await compacted("dedup");
    const packsBefore = await keysUnder(folder, "data/");
    const again = await backupDisk(vault, source(disks.a), disk("a"));
    expect(again.stats.chunksNew).toBe(0);
    expect(await keysUnder(folder, "data/")).toEqual(packsBefore);
    expect(await restore(await open(folder), again)).toEqual(disks.a);
  });

  test("copy out of a compacted vault into a new vault sharing its keys: the points restore there", async () => {
    const { vault } = await compacted("copy-from");
    const destination = path.join(await tempFolder("shards-copy-to"), "vault");
    const to = await Vault.init(new LocalFolderStore(destination), provider, {}, vault.master);
    const report = await copyPoints(vault, to, { threads: 1 });
    expect(report.pointsCopied).toBe(2);
    expect(await restore(await open(destination), points.b)).toEqual(disks.b);
  });

  test("another process's prune makes a new generation: reloadIndex resets to it", async () => {
    const { folder, vault } = await compacted("reload");
    expect(vault.index.generation?.sequence).toBe(1);
    await backupDisk(await open(folder), source(randomBytes(2 * BLOCK)), disk("c"));
    await prune(await open(folder));
    await vault.reloadIndex();
    expect(vault.index.generation?.sequence).toBe(2);
    expect(await keysUnder(folder, "index-gen/")).toEqual(["index-gen/000000000002"]);
    expect(await restore(vault, points.b)).toEqual(disks.b);
  });
});

describe("interruptions", () => {
  test("a crash between the shards and the generation object: the orphan shards are ignored, the index objects still used, and the next prune removes the orphans", async () => {
    const folder = await copyOf("crash-before-gen");
    const store = new HookedStore(new LocalFolderStore(folder), {});
    store.beforeCreate = { prefix: "index-gen/", run: async () => Promise.reject(new Error("killed before the generation object")) };
    await expect(prune(await open(folder, store))).rejects.toThrow(/killed/);
    const orphans = await keysUnder(folder, "index-shards/");
    expect(orphans.length).toBeGreaterThan(0);
    expect(await keysUnder(folder, "index-gen/")).toEqual([]);
    const vault = await open(folder);
    expect(vault.index.generation).toBeUndefined();
    expect(await restore(vault, points.a)).toEqual(disks.a);
    await prune(await open(folder));
    expect(await keysUnder(folder, "index-gen/")).toEqual(["index-gen/000000000002"]);
    const left = await keysUnder(folder, "index-shards/");
    expect(left.every((key) => key.startsWith("index-shards/000000000002/"))).toBe(true);
    expect(await restore(await open(folder), points.b)).toEqual(disks.b);
  });

  test("a crash after the generation object, before the index objects it covers were deleted: they are not loaded, and the next prune deletes them", async () => {
    const folder = await copyOf("crash-after-gen");
    const saved = await Promise.all((await keysUnder(folder, "index/")).map(async (key) => ({ key, bytes: await readFile(path.join(folder, key)) })));
    await prune(await open(folder));
    for (const { key, bytes } of saved) await writeFile(path.join(folder, key), bytes); // as if the deletes never ran
    const vault = await open(folder);
    expect(vault.indexObjects).toEqual([]);
    expect(vault.index.size).toBe(0);
    expect(await restore(vault, points.a)).toEqual(disks.a);
    expect((await backupDisk(vault, source(disks.b), disk("b"))).stats.chunksNew).toBe(0);
    await prune(await open(folder));
    expect(await keysUnder(folder, "index/")).toEqual([]);
    expect(await restore(await open(folder), points.b)).toEqual(disks.b);
  });

  test("a backup that commits its index object while a prune runs (a lapsed lock) keeps it in the delta: its chunks stay findable", async () => {
    const folder = await copyOf("during-prune");
    const store = new HookedStore(new LocalFolderStore(folder), {});
    const late = randomBytes(BLOCK);
    let lateIndex: string[] = [];
    store.beforeCreate = {
      prefix: "index-gen/",
      run: async () => {
        const other = await open(folder);
        const pool = new CodecPool(other.master, { threads: 1 });
        const writer = new VaultWriter(other, pool);
        try {
          await writer.put(CHUNK_DATA, keyedId(other.master.idKey, late), late);
          await writer.finish();
        } finally {
          await pool.close();
        }
        lateIndex = writer.indexObjectsWritten;
      },
    };
    await prune(await open(folder, store));
    expect(lateIndex).toHaveLength(1);
    expect(await keysUnder(folder, "index/")).toEqual(lateIndex);
    const vault = await open(folder);
    expect(vault.indexObjects).toEqual(lateIndex);
    expect(await vault.readChunk(CHUNK_DATA, keyedId(vault.master.idKey, late))).toEqual(late);
  });
});

describe("damage and tampering: readers and writers fail naming the shard, never answer absent", () => {
  async function expectNamed(folder: string, shard: string) {
    const error = await restore(await open(folder), points.a).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(IntegrityError);
    expect((error as Error).message).toContain(shard);
    await expect(backupDisk(await open(folder), source(disks.a), disk("a"))).rejects.toThrow(shard);
  }

  test("a damaged block", async () => {
    const { folder, vault } = await compacted("damaged-block");
    const { shard } = await firstChunkShard(folder, vault, points.a);
    const file = path.join(folder, shard);
    const bytes = await readFile(file);
    for (let at = 40; at < bytes.length; at += 97) bytes[at] ^= 1; // every block, filter and the index
    await writeFile(file, bytes);
    await expectNamed(folder, shard);
  });

  test("a missing shard", async () => {
    const { folder, vault } = await compacted("missing-shard");
    const { shard } = await firstChunkShard(folder, vault, points.a);
    await rm(path.join(folder, shard));
    await expectNamed(folder, shard);
  });

  test("a shard copied over another prefix's", async () => {
    const { folder, vault } = await compacted("moved-shard");
    const { shard } = await firstChunkShard(folder, vault, points.a);
    const other = (await keysUnder(folder, "index-shards/")).find((key) => key !== shard)!;
    await writeFile(path.join(folder, shard), await readFile(path.join(folder, other)));
    await expectNamed(folder, shard);
  });

  test("a shard of an older generation put in place of the newer one's", async () => {
    const { folder, vault } = await compacted("old-generation-shard");
    const { shard } = await firstChunkShard(folder, vault, points.a);
    const oldBytes = await readFile(path.join(folder, shard));
    await prune(await open(folder)); // generation 2, same entries and prefixes
    const newer = shard.replace("/000000000001/", "/000000000002/");
    expect(await keysUnder(folder, "index-shards/")).toContain(newer);
    await writeFile(path.join(folder, newer), oldBytes);
    await expectNamed(folder, newer);
  });

  test("two blocks of a shard swapped", async () => {
    const { folder, vault } = await compacted("swapped-blocks");
    const { shard } = await firstChunkShard(folder, vault, points.a);
    const file = path.join(folder, shard);
    const bytes = await readFile(file);
    // Full blocks of 2 entries seal to the same length, and so do their filters (8 bytes at least).
    const blockLength = sealObject(vault.master.dataKey, Buffer.alloc(5 + 2 * 61), labelAssociatedData("x", "y"), vault.master.format).length;
    const filterLength = sealObject(vault.master.dataKey, Buffer.alloc(8), labelAssociatedData("x", "y"), vault.master.format).length;
    const second = blockLength + filterLength;
    expect(bytes.length).toBeGreaterThan(2 * second);
    const first = Buffer.from(bytes.subarray(0, blockLength));
    bytes.copy(bytes, 0, second, second + blockLength);
    first.copy(bytes, second);
    await writeFile(file, bytes);
    await expectNamed(folder, shard);
  });

  test("a planted generation object (not sealed with the vault's keys) is refused, naming it", async () => {
    const { folder } = await compacted("planted-gen");
    await writeFile(path.join(folder, "index-gen", "000000000009"), randomBytes(300));
    await expect(open(folder)).rejects.toThrow(/index-gen\/000000000009/);
  });

  test("a generation object copied to another sequence is refused", async () => {
    const { folder } = await compacted("copied-gen");
    await cp(path.join(folder, "index-gen", "000000000001"), path.join(folder, "index-gen", "000000000002"));
    await expect(open(folder)).rejects.toThrow(IntegrityError);
  });

  test("verify reads every shard: a clean compacted vault has no problem, a damaged shard is named", async () => {
    const { folder, vault } = await compacted("verify");
    const pool = new CodecPool(vault.master, { threads: 1 });
    try {
      const clean = await verifyVault(vault, pool, { readDataPercent: 100 });
      expect(clean.problems).toEqual([]);
      expect(clean.chunksChecked).toBeGreaterThan(30);
      const { shard } = await firstChunkShard(folder, vault, points.a);
      await rm(path.join(folder, shard));
      const damaged = await verifyVault(await Vault.open(new LocalFolderStore(folder), provider, { loadIndex: false }), pool, { readDataPercent: 0 });
      expect(damaged.problems.some((problem) => problem.includes(shard))).toBe(true);
      // A point whose data chunks lay in that shard misses them; one whose tree node lay there cannot be
      // read at all and names the shard (which ids fall in the removed shard is chance: both happen).
      expect(damaged.problems.some((problem) => /point .*(referenced chunks are not in the vault|index shard)/.test(problem))).toBe(true);
    } finally {
      await pool.close();
    }
  });

  test("a rolled-back generation (the newest deleted, the older put back): its shards are gone, so readers fail naming one", async () => {
    const { folder } = await compacted("rolled-back");
    const oldGeneration = await readFile(path.join(folder, "index-gen", "000000000001"));
    await prune(await open(folder));
    await rm(path.join(folder, "index-gen", "000000000002"));
    await writeFile(path.join(folder, "index-gen", "000000000001"), oldGeneration);
    await expect(restore(await open(folder), points.a)).rejects.toThrow(/index shard index-shards\/000000000001\/[0-9a-f]+ .*is missing/);
  });
});
