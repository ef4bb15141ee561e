/**
 * Copies an object between stores: server-side (Copy Blob From URL with a short-lived read SAS)
 * when both are Azure Blob, else through this process. Create-only and idempotent: a copy that
 * already landed (same size) counts as done.
 */
import { createHash } from "node:crypto";
import { IntegrityError, ObjectExistsError, ObjectNotFoundError } from "../errors.ts";
import { AzureBlobStore, BLOCK_FROM_URL_BYTES, SYNC_COPY_LIMIT } from "./azure-blob.ts";
import { RetryingStore, withRetry, DEFAULT_RETRY } from "./retry.ts";
import type { ObjectStore } from "./store.ts";

function base(store: ObjectStore): ObjectStore {
  return store instanceof RetryingStore ? base(store.inner) : store;
}

/** Copies source:sourceKey to target:targetKey; returns false if it was there already. */
export async function copyObject(source: ObjectStore, sourceKey: string, target: ObjectStore, targetKey: string): Promise<boolean> {
  const from = base(source);
  const to = base(target);
  const info = await source.stat(sourceKey);
  if (!info) {
    const existing = await target.stat(targetKey);
    if (existing) return false; // copied before, and the source since cleaned up
    throw new ObjectNotFoundError(sourceKey, source.location);
  }
  if (from instanceof AzureBlobStore && to instanceof AzureBlobStore) {
    const url = await from.readUrl(sourceKey);
    return withRetry(`copying ${sourceKey}`, DEFAULT_RETRY, () => to.copyFromUrl(targetKey, url, { size: info.size }));
  }
  const data = await source.get(sourceKey);
  try {
    await target.create(targetKey, data);
    return true;
  } catch (error) {
    if (error instanceof ObjectExistsError && (await target.stat(targetKey))?.size === data.length) return false;
    throw error;
  }
}

/**
 * Puts `bytes`, already read from source:key and authenticated by the caller, at target:key.
 * Between two Azure Blob stores the service copies them (the process uploads nothing), told the
 * MD5 of the authenticated bytes so it refuses a source that changed since (azure-blob.ts,
 * copyFromUrl); otherwise the bytes are written from here. An object already at target:key (an
 * interrupted earlier copy) counts only if it holds the same bytes; anything else there is refused.
 * Returns whether it wrote the object (false: it was there) and whether the copy was server-side.
 */
export async function putCopy(
  source: ObjectStore,
  target: ObjectStore,
  key: string,
  bytes: Buffer,
  options: { serverSide?: boolean } = {},
): Promise<{ written: boolean; serverSide: boolean }> {
  const from = base(source);
  const to = base(target);
  if (options.serverSide !== false && from instanceof AzureBlobStore && to instanceof AzureBlobStore) {
    const url = await from.readUrl(key);
    const md5 = createHash("md5").update(bytes).digest();
    const blockMd5s: Buffer[] = [];
    for (let at = 0; bytes.length > SYNC_COPY_LIMIT && at < bytes.length; at += BLOCK_FROM_URL_BYTES) {
      blockMd5s.push(createHash("md5").update(bytes.subarray(at, at + BLOCK_FROM_URL_BYTES)).digest());
    }
    const written = await withRetry(`copying ${key}`, DEFAULT_RETRY, () => to.copyFromUrl(key, url, { size: bytes.length, md5, blockMd5s }));
    const landed = await target.stat(key);
    if (landed?.size !== bytes.length) {
      throw new IntegrityError(`the server-side copy of ${key} into ${target.location} holds ${landed?.size ?? 0} bytes, not ${bytes.length}; run the copy again`);
    }
    return { written, serverSide: true };
  }
  try {
    await target.create(key, bytes);
    return { written: true, serverSide: false };
  } catch (error) {
    if (!(error instanceof ObjectExistsError)) throw error;
    if (!(await target.get(key)).equals(bytes)) {
      throw new IntegrityError(`${key} is already in ${target.location} with other bytes than the source's: something other than this copy wrote it; investigate before copying`);
    }
    return { written: false, serverSide: false };
  }
}
