/**
 * Issue 13, a hostile review of data-key epochs (keyring.ts) and the per-source catalog
 * (catalog.ts), in process on small local vaults. Each scenario is what a person with write access
 * to storage, or another part running at the same time, can do; the tests assert what a reader
 * opening the vault afresh gets back.
 *   - an epoch object deleted (or its number made again with another key) between a writer's open
 *     and its commit: the commit must fail, not report a point no one else can open;
 *   - catalog/complete copied in from another vault sharing the master keys (init --like), over a
 *     vault whose points have no entries: the lookup must still find its points;
 *   - a rotation landing while prune writes its index objects, and an epoch object deleted then:
 *     every point must still restore for a fresh opener;
 *   - an object planted as the last ten-digit epoch number: a rotation must not report an epoch
 *     that every opener refuses (new data would stay under the old key);
 *   - a point's entry deleted: verify must name the point, and prune write the entry again;
 *   - a disk's ARM id written in other case by another caller: one source, one latest point;
 *   - an entry planted with a future time naming the source's older point: "latest" stays the real
 *     latest.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { beforeAll, expect, test } from "vitest";
import { backupDisk, type PointDescription } from "../../runtime/engine/backup.ts";
import { catalogEntryName, catalogPrefix, latestPointOfSource } from "../../runtime/engine/catalog.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { createEpoch, epochName } from "../../runtime/engine/keyring.ts";
import { VaultLock } from "../../runtime/engine/locks.ts";
import { pruneVault } from "../../runtime/engine/prune.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { verifyVault } from "../../runtime/engine/verify.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { StoreView } from "../support/store-view.ts";
import { tempFolder } from "../cli/vaults.ts";
import { rotateDataKey } from "../../runtime/cli/key-action.ts";
import { isKeyring } from "../../runtime/engine/crypto.ts";

const provider = new PassphraseProvider("review of epochs and catalog");
const DISKS = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks";

function disk(name: string): PointDescription {
  return { kind: "disk", source: { type: "azure-managed-disk", path: `${DISKS}/${name}` } };
}

/** A 64 KiB disk of fresh bytes: one block. */
function smallDisk() {
  const bytes = randomBytes(64 * 1024);
  return { size: bytes.length, read: async (offset: number, length: number) => Buffer.from(bytes.subarray(offset, offset + length)) };
}

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const info of store.list(prefix)) found.push(info.key);
  return found.sort();
}

let root: string;
beforeAll(async () => {
  root = await tempFolder("review-epochs-catalog");
});

test("a writer whose sealing epoch object is deleted (and its number made again with another key) before its commit fails the commit instead of reporting a point no one else can open", async () => {
  const store = new LocalFolderStore(path.join(root, "epoch-lost"));
  const admin = await Vault.init(store, provider);
  await createEpoch(store, admin.master, admin.config.id, 1);
  // The writer opens now: it seals under epoch 1.
  const writer = await Vault.open(store, provider);

  // Someone with write access deletes epochs/1; a rotation then makes epoch 1 again, with another key.
  await store.delete(epochName(1));
  const admin2 = await Vault.open(store, provider);
  await createEpoch(store, admin2.master, admin2.config.id, 1);

  await expect(backupDisk(writer, smallDisk(), disk("lost"))).rejects.toThrow(/epoch object epochs\/0000000001.*(gone|another key)/);
  // Whatever the writer left, no manifest that a fresh opener cannot read claims to be a point.
  expect(await keys(store, "points/")).toEqual([]);
});

test("a writer whose sealing epoch object is deleted before its commit fails the commit (the older epoch is newest again for fresh openers)", async () => {
  const store = new LocalFolderStore(path.join(root, "epoch-deleted"));
  const admin = await Vault.init(store, provider);
  await createEpoch(store, admin.master, admin.config.id, 1);
  const writer = await Vault.open(store, provider);
  await store.delete(epochName(1));

  await expect(backupDisk(writer, smallDisk(), disk("deleted"))).rejects.toThrow(/epoch object epochs\/0000000001/);
  expect(await keys(store, "points/")).toEqual([]);
});

test("catalog/complete copied in from another vault that shares the master keys (init --like) does not hide the points of a vault whose entries are missing", async () => {
  const storeA = new LocalFolderStore(path.join(root, "complete-a"));
  const storeB = new LocalFolderStore(path.join(root, "complete-b"));
  const a = await Vault.init(storeA, provider);
  const b = await Vault.init(storeB, provider, {}, a.master);
  const point = await backupDisk(b, smallDisk(), disk("c"));

  // B as a vault from before the catalog: its points have no entries and no marker says otherwise.
  for (const key of await keys(storeB, "catalog/")) await storeB.delete(key);
  // A's marker, sealed under the same master keys, planted in B.
  await storeB.create("catalog/complete", await storeA.get("catalog/complete"));

  const reader = await Vault.open(storeB, provider, { loadIndex: false });
  expect((await latestPointOfSource(reader, point))?.id).toBe(point.id);
  // The scan wrote the missing entry.
  expect((await keys(storeB, catalogPrefix(reader, point))).length).toBe(1);
});

