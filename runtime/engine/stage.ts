/**
 * Staging and promotion, the way a worker job writes: new packs go to the region's transient
 * storage first; once all are written they are read back and verified there, then copied
 * (server-side) into the customer's isolated vault; only then is an index object naming them
 * written in the vault, and last the point manifest. Every step is idempotent, with names derived
 * from the job, so a worker that dies between any two steps is replaced by one that redoes the
 * step and reaches the same point; whatever the dead worker staged is under the job's prefix and
 * goes when the job cleans up (or the transient lifecycle rule does).
 */
import { describeError, IntegrityError } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { copyObject } from "../store/copy.ts";
import type { CodecPool } from "./codec-pool.ts";
import { labelAssociatedData, openObject, sealObject } from "./crypto.ts";
import { decodeIndex, encodeIndex, type IndexedPack } from "./index-file.ts";
import { packIdOfKey, packKey, readPackHeader } from "./pack.ts";
import type { PointManifest } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";

const STAGED_INDEX = "staged/index";
const STAGED_DRAFTS = "staged/points";

/**
 * Records what a staging step produced: the packs (as an index) and the draft manifests, sealed
 * with the job's id in their associated data, so objects another job staged (copied here by
 * someone with write access to transient storage) do not open as this job's.
 */
export async function recordStaged(vault: Vault, staging: ObjectStore, jobId: string, packs: IndexedPack[], drafts: PointManifest[]): Promise<void> {
  await staging.delete(STAGED_INDEX);
  await staging.delete(STAGED_DRAFTS);
  await staging.create(STAGED_INDEX, encodeIndex(vault.master.dataKey, `${jobId}/${STAGED_INDEX}`, packs, vault.master.format));
  const plain = Buffer.from(JSON.stringify(drafts));
  await staging.create(STAGED_DRAFTS, sealObject(vault.master.dataKey, plain, labelAssociatedData("drafts", `${jobId}/${STAGED_DRAFTS}`), vault.master.format));
}

/**
 * What the job staged; `expectedPoints` are the point ids the job derives for itself: drafts
 * naming any other point, or another job, are refused.
 */
export async function readStaged(
  vault: Vault,
  staging: ObjectStore,
  jobId: string,
  expectedPoints?: ReadonlySet<string>,
): Promise<{ packs: IndexedPack[]; drafts: PointManifest[] }> {
  const packs = decodeIndex(vault.master.dataKey, `${jobId}/${STAGED_INDEX}`, await staging.get(STAGED_INDEX));
  const sealed = await staging.get(STAGED_DRAFTS);
  const drafts = JSON.parse(
    openObject(vault.master.dataKey, sealed, labelAssociatedData("drafts", `${jobId}/${STAGED_DRAFTS}`), `the drafts job ${jobId} staged`).toString("utf8"),
  ) as PointManifest[];
  for (const draft of drafts) {
    if ((expectedPoints && !expectedPoints.has(draft.id)) || draft.details?.job !== jobId) {
      throw new IntegrityError(`the staged drafts of job ${jobId} name point ${draft.id}, which is not this job's; the job will stage again`);
    }
  }
  return { packs, drafts };
}

/** Reads every staged pack back and checks its header against the staged index and every chunk. */
export async function verifyStaged(vault: Vault, pool: CodecPool, staging: ObjectStore, packs: IndexedPack[]): Promise<number> {
  let chunks = 0;
  await mapLimit(packs, 2, async (pack) => {
    const bytes = await staging.get(packKey(pack.packId));
    const header = await readPackHeader(vault.master.dataKey, pack.packId, bytes.length, async (o, l) => bytes.subarray(o, o + l));
    if (header.length !== pack.entries.length) throw new IntegrityError(`staged pack ${pack.packId} holds ${header.length} chunks, not ${pack.entries.length}`);
    for (const [i, entry] of pack.entries.entries()) {
      const h = header[i];
      if (!h.id.equals(entry.id) || h.offset !== entry.offset || h.length !== entry.length) {
        throw new IntegrityError(`staged pack ${pack.packId} does not match what was written; the job will stage it again`);
      }
    }
    const { errors } = await pool.decodeBatch(bytes, header, `staged pack ${pack.packId}`);
    const failed = errors.find((e) => e !== null);
    if (failed) throw failed;
    chunks += header.length;
  });
  return chunks;
}

