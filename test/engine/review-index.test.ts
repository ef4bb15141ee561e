/**
 * A hostile review of the sharded chunk index (issue 13; runtime/engine/index-shards.ts,
 * vault-index.ts): the guarantee is that no committed point becomes unreadable or restores wrong
 * bytes because of the index, and that a damaged index is never read as "absent" by a reader.
 * Tiny shards (blocks of 2 entries, shards of about 16) so two small disks spread over several
 * shards. Scenarios: a person with the vault's keys (or a bug) writing a generation that omits a
 * prefix, one with impossible sizes, a shard whose entries point at the wrong offsets, filters of
 * all zeros; another part at the same time: a prune compacting while a restore reads, a backup
 * deduplicating against shard entries a later prune made stale, one write batch larger than the
 * cache holds.
 */
import { randomBytes } from "node:crypto";
import { cp, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { backupDisk } from "../../runtime/engine/backup.ts";
import { CHUNK_DATA } from "../../runtime/engine/chunk-codec.ts";
import type { ChunkLocation } from "../../runtime/engine/chunk-index.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { MissingDataError } from "../../runtime/engine/commit.ts";
import { copyPoints } from "../../runtime/engine/copy.ts";
import { keyedId, labelAssociatedData, sealObject } from "../../runtime/engine/crypto.ts";
import {
  encodeShard,
  generationName,
  openGeneration,
  packEntry,
  SHARD_ENTRY_BYTES,
  shardName,
  ShardReader,
  shardTuning,
  writeGeneration,
  type IndexGeneration,
} from "../../runtime/engine/index-shards.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { VaultWriter } from "../../runtime/engine/vault-writer.ts";
import { IntegrityError, VaultBusyError } from "../../runtime/errors.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { tempFolder } from "../cli/vaults.ts";
import { BLOCK, disk, HookedStore, keysUnder, prune, restore, ShardFixture, source, useTinyShards } from "./shard-vaults.ts";

const provider = new PassphraseProvider("review index test passphrase");
/** The fixture: two points compacted (generation 1, no index objects); `copyOf` gives each scenario its own copy to damage. */
const vaults = new ShardFixture(provider, "review-index");
const tuning = { ...shardTuning };

const { disks, points, open, copyOf } = vaults;

/** Rewrites the newest generation object, sealed with the vault's own keys (a bug, or someone holding them). */
async function forgeGeneration(folder: string, change: (generation: IndexGeneration) => IndexGeneration): Promise<IndexGeneration> {
  const vault = await open(folder);
  const forged = change(structuredClone(vault.index.generation!));
  // Sealed as encodeGeneration seals, without its checks (it would refuse to write most of these).
  const shards = forged.shards.map((s) => [s.prefix, s.entries, s.size, s.indexOffset, s.indexLength]);
  const plain = Buffer.from(JSON.stringify({ format: "bulwark-index-generation", sequence: forged.sequence, prefixBits: forged.prefixBits, shards, covers: forged.covers }));
  const name = generationName(forged.sequence);
  await writeFile(path.join(folder, name), sealObject(vault.master.dataKey, plain, labelAssociatedData("index-gen", name), vault.master.format));
  return forged;
}

/** Every entry of one shard, read whole. */
async function shardEntries(vault: Vault, prefix: number): Promise<[Buffer, ChunkLocation][]> {
  const generation = vault.index.generation!;
  const reader = new ShardReader(vault.store, vault.master.dataKey, generation);
  const entries: [Buffer, ChunkLocation][] = [];
  for await (const entry of reader.entriesOf(generation.shards.find((s) => s.prefix === prefix)!)) entries.push(entry);
  return entries;
}

beforeAll(async () => {
  useTinyShards(16);
  await vaults.backUp(["a", "b"], 16);
  await prune(await open(vaults.folder));
});

afterAll(() => {
  Object.assign(shardTuning, tuning);
});

describe("a generation object that does not describe its shards faithfully", () => {
  test("a generation whose shard list omits a prefix: opening the vault refuses it, naming it, rather than answering absent for that prefix's chunks", async () => {
    const folder = await copyOf("omitted-prefix");
    const forged = await forgeGeneration(folder, (g) => ({ ...g, shards: g.shards.slice(1) }));
    expect(forged.prefixBits).toBeGreaterThan(0);
    await expect(open(folder)).rejects.toThrow(/index generation object index-gen\/000000000001 .*prefix/);
  });

  test("a generation listing one prefix twice is refused", async () => {
    const folder = await copyOf("twice-prefix");
    await forgeGeneration(folder, (g) => ({ ...g, shards: [...g.shards, g.shards[0]] }));
    await expect(open(folder)).rejects.toThrow(/index generation object index-gen\/000000000001/);
  });

  test("a generation with an impossible shard size (2^52 bytes): refused at open, never a read of that length", async () => {
    const folder = await copyOf("huge-size");
    await forgeGeneration(folder, (g) => {
      const [first, ...rest] = g.shards;
      const size = 2 ** 52;
      return { ...g, shards: [{ ...first, size, indexOffset: size - first.indexLength }, ...rest] };
    });
    await expect(open(folder)).rejects.toThrow(/index generation object index-gen\/000000000001 /);
  });

  test("a prefix no id has is listed as an empty shard (no object, no read), so every prefix is listed; its ids answer absent", async () => {
    const folder = await tempFolder("review-index-empty-prefix");
    const store = new LocalFolderStore(folder);
    const dataKey = randomBytes(32);
    // 40 ids, all with a first byte below 0x40: prefix bits 2 (about 16 a shard), prefixes 1 to 3 empty.
    const ids = Array.from({ length: 40 }, () => {
      const id = randomBytes(32);
      id[0] &= 0x3f;
      return id;
    });
    const location = { pack: "00".repeat(16), offset: 0, length: 10, rawLength: 10, type: CHUNK_DATA };
    const written = await writeGeneration(store, dataKey, 5, 1, ids.map((id) => [id, location]), []);
    expect(written.at(-1)).toBe(generationName(1));
    const reader = new ShardReader(store, dataKey, openGeneration(dataKey, generationName(1), await store.get(generationName(1))));
    expect(reader.generation.prefixBits).toBe(2);
    expect(reader.generation.shards.map((s) => [s.prefix, s.entries > 0])).toEqual([[0, true], [1, false], [2, false], [3, false]]);
    expect(written).toEqual([shardName(1, 2, 0), generationName(1)]);
    const other = randomBytes(32);
    other[0] = 0xff;
    await reader.prepare([other, ids[0]]);
    expect(reader.find(other)).toBeUndefined();
    expect(reader.find(ids[0])).toEqual(location);
  });
});

describe("shards sealed with the vault's keys but lying", () => {
  test("another vault's generation and shards (a vault made with init --like shares the keys) put in place of ours: restores fail, never give wrong bytes, and a backup deduplicating against them is not committed", async () => {
    const folder = await copyOf("foreign-generation");
    const ours = await open(folder);
    const otherFolder = path.join(await tempFolder("review-index-other-vault"), "vault");
    const other = await Vault.init(new LocalFolderStore(otherFolder), provider, {}, ours.master);
    await backupDisk(other, source(disks.a), disk("a")); // the same chunk ids as ours, in the other vault's packs
    await backupDisk(other, source(randomBytes(4 * BLOCK)), disk("d"));
    await prune(await open(otherFolder));
    for (const prefix of ["index-gen", "index-shards"]) {
      await rm(path.join(folder, prefix), { recursive: true });
      await cp(path.join(otherFolder, prefix), path.join(folder, prefix), { recursive: true });
    }
    for (const name of ["a", "b"]) await expect(restore(await open(folder), points[name])).rejects.toThrow();
    await expect(backupDisk(await open(folder), source(disks.a), disk("a"))).rejects.toThrow(MissingDataError);
    expect(await keysUnder(folder, "points/")).toEqual([points.a.id, points.b.id].map((id) => `points/${id}`).sort());
  });

  test("a shard whose entries point at each other's offsets: restores fail on the chunk's authentication, never give wrong bytes", async () => {
    const folder = await copyOf("wrong-offset");
    const vault = await open(folder);
    const generation = vault.index.generation!;
    const prefix = generation.shards[0].prefix;
    const entries = await shardEntries(vault, prefix);
    const [x, y] = entries.filter(([, l]) => l.type === CHUNK_DATA);
    [x[1], y[1]] = [{ ...y[1], rawLength: x[1].rawLength }, { ...x[1], rawLength: y[1].rawLength }];
    const packed = Buffer.alloc(entries.length * SHARD_ENTRY_BYTES);
    entries.forEach(([id, location], i) => packEntry(packed, i * SHARD_ENTRY_BYTES, id, location));
    const { bytes, info } = encodeShard(vault.master.dataKey, vault.master.format, generation.sequence, generation.prefixBits, prefix, packed);
    await writeFile(path.join(folder, shardName(generation.sequence, generation.prefixBits, prefix)), bytes);
    await forgeGeneration(folder, (g) => ({ ...g, shards: g.shards.map((s) => (s.prefix === prefix ? info : s)) }));
    let failed = 0;
    for (const name of ["a", "b"]) {
      const outcome = await restore(await open(folder), points[name]).then((bytes) => bytes, (error: unknown) => error);
      if (outcome instanceof Buffer) expect(outcome.equals(disks[name])).toBe(true);
      else {
        expect(outcome).toBeInstanceOf(IntegrityError);
        failed++;
      }
    }
    expect(failed).toBeGreaterThan(0);
  });

  test("a shard whose filters are all zeros (claiming every id absent): a restore does not trust them and reads every chunk", async () => {
    const folder = await copyOf("zero-filters");
    const vault = await open(folder);
    const { dataKey, format } = vault.master;
    const generation = vault.index.generation!;
    for (const shard of generation.shards) {
      const name = shardName(generation.sequence, generation.prefixBits, shard.prefix);
      const bytes = await readFile(path.join(folder, name));
      const sealedLength = (plainLength: number) => sealObject(dataKey, Buffer.alloc(plainLength), labelAssociatedData("x", "y"), format).length;
      // Blocks of 2 entries: each block, then its filter (8 bytes for 1 or 2 ids), then the block index.
      let at = 0;
      for (let n = 0, left = shard.entries; left > 0; n++, left -= 2) {
        at += sealedLength(5 + Math.min(2, left) * SHARD_ENTRY_BYTES);
        const zero = sealObject(dataKey, Buffer.alloc(8), labelAssociatedData("index-shard", `${name}/filter/${n}`), format);
        zero.copy(bytes, at);
        at += zero.length;
      }
      expect(at).toBe(shard.indexOffset);
      await writeFile(path.join(folder, name), bytes);
    }
    // A writer asking first sees "absent" (it would store again: space, never data); a reader after it in the same process still finds every chunk.
    const fresh = await open(folder);
    const ids = Array.from({ length: 16 }, (_, i) => keyedId(fresh.master.idKey, disks.a.subarray(i * BLOCK, (i + 1) * BLOCK)));
    await fresh.index.prepare(ids);
    expect(ids.filter((id) => fresh.index.has(id))).toEqual([]);
    expect(await restore(fresh, points.a)).toEqual(disks.a);
    expect(await restore(await open(folder), points.b)).toEqual(disks.b);
  });
});

describe("another part at the same time", () => {
  test("a prune compacts (generation 2 replaces 1's shards) just before a restore reads its first shard: the restore says the vault was pruned meanwhile (not damaged), and run again gives the right bytes", async () => {
    const folder = await copyOf("restore-during-prune");
    await backupDisk(await open(folder), source(randomBytes(2 * BLOCK)), disk("c")); // a delta, so the prune has work
    const store = new HookedStore(new LocalFolderStore(folder), {});
    const vault = await open(folder, store);
    store.beforeRange = { prefix: "index-shards/", run: async () => void (await prune(await open(folder))) };
    const error = await restore(vault, points.a).then(() => undefined, (e: unknown) => e);
    // Not "damaged, put the newer generation back": what happened, and that running it again works.
    expect(error).toBeInstanceOf(VaultBusyError);
    expect((error as Error).message).toMatch(/pruned while this ran: its index was compacted into index-gen\/000000000002, replacing index-gen\/000000000001 .*run it again/);
    expect(await restore(await open(folder), points.a)).toEqual(disks.a);
  });

  test("a backup whose vault was opened before a prune compacted again (its generation's shards now deleted): it says the vault was pruned meanwhile, and run again it commits a point that restores", async () => {
    const folder = await copyOf("backup-after-prune");
    const opened = await open(folder); // generation 1 and no delta: nothing it loaded vanishes
    await prune(await open(folder)); // generation 2 replaces 1
    await expect(backupDisk(opened, source(disks.a), disk("a"))).rejects.toThrow(/pruned while this ran: its index was compacted into index-gen\/000000000002/);
    const again = await backupDisk(await open(folder), source(disks.a), disk("a"));
    expect(again.stats.chunksNew).toBe(0);
    expect(await restore(await open(folder), again)).toEqual(disks.a);
  });

  test("a copy out of a vault that a prune compacts while the copy reads its shards: the copy says the vault was pruned meanwhile, and run again every point restores in the copy", async () => {
    const folder = await copyOf("copy-during-prune");
    await backupDisk(await open(folder), source(randomBytes(2 * BLOCK)), disk("c"));
    const store = new HookedStore(new LocalFolderStore(folder), {});
    const from = await open(folder, store);
    const destination = path.join(await tempFolder("review-index-copy-to"), "vault");
    const to = await Vault.init(new LocalFolderStore(destination), provider, {}, from.master);
    store.beforeRange = { prefix: "index-shards/", run: async () => void (await prune(await open(folder))) };
    await expect(copyPoints(from, to, { threads: 1 })).rejects.toThrow(/pruned while this ran: its index was compacted into index-gen\/000000000002/);
    await copyPoints(await open(folder), await open(destination), { threads: 1 });
    for (const name of ["a", "b"]) expect(await restore(await open(destination), points[name])).toEqual(disks[name]);
  });

  test("a backup deduplicating against shard entries whose packs a later prune deleted: the commit proof refuses the point, and nothing committed is unreadable", async () => {
    const folder = await copyOf("stale-dedup");
    const backupSide = await open(folder);
    // The backup side has b's index blocks in its cache, as a job that began before the prune would.
    const ids = Array.from({ length: 16 }, (_, i) => keyedId(backupSide.master.idKey, disks.b.subarray(i * BLOCK, (i + 1) * BLOCK)));
    ids.push(...points.b.content!.tree.map((hex) => Buffer.from(hex, "hex")));
    await backupSide.index.forEachLocation(ids, (_, location) => expect(location).toBeDefined());
    // Point b is forgotten and a prune deletes its packs.
    await rm(path.join(folder, "points", points.b.id));
    await prune(await open(folder));
    const outcome = await backupDisk(backupSide, source(disks.b), disk("b")).then((p) => p, (error: unknown) => error);
    expect(outcome).toBeInstanceOf(MissingDataError);
    expect(await keysUnder(folder, "points/")).toEqual([`points/${points.a.id}`]);
    expect(await restore(await open(folder), points.a)).toEqual(disks.a);
  });

  test("one write batch of more ids than the index cache holds at once: every known id is found, none stored again, no lookup throws", async () => {
    shardTuning.shardEntries = 512;
    const folder = await tempFolder("review-index-big-batch");
    const vault = await Vault.init(new LocalFolderStore(folder), provider);
    const chunks = Array.from({ length: 1500 }, () => randomBytes(64));
    const buffer = Buffer.concat(chunks);
    const candidates = () => chunks.map((chunk, i) => ({ id: keyedId(vault.master.idKey, chunk), offset: i * 64, length: 64 }));
    let pool = new CodecPool(vault.master, { threads: 1 });
    const writer = new VaultWriter(vault, pool);
    await writer.putBatch(CHUNK_DATA, Buffer.from(buffer), candidates());
    await writer.finish();
    // Compacted straight into a generation (no point names these chunks, so a prune would drop them).
    await writeGeneration(vault.store, vault.master.dataKey, vault.master.format, 1, [...vault.index.entries()], [...writer.indexObjectsWritten]);
    for (const name of writer.indexObjectsWritten) await vault.store.delete(name);
    await pool.close();
    // A cache that holds what a slice of 256 ids fetches (4 block indexes of ~15 KB, 256 blocks and
    // filters of ~130 bytes) but not what all 1,500 do (about 255 KB): the production ratio, scaled.
    shardTuning.cacheBytes = 120_000;
    try {
      const reopened = await open(folder);
      pool = new CodecPool(reopened.master, { threads: 1 });
      const again = new VaultWriter(reopened, pool);
      expect(await again.putBatch(CHUNK_DATA, Buffer.from(buffer), candidates())).toBe(0);
      await again.finish();
      expect(again.indexObjectsWritten).toEqual([]);
    } finally {
      Object.assign(shardTuning, { cacheBytes: tuning.cacheBytes, shardEntries: 16 });
      await pool.close();
    }
  });
});
