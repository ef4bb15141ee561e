/**
 * Copies between vaults that share master keys (one made `init --like` the other): points, and
 * exactly the packs and index entries they need that the destination lacks, moved as they are
 * (no re-encryption), so dedup holds across the two and a pack keeps its id.
 *
 * Order, the one a backup keeps (commit.ts): packs, then an index object naming them, then each
 * point through commitPoint (under the destination's shared lock, its content proven there) and
 * its chain marker. A copy killed at any moment leaves the destination valid (at worst packs no
 * index names, which prune removes, or an index no point uses yet), and a rerun skips what landed.
 *
 * Authentication: everything read from the source is opened under the data key before anything
 * naming it is committed: manifests and tree chunks (AES-GCM), and each pack that is copied, read
 * whole, its sealed header (which binds the pack id) and every chunk decrypted and its id checked.
 * The destination's index entries are taken from that authenticated header. Between two Azure
 * Blob vaults the pack then moves server-side, with the MD5 of the authenticated bytes for the
 * service to check (store/copy.ts, putCopy): the process reads each copied pack once and uploads
 * none of it. Of the destination it reads only the points' tree chunks, which the commit reads to
 * prove a point's content there, as for every backup.
 */
import { IntegrityError, UsageError } from "../errors.ts";
import { putCopy } from "../store/copy.ts";
import { CHUNK_TREE, hexId } from "./chunk-codec.ts";
import { CodecPool } from "./codec-pool.ts";
import { commitPoint } from "./commit.ts";
import { baseKeyBytes, ID_BYTES, isZeroId, randomHex } from "./crypto.ts";
import { encodeIndex, type IndexedPack } from "./index-file.ts";
import { importEpochKey } from "./keyring.ts";
import { VaultLock } from "./locks.ts";
import { packKey, readPackHeader } from "./pack.ts";
import { STREAM_TREE_ENTRY, type PointManifest } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";

/** Where a copy can be cut short by a test (onPhase): after packs and their index, after each point. */
export type CopyPhase = { phase: "packs"; packs: number } | { phase: "point"; id: string };

export interface CopyOptions {
  /** Point ids, unique prefixes or "latest"; every point when empty. */
  references?: string[];
  onProgress?: (bytesCopied: number) => void;
  onPhase?: (phase: CopyPhase) => void | Promise<void>;
  /** Checks each pack's bytes before they are used (the seed journal's SHA-256: seed-journal.ts). */
  checkPack?: (key: string, bytes: Buffer) => void;
  /** False: through the process even between two Azure Blob vaults (the benchmark compares both). */
  serverSide?: boolean;
  threads?: number;
}

export interface CopyReport {
  pointsCopied: number;
  /** Selected points the destination held already. */
  pointsPresent: number;
  packsCopied: number;
  /** Packs written by an interrupted earlier copy, found holding the same bytes. */
  packsPresent: number;
  /** Pack bytes that landed in the destination. */
  bytesCopied: number;
  /** Pack bytes that went through this process on their way (0 when every pack moved server-side). */
  bytesUploaded: number;
  /** Ids of the points this run committed. */
  points: string[];
}

/** Packs copied per index object: a killed copy loses at most this many packs' index entries. */
const PACKS_PER_INDEX = 64;

