/**
 * `bulwark stats`: what a vault holds and what it saves. Object counts and bytes come from listing
 * the store (no pack is read); the distinct chunks from the index objects and shards, one at a time; the logical bytes from
 * the point manifests. Ratios are of those sums, so each figure can be checked against the store.
 */
import { ChunkIndex } from "../engine/chunk-index.ts";
import { readNewestGeneration, ShardReader } from "../engine/index-shards.ts";
import { forEachIndexEntry } from "../engine/index-file.ts";
import { sourceIdentity, type PointManifest } from "../engine/point.ts";
import type { Vault } from "../engine/vault.ts";
import { describeError } from "../errors.ts";
import { plural } from "./plural.ts";
import { formatBytes } from "./progress.ts";

type Values = Record<string, unknown>;
type Print = (values: Values, json: unknown, text: string) => void;

export interface ObjectTally {
  objects: number;
  bytes: number;
}

export interface SourceStats {
  kind: PointManifest["kind"];
  source: string;
  host?: string;
  points: number;
  /** The time of the source's newest point. */
  newest: string;
}

export interface VaultStats {
  vault: string;
  id: string;
  /** Listed, not read: packs (data/), index objects, point manifests, key objects. */
  packs: ObjectTally;
  index: ObjectTally;
  points: ObjectTally;
  keys: ObjectTally;
  /** Every object above together. */
  totalBytes: number;
  /** The sizes of the points that hold content (a VM point's size is its disk points', counted there). */
  logicalBytes: number;
  /** The distinct chunks the index names: their bytes before compression, and as sealed in packs. */
  chunks: { count: number; rawBytes: number; sealedBytes: number };
  /** Logical bytes per distinct raw byte (zero blocks are stored as nothing and count as saved). */
  dedupRatio: number;
  /** Distinct raw bytes per sealed byte (compression, less the encryption's overhead). */
  compressionRatio: number;
  sources: SourceStats[];
}

/** Where each kind of object lives (runtime/engine/vault.ts's layout). */
const PREFIXES = { packs: "data/", index: "index/", points: "points/", keys: "keys/" } as const;

async function tally(vault: Vault, prefix: string): Promise<ObjectTally> {
  const found: ObjectTally = { objects: 0, bytes: 0 };
  for await (const info of vault.store.list(prefix)) {
    found.objects++;
    found.bytes += info.size;
  }
  return found;
}

/**
 * The index's distinct chunks: the index objects one at a time, their ids remembered (a chunk named
 * by two of them, because two writers stored it at once or a repack moved it, counts once), then
 * the newest generation's shards one at a time, each id counted unless an index object named it.
 * Memory: the index objects' ids (the delta since the last prune), never the shards'.
 */
async function distinctChunks(vault: Vault): Promise<VaultStats["chunks"]> {
  const seen = new ChunkIndex();
  const chunks = { count: 0, rawBytes: 0, sealedBytes: 0 };
  const count = (rawLength: number, length: number) => {
    chunks.count++;
    chunks.rawBytes += rawLength;
    chunks.sealedBytes += length;
  };
  for await (const info of vault.store.list(PREFIXES.index)) {
    const sealed = await vault.store.get(info.key);
    forEachIndexEntry(vault.master.dataKey, info.key, sealed, (pack, type, id, offset, length, rawLength) => {
      if (seen.has(id)) return;
      seen.markPending(id);
      count(rawLength, length);
    });
  }
  // A generation's shards hold each id once.
  const generation = await readNewestGeneration(vault.store, vault.master.dataKey);
  if (generation) {
    for await (const [id, location] of new ShardReader(vault.store, vault.master.dataKey, generation).entries()) {
      if (!seen.has(id)) count(location.rawLength, location.length);
    }
  }
  return chunks;
}

