/**
 * The per-source catalog: which points a source has, found by listing one prefix instead of
 * reading every manifest in the vault.
 *
 *   catalog/<source key>/<time>~<point id>   empty: a point of that source, taken at that time
 *   catalog/complete                         sealed: every manifest had its entry when it was written
 *
 * The source key is an HMAC of the source's identity (point.ts sourceIdentity) under the id key,
 * so a reader of the storage learns nothing from it. commitPoint writes a point's entry BEFORE its
 * manifest: a crash between the two leaves an entry without a manifest, which readers skip and
 * prune removes; it never leaves a manifest without an entry. Vaults written before the catalog
 * have manifests without entries: until `catalog/complete` exists (a new vault writes it at init),
 * a lookup scans every manifest once, writes the missing entries and then that marker (prune, which
 * reads every manifest anyway, writes missing entries too).
 *
 * Entries are unsealed names, so storage is trusted for nothing: an entry only says where to look.
 * The manifest it names is read (sealed, MAC'd) and must be of the same source and time, so a
 * planted entry can hide nothing and point nowhere new. Deleting entries (like deleting points)
 * takes write access; it can make a lookup settle on an older point of the source, never on
 * another source's point. `catalog/complete` is sealed and names the vault's id, so it cannot be
 * planted to skip the scan, nor copied in from another vault that shares the master keys.
 */
import { createHmac } from "node:crypto";
import { IntegrityError, ObjectNotFoundError } from "../errors.ts";
import { labelAssociatedData, openObject, sealObject } from "./crypto.ts";
import { sourceIdentity, type PointManifest } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";

/** What a catalog lookup needs of a source: the kind of its points and its identity. */
export type SourceOf = Pick<PointManifest, "kind" | "source">;

const COMPLETE = "catalog/complete";
/** `<yyyymmddThhmmss.sssZ>~<point id>`: names sort as their times do (toISOString is fixed width). */
const ENTRY_NAME = /^(\d{8}T\d{6}\.\d{3}Z)~([0-9a-f]{16,64})$/;

export function catalogPrefix(vault: Vault, source: SourceOf): string {
  const key = createHmac("sha256", vault.master.idKey).update("bulwark/catalog/").update(sourceIdentity(source)).digest("hex").slice(0, 32);
  return `catalog/${key}/`;
}

/** The entry name a point takes, or undefined for a time toISOString would not have written. */
export function catalogEntryName(vault: Vault, point: Pick<PointManifest, "kind" | "source" | "id" | "time">): string | undefined {
  const compact = point.time.replaceAll("-", "").replaceAll(":", "");
  const name = `${compact}~${point.id}`;
  return ENTRY_NAME.test(name) ? `${catalogPrefix(vault, point)}${name}` : undefined;
}

/** Writes a point's entry (idempotent). Called before the manifest is written. */
export async function addToCatalog(vault: Vault, point: PointManifest): Promise<void> {
  const name = catalogEntryName(vault, point);
  if (name === undefined) throw new IntegrityError(`point ${point.id} has a time (${point.time}) that is not an ISO 8601 UTC timestamp`);
  if (await vault.store.stat(name)) return;
  await vault.store.create(name, new Uint8Array(0)).catch(async (error) => {
    if (!(await vault.store.stat(name))) throw error;
  });
}

interface Entry {
  time: string;
  point: string;
}

/** A source's entries, newest first (names that are not entries are ignored). */
async function entriesOf(vault: Vault, source: SourceOf): Promise<Entry[]> {
  const prefix = catalogPrefix(vault, source);
  const entries: Entry[] = [];
  for await (const info of vault.store.list(prefix)) {
    const match = ENTRY_NAME.exec(info.key.slice(prefix.length));
    if (match) entries.push({ time: match[1]!, point: match[2]! });
  }
  return entries.sort((a, b) => b.time.localeCompare(a.time) || b.point.localeCompare(a.point));
}

/**
 * The manifest an entry names, if it is there and is what the entry says: a point of this source
 * taken at the entry's time. Missing (forgotten, or a crash before the manifest): undefined.
 */
