/**
 * Who is using a vault, through lock objects in the store (never an in-process lock): backups and
 * verifies hold shared locks, prune an exclusive one. Each side writes its lock first and then
 * looks at the others, so two racing sides both see each other and neither proceeds wrongly. Lock
 * objects are refreshed while held (a new object, then the old one deleted) and count as stale
 * once not refreshed for STALE_AFTER, so a killed process does not block the vault forever.
 *
 * Locks fail closed:
 * - a lock object whose body cannot be read or parsed counts as held, and as exclusive;
 * - staleness is judged on the store's clock (the lastModified of the lock object just written),
 *   never on this host's clock, so a host whose clock is ahead cannot declare live locks stale;
 * - a holder that has not confirmed its lock for longer than TRUST_FOR (a refresh failed, the
 *   process was paused) may have been judged stale by others; before acting on what the lock
 *   protects it calls assertHeld(), which takes the lock afresh (or fails) and says it lapsed, so a
 *   writer re-proves its data and a prune gives up.
 */
import os from "node:os";
import { describeError, ObjectNotFoundError, VaultBusyError } from "../errors.ts";
import type { ObjectStore } from "../store/store.ts";
import { randomHex } from "./crypto.ts";

export const STALE_AFTER_MS = 30 * 60 * 1000;
const REFRESH_EVERY_MS = 5 * 60 * 1000;
/** Well inside STALE_AFTER: a holder unconfirmed for longer re-validates before it acts. */
export const TRUST_FOR_MS = STALE_AFTER_MS - 3 * REFRESH_EVERY_MS;

export interface LockBody {
  kind: "shared" | "exclusive";
  host: string;
  pid: number;
  created: string;
  operation: string;
}

/** Time as a lock sees it: a monotonic clock for how long since it was confirmed (tests move it). */
export interface LockClock {
  monotonic(): number;
}

const realClock: LockClock = { monotonic: () => performance.now() };

/** Locks this process holds, so a signal handler can release them before the process exits. */
const held = new Set<VaultLock>();
/** Releases under way (their objects not deleted yet). */
const releasing = new Set<Promise<void>>();

/**
 * Releases every lock this process holds and waits for those already being released: when it
 * resolves, no lock object of this process is left (a forced exit waits on it).
 */
export async function releaseHeldLocks(): Promise<void> {
  await Promise.all([...[...held].map((lock) => lock.release()), ...releasing]);
}

export class VaultLock {
  private key: string;
  private readonly store: ObjectStore;
  private readonly body: LockBody;
  private readonly clock: LockClock;
  private timer: NodeJS.Timeout | undefined;
  /** Monotonic time at which the newest lock object was about to be written. */
  private confirmedAt: number;
  /** The store's time when the newest lock object was written (its lastModified). */
  private confirmedStoreTime: number;
  private refreshFailure: unknown;
  private released = false;
  /** A refresh writing the lock's next object: a release waits for it, then deletes what it wrote. */
  private refreshing: Promise<void> | undefined;

  private constructor(store: ObjectStore, key: string, body: LockBody, clock: LockClock, confirmedAt: number, storeTime: number) {
    this.store = store;
    this.key = key;
    this.body = body;
    this.clock = clock;
    this.confirmedAt = confirmedAt;
    this.confirmedStoreTime = storeTime;
  }

  get kind(): LockBody["kind"] {
    return this.body.kind;
  }

  static async acquire(
    store: ObjectStore,
    kind: "shared" | "exclusive",
    operation: string,
    options: { clock?: LockClock } = {},
  ): Promise<VaultLock> {
    const clock = options.clock ?? realClock;
    const body: LockBody = { kind, host: os.hostname(), pid: process.pid, created: new Date().toISOString(), operation };
    const { key, confirmedAt, storeTime } = await takeLock(store, body, clock);
    const lock = new VaultLock(store, key, body, clock, confirmedAt, storeTime);
    lock.timer = setInterval(() => void lock.refresh().catch((error) => (lock.refreshFailure ??= error)), REFRESH_EVERY_MS);
    lock.timer.unref();
    held.add(lock);
    return lock;
  }

  /** The store's clock now, as well as this holder knows it (for ages of objects in the store). */
  storeNow(): number {
    return this.confirmedStoreTime + (this.clock.monotonic() - this.confirmedAt);
  }

  async refresh(): Promise<void> {
    if (this.released) return;
    const refreshing = this.writeNext();
    this.refreshing = refreshing;
    try {
      await refreshing;
    } finally {
      if (this.refreshing === refreshing) this.refreshing = undefined;
    }
  }

  private async writeNext(): Promise<void> {
    const confirmedAt = this.clock.monotonic();
    const fresh = await writeLock(this.store, { ...this.body, created: new Date().toISOString() });
    const old = this.key;
    this.key = fresh.key;
    this.confirmedAt = confirmedAt;
    this.confirmedStoreTime = fresh.storeTime;
    this.refreshFailure = undefined;
    await this.store.delete(old);
  }

