/**
 * A Blob vault's lock objects live in a sibling container (`<vault container>-locks`) outside the
 * vault container's WORM policy (runtime/store/azure-blob.ts). Against a real Azurite: two holders
 * meet there as before (shared and exclusive, stale, refreshed, retaken), nothing but locks goes
 * there, and a lock an older version left under `locks/` in the vault container is still honoured.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BlobServiceClient } from "@azure/storage-blob";
import { removeAllLocks, STALE_AFTER_MS, VaultLock, type LockClock } from "../../runtime/engine/locks.ts";
import { UsageError, VaultBusyError } from "../../runtime/errors.ts";
import { openStore } from "../../runtime/store/open.ts";
import { lockContainerName } from "../../runtime/store/azure-blob.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { Azurite } from "../support/azurite.ts";
import { agedView } from "../support/store-view.ts";

let azurite: Azurite;
let service: BlobServiceClient;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  azurite = await Azurite.start();
  service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
});
afterAll(async () => {
  await azurite?.stop();
});

class ManualLockClock implements LockClock {
  at = 0;
  monotonic(): number {
    return this.at;
  }
}

/** A new vault container (and its locks container, as `bulwark init` makes them). */
async function newVault(container: string, prefix = ""): Promise<ObjectStore> {
  const opened = await openStore(`${azurite.blobEndpoint}/${container}${prefix ? `/${prefix}` : ""}`, env);
  await opened.prepare();
  return opened.store;
}

async function blobNames(container: string): Promise<string[]> {
  const client = service.getContainerClient(container);
  if (!(await client.exists())) return [];
  const names: string[] = [];
  for await (const blob of client.listBlobsFlat()) names.push(blob.name);
  return names.sort();
}

describe("a Blob vault's locks in their own container", () => {
  test("a backup's shared lock and a prune's exclusive lock meet in the locks container, never in the vault container", async () => {
    const store = await newVault("meet");
    const backup = await VaultLock.acquire(store, "shared", "backup");
    expect((await blobNames("meet-locks")).filter((n) => n.startsWith("locks/"))).toHaveLength(1);
    expect(await blobNames("meet")).toEqual([]);
    await expect(VaultLock.acquire(store, "exclusive", "prune")).rejects.toBeInstanceOf(VaultBusyError);
    const secondBackup = await VaultLock.acquire(store, "shared", "backup");
    expect(await blobNames("meet-locks")).toHaveLength(2);
    await backup.release();
    await expect(VaultLock.acquire(store, "exclusive", "prune")).rejects.toThrow(/in use by `backup`/);
    await secondBackup.release();
    const prune = await VaultLock.acquire(store, "exclusive", "prune");
    await expect(VaultLock.acquire(store, "shared", "backup")).rejects.toThrow(/in use by `prune`/);
    await prune.release();
    expect(await blobNames("meet-locks")).toEqual([]);
  });

  test("a refresh rewrites the lock in the locks container; a lock not refreshed for 30 minutes is stale and a prune takes the vault", async () => {
    const store = await newVault("stale");
    const clock = new ManualLockClock();
    const backup = await VaultLock.acquire(store, "shared", "backup", { clock });
    const [first] = await blobNames("stale-locks");
    await backup.refresh();
    const [second] = await blobNames("stale-locks");
    expect(second).not.toBe(first);
    expect(await blobNames("stale-locks")).toEqual([second]);
    // The storage's clock moves past the stale period without a refresh (the backup's process was paused).
    clock.at += STALE_AFTER_MS + 60_000;
    const aged = await agedView(store, STALE_AFTER_MS + 60_000, "locks/");
    const prune = await VaultLock.acquire(aged, "exclusive", "prune");
    // The paused backup finds its lock lapsed and cannot retake it while prune holds the vault.
    await expect(backup.assertHeld()).rejects.toThrow(/lapsed/);
    await prune.release();
    expect(await backup.assertHeld()).toEqual({ lapsed: true });
    await backup.release();
    expect(await blobNames("stale-locks")).toEqual([]);
  });

  test("objects under data/ and the vault's other keys stay in the vault container; locks keep the vault's prefix", async () => {
    const store = await newVault("split", "team-a");
    await store.create("data/00/pack", Buffer.from("pack bytes"));
    await store.create("config", Buffer.from("config bytes"));
    const lock = await VaultLock.acquire(store, "shared", "backup");
    expect(await blobNames("split")).toEqual(["team-a/config", "team-a/data/00/pack"]);
    const locks = await blobNames("split-locks");
    expect(locks).toHaveLength(1);
    expect(locks[0]).toMatch(/^team-a\/locks\/[0-9a-f]{32}$/);
    // The store shows both as one vault.
    const keys: string[] = [];
    for await (const info of store.list("")) keys.push(info.key);
    expect(keys.sort()).toEqual(["config", "data/00/pack", locks[0].slice("team-a/".length)]);
    await lock.release();
  });

  test("a lock an older version left under locks/ in the vault container is still honoured, and unlock removes it", async () => {
    const store = await newVault("legacy");
    const body = { kind: "exclusive", host: "old-host", pid: 4242, created: new Date().toISOString(), operation: "prune" };
    await service.getContainerClient("legacy").getBlockBlobClient("locks/0123456789abcdef0123456789abcdef").upload(JSON.stringify(body), JSON.stringify(body).length);
    await expect(VaultLock.acquire(store, "shared", "backup")).rejects.toThrow(/in use by `prune` on old-host \(pid 4242/);
    // The refused attempt left nothing behind in either container.
    expect(await blobNames("legacy-locks")).toEqual([]);
    expect(await removeAllLocks(store)).toBe(1);
    expect(await blobNames("legacy")).toEqual([]);
    const backup = await VaultLock.acquire(store, "shared", "backup");
    await backup.release();
  });

  test("a vault made before the locks container existed gets it with its first lock", async () => {
    await service.getContainerClient("older").create();
    const store = (await openStore(`${azurite.blobEndpoint}/older`, env)).store;
    const lock = await VaultLock.acquire(store, "shared", "backup");
    expect(await blobNames("older-locks")).toHaveLength(1);
    await lock.release();
  });

  test("a vault container whose locks container name would pass 63 characters is refused with the limit", () => {
    expect(lockContainerName("a".repeat(57))).toBe(`${"a".repeat(57)}-locks`);
    expect(() => lockContainerName("a".repeat(58))).toThrow(UsageError);
    expect(() => lockContainerName("a".repeat(58))).toThrow(/at most 57 characters/);
  });
});