export async function copyPoints(from: Vault, to: Vault, options: CopyOptions = {}): Promise<CopyReport> {
  assertSameKeys(from, to);
  const selected = await selectPoints(from, options.references ?? []);
  const lock = await VaultLock.acquire(to.store, "shared", "copy");
  const pool = new CodecPool(from.master, { threads: options.threads });
  try {
    // Under the lock: a prune that ran before it cannot have removed what this index names.
    await to.reloadIndex();
    const present = await mapLimit(selected, 8, async (p) => (await to.store.stat(`points/${p.id}`)) !== undefined);
    const todo = selected.filter((_, i) => !present[i]);
    const report: CopyReport = {
      pointsCopied: 0,
      pointsPresent: 0,
      packsCopied: 0,
      packsPresent: 0,
      bytesCopied: 0,
      bytesUploaded: 0,
      points: [],
    };
    const packs = await packsNeeded(from, to, todo);
    await bringEpochKeys(from, to);
    await copyPacks(from, to, pool, [...packs], report, options);
    await options.onPhase?.({ phase: "packs", packs: packs.size });
    // Every selected point, present ones too: commitPoint writes the chain marker a copy killed
    // right after a manifest did not, before a later point of the source takes its place.
    for (const point of selected) {
      const { chain: _sourceChain, ...manifest } = point;
      // The destination's own chain: the point takes the next place among its source's points there.
      if ((await commitPoint(to, manifest, lock)) === "committed") {
        report.pointsCopied++;
        report.points.push(point.id);
        await options.onPhase?.({ phase: "point", id: point.id });
      }
    }
    report.pointsPresent = selected.length - report.pointsCopied;
    return report;
  } finally {
    await pool.close();
    await lock.release().catch(() => {});
  }
}

/** Master keys compared by value: a pack sealed under one data key opens under no other. */
export function assertSameKeys(from: Vault, to: Vault): void {
  if (!baseKeyBytes(from.master.dataKey).equals(baseKeyBytes(to.master.dataKey)) || !from.master.idKey.equals(to.master.idKey)) {
    throw new UsageError(
      `the vaults at ${from.store.location} and ${to.store.location} have different master keys, so their points and packs cannot move between them as they are; ` +
        "make the destination with `bulwark init --vault DEST --like SOURCE` (a new vault sharing the source's keys) and copy into that",
    );
  }
  // Packs move as they are: a newer format's chunks (per-chunk keys) do not open in an older vault.
  if (from.master.format > to.master.format) {
    throw new UsageError(
      `the vault at ${from.store.location} has format version ${from.master.format} and ${to.store.location} version ${to.master.format}, whose Bulwark cannot open its chunks; ` +
        "make a new destination with `bulwark init --vault DEST --like SOURCE` (it takes the current version) and copy into that",
    );
  }
}

/**
 * Data-key epochs (keyring.ts): the source's packs and points may be sealed under epochs of its own
 * (or keys it was brought), which the destination, sharing only the master keys, lacks. Each key
 * the destination lacks is written there as a copied key (it opens, never seals), before the
 * first pack that may need it lands, and added to the destination's keyring for this run.
 */
async function bringEpochKeys(from: Vault, to: Vault): Promise<void> {
  const have = new Set([...to.epochs.valid.map((e) => e.keyId)]);
  for (const epoch of from.epochs.valid) {
    if (have.has(epoch.keyId)) continue;
    await importEpochKey(to.store, to.master, to.config.id, epoch.key);
    have.add(epoch.keyId);
  }
  await to.refreshEpochs();
}

/**
 * The points to copy, each read and authenticated: the referenced ones (all when none), with the
 * member points of groups (a VM's disks), content points first, each set oldest first, so members
 * are committed before the group that names them and a source's points enter its chain in order.
 */
async function selectPoints(from: Vault, references: string[]): Promise<PointManifest[]> {
  const chosen = new Map<string, PointManifest>();
  const roots = references.length === 0 ? await from.listPoints() : await mapLimit(references, 4, (r) => from.resolvePoint(r));
  for (const point of roots) chosen.set(point.id, point);
  for (const point of roots) {
    for (const member of point.members ?? []) {
      if (!chosen.has(member.point)) chosen.set(member.point, await from.readPoint(member.point));
    }
  }
  const byTime = (a: PointManifest, b: PointManifest) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id);
  const all = [...chosen.values()];
  return [...all.filter((p) => !p.members?.length).sort(byTime), ...all.filter((p) => p.members?.length).sort(byTime)];
}

