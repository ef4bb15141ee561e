/**
 * Copies an object between stores: server-side (Copy Blob From URL with a short-lived read SAS)
 * when both are Azure Blob, else through this process. Create-only and idempotent: a copy that
 * already landed (same size) counts as done.
 */
import { ObjectExistsError, ObjectNotFoundError } from "../errors.ts";
import { AzureBlobStore } from "./azure-blob.ts";
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
