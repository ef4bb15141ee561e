/**
 * A lock's release meets its own refresh: the refresh timer can be writing the lock's next object
 * when the holder releases it (the command ends, or Ctrl-C). Whatever the order, nothing may stay
 * in `locks/` afterwards: a left lock object makes the vault look busy to every other command until
 * it expires or someone runs `bulwark unlock`.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, test } from "vitest";
import { VaultLock } from "../../runtime/engine/locks.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "lock-release-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Gate {
  /** Settles when the held write has begun. */
  reached: Promise<void>;
  /** Lets the held write go on. */
  open(): void;
}

/** A view of the store whose next lock write, once `holdNext()` is called, waits for `open()`. */
function gatedLockWrites(store: ObjectStore): { view: ObjectStore; holdNext(): Gate } {
  let pending: { markReached: () => void; wait: Promise<void> } | undefined;
  const view: ObjectStore = Object.create(store);
  view.create = async (key, data) => {
    const current = pending;
    if (current && key.startsWith("locks/")) {
      pending = undefined;
      current.markReached();
      await current.wait;
    }
    return store.create(key, data);
  };
  return {
    view,
    holdNext() {
      let markReached!: () => void;
      let open!: () => void;
      const reached = new Promise<void>((resolve) => (markReached = resolve));
      const wait = new Promise<void>((resolve) => (open = resolve));
      pending = { markReached, wait };
      return { reached, open };
    },
  };
}

async function lockObjects(): Promise<string[]> {
  return readdir(path.join(root, "locks")).catch(() => []);
}

test("a release while a refresh is writing the next lock object leaves no lock object behind", async () => {
  const store = new LocalFolderStore(root);
  const gated = gatedLockWrites(store);
  const lock = await VaultLock.acquire(gated.view, "shared", "backup");
  expect(await lockObjects()).toHaveLength(1);
  const held = gated.holdNext();
  const refreshing = lock.refresh();
  await held.reached;
  const releasing = lock.release();
  held.open();
  await Promise.all([refreshing, releasing]);
  expect(await lockObjects()).toEqual([]);
});

test("a refresh that starts after the release writes nothing", async () => {
  const store = new LocalFolderStore(root);
  const lock = await VaultLock.acquire(store, "exclusive", "prune");
  await lock.release();
  await lock.refresh();
  expect(await lockObjects()).toEqual([]);
});
