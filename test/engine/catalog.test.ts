/**
 * The per-source catalog (runtime/engine/catalog.ts, issue 13): an item's latest point and its
 * point list are found by listing its entries, not by reading every manifest in the vault.
 * Scenarios: a lookup reads only the manifest it returns; a commit writes the entry before the
 * manifest, so a crash between the two leaves an entry that is skipped (and pruned), never a
 * point no lookup finds; a person with write access plants entries naming another source's point,
 * garbage names, or a fake "complete" marker; a vault from before the catalog (no entries) is
 * scanned once and its entries written; forget and prune; two backups of one source at once.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import { backupDisk, type PointDescription } from "../../runtime/engine/backup.ts";
import { catalogEntryName, catalogPrefix, latestPointOfSource, pointsOfSource } from "../../runtime/engine/catalog.ts";
import { forgetPoint } from "../../runtime/engine/chain.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { VaultLock } from "../../runtime/engine/locks.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { pruneVault } from "../../runtime/engine/prune.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { latestPointOf } from "../../runtime/sources/azure-disk.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { ReadCountingStore } from "../../runtime/store/read-counting.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { StoreView } from "../support/store-view.ts";
import { tempFolder } from "../cli/vaults.ts";

const PASSPHRASE = "catalog test passphrase";
const DISKS = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks";
const provider = new PassphraseProvider(PASSPHRASE);

/** Records every object read, so a test can say which manifests a lookup opened. */
class ReadRecorder extends StoreView {
  readonly read: string[] = [];
  override get(key: string) {
    this.read.push(key);
    return super.get(key);
  }
}

function disk(name: string): PointDescription {
  return { kind: "disk", source: { type: "azure-managed-disk", path: `${DISKS}/${name}` } };
}

/** A 128 KiB disk of fresh bytes: two blocks. */
function smallDisk() {
  const bytes = randomBytes(128 * 1024);
  return { size: bytes.length, read: async (offset: number, length: number) => Buffer.from(bytes.subarray(offset, offset + length)) };
}

let folder: string;
let vault: Vault;
const points: Record<string, PointManifest> = {};

/** The same vault opened over a store that records reads. */
async function recordedVault(): Promise<{ vault: Vault; store: ReadRecorder }> {
  const store = new ReadRecorder(new LocalFolderStore(folder), {});
  return { vault: await Vault.open(store, provider, { loadIndex: false }), store };
}

function manifestsRead(store: ReadRecorder): string[] {
  return store.read.filter((key) => key.startsWith("points/")).map((key) => key.slice("points/".length));
}

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const info of store.list(prefix)) found.push(info.key);
  return found.sort();
}

beforeAll(async () => {
  folder = path.join(await tempFolder("catalog"), "vault");
  vault = await Vault.init(new LocalFolderStore(folder), provider);
  points.a1 = await backupDisk(vault, smallDisk(), disk("a"));
  points.b1 = await backupDisk(vault, smallDisk(), disk("b"));
  points.a2 = await backupDisk(vault, smallDisk(), disk("a"));
});

describe("finding a source's points", () => {
  test("the latest point of a disk is found through its entries, reading its manifest and no other (ARM ids in any case)", async () => {
    const { vault: reader, store } = await recordedVault();
    const latest = await latestPointOf(reader, `${DISKS}/A`.toUpperCase(), "disk");
    expect(latest?.id).toBe(points.a2!.id);
    expect(manifestsRead(store)).toEqual([points.a2!.id]);
    // The marker, one listing of the source's prefix, its newest manifest: whatever the vault holds.
    const counting = new ReadCountingStore(new LocalFolderStore(folder));
    const counted = await Vault.open(counting, provider, { loadIndex: false });
    const opening = counting.reads.requests;
    expect((await latestPointOf(counted, `${DISKS}/a`, "disk"))?.id).toBe(points.a2!.id);
    expect(counting.reads.requests - opening).toBe(3);
    expect((await pointsOfSource(reader, disk("a"))).map((p) => p.id)).toEqual([points.a1!.id, points.a2!.id]);
    expect(await latestPointOf(reader, `${DISKS}/never-backed-up`, "disk")).toBeUndefined();
  });

  test("entries a person with write access plants (another source's point, a later time, garbage names) are ignored", async () => {
    const a = catalogPrefix(vault, disk("a"));
    const b1 = points.b1!;
    // B's point under A's prefix, dated after A's newest; and a later time for A's older point.
    await vault.store.create(`${a}29991231T235959.999Z~${b1.id}`, new Uint8Array(0));
    await vault.store.create(`${a}29991231T235959.998Z~${points.a1!.id}`, new Uint8Array(0));
    await vault.store.create(`${a}not-an-entry`, new Uint8Array(0));
    await vault.store.create(`${a}29991231T235959.997Z~${"f".repeat(32)}`, new Uint8Array(0));
    try {
      const { vault: reader } = await recordedVault();
      expect((await latestPointOf(reader, `${DISKS}/a`, "disk"))?.id).toBe(points.a2!.id);
      expect((await pointsOfSource(reader, disk("a"))).map((p) => p.id)).toEqual([points.a1!.id, points.a2!.id]);
    } finally {
      for (const name of await keys(vault.store, a)) if (name.includes("~") ? name.includes("/2999") : true) await vault.store.delete(name);
    }
  });

  test("a planted or damaged 'complete' marker is not trusted: the manifests are scanned and the marker written anew", async () => {
    const good = await vault.store.get("catalog/complete");
    const entry = catalogEntryName(vault, points.a2!)!;
    await vault.store.delete(entry);
    await vault.store.delete("catalog/complete");
    await vault.store.create("catalog/complete", Buffer.from('{"complete":true}'));
    const { vault: reader, store } = await recordedVault();
    expect((await latestPointOf(reader, `${DISKS}/a`, "disk"))?.id).toBe(points.a2!.id);
    // The scan read every manifest, wrote the missing entry back and sealed a new marker.
    expect(manifestsRead(store).length).toBeGreaterThanOrEqual(3);
    expect(await vault.store.stat(entry)).toBeDefined();
    expect((await vault.store.get("catalog/complete")).equals(good)).toBe(false);
    const { vault: again, store: againStore } = await recordedVault();
    expect((await latestPointOf(again, `${DISKS}/a`, "disk"))?.id).toBe(points.a2!.id);
    expect(manifestsRead(againStore)).toEqual([points.a2!.id]);
  });
});