test("an entry planted with a future time naming the source's older point does not make that point the latest", async () => {
  const store = new LocalFolderStore(path.join(root, "future-entry"));
  const vault = await Vault.init(store, provider);
  const older = await backupDisk(vault, smallDisk(), disk("f"));
  const newer = await backupDisk(vault, smallDisk(), disk("f"));
  await store.create(`${catalogPrefix(vault, older)}20991231T235959.999Z~${older.id}`, new Uint8Array(0));

  const reader = await Vault.open(store, provider, { loadIndex: false });
  expect((await latestPointOfSource(reader, older))?.id).toBe(newer.id);
});

/** Prunes the vault at `store` as a process that opened it now, with `onIndexCreate` run before its first index object is written. */
async function pruneWhile(store: ObjectStore, onIndexCreate: () => Promise<void>): Promise<void> {
  let fired = false;
  const view = new StoreView(store, {
    beforeCreate: async (key) => {
      if (fired || !key.startsWith("index/")) return;
      fired = true;
      await onIndexCreate();
    },
  });
  const vault = await Vault.open(view, provider);
  const lock = await VaultLock.acquire(view, "exclusive", "prune");
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    await pruneVault(vault, pool, { lock });
  } finally {
    await pool.close();
    await lock.release();
  }
  expect(fired).toBe(true);
}

/** What a fresh opener finds when it reads every point and every byte of every pack. */
async function verifiedAfresh(store: ObjectStore) {
  const vault = await Vault.open(store, provider);
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    return await verifyVault(vault, pool, { readDataPercent: 100 });
  } finally {
    await pool.close();
  }
}

test("a rotation landing while prune writes its index objects leaves every point readable for a fresh opener", async () => {
  const store = new LocalFolderStore(path.join(root, "prune-rotation"));
  const vault = await Vault.init(store, provider);
  await backupDisk(vault, smallDisk(), disk("p"));
  await createEpoch(store, vault.master, vault.config.id, 1);
  await backupDisk(await Vault.open(store, provider), smallDisk(), disk("p"));

  await pruneWhile(store, async () => void (await createEpoch(store, vault.master, vault.config.id, 2)));

  const report = await verifiedAfresh(store);
  expect(report.problems).toEqual([]);
  expect(report.points).toBe(2);
});

test("an epoch object deleted while prune writes its index under it makes prune stop before it deletes the old index objects, and every point still restores", async () => {
  const store = new LocalFolderStore(path.join(root, "prune-epoch-deleted"));
  const vault = await Vault.init(store, provider);
  await backupDisk(vault, smallDisk(), disk("q"));
  // Epoch 1 seals nothing yet but the index prune writes.
  await createEpoch(store, vault.master, vault.config.id, 1);

  await expect(pruneWhile(store, () => store.delete(epochName(1)))).rejects.toThrow(/epoch object epochs\/0000000001/);

  const report = await verifiedAfresh(store);
  expect(report.problems).toEqual([]);
  expect(report.points).toBe(1);
});

test("a point whose catalog entry was deleted is named by verify, and prune writes the entry again so lookups find it", async () => {
  const store = new LocalFolderStore(path.join(root, "entry-deleted"));
  const vault = await Vault.init(store, provider);
  await backupDisk(vault, smallDisk(), disk("v"));
  const newer = await backupDisk(vault, smallDisk(), disk("v"));
  await store.delete(catalogEntryName(vault, newer)!);

  const before = await verifiedAfresh(store);
  expect(before.problems).toEqual([expect.stringContaining(`point ${newer.id} has no catalog entry`)]);

  await pruneWhile(store, async () => {});
  expect((await verifiedAfresh(store)).problems).toEqual([]);
  expect((await latestPointOfSource(await Vault.open(store, provider, { loadIndex: false }), newer))?.id).toBe(newer.id);
});

test("a disk whose ARM id another caller writes in other case is one source: its latest point is found whichever case asks", async () => {
  const store = new LocalFolderStore(path.join(root, "arm-case"));
  const vault = await Vault.init(store, provider);
  await backupDisk(vault, smallDisk(), disk("Data-Disk"));
  const upper: PointDescription = { kind: "disk", source: { type: "azure-managed-disk", path: `${DISKS}/Data-Disk`.toUpperCase() } };
  const newer = await backupDisk(vault, smallDisk(), upper);

  const reader = await Vault.open(store, provider, { loadIndex: false });
  for (const id of [`${DISKS}/data-disk`, `${DISKS}/Data-Disk`]) {
    expect((await latestPointOfSource(reader, { kind: "disk", source: { type: "azure", path: id } }))?.id).toBe(newer.id);
  }
});

test("an object planted as epochs/9999999999 makes a rotation fail naming it, instead of reporting an epoch every opener refuses while new data stays under the old key", async () => {
  const store = new LocalFolderStore(path.join(root, "epoch-overflow"));
  const vault = await Vault.init(store, provider);
  await store.create("epochs/9999999999", Buffer.from("planted"));

  await expect(rotateDataKey(await Vault.open(store, provider, { loadIndex: false }))).rejects.toThrow(/epochs\/9999999999/);

  const fresh = await Vault.open(store, provider, { loadIndex: false });
  expect(fresh.epochs.refused.map((r) => r.name)).toEqual(["epochs/9999999999"]);
  expect(isKeyring(fresh.master.dataKey) && fresh.master.dataKey.sealingKeyId).toBe(isKeyring(vault.master.dataKey) && vault.master.dataKey.sealingKeyId);
});