/** Copies the staged packs into the vault, then writes the index object naming them. */
export async function promoteStaged(vault: Vault, staging: ObjectStore, packs: IndexedPack[], indexName: string): Promise<{ copied: number }> {
  let copied = 0;
  await mapLimit(packs, 4, async (pack) => {
    if (await copyObject(staging, packKey(pack.packId), vault.store, packKey(pack.packId))) copied++;
  });
  const name = `index/${indexName}`;
  if (packs.length > 0 && !(await vault.store.stat(name))) {
    await vault.store.create(name, encodeIndex(vault.master.dataKey, name, packs, vault.master.format)).catch(async (error) => {
      if (!(await vault.store.stat(name))) throw error;
    });
  }
  return { copied };
}

/**
 * What an earlier, interrupted run of a staging step left: every staged pack whose trailer opens
 * under the vault's key is kept, its chunks made known to the vault's index (so the new run does
 * not read, encode or upload them again), and returned to be promoted with the new ones. The
 * staged index and drafts, and packs that do not open (a write cut short), are removed. A retried
 * stage thus resumes from what is staged instead of from zero.
 */
export async function resumeStaging(vault: Vault, staging: ObjectStore): Promise<IndexedPack[]> {
  await staging.delete(STAGED_INDEX);
  await staging.delete(STAGED_DRAFTS);
  const resumed: IndexedPack[] = [];
  const stale: string[] = [];
  const packs: { key: string; packId: string; size: number }[] = [];
  for await (const info of staging.list("")) {
    const packId = packIdOfKey(info.key);
    if (packId) packs.push({ key: info.key, packId, size: info.size });
    else stale.push(info.key);
  }
  await mapLimit(packs, 4, async ({ key, packId, size }) => {
    try {
      const entries = await readPackHeader(vault.master.dataKey, packId, size, (offset, length) => staging.getRange(key, offset, length));
      resumed.push({ packId, entries });
    } catch {
      stale.push(key);
    }
  });
  await mapLimit(stale, 8, (key) => staging.delete(key));
  for (const pack of resumed) {
    for (const e of pack.entries) vault.index.addEntry(e.id, pack.packId, e.offset, e.length, e.rawLength, e.type);
  }
  return resumed;
}

/** Removes everything the job staged. */
export async function clearStaging(staging: ObjectStore): Promise<number> {
  let removed = 0;
  const keys: string[] = [];
  for await (const info of staging.list("")) keys.push(info.key);
  await mapLimit(keys, 8, async (key) => {
    await staging.delete(key);
    removed++;
  });
  return removed;
}

/**
 * What keeps a committed object from being deleted, as the storage itself reports it. Bulwark sets
 * no per-object policy: Set Blob Immutability Policy needs a super-user data action that also
 * deletes such policies (README, "Immutability"), so WORM is the vault container's default policy.
 * A storage that reports none, or cannot be asked, is said so: never reported as protected.
 */
export async function immutabilityOf(store: ObjectStore, key: string): Promise<{ until?: Date; report: string }> {
  if (!store.immutableUntil) return { report: `none: ${store.location} has no immutability, so whoever can write there can delete ${key}` };
  try {
    const until = await store.immutableUntil(key);
    if (until) return { until, report: `${key} is under the storage's immutability policy until ${until.toISOString()}: while the policy is Locked nobody can delete it before then; an Unlocked policy can still be shortened or removed by whoever may change the storage account (lock it: infra/README.md). Packs the point shares with older points carry their own dates` };
    return { report: `none: no immutability policy applies to ${key} at ${store.location}; give the vault container a default policy (infra/README.md) or anyone with write access can delete it` };
  } catch (error) {
    return { report: `unknown: could not read the immutability of ${key} (${describeError(error)})` };
  }
}
