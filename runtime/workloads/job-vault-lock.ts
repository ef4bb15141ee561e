/**
 * A backup job's shared lock on its vault, held from staging to commit. A prune (exclusive) cannot
 * run while it is held, so it never deletes the packs a job in flight deduplicated against or has
 * promoted but not yet named in the index, however long promotion takes. The lock lives in this
 * worker process across the job's steps (each step refreshes it through the lock's own timer); it
 * is released once the points are committed or the job compensates, and when the worker loses the
 * job (the step's signal aborts). A worker that dies leaves a lock that goes stale; the job's next
 * owner takes its own, and the commit proves the data is still there (commit.ts), staging again if not.
 */
import { VaultLock } from "../engine/locks.ts";
import type { Vault } from "../engine/vault.ts";
import type { StepContext } from "../jobs/machine.ts";

const held = new Map<string, { lock: VaultLock; location: string }>();

export async function jobVaultLock(ctx: StepContext, vault: Vault): Promise<VaultLock> {
  let entry = held.get(ctx.jobId);
  if (entry && entry.location !== vault.store.location) {
    await releaseJobVaultLock(ctx.jobId);
    entry = undefined;
  }
  if (!entry) {
    entry = { lock: await VaultLock.acquire(vault.store, "shared", `backup job ${ctx.jobId}`), location: vault.store.location };
    held.set(ctx.jobId, entry);
  }
  const lock = entry.lock;
  if (!ctx.signal.aborted) {
    ctx.signal.addEventListener("abort", () => void (held.get(ctx.jobId)?.lock === lock && releaseJobVaultLock(ctx.jobId)), { once: true });
  } else {
    await releaseJobVaultLock(ctx.jobId);
    throw ctx.signal.reason ?? new Error("the job was stopped");
  }
  return lock;
}

export async function releaseJobVaultLock(jobId: string): Promise<void> {
  const entry = held.get(jobId);
  if (!entry) return;
  held.delete(jobId);
  await entry.lock.release().catch(() => {});
}
