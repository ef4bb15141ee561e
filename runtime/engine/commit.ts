/**
 * Committing a point: the one way a manifest enters a vault (CLI backups, agent jobs, VM groups).
 * Under the writer's vault lock, proven held right now (locks.ts: a lapsed lock is taken afresh or
 * the commit fails), the commit proves that everything the point needs is in the vault: every
 * chunk its tree references is in the index as it stands in storage now (reloaded whole if a
 * prune replaced index objects), every pack holding one exists, and every member point exists.
 * Only then are the point's catalog entry (catalog.ts) and its manifest written, in that order,
 * and after them the point's chain marker (chain.ts).
 */
import { IntegrityError } from "../errors.ts";
import { addToCatalog } from "./catalog.ts";
import { nextInChain, writeMarker } from "./chain.ts";
import { CHUNK_TREE } from "./chunk-codec.ts";
import { ID_BYTES, isZeroId } from "./crypto.ts";
import { epochsNoLongerStored } from "./keyring.ts";
import type { VaultLock } from "./locks.ts";
import { packIdOfKey, packKey } from "./pack.ts";
import { STREAM_TREE_ENTRY, type PointManifest } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";

/** Thrown when a point would reference data the vault no longer holds: the backup must stage again. */
export class MissingDataError extends IntegrityError {
  /** Packs the index names that are not in storage: a new attempt must not deduplicate against them. */
  readonly packs: string[];
  constructor(message: string, packs: string[] = []) {
    super(message);
    this.packs = packs;
  }
}

/** Above this many packs, one listing of data/ is cheaper than a request per pack. */
const STAT_PACKS_UP_TO = 256;

export async function commitPoint(vault: Vault, manifest: PointManifest, lock: VaultLock): Promise<"committed" | "already"> {
  if (await vault.store.stat(`points/${manifest.id}`)) {
    // A resumed commit: the manifest made it; make sure its catalog entry and marker did too.
    const committed = await vault.readPoint(manifest.id);
    await addToCatalog(vault, committed);
    await writeMarker(vault, committed);
    return "already";
  }
  await lock.assertHeld();
  await vault.reloadIndex();
  await proveContent(vault, manifest);
  for (const member of manifest.members ?? []) {
    if (!(await vault.store.stat(`points/${member.point}`))) {
      throw new MissingDataError(`point ${manifest.id} would name member point ${member.point} (${member.role}), which is not in the vault; the backup must run again`);
    }
  }
  await refuseLostEpochs(vault, manifest);
  const committed: PointManifest = { ...manifest, chain: await nextInChain(vault, manifest) };
  // The entry first: a crash between the two leaves an entry readers skip, never a point no lookup finds.
  await addToCatalog(vault, committed);
  await vault.writePoint(committed);
  await writeMarker(vault, committed);
  return "committed";
}

/**
 * Every data-key epoch this writer holds (it seals under one, and may have read chunks it
 * deduplicated against under others) is still in the vault as it read it. An epoch object deleted
 * after the writer opened the vault (or deleted and its number made again by a rotation) leaves the
 * writer sealing under a key no one else has: its manifest would be written, and the backup reported
 * done, for a point no other process can open. Version 3 and 4 vaults have no epochs.
 */
async function refuseLostEpochs(vault: Vault, manifest: PointManifest): Promise<void> {
  const lost = await epochsNoLongerStored(vault.store, vault.master, vault.config.id, vault.epochs.valid);
  if (lost.length === 0) return;
  throw new IntegrityError(
    `point ${manifest.id} was not committed: data-key epoch object ${lost.join(", ")}, whose key this backup sealed or read data under, ` +
      "is gone from the vault or holds another key now (deleted or replaced since the backup opened the vault), so nothing else could open the point. " +
      "Put back a copy of the epoch object if there is one and run `bulwark verify`; investigate who removed it",
  );
}

/** Every chunk the point references is indexed, and every pack it lies in exists. */
export async function proveContent(vault: Vault, manifest: PointManifest): Promise<void> {
  const content = manifest.content;
  if (!content) return;
  const entryBytes = content.layout === "blocks" ? ID_BYTES : STREAM_TREE_ENTRY;
  const packs = new Set<string>();
  let missing = 0;
  for (const nodeHex of new Set(content.tree)) {
    const nodeId = Buffer.from(nodeHex, "hex");
    await vault.index.prepare([nodeId], { present: true });
    const nodeLocation = vault.index.lookup(nodeId);
    if (!nodeLocation || nodeLocation === "pending") {
      missing++;
      continue;
    }
    packs.add(nodeLocation.pack);
    const node = await vault.readChunk(CHUNK_TREE, nodeId).catch((error) => {
      throw new MissingDataError(
        `point ${manifest.id}: its tree chunk ${nodeHex.slice(0, 16)} cannot be read (${(error as Error).message}); the backup must run again`,
        [nodeLocation.pack],
      );
    });
    const ids: Uint8Array[] = [];
    for (let at = 0; at < node.length; at += entryBytes) {
      const id = node.subarray(at, at + ID_BYTES);
      if (!isZeroId(id)) ids.push(id);
    }
    // With shards, one index block per chunk not in memory: the proof reads what the point names.
    await vault.index.forEachLocation(
      ids,
      (_, location) => {
        if (!location || location === "pending") missing++;
        else packs.add(location.pack);
      },
      { present: true },
    );
  }
  if (missing > 0) {
    throw new MissingDataError(`point ${manifest.id} would reference ${missing} chunks the vault does not hold (pruned meanwhile?); the backup must run again`);
  }
  const absent = await absentPacks(vault, [...packs]);
  if (absent.length > 0) {
    throw new MissingDataError(
      `point ${manifest.id} would reference ${absent.length} packs that are not in the vault (${absent.slice(0, 3).join(", ")}${absent.length > 3 ? ", ..." : ""}); the backup must run again`,
      absent,
    );
  }
}

async function absentPacks(vault: Vault, packIds: string[]): Promise<string[]> {
  if (packIds.length <= STAT_PACKS_UP_TO) {
    const found = await mapLimit(packIds, 8, async (packId) => (await vault.store.stat(packKey(packId))) !== undefined);
    return packIds.filter((_, i) => !found[i]);
  }
  const present = new Set<string>();
  for await (const info of vault.store.list("data/")) {
    const packId = packIdOfKey(info.key);
    if (packId) present.add(packId);
  }
  return packIds.filter((packId) => !present.has(packId));
}
