/**
 * The scale case (issue 13): what one small job costs in a big vault. It synthesizes a vault's
 * METADATA at 1, 10 and 100 million chunks and 100,000 points in a local-folder vault: index
 * objects and point manifests sealed exactly as the vault seals them (written without the store's
 * fsync, to keep synthesis fast), plus the real packs of one small disk point (8 MiB). Then, each
 * in a child process of its own, it measures an incremental backup of that disk (mostly known
 * chunks, 4 blocks changed) and a restore of its point: peak RSS of the process, wall time of the
 * job inside it (open, find the base or the point, back up or restore, commit), and the bytes and
 * requests read from the store (a counting wrapper around it).
 *
 * Three designs: `before` finds the source's latest point by reading every manifest and a point by
 * listing every point id (what main did before the catalog); `catalog` through the per-source
 * catalog (runtime/engine/catalog.ts) and a whole id read directly. Both load the whole chunk index
 * at open (index objects, vault.ts): a size whose index cannot fit in this machine's memory is not
 * run, its row says so, with the estimate. `sharded` finds points as `catalog` does, over the same
 * points, with the index compacted as prune compacts it (index-shards.ts): the shards and the
 * generation object are synthesized directly (the real point's entries merged in), the index
 * objects set aside, so the job reads only the index blocks it needs. On it, two whole-vault jobs
 * as well: verify (structure) and prune (every synthetic chunk unreferenced, so every synthetic
 * pack dead), both walking every shard in bounded memory.
 */
import { createHash, randomFillSync } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { backupDisk, type PointDescription } from "../runtime/engine/backup.ts";
import type { BlockSource } from "../runtime/engine/backup-blocks.ts";
import { catalogEntryName, completeCatalog, latestPointOfSource, addToCatalog } from "../runtime/engine/catalog.ts";
import { CHUNK_DATA } from "../runtime/engine/chunk-codec.ts";
import { CodecPool } from "../runtime/engine/codec-pool.ts";
import { randomHex } from "../runtime/engine/crypto.ts";
import { decodeIndex, INDEX_LAYOUT, sealIndexPlaintext } from "../runtime/engine/index-file.ts";
import { encodeGeneration, encodeShard, generationName, packEntry, prefixBitsFor, prefixOf, SHARD_ENTRY_BYTES, shardName } from "../runtime/engine/index-shards.ts";
import type { PointManifest } from "../runtime/engine/point.ts";
import { restoreContent } from "../runtime/engine/restore.ts";
import { VaultLock } from "../runtime/engine/locks.ts";
import { pruneVault } from "../runtime/engine/prune.ts";
import { mapLimit, Vault } from "../runtime/engine/vault.ts";
import { verifyVault } from "../runtime/engine/verify.ts";
import { PassphraseProvider } from "../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../runtime/store/local.ts";
import { ReadCountingStore, type StoreReads } from "../runtime/store/read-counting.ts";
import type { ObjectStore } from "../runtime/store/store.ts";
import { formatBytes, Keystream } from "./image.ts";
import { measure } from "./measure.ts";

const MiB = 1024 * 1024;
const PASSPHRASE = "bench passphrase, long enough";
export const SCALE_CHUNKS = [1_000_000, 10_000_000, 100_000_000] as const;
const POINTS = 100_000;
const SOURCES = 1_000;
const SMALL_DISK = 8 * MiB;
const SMALL_DISK_ID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/bench/providers/Microsoft.Compute/disks/small";
/** Blocks version 2 of the small disk rewrites (of 128). */
const CHANGED_BLOCKS = [10, 50, 90, 120];
const ENTRIES_PER_OBJECT = 1 << 20;
const ENTRIES_PER_PACK = 2048;
/** ChunkIndex: 32-byte id, pack number, offset, length, raw length, type per slot. */
const INDEX_SLOT_BYTES = 32 + 4 + 8 + 4 + 4 + 1;
/** Vault.loadIndex reads this many index objects at once, each held sealed and opened. */
const INDEX_LOADS_AT_ONCE = 8;
const SCRYPT_BYTES = 128 * MiB;

