/**
 * Prune and verify in bounded memory (runtime/engine/prune.ts, referenced-filter.ts, verify.ts;
 * issue 13). Prune holds the referenced chunks as a Bloom filter and walks the sharded index one
 * shard at a time; verify checks references exactly, in passes by id prefix. Shards here are tiny
 * (blocks of 2 entries, shards of about 8) so a few small disks spread over many shards. The
 * fixture: four disks backed up, the fourth twice (half its blocks rewritten), compacted into a
 * generation; then two disks' points and the fourth's first point forgotten, so whole packs are
 * garbage and one pack is half live (repacked).
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { backupDisk } from "../../runtime/engine/backup.ts";
import { forgetPoint } from "../../runtime/engine/chain.ts";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import type { ChunkLocation } from "../../runtime/engine/chunk-index.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { ID_BYTES } from "../../runtime/engine/crypto.ts";
import { PREPARE_MAX, ShardReader, shardTuning, writeGeneration } from "../../runtime/engine/index-shards.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { ReferencedFilter, referencedFilterTuning } from "../../runtime/engine/referenced-filter.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { verifyTuning, verifyVault } from "../../runtime/engine/verify.ts";
import { vaultStats } from "../../runtime/cli/stats-command.ts";
import { VaultBusyError } from "../../runtime/errors.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { BLOCK, disk, HookedStore, keysUnder, prune, restore, ShardFixture, source, useTinyShards } from "./shard-vaults.ts";

const provider = new PassphraseProvider("bounded prune test passphrase");
const vaults = new ShardFixture(provider, "prune-bounded");
const { open, copyOf } = vaults;
const BLOCKS = 8;
const savedShards = { ...shardTuning };
const savedFilter = { ...referencedFilterTuning };
const savedVerify = { ...verifyTuning };

/** The kept points and their bytes; the ids only forgotten points referenced; the ids kept points reference. */
const kept: { point: PointManifest; bytes: Buffer }[] = [];
let garbageIds: Buffer[] = [];
let liveIds: Buffer[] = [];
/** The bytes of a forgotten disk (d1): a late backup of them dedups against garbage. */
let forgottenBytes: Buffer;

/** As `bulwark verify` opens the vault: without loading its index. */
async function verify(folder: string, readDataPercent: number) {
  const vault = await Vault.open(new LocalFolderStore(folder), provider, { loadIndex: false });
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    return await verifyVault(vault, pool, { readDataPercent });
  } finally {
    await pool.close();
  }
}

/** Every chunk id a point references: its tree nodes and their entries. */
async function idsOf(vault: Vault, point: PointManifest): Promise<Buffer[]> {
  const ids: Buffer[] = [];
  for (const nodeHex of point.content!.tree) {
    ids.push(Buffer.from(nodeHex, "hex"));
    const node = await vault.readChunk(CHUNK_TREE, Buffer.from(nodeHex, "hex"));
    for (let at = 0; at < node.length; at += ID_BYTES) ids.push(Buffer.from(node.subarray(at, at + ID_BYTES)));
  }
  return ids;
}

/** How many of the ids a freshly opened vault's index names. */
async function indexedCount(folder: string, ids: Buffer[]): Promise<number> {
  const vault = await open(folder);
  let found = 0;
  for (let at = 0; at < ids.length; at += PREPARE_MAX) {
    const slice = ids.slice(at, at + PREPARE_MAX);
    await vault.index.prepare(slice);
    found += slice.filter((id) => vault.index.has(id)).length;
  }
  return found;
}

async function expectKeptPointsRestore(folder: string): Promise<void> {
  const vault = await open(folder);
  for (const { point, bytes } of kept) expect((await restore(vault, point)).equals(bytes)).toBe(true);
}