/** One row per source (sourceIdentity: a path on its host, or a resource id in any case), newest point's time. */
export function sourcesOf(points: PointManifest[]): SourceStats[] {
  const bySource = new Map<string, SourceStats>();
  for (const point of points) {
    const key = sourceIdentity(point);
    const row = bySource.get(key);
    if (!row) bySource.set(key, { kind: point.kind, source: point.source.path, ...(point.source.host ? { host: point.source.host } : {}), points: 1, newest: point.time });
    else {
      row.points++;
      if (point.time > row.newest) row.newest = point.time;
    }
  }
  return [...bySource.values()].sort((a, b) => a.source.localeCompare(b.source) || a.kind.localeCompare(b.kind));
}

function ratio(numerator: number, denominator: number): number {
  return denominator > 0 ? numerator / denominator : 0;
}

export async function vaultStats(vault: Vault, onDamaged: (id: string, error: unknown) => void): Promise<VaultStats> {
  const [packs, index, pointObjects, keys, chunks, points] = await Promise.all([
    tally(vault, PREFIXES.packs),
    tally(vault, PREFIXES.index),
    tally(vault, PREFIXES.points),
    tally(vault, PREFIXES.keys),
    distinctChunks(vault),
    vault.listPoints({ skipDamaged: true, onDamaged }),
  ]);
  const logicalBytes = points.filter((p) => p.kind !== "vm").reduce((sum, p) => sum + p.size, 0);
  return {
    vault: vault.store.location,
    id: vault.config.id,
    packs,
    index,
    points: pointObjects,
    keys,
    totalBytes: packs.bytes + index.bytes + pointObjects.bytes + keys.bytes,
    logicalBytes,
    chunks,
    dedupRatio: ratio(logicalBytes, chunks.rawBytes),
    compressionRatio: ratio(chunks.rawBytes, chunks.sealedBytes),
    sources: sourcesOf(points),
  };
}

/** Rows of cells in aligned columns; the columns named in `right` align right. */
function columns(rows: string[][], right: ReadonlySet<number>): string[] {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((r) => r[column].length)));
  return rows.map((r) => r.map((cell, column) => (right.has(column) ? cell.padStart(widths[column]) : cell.padEnd(widths[column]))).join("  ").trimEnd());
}

export function statsText(stats: VaultStats): string {
  const objectRows = (["packs", "index", "points", "keys"] as const).map((name) => [`  ${name}`, String(stats[name].objects), formatBytes(stats[name].bytes)]);
  const sourceRows = stats.sources.map((s) => [`  ${s.source}`, s.kind, String(s.points), s.newest]);
  return [
    `vault ${stats.id} at ${stats.vault}`,
    ...columns([["stored", "OBJECTS", "BYTES"], ...objectRows, ["  total", "", formatBytes(stats.totalBytes)]], new Set([1, 2])),
    `logical ${formatBytes(stats.logicalBytes)} (the points' sizes), stored ${formatBytes(stats.packs.bytes)} in packs`,
    `${plural(stats.chunks.count, "distinct chunk")}: ${formatBytes(stats.chunks.rawBytes)} before compression, ${formatBytes(stats.chunks.sealedBytes)} sealed`,
    `dedup ratio ${stats.dedupRatio.toFixed(2)}x (logical / distinct), compression ratio ${stats.compressionRatio.toFixed(2)}x (distinct / sealed)`,
    ...(sourceRows.length ? columns([["points per source", "KIND", "POINTS", "NEWEST"], ...sourceRows], new Set([2])) : ["no recovery points yet"]),
  ].join("\n");
}

export async function statsCommand(vault: Vault, values: Values, print: Print): Promise<number> {
  const damaged: string[] = [];
  const stats = await vaultStats(vault, (id, error) => damaged.push(`point ${id}: ${describeError(error)}`));
  for (const line of damaged) process.stderr.write(`bulwark stats: ${line} (left out of the figures; run \`bulwark verify\`)\n`);
  print(values, stats, statsText(stats));
  return damaged.length > 0 ? 5 : 0;
}