type Design = "before" | "catalog" | "sharded";
type Operation = "backup" | "restore" | "verify" | "prune";

interface ProbeSpec {
  vault: string;
  design: Design;
  operation: Operation;
  pointId: string;
}

interface ProbeResult {
  jobSeconds: number;
  openSeconds: number;
  reads: StoreReads;
  restoredSha256?: string;
  /** Verify's problems (the synthetic packs are not stored, so each is one), prune's packs deleted. */
  outcome?: string;
}

export interface ScaleRow {
  chunks: number;
  design: Design;
  operation: Operation;
  ran: boolean;
  why?: string;
  peakRssBytes?: number;
  processSeconds?: number;
  jobSeconds?: number;
  reads?: StoreReads;
  restoreIdentical?: boolean;
  outcome?: string;
}

export interface ScaleSettings {
  maxChunks: number;
  /** The designs to run (default: all). */
  designs?: Design[];
  workRoot: string;
  outPath: string;
  useGnuTime: boolean;
  log: (line: string) => void;
}

/** A local folder store whose create skips fsync: synthesis writes ~200,000 objects. */
class UnsyncedFolderStore extends LocalFolderStore {
  override async create(key: string, data: Uint8Array): Promise<void> {
    const path = join(this.location, key);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, data, { flag: "wx" });
  }
}

function smallDisk(version: 1 | 2): Buffer {
  const disk = new Keystream("scale", "small-disk").fill(Buffer.alloc(SMALL_DISK), 0);
  if (version === 2) for (const block of CHANGED_BLOCKS) disk.fill(version, block * 64 * 1024, block * 64 * 1024 + 4096);
  return disk;
}

function bufferSource(disk: Buffer): BlockSource {
  // A copy per read: the writer hands buffers over to the codec threads.
  return { size: disk.length, read: async (offset, length) => Buffer.from(disk.subarray(offset, offset + length)) };
}

const SMALL_DESCRIPTION: PointDescription = { kind: "disk", source: { type: "azure-managed-disk", path: SMALL_DISK_ID } };

/**
 * The in-memory index's peak for `chunks` (the table at its last doubling, old and new, plus the
 * index objects being loaded) and the KDF: what opening the vault costs before any work.
 */
export function inMemoryIndexPeakBytes(chunks: number): number {
  let capacity = 1 << 14;
  while (chunks * 10 > capacity * 7) capacity *= 2;
  const objectBytes = INDEX_LAYOUT.magic.length + ENTRIES_PER_OBJECT * INDEX_LAYOUT.entryBytes;
  return 1.5 * capacity * INDEX_SLOT_BYTES + 2 * INDEX_LOADS_AT_ONCE * objectBytes + SCRYPT_BYTES;
}

// ---- synthesis ----

interface Synthesized {
  points: number;
  pointId: string;
  /** Chunks of the real small disk point. */
  realChunks: number;
  /** The synthetic index objects, oldest first, and the entries in each. */
  indexObjects: { name: string; entries: number }[];
}

/**
 * One vault serves every size: its points and the small disk's packs are made once, and index
 * objects are added (or removed) until it holds `chunks` chunks. Progress is saved after every
 * object, so an interrupted synthesis goes on where it stopped.
 */