beforeAll(async () => {
  useTinyShards(8);
  await vaults.backUp(["d0", "d1", "d2", "d3"], BLOCKS);
  const bytes = [0, 1, 2, 3].map((n) => vaults.disks[`d${n}`]);
  const points = [0, 1, 2, 3].map((n) => vaults.points[`d${n}`]);
  const vault = await open(vaults.folder);
  const rewritten = Buffer.from(bytes[3]);
  for (let block = 0; block < BLOCKS; block += 2) randomBytes(BLOCK).copy(rewritten, block * BLOCK);
  const second = await backupDisk(vault, source(rewritten), disk("d3"), { base: points[3], changed: [[0, rewritten.length]] });
  await prune(await open(vaults.folder));
  const compacted = await open(vaults.folder);
  kept.push({ point: points[0], bytes: bytes[0] }, { point: second, bytes: rewritten });
  const live = new Set<string>();
  for (const { point } of kept) for (const id of await idsOf(compacted, point)) live.add(id.toString("hex"));
  const garbage = new Set<string>();
  for (const point of [points[1], points[2], points[3]]) for (const id of await idsOf(compacted, point)) if (!live.has(id.toString("hex"))) garbage.add(id.toString("hex"));
  forgottenBytes = bytes[1];
  liveIds = [...live].map((hex) => Buffer.from(hex, "hex"));
  garbageIds = [...garbage].map((hex) => Buffer.from(hex, "hex"));
  for (const point of [points[1], points[2], points[3]]) await forgetPoint(compacted, point.id, "test");
});

afterEach(() => {
  Object.assign(referencedFilterTuning, savedFilter);
  Object.assign(verifyTuning, savedVerify);
});

afterAll(() => {
  Object.assign(shardTuning, savedShards);
});

test("the referenced filter: every id added is held (no false negative), and of 20,000 others about 1% look held at 10 bits an id", () => {
  const filter = new ReferencedFilter(20_000);
  const added = Array.from({ length: 20_000 }, () => randomBytes(ID_BYTES));
  for (const id of added) filter.add(id);
  expect(added.every((id) => filter.mayHold(id))).toBe(true);
  const others = Array.from({ length: 20_000 }, () => randomBytes(ID_BYTES));
  const falsePositives = others.filter((id) => filter.mayHold(id)).length;
  expect(falsePositives / others.length).toBeLessThan(0.02);
  expect(filter.bytes).toBe(25_000);
});

