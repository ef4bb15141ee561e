/**
 * Who is using a vault, through lock objects in the store (never an in-process lock): backups and
 * verifies hold shared locks, prune an exclusive one. Each side writes its lock first and then
 * looks at the others, so two racing sides both see each other and neither proceeds wrongly. Lock
 * objects are refreshed while held (a new object, then the old one deleted) and count as stale
 * once not refreshed for STALE_AFTER, so a killed process does not block the vault forever.
 */
import os from "node:os";
import { VaultBusyError } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { randomHex } from "./crypto.ts";

export const STALE_AFTER_MS = 30 * 60 * 1000;
const REFRESH_EVERY_MS = 5 * 60 * 1000;

interface LockBody {
  kind: "shared" | "exclusive";
  host: string;
  pid: number;
  created: string;
  operation: string;
}

export class VaultLock {
  private key: string;
  private readonly store: ObjectStore;
  private readonly body: LockBody;
  private timer: NodeJS.Timeout | undefined;

  private constructor(store: ObjectStore, key: string, body: LockBody) {
    this.store = store;
    this.key = key;
    this.body = body;
  }

  static async acquire(store: ObjectStore, kind: "shared" | "exclusive", operation: string): Promise<VaultLock> {
    const body: LockBody = { kind, host: os.hostname(), pid: process.pid, created: new Date().toISOString(), operation };
    const key = await writeLock(store, body);
    const lock = new VaultLock(store, key, body);
    const conflicts = (await liveLocks(store)).filter(
      (other) => other.key !== key && (kind === "exclusive" || other.body.kind === "exclusive"),
    );
    if (conflicts.length > 0) {
      await store.delete(key);
      const other = conflicts[0].body;
      throw new VaultBusyError(
        `the vault at ${store.location} is in use by \`${other.operation}\` on ${other.host} (pid ${other.pid}, since ${other.created}); ` +
          `try again when it has finished. A lock left by a killed process expires ${STALE_AFTER_MS / 60000} minutes after its last refresh.`,
      );
    }
    lock.timer = setInterval(() => void lock.refresh().catch(() => {}), REFRESH_EVERY_MS);
    lock.timer.unref();
    return lock;
  }

  async refresh(): Promise<void> {
    const fresh = await writeLock(this.store, { ...this.body, created: new Date().toISOString() });
    const old = this.key;
    this.key = fresh;
    await this.store.delete(old);
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.store.delete(this.key);
  }
}

async function writeLock(store: ObjectStore, body: LockBody): Promise<string> {
  const key = `locks/${randomHex(16)}`;
  await store.create(key, Buffer.from(JSON.stringify(body)));
  return key;
}

export async function liveLocks(store: ObjectStore, now = Date.now()): Promise<{ key: string; body: LockBody }[]> {
  const locks: { key: string; body: LockBody }[] = [];
  for await (const info of store.list("locks/")) {
    if (now - info.lastModified.getTime() > STALE_AFTER_MS) continue;
    try {
      locks.push({ key: info.key, body: JSON.parse((await store.get(info.key)).toString("utf8")) as LockBody });
    } catch {
      // released while we looked
    }
  }
  return locks;
}

/** Removes every lock object (for `bulwark unlock`, after making sure nothing runs). */
export async function removeAllLocks(store: ObjectStore): Promise<number> {
  let removed = 0;
  for await (const info of store.list("locks/")) {
    await store.delete(info.key);
    removed++;
  }
  return removed;
}