async function manifestOfEntry(vault: Vault, source: SourceOf, entry: Entry): Promise<PointManifest | undefined> {
  let manifest: PointManifest;
  try {
    manifest = await vault.readPoint(entry.point);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
  const time = manifest.time.replaceAll("-", "").replaceAll(":", "");
  if (sourceIdentity(manifest) !== sourceIdentity(source) || time !== entry.time) return undefined;
  return manifest;
}

/**
 * The marker names the vault's id: vaults made `init --like` share the master keys, and another
 * vault's marker copied in must not stop this vault's scan (markers written before this open as
 * damaged, and the next lookup scans once and writes a new one).
 */
function completeAssociatedData(vault: Vault): Buffer {
  return labelAssociatedData("catalog", `${vault.config.id}/${COMPLETE}`);
}

/** Whether every manifest in the vault has its entry (a sealed marker says so). */
async function catalogIsComplete(vault: Vault): Promise<boolean> {
  try {
    const plain = openObject(vault.master.dataKey, await vault.store.get(COMPLETE), completeAssociatedData(vault), COMPLETE);
    return (JSON.parse(plain.toString("utf8")) as { complete?: unknown }).complete === true;
  } catch (error) {
    // Missing, damaged or planted: scan, and write it anew.
    if (error instanceof ObjectNotFoundError || error instanceof IntegrityError || error instanceof SyntaxError) return false;
    throw error;
  }
}

/**
 * Writes the entries missing for these manifests (every manifest in the vault, as the caller read
 * them), then the marker that says the catalog is complete. Entries of points that are gone are
 * left to prune.
 */
export async function completeCatalog(vault: Vault, points: PointManifest[]): Promise<void> {
  const present = new Set<string>();
  for await (const info of vault.store.list("catalog/")) present.add(info.key);
  const missing = points.filter((point) => {
    const name = catalogEntryName(vault, point);
    return name !== undefined && !present.has(name);
  });
  await mapLimit(missing, 8, (point) => addToCatalog(vault, point));
  if (present.has(COMPLETE) && (await catalogIsComplete(vault))) return;
  await vault.store.delete(COMPLETE).catch(() => {});
  await markCatalogComplete(vault);
}

/**
 * The points (every manifest in the vault, as the caller read them) that have no entry although the
 * catalog says it is complete: an entry deleted in storage, which makes lookups of the source's
 * latest point pass the point by. Before the catalog is complete, none (a lookup scans instead).
 */
export async function pointsWithoutEntries(vault: Vault, points: readonly PointManifest[]): Promise<PointManifest[]> {
  if (!(await catalogIsComplete(vault))) return [];
  const present = new Set<string>();
  for await (const info of vault.store.list("catalog/")) present.add(info.key);
  return points.filter((point) => {
    const name = catalogEntryName(vault, point);
    return name !== undefined && !present.has(name);
  });
}

/** Says every manifest has its entry: at init (no manifest yet), and once a scan wrote the missing ones. */
export async function markCatalogComplete(vault: Vault): Promise<void> {
  const sealed = sealObject(
    vault.master.dataKey,
    Buffer.from(JSON.stringify({ complete: true, at: new Date().toISOString() })),
    completeAssociatedData(vault),
    vault.master.format,
  );
  await vault.store.create(COMPLETE, sealed).catch(async (error) => {
    if (!(await vault.store.stat(COMPLETE))) throw error;
  });
}

/**
 * A source's points, newest first, read lazily: `visit` returns true to stop. Before the catalog
 * is complete, every manifest is read once (and the catalog completed when storage allows writes).
 */
async function walkPointsOf(vault: Vault, source: SourceOf, visit: (point: PointManifest) => boolean): Promise<void> {
  if (!(await catalogIsComplete(vault))) {
    const all = await vault.listPoints();
    // A read-only credential cannot complete the catalog: the scan's answer stands all the same.
    await completeCatalog(vault, all).catch(() => {});
    const identity = sourceIdentity(source);
    for (const point of all.filter((p) => sourceIdentity(p) === identity).reverse()) if (visit(point)) return;
    return;
  }
  for (const entry of await entriesOf(vault, source)) {
    const manifest = await manifestOfEntry(vault, source, entry);
    if (manifest && visit(manifest)) return;
  }
}

/** The source's newest point, or undefined if it has none. */
export async function latestPointOfSource(vault: Vault, source: SourceOf): Promise<PointManifest | undefined> {
  let latest: PointManifest | undefined;
  await walkPointsOf(vault, source, (point) => {
    latest = point;
    return true;
  });
  return latest;
}

/** Every point of the source, oldest first. */
export async function pointsOfSource(vault: Vault, source: SourceOf): Promise<PointManifest[]> {
  const points: PointManifest[] = [];
  await walkPointsOf(vault, source, (point) => {
    points.push(point);
    return false;
  });
  return points.reverse();
}

/**
 * Removes the entries whose point is gone (forgotten, pruned, or a commit that died before its
 * manifest). Only under the exclusive lock: a backup committing meanwhile writes its entry before
 * its manifest, and would lose the entry. `pointIds` are every point in the vault now.
 */
export async function removeStaleEntries(vault: Vault, pointIds: ReadonlySet<string>): Promise<number> {
  const stale: string[] = [];
  for await (const info of vault.store.list("catalog/")) {
    const match = ENTRY_NAME.exec(info.key.slice(info.key.lastIndexOf("/") + 1));
    if (match && !pointIds.has(match[2]!)) stale.push(info.key);
  }
  let removed = 0;
  await mapLimit(stale, 8, async (name) => {
    // An entry under immutability stays; readers skip it.
    await vault.store.delete(name).then(
      () => removed++,
      () => {},
    );
  });
  return removed;
}