describe("prune over many shards", () => {
  test("with the normal filter: every chunk a kept point references stays (both restore byte-identical), the forgotten points' chunks go (at most one kept by a false positive), the half-live pack is repacked", async () => {
    const folder = await copyOf("normal");
    expect((await open(folder)).index.generation!.shards.length).toBeGreaterThan(4);
    const report = await prune(await open(folder));
    expect(report.packsDeleted).toBeGreaterThanOrEqual(2);
    expect(report.packsRepacked).toBeGreaterThanOrEqual(1);
    expect(await indexedCount(folder, liveIds)).toBe(liveIds.length);
    expect(await indexedCount(folder, garbageIds)).toBeLessThanOrEqual(1);
    await expectKeptPointsRestore(folder);
    expect((await verify(folder, 100)).problems).toEqual([]);
  });

  test("with a tiny filter (64 bits for the whole vault: most ids look referenced) nothing live is deleted; the garbage it kept goes with the next normal prune", async () => {
    const folder = await copyOf("tiny");
    referencedFilterTuning.bitsPerEntry = 0.01;
    await prune(await open(folder));
    expect(await indexedCount(folder, liveIds)).toBe(liveIds.length);
    expect(await indexedCount(folder, garbageIds)).toBeGreaterThan(0); // kept, not deleted: most of it, by chance
    await expectKeptPointsRestore(folder);
    referencedFilterTuning.bitsPerEntry = savedFilter.bitsPerEntry;
    await prune(await open(folder));
    expect(await indexedCount(folder, liveIds)).toBe(liveIds.length);
    expect(await indexedCount(folder, garbageIds)).toBeLessThanOrEqual(1);
    await expectKeptPointsRestore(folder);
  });

  test("a backup that commits while the prune writes its shards (the prune's lock lapsed) keeps its data: the prune stops before its generation object, and the next prune keeps the new point", async () => {
    const folder = await copyOf("lapsed");
    const store = new HookedStore(new LocalFolderStore(folder), {});
    let late: PointManifest | undefined;
    const vault = await open(folder, store);
    store.beforeCreate = {
      prefix: "index-shards/",
      run: async () => {
        // The prune's lock object is gone (it lapsed); a backup runs and commits meanwhile,
        // deduplicating against chunks the prune has judged garbage (a forgotten disk's).
        for (const key of await keysUnder(folder, "locks/")) await new LocalFolderStore(folder).delete(key);
        late = await backupDisk(await open(folder), source(forgottenBytes), disk("late"));
      },
    };
    await expect(prune(vault)).rejects.toThrow(VaultBusyError);
    expect(late).toBeDefined();
    expect(await keysUnder(folder, "index-gen/")).toEqual(["index-gen/000000000001"]);
    expect((await restore(await open(folder), late!)).equals(forgottenBytes)).toBe(true);
    await prune(await open(folder));
    expect((await restore(await open(folder), late!)).equals(forgottenBytes)).toBe(true);
    await expectKeptPointsRestore(folder);
  });

  test("a prune killed between its shards and its generation object leaves the old generation in use: every point restores, verify finds nothing wrong, the next prune removes the orphan shards", async () => {
    const folder = await copyOf("killed");
    const store = new HookedStore(new LocalFolderStore(folder), {});
    store.beforeCreate = { prefix: "index-gen/", run: async () => Promise.reject(new Error("killed")) };
    await expect(prune(await open(folder, store))).rejects.toThrow("killed");
    expect(await keysUnder(folder, "index-gen/")).toEqual(["index-gen/000000000001"]);
    expect((await keysUnder(folder, "index-shards/")).some((key) => key.startsWith("index-shards/000000000002/"))).toBe(true);
    await expectKeptPointsRestore(folder);
    expect((await verify(folder, 0)).problems).toEqual([]);
    await prune(await open(folder));
    const shards = await keysUnder(folder, "index-shards/");
    expect(shards.every((key) => key.startsWith("index-shards/000000000003/"))).toBe(true);
    await expectKeptPointsRestore(folder);
  });

  test("a point that cannot be read stops the prune before it deletes or writes anything", async () => {
    const folder = await copyOf("unreadable");
    await writeFile(path.join(folder, "points", kept[0].point.id), randomBytes(200));
    const before = { packs: await keysUnder(folder, "data/"), shards: await keysUnder(folder, "index-shards/") };
    await expect(prune(await open(folder))).rejects.toThrow();
    expect(await keysUnder(folder, "data/")).toEqual(before.packs);
    expect(await keysUnder(folder, "index-shards/")).toEqual(before.shards);
  });
});

describe("verify, exact in passes by prefix", () => {
  test("one referenced chunk missing from a generation is counted exactly, whether the check runs in one pass or in passes of 4 ids", async () => {
    const folder = await copyOf("verify");
    const vault = await open(folder);
    const dropped = (await idsOf(vault, kept[0].point))[3];
    const entries: [Uint8Array, ChunkLocation][] = [];
    for await (const entry of new ShardReader(vault.store, vault.master.dataKey, vault.index.generation!).entries()) if (!entry[0].equals(dropped)) entries.push(entry);
    await writeGeneration(vault.store, vault.master.dataKey, vault.master.format, 2, entries, []);
    for (const passEntries of [1 << 22, 4]) {
      verifyTuning.passEntries = passEntries;
      expect((await verify(folder, 0)).problems).toEqual([`point ${kept[0].point.id}: 1 referenced chunks are not in the vault`]);
    }
  });

  test("stats counts each distinct chunk once, shard by shard", async () => {
    const folder = await copyOf("stats");
    const vault = await open(folder);
    const stats = await vaultStats(vault, () => {});
    expect(stats.chunks.count).toBe(vault.index.generation!.shards.reduce((sum, shard) => sum + shard.entries, 0));
  });
});