describe("vaults and crashes", () => {
  test("a vault written before the catalog: its points are found by one scan, which writes every entry", async () => {
    const entries = await keys(vault.store, "catalog/");
    for (const name of entries) await vault.store.delete(name);
    const { vault: reader, store } = await recordedVault();
    expect((await latestPointOf(reader, `${DISKS}/b`, "disk"))?.id).toBe(points.b1!.id);
    expect(new Set(manifestsRead(store))).toEqual(new Set(Object.values(points).map((p) => p.id)));
    expect(await keys(vault.store, "catalog/")).toEqual(entries);
  });

  test("a commit that dies after its entry and before its manifest leaves the source's latest point as it was; prune removes the entry", async () => {
    const first = await backupDisk(vault, smallDisk(), disk("c"));
    const failing = new StoreView(new LocalFolderStore(folder), {
      beforeCreate: async (key) => {
        if (key.startsWith("points/")) throw new Error("the process died here");
      },
    });
    const dying = await Vault.open(failing, provider);
    await expect(backupDisk(dying, smallDisk(), disk("c"))).rejects.toThrow(/died here/);
    const prefix = catalogPrefix(vault, disk("c"));
    expect(await keys(vault.store, prefix)).toHaveLength(2);
    expect((await latestPointOf(vault, `${DISKS}/c`, "disk"))?.id).toBe(first.id);

    await prune();
    expect(await keys(vault.store, prefix)).toEqual([catalogEntryName(vault, first)]);
  });

  test("a forgotten point is skipped at once and its entry goes with the next prune", async () => {
    const older = await backupDisk(vault, smallDisk(), disk("d"));
    const newer = await backupDisk(vault, smallDisk(), disk("d"));
    await forgetPoint(vault, newer.id, "test");
    expect((await latestPointOf(vault, `${DISKS}/d`, "disk"))?.id).toBe(older.id);
    await prune();
    expect(await keys(vault.store, catalogPrefix(vault, disk("d")))).toEqual([catalogEntryName(vault, older)]);
  });

  test("two backups of one source at once both get entries, and latest is the newer", async () => {
    const both = await Promise.all([backupDisk(vault, smallDisk(), disk("e")), backupDisk(vault, smallDisk(), disk("e"))]);
    const newer = [...both].sort((x, y) => x.time.localeCompare(y.time) || x.id.localeCompare(y.id)).at(-1)!;
    expect(await keys(vault.store, catalogPrefix(vault, disk("e")))).toHaveLength(2);
    expect((await latestPointOfSource(vault, disk("e")))?.id).toBe(newer.id);
  });
});

async function prune(): Promise<void> {
  const fresh = await Vault.open(new LocalFolderStore(folder), provider);
  const lock = await VaultLock.acquire(fresh.store, "exclusive", "prune");
  const pool = new CodecPool(fresh.master, { threads: 1 });
  try {
    await pruneVault(fresh, pool, { lock });
  } finally {
    await pool.close();
    await lock.release();
  }
  // A vault opened before a prune refuses to back up (its index names deleted objects): open anew.
  vault = await Vault.open(new LocalFolderStore(folder), provider);
}