async function synthesize(dir: string, chunks: number, log: (line: string) => void): Promise<Synthesized> {
  const done = join(dir, "synthesized.json");
  const provider = new PassphraseProvider(PASSPHRASE);
  let state = await readFile(done, "utf8").then((text) => JSON.parse(text) as Synthesized, () => undefined);
  const started = performance.now();
  if (state?.points !== POINTS) {
    await rm(dir, { recursive: true, force: true });
    const real = await Vault.init(new LocalFolderStore(join(dir, "vault")), provider);
    const point = await backupDisk(real, bufferSource(smallDisk(1)), SMALL_DESCRIPTION);
    await synthesizePoints(await Vault.open(new UnsyncedFolderStore(join(dir, "vault")), provider, { loadIndex: false }), point);
    state = { points: POINTS, pointId: point.id, realChunks: point.stats.chunksNew, indexObjects: [] };
    await writeFile(done, JSON.stringify(state));
    log(`${POINTS} points synthesized in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  }
  const vault = await Vault.open(new UnsyncedFolderStore(join(dir, "vault")), provider, { loadIndex: false });
  const held = () => state!.realChunks + state!.indexObjects.reduce((sum, object) => sum + object.entries, 0);
  while (state.indexObjects.length > 0 && held() > chunks) {
    await vault.store.delete(state.indexObjects.at(-1)!.name);
    state.indexObjects.pop();
    await writeFile(done, JSON.stringify(state));
  }
  while (held() < chunks) {
    const entries = Math.min(ENTRIES_PER_OBJECT, chunks - held());
    state.indexObjects.push({ name: await synthesizeIndexObject(vault, entries), entries });
    await writeFile(done, JSON.stringify(state));
  }
  log(`vault of ${label(chunks)} chunks and ${POINTS} points ready in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return state;
}

/** A sealed index object of random ids in fake packs, ENTRIES_PER_PACK to a pack; returns its name. */
async function synthesizeIndexObject(vault: Vault, count: number): Promise<string> {
  const { magic, groupBytes, entryBytes } = INDEX_LAYOUT;
  const groups = Math.ceil(count / ENTRIES_PER_PACK);
  const plain = randomFillSync(Buffer.allocUnsafe(magic.length + groups * groupBytes + count * entryBytes));
  magic.copy(plain, 0);
  let at = magic.length;
  for (let g = 0, left = count; g < groups; g++) {
    const inPack = Math.min(ENTRIES_PER_PACK, left);
    left -= inPack;
    plain.writeUInt32LE(inPack, at + 16); // the 16 random bytes before it are the pack's id
    at += groupBytes;
    for (let i = 0; i < inPack; i++, at += entryBytes) {
      plain[at] = CHUNK_DATA;
      plain.writeUInt32LE(i * 40_000, at + 33);
      plain.writeUInt32LE(40_000, at + 37);
      plain.writeUInt32LE(64 * 1024, at + 41);
    }
  }
  const name = `index/${randomHex(16)}`;
  await vault.store.create(name, sealIndexPlaintext(vault.master.dataKey, name, plain, vault.master.format));
  return name;
}

/** POINTS - 1 older points of SOURCES other disks, each with its catalog entry, like the real one's. */
async function synthesizePoints(vault: Vault, real: PointManifest): Promise<void> {
  const newest = Date.parse(real.time);
  const others = Array.from({ length: POINTS - 1 }, (_, n) => n);
  await mapLimit(others, 16, async (n) => {
    const point: PointManifest = {
      ...real,
      id: randomHex(16),
      time: new Date(newest - (n + 1) * 60_000).toISOString(),
      source: { ...real.source, path: SMALL_DISK_ID.replace(/small$/, `disk-${n % SOURCES}`) },
      chain: undefined,
    };
    await addToCatalog(vault, point);
    await vault.writePoint(point);
  });
  await completeCatalog(vault, []);
}

/**
 * The sharded design's vault: the index objects set aside (index/ moved to index.aside/), and one
 * generation of shards holding `chunks` entries, the real point's among them. Returns a function
 * that puts the vault back as it was.
 */
async function synthesizeShards(dir: string, state: Synthesized, chunks: number, log: (line: string) => void): Promise<() => Promise<void>> {
  const started = performance.now();
  const root = join(dir, "vault");
  const vault = await Vault.open(new UnsyncedFolderStore(root), new PassphraseProvider(PASSPHRASE), { loadIndex: false });
  const synthetic = new Set(state.indexObjects.map((o) => o.name));
  const real: Buffer[] = [];
  for await (const info of vault.store.list("index/")) {
    if (synthetic.has(info.key)) continue;
    for (const pack of decodeIndex(vault.master.dataKey, info.key, await vault.store.get(info.key))) {
      for (const entry of pack.entries) {
        const record = Buffer.allocUnsafe(SHARD_ENTRY_BYTES);
        packEntry(record, 0, entry.id, { pack: pack.packId, offset: entry.offset, length: entry.length, rawLength: entry.rawLength, type: entry.type });
        real.push(record);
      }
    }
  }
  await rm(join(root, "index-gen"), { recursive: true, force: true });
  await rm(join(root, "index-shards"), { recursive: true, force: true });
  await rename(join(root, "index"), join(root, "index.aside"));
  await mkdir(join(root, "index"));
  const restoreVault = async () => {
    await rm(join(root, "index-gen"), { recursive: true, force: true });
    await rm(join(root, "index-shards"), { recursive: true, force: true });
    await rm(join(root, "index"), { recursive: true, force: true });
    await rename(join(root, "index.aside"), join(root, "index"));
  };
  const sequence = 1;
  const prefixBits = prefixBitsFor(chunks);
  const shardCount = 2 ** prefixBits;
  const realByPrefix = new Map<number, Buffer[]>();
  for (const record of real) {
    const prefix = prefixOf(record, prefixBits);
    realByPrefix.set(prefix, [...(realByPrefix.get(prefix) ?? []), record]);
  }
  const syntheticCount = chunks - real.length;
  const packCount = Math.ceil(syntheticCount / ENTRIES_PER_PACK);
  const shards = [];
  for (let prefix = 0; prefix < shardCount; prefix++) {
    const inShard = Math.floor(syntheticCount / shardCount) + (prefix < syntheticCount % shardCount ? 1 : 0);
    const packed = syntheticShardEntries(prefix, prefixBits, inShard, realByPrefix.get(prefix) ?? [], packCount);
    const { bytes, info } = encodeShard(vault.master.dataKey, vault.master.format, sequence, prefixBits, prefix, packed);
    await vault.store.create(shardName(sequence, prefixBits, prefix), bytes);
    shards.push(info);
  }
  await vault.store.create(generationName(sequence), encodeGeneration(vault.master.dataKey, vault.master.format, { sequence, prefixBits, shards, covers: [] }));
  log(`${shardCount} shards of ${label(chunks)} chunks synthesized in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return restoreVault;
}

/**
 * `count` random entries of one prefix, sorted, plus the real ones of that prefix: ids drawn as
 * sorted 32-bit heads below the prefix (a typed-array sort, fast at 100 million), the rest random;
 * each in one of `packCount` synthetic packs.
 */
function syntheticShardEntries(prefix: number, prefixBits: number, count: number, real: Buffer[], packCount: number): Buffer {
  const heads = randomFillSync(new Uint32Array(count));
  for (let i = 0; i < count; i++) heads[i] = prefixBits === 0 ? heads[i] : heads[i] >>> prefixBits;
  heads.sort();
  const packed = randomFillSync(Buffer.allocUnsafe(count * SHARD_ENTRY_BYTES));
  const top = prefixBits === 0 ? 0 : (prefix * 2 ** (32 - prefixBits)) >>> 0;
  for (let i = 0; i < count; i++) {
    if (i > 0 && heads[i] <= heads[i - 1]) heads[i] = heads[i - 1] + 1; // strictly increasing ids
    const at = i * SHARD_ENTRY_BYTES;
    packed.writeUInt32BE((top + heads[i]) >>> 0, at);
    // ENTRIES_PER_PACK entries a pack, a pack's chunks spread over every shard (as ids are uniform).
    packed.fill(0, at + 32, at + 48);
    packed.writeUInt32BE((prefix * count + i) % packCount, at + 44);
    packed.writeUInt32LE((i % ENTRIES_PER_PACK) * 40_000, at + 48);
    packed.writeUInt32LE(40_000, at + 52);
    packed.writeUInt32LE(64 * 1024, at + 56);
    packed[at + 60] = CHUNK_DATA;
  }
  if (real.length === 0) return packed;
  const records = [...real];
  for (let i = 0; i < count; i++) records.push(packed.subarray(i * SHARD_ENTRY_BYTES, (i + 1) * SHARD_ENTRY_BYTES));
  records.sort((a, b) => Buffer.compare(a.subarray(0, 32), b.subarray(0, 32)));
  return Buffer.concat(records);
}

// ---- the probe (a child process) ----

async function probe(spec: ProbeSpec): Promise<ProbeResult> {
  const folder = new LocalFolderStore(spec.vault);
  const store = new ReadCountingStore(folder);
  const before = spec.operation === "backup" ? await writtenKeys(folder) : new Set<string>();
  const started = performance.now();
  const vault = await Vault.open(store, new PassphraseProvider(PASSPHRASE));
  const openSeconds = (performance.now() - started) / 1000;
  if (spec.operation === "backup") {
    const base = spec.design === "before" ? await latestByReadingAll(vault) : await latestPointOfSource(vault, SMALL_DESCRIPTION);
    if (!base) throw new Error("the small disk has no point in the synthesized vault");
    const point = await backupDisk(vault, bufferSource(smallDisk(2)), SMALL_DESCRIPTION, { base, changed: [[0, SMALL_DISK]] });
    const jobSeconds = (performance.now() - started) / 1000;
    const reads = { ...store.reads };
    await removeProbePoint(folder, vault, point, before);
    return { jobSeconds, openSeconds, reads };
  }
  if (spec.operation === "verify" || spec.operation === "prune") return { ...(await wholeVaultJob(vault, spec.operation)), openSeconds, reads: { ...store.reads } };
  const point = spec.design === "before" ? await readByListing(vault, spec.pointId) : await vault.resolvePoint(spec.pointId);
  const restored = Buffer.alloc(point.size);
  const pool = new CodecPool(vault.master, { zstdLevel: vault.config.zstdLevel });
  try {
    await restoreContent(vault, pool, point, { needsZeros: false, write: async (offset, data) => void data.copy(restored, offset) });
  } finally {
    await pool.close();
  }
  return { jobSeconds: (performance.now() - started) / 1000, openSeconds, reads: { ...store.reads }, restoredSha256: sha256(restored) };
}

/**
 * Verify of the whole vault (structure only: the synthetic packs are not stored) or a prune. In the
 * synthesized vault nothing references the synthetic chunks, so prune walks every shard, finds
 * every synthetic pack dead and writes a generation of the real point's chunks alone (the caller
 * puts the synthesized index back afterwards).
 */
async function wholeVaultJob(vault: Vault, operation: "verify" | "prune"): Promise<{ jobSeconds: number; outcome: string }> {
  const started = performance.now();
  const pool = new CodecPool(vault.master, { zstdLevel: vault.config.zstdLevel });
  try {
    if (operation === "verify") {
      const report = await verifyVault(vault, pool, { readDataPercent: 0 });
      return { jobSeconds: (performance.now() - started) / 1000, outcome: `${report.problems.length} problems` };
    }
    const lock = await VaultLock.acquire(vault.store, "exclusive", "prune");
    try {
      const report = await pruneVault(vault, pool, { lock });
      return { jobSeconds: (performance.now() - started) / 1000, outcome: `${report.packsDeleted} packs dropped, ${report.packsRepacked} repacked` };
    } finally {
      await lock.release();
    }
  } finally {
    await pool.close();
  }
}

/** What latestPointOf did before the catalog: every manifest read. */
async function latestByReadingAll(vault: Vault): Promise<PointManifest | undefined> {
  return (await vault.listPoints()).filter((p) => p.kind === "disk" && p.source.path.toLowerCase() === SMALL_DISK_ID.toLowerCase()).at(-1);
}

/** What resolvePoint did before for a whole id: every point id listed. */
async function readByListing(vault: Vault, id: string): Promise<PointManifest> {
  const matches = (await vault.listPointIds()).filter((candidate) => candidate.startsWith(id));
  if (matches.length !== 1) throw new Error(`point ${id}: ${matches.length} matches`);
  return vault.readPoint(matches[0]!);
}

/** Keys of the objects a backup adds besides its point: packs, index objects, chain markers. */
async function writtenKeys(store: ObjectStore): Promise<Set<string>> {
  const keys = new Set<string>();
  for (const prefix of ["index/", "data/", "chain/"]) for await (const info of store.list(prefix)) keys.add(info.key);
  return keys;
}

/** Leaves the vault as synthesized, so every probe starts from the same vault. */
async function removeProbePoint(store: ObjectStore, vault: Vault, point: PointManifest, before: Set<string>): Promise<void> {
  for (const key of await writtenKeys(store)) if (!before.has(key)) await store.delete(key);
  await store.delete(`points/${point.id}`);
  const entry = catalogEntryName(vault, point);
  if (entry) await store.delete(entry);
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function label(chunks: number): string {
  return chunks >= 1_000_000 ? `${chunks / 1_000_000}M` : String(chunks);
}

/** "10M" -> 10000000. */
export function parseChunkCount(text: string): number {
  const match = /^(\d+)([KM]?)$/i.exec(text.trim());
  if (!match) throw new Error(`--scale-max ${text}: expected a count of chunks like 10M or 100M`);
  return Number(match[1]) * (match[2]!.toUpperCase() === "M" ? 1_000_000 : match[2]!.toUpperCase() === "K" ? 1000 : 1);
}

/** "catalog,sharded" -> the designs named (each one known). */
export function parseScaleDesigns(text: string): Design[] {
  const names = text.split(",").map((name) => name.trim());
  const unknown = names.filter((name) => !(DESIGNS as string[]).includes(name));
  if (unknown.length > 0 || names.length === 0) throw new Error(`--scale-designs ${text}: expected some of ${DESIGNS.join(", ")}`);
  return names as Design[];
}

// ---- the run ----

const SELF = fileURLToPath(import.meta.url);
const DESIGNS: Design[] = ["before", "catalog", "sharded"];
const OPERATIONS: Operation[] = ["backup", "restore"];
/** The sharded design is also measured on the whole-vault jobs; prune last (it rewrites the index). */
function operationsOf(design: Design): Operation[] {
  return design === "sharded" ? [...OPERATIONS, "verify", "prune"] : OPERATIONS;
}

export async function runScaleBench(settings: ScaleSettings): Promise<boolean> {
  const { log } = settings;
  const rows: ScaleRow[] = [];
  const budget = totalmem() / 2;
  let failed = false;
  const designs = settings.designs ?? DESIGNS;
  for (const chunks of SCALE_CHUNKS) {
    const skip = (skipped: Design[], why: string) => {
      for (const design of skipped) for (const operation of operationsOf(design)) rows.push({ chunks, design, operation, ran: false, why });
      log(`${label(chunks)} chunks, ${skipped.join(" and ")}: ${why}`);
    };
    if (chunks > settings.maxChunks) {
      skip(designs, `not run: above --scale-max ${label(settings.maxChunks)}`);
      continue;
    }
    const dir = join(settings.workRoot, "scale");
    let run = designs;
    const peak = inMemoryIndexPeakBytes(chunks);
    const whole = designs.filter((d) => d !== "sharded");
    if (peak > budget && whole.length > 0) {
      skip(whole, `not run: these designs load the whole index at open, about ${formatBytes(peak)} at peak (estimate), over half of this machine's ${formatBytes(totalmem())}`);
      run = designs.filter((d) => d === "sharded");
    }
    if (run.length === 0) continue;
    // The index objects only the whole-index designs read (the sharded design sets them aside).
    const synthesized = await synthesize(dir, run.some((d) => d !== "sharded") ? chunks : 0, log);
    for (const design of run) {
      const putBack = design === "sharded" ? await synthesizeShards(dir, synthesized, chunks, log) : undefined;
      try {
        for (const operation of operationsOf(design)) {
          const row = await measureProbe({ vault: join(dir, "vault"), design, operation, pointId: synthesized.pointId }, chunks, settings.useGnuTime);
          failed ||= !row.ran || row.restoreIdentical === false;
          rows.push(row);
          log(renderRow(row));
        }
      } finally {
        await putBack?.();
      }
    }
  }
  await mkdir(dirname(settings.outPath), { recursive: true });
  await writeFile(
    settings.outPath,
    `${JSON.stringify({ benchmark: "bulwark-bench", case: "scale", points: POINTS, sources: SOURCES, smallDiskBytes: SMALL_DISK, finishedAt: new Date().toISOString(), rows }, null, 2)}\n`,
  );
  log("");
  log(renderScaleTable(rows));
  log(`\nresults written to ${settings.outPath}`);
  return !failed;
}

async function measureProbe(spec: ProbeSpec, chunks: number, useGnuTime: boolean): Promise<ScaleRow> {
  const measured = await measure({ command: process.execPath, args: [SELF, "--probe", JSON.stringify(spec)] }, useGnuTime);
  const row: ScaleRow = { chunks, design: spec.design, operation: spec.operation, ran: false };
  if (measured.exitCode !== 0) {
    row.why = `failed (exit ${measured.exitCode}): ${measured.stderr.trim().split("\n").slice(-3).join(" | ")}`;
    return row;
  }
  const result = JSON.parse(measured.stdout.trim().split("\n").at(-1)!) as ProbeResult;
  return {
    ...row,
    ran: true,
    peakRssBytes: measured.peakRssBytes,
    processSeconds: measured.seconds,
    jobSeconds: result.jobSeconds,
    reads: result.reads,
    outcome: result.outcome,
    // The point restored is the synthesized one: version 1 of the small disk.
    restoreIdentical: result.restoredSha256 === undefined ? undefined : result.restoredSha256 === sha256(smallDisk(1)),
  };
}

function renderRow(row: ScaleRow): string {
  if (!row.ran) return `${label(row.chunks)} ${row.design} ${row.operation}: ${row.why}`;
  const check =
    (row.restoreIdentical === undefined ? "" : row.restoreIdentical ? ", restored byte-identical" : ", restored content DIFFERS") + (row.outcome ? `, ${row.outcome}` : "");
  const r = row.reads!;
  return (
    `${label(row.chunks)} ${row.design} ${row.operation}: ${formatBytes(row.peakRssBytes!)} peak, ${row.jobSeconds!.toFixed(2)} s job ` +
    `(${row.processSeconds!.toFixed(2)} s process), ${formatBytes(r.bytes)} read in ${r.requests} requests${check}`
  );
}

export function renderScaleTable(rows: ScaleRow[]): string {
  const lines = [
    "| chunks | design | job | peak RSS | job time | read from store | requests (get / range / stat / list pages) |",
    "|---:|---|---|---:|---:|---:|---|",
  ];
  for (const row of rows) {
    const head = `| ${label(row.chunks)} | ${row.design} | ${row.operation}`;
    if (!row.ran) {
      lines.push(`${head} | ${row.why} | | | |`);
      continue;
    }
    const r = row.reads!;
    lines.push(
      `${head} | ${formatBytes(row.peakRssBytes!)} | ${row.jobSeconds!.toFixed(2)} s | ${formatBytes(r.bytes)} | ` +
        `${r.requests} (${r.gets} / ${r.ranges} / ${r.stats} / ${r.requests - r.gets - r.ranges - r.stats}, ${r.listed} names) |`,
    );
  }
  return lines.join("\n");
}

if (process.argv[1] === SELF && process.argv[2] === "--probe") {
  probe(JSON.parse(process.argv[3]!) as ProbeSpec).then(
    (result) => console.log(JSON.stringify(result)),
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