  /**
   * Proves the lock is still held before the holder acts on what it protects (writes a point,
   * deletes packs). If it may have lapsed (not confirmed for TRUST_FOR, a refresh failed, or its
   * object is gone), it is taken afresh, as at acquire (VaultBusyError if another side holds the
   * vault now), and the answer is lapsed: true, meaning others may have acted meanwhile.
   */
  async assertHeld(): Promise<{ lapsed: boolean }> {
    if (this.released) throw new Error("the vault lock was already released");
    const unconfirmedFor = this.clock.monotonic() - this.confirmedAt;
    const present = unconfirmedFor <= TRUST_FOR_MS && this.refreshFailure === undefined && (await this.store.stat(this.key)) !== undefined;
    if (present) return { lapsed: false };
    const old = this.key;
    const { key, confirmedAt, storeTime } = await takeLock(this.store, { ...this.body, created: new Date().toISOString() }, this.clock).catch(
      (error: unknown) => {
        throw error instanceof VaultBusyError
          ? new VaultBusyError(
              `this ${this.body.operation}'s lock on the vault at ${this.store.location} lapsed (not confirmed for ${Math.round(unconfirmedFor / 60000)} minutes` +
                `${this.refreshFailure ? `; refreshing it failed: ${describeError(this.refreshFailure)}` : ""}) and another operation holds the vault now; run it again`,
            )
          : error;
      },
    );
    this.key = key;
    this.confirmedAt = confirmedAt;
    this.confirmedStoreTime = storeTime;
    this.refreshFailure = undefined;
    await this.store.delete(old).catch(() => {});
    return { lapsed: true };
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.released = true;
    held.delete(this);
    const deleting = this.deleteObject();
    releasing.add(deleting);
    try {
      await deleting;
    } finally {
      releasing.delete(deleting);
    }
  }

  private async deleteObject(): Promise<void> {
    // A refresh in flight would otherwise leave the object it is writing behind us.
    await this.refreshing?.catch(() => {});
    await this.store.delete(this.key);
  }
}

/** Writes a lock object and looks at the others; gives up (deleting its own) if one conflicts. */
async function takeLock(store: ObjectStore, body: LockBody, clock: LockClock): Promise<{ key: string; confirmedAt: number; storeTime: number }> {
  const confirmedAt = clock.monotonic();
  const { key, storeTime } = await writeLock(store, body);
  let conflicts: { key: string; body: LockBody | undefined }[];
  try {
    conflicts = (await liveLocks(store, storeTime)).filter(
      (other) => other.key !== key && (body.kind === "exclusive" || other.body?.kind !== "shared"),
    );
  } catch (error) {
    await store.delete(key).catch(() => {});
    throw error;
  }
  if (conflicts.length > 0) {
    await store.delete(key).catch(() => {});
    const other = conflicts[0];
    const who = other.body
      ? `\`${other.body.operation}\` on ${other.body.host} (pid ${other.body.pid}, since ${other.body.created})`
      : `an operation whose lock object ${other.key} cannot be read (counted as held)`;
    throw new VaultBusyError(
      `the vault at ${store.location} is in use by ${who}; try again when it has finished. ` +
        `A lock left by a killed process expires ${STALE_AFTER_MS / 60000} minutes after its last refresh; ` +
        "if you are sure nothing uses the vault, `bulwark unlock --vault ...` removes every lock.",
    );
  }
  return { key, confirmedAt, storeTime };
}

async function writeLock(store: ObjectStore, body: LockBody): Promise<{ key: string; storeTime: number }> {
  const key = `locks/${randomHex(16)}`;
  await store.create(key, Buffer.from(JSON.stringify(body)));
  const info = await store.stat(key);
  if (!info) throw new VaultBusyError(`the lock object ${key} just written to ${store.location} is not there; try again`);
  return { key, storeTime: info.lastModified.getTime() };
}

/**
 * The locks that are not stale at `storeNow` (a time on the store's clock). A body that cannot be
 * read or parsed is returned without one: the caller counts it as held by an exclusive holder.
 */
export async function liveLocks(store: ObjectStore, storeNow: number): Promise<{ key: string; body: LockBody | undefined }[]> {
  const locks: { key: string; body: LockBody | undefined }[] = [];
  for await (const info of store.list("locks/")) {
    if (storeNow - info.lastModified.getTime() > STALE_AFTER_MS) continue;
    let body: LockBody | undefined;
    try {
      body = parseLockBody((await store.get(info.key)).toString("utf8"));
    } catch (error) {
      if (error instanceof ObjectNotFoundError) continue; // released while we looked
      body = undefined;
    }
    locks.push({ key: info.key, body });
  }
  return locks;
}

function parseLockBody(text: string): LockBody | undefined {
  try {
    const body = JSON.parse(text) as Partial<LockBody>;
    if ((body?.kind !== "shared" && body?.kind !== "exclusive") || typeof body.operation !== "string") return undefined;
    return { kind: body.kind, host: String(body.host), pid: Number(body.pid), created: String(body.created), operation: body.operation };
  } catch {
    return undefined;
  }
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