/** The source packs holding chunks the points reference that the destination's index lacks. */
async function packsNeeded(from: Vault, to: Vault, points: PointManifest[]): Promise<Set<string>> {
  const packs = new Set<string>();
  // Either index may be sharded: ids are prepared a slice at a time (vault-index.ts).
  const need = async (ids: Uint8Array[]) => {
    const absent: Uint8Array[] = [];
    await to.index.forEachLocation(ids, (id, there) => {
      if (!there || there === "pending") absent.push(id);
    });
    await from.index.forEachLocation(absent, (id) => packs.add(from.locate(id).pack), { present: true });
  };
  for (const point of points) {
    const content = point.content;
    if (!content) continue;
    const entryBytes = content.layout === "blocks" ? ID_BYTES : STREAM_TREE_ENTRY;
    for (const nodeHex of new Set(content.tree)) {
      const nodeId = Buffer.from(nodeHex, "hex");
      const node = await from.readChunk(CHUNK_TREE, nodeId);
      if (node.length % entryBytes !== 0) throw new IntegrityError(`tree chunk ${hexId(nodeId)} of point ${point.id} is malformed`);
      const ids: Uint8Array[] = [nodeId];
      for (let at = 0; at < node.length; at += entryBytes) {
        const id = node.subarray(at, at + ID_BYTES);
        if (!isZeroId(id)) ids.push(id);
      }
      await need(ids);
    }
  }
  return packs;
}

/** Copies packs a few at once; after every PACKS_PER_INDEX of them, an index object naming them. */
async function copyPacks(from: Vault, to: Vault, pool: CodecPool, packIds: string[], report: CopyReport, options: CopyOptions): Promise<void> {
  for (let start = 0; start < packIds.length; start += PACKS_PER_INDEX) {
    const batch = packIds.slice(start, start + PACKS_PER_INDEX);
    const indexed = await mapLimit(batch, 4, async (packId): Promise<IndexedPack> => {
      const { bytes, entries } = await readAuthenticatedPack(from, pool, packId, options.checkPack);
      const result = await putCopy(from.store, to.store, packKey(packId), bytes, { serverSide: options.serverSide });
      if (result.written) {
        report.packsCopied++;
        report.bytesCopied += bytes.length;
        if (!result.serverSide) report.bytesUploaded += bytes.length;
        options.onProgress?.(report.bytesCopied);
      } else {
        report.packsPresent++;
      }
      return { packId, entries };
    });
    const name = `index/copy-${randomHex(16)}`;
    // In the destination's own format: a version-3 vault made before keeps writing version 3.
    await to.store.create(name, encodeIndex(to.master.dataKey, name, indexed, to.master.format));
  }
}

/**
 * A source pack, read whole (packs are bounded by the vault's pack size) and authenticated: its
 * sealed header, and every chunk it lists opened and its id checked.
 */
async function readAuthenticatedPack(
  from: Vault,
  pool: CodecPool,
  packId: string,
  checkPack: CopyOptions["checkPack"],
): Promise<{ bytes: Buffer; entries: IndexedPack["entries"] }> {
  const key = packKey(packId);
  const info = await from.store.stat(key);
  if (!info) throw new IntegrityError(`pack ${packId} is named by the index of ${from.store.location} but is not there: the source vault is damaged; run \`bulwark verify\` on it`);
  // A pack is closed once it reaches packSize; one chunk (at most the chunker's maximum, sealed) can pass it.
  const limit = 2 * from.config.packSize + 2 * from.config.chunker.max + 1024 * 1024;
  if (info.size > limit) throw new IntegrityError(`pack ${packId} of ${from.store.location} is ${info.size} bytes, more than any pack of this vault can be`);
  const bytes = await from.store.get(key);
  checkPack?.(key, bytes);
  const entries = await readPackHeader(from.master.dataKey, packId, bytes.length, async (offset, length) => bytes.subarray(offset, offset + length));
  // A copy for the codec threads: the buffer handed to them is theirs, and `bytes` is still to be written.
  const { errors } = await pool.decodeBatch(new Uint8Array(bytes), entries, `pack ${packId} of ${from.store.location}`);
  const failed = errors.find((e) => e !== null);
  if (failed) {
    throw new IntegrityError(`pack ${packId} of ${from.store.location} fails authentication (${failed.message}); nothing that needs it was copied. Run \`bulwark verify --read-data\` on the source`);
  }
  return { bytes, entries };
}

