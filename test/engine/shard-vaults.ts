/**
 * Local-folder vaults for the tests of the sharded chunk index (issue 13: index-shards,
 * review-index, review-index-prune, prune-bounded): small disks backed up into a fixture, a copy of
 * it for each scenario to damage, prune and restore as the CLI runs them (one codec thread), and a
 * store view that records reads and lets another part act just before a create or a ranged read.
 * What differs between the files (the passphrase provider, the fixture's disks and folder label, a
 * lock) is a parameter.
 */
import { randomBytes } from "node:crypto";
import { cp } from "node:fs/promises";
import path from "node:path";
import { backupDisk, type PointDescription } from "../../runtime/engine/backup.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { shardTuning } from "../../runtime/engine/index-shards.ts";
import { VaultLock } from "../../runtime/engine/locks.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { pruneVault } from "../../runtime/engine/prune.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import type { KeyEncryptionKeyProvider } from "../../runtime/keys/provider.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { StoreView } from "../support/store-view.ts";
import { tempFolder } from "../cli/vaults.ts";

export const BLOCK = 64 * 1024;
const DISKS = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks";

/** A managed disk's point description, by the disk's name. */
export function disk(name: string): PointDescription {
  return { kind: "disk", source: { type: "azure-managed-disk", path: `${DISKS}/${name}` } };
}

/** A backup source that reads from bytes in memory. */
export function source(bytes: Buffer) {
  return { size: bytes.length, read: async (offset: number, length: number) => Buffer.from(bytes.subarray(offset, offset + length)) };
}

/**
 * Tiny shards, so a few small disks spread over several shards and blocks: blocks of 2 entries,
 * shards of about `shardEntries`, sharded from the first entry. The caller puts its saved tuning back.
 */
export function useTinyShards(shardEntries: number): void {
  Object.assign(shardTuning, { blockEntries: 2, shardEntries, shardFromEntries: 0 });
}

/**
 * One test file's fixture: a vault backed up once (in beforeAll), the bytes and points of its
 * disks, and a copy of it for each scenario. `open` and `copyOf` are bound, to be used unqualified.
 */
export class ShardFixture {
  /** The fixture vault's folder, once backed up. */
  folder = "";
  readonly disks: Record<string, Buffer> = {};
  readonly points: Record<string, PointManifest> = {};
  private readonly provider: KeyEncryptionKeyProvider;
  private readonly label: string;

  /** `label` names the scratch folders: `<label>-fixture`, and `<label>-<scenario>` for the copies. */
  constructor(provider: KeyEncryptionKeyProvider, label: string) {
    this.provider = provider;
    this.label = label;
  }

  /** A new vault holding one point of each named disk (random bytes, `blocks` blocks of 64 KiB), not compacted. */
  async backUp(names: string[], blocks: number): Promise<void> {
    this.folder = path.join(await tempFolder(`${this.label}-fixture`), "vault");
    const vault = await Vault.init(new LocalFolderStore(this.folder), this.provider);
    for (const name of names) {
      this.disks[name] = randomBytes(blocks * BLOCK);
      this.points[name] = await backupDisk(vault, source(this.disks[name]), disk(name));
    }
  }

  /** The vault in a folder, through a store view when one is given (one that watches or hooks its calls). */
  readonly open = (folder: string, store: ObjectStore = new LocalFolderStore(folder)): Promise<Vault> => Vault.open(store, this.provider);

  /** A copy of the fixture vault in a new scratch folder, so each scenario damages its own. */
  readonly copyOf = async (scenario: string): Promise<string> => {
    const folder = path.join(await tempFolder(`${this.label}-${scenario}`), "vault");
    await cp(this.folder, folder, { recursive: true });
    return folder;
  };
}

/**
 * A prune as the CLI runs it, under an exclusive lock taken here and released after, or under the
 * lock given (one paused past its lock, not knowing it), which stays the caller's. When the prune
 * fails, a failing release (a test deleted the lock object: a lapsed lock) does not hide its error.
 */
export async function prune(vault: Vault, options: { lock?: VaultLock } = {}) {
  const given = options.lock;
  const lock = given ?? (await VaultLock.acquire(vault.store, "exclusive", "prune"));
  const pool = new CodecPool(vault.master, { threads: 1 });
  let report;
  try {
    report = await pruneVault(vault, pool, { lock });
  } catch (error) {
    await pool.close();
    if (!given) await lock.release().catch(() => {});
    throw error;
  }
  await pool.close();
  if (!given) await lock.release();
  return report;
}

/** A point's bytes, restored whole into memory. */
export async function restore(vault: Vault, point: PointManifest): Promise<Buffer> {
  const out = Buffer.alloc(point.size);
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    await restoreContent(vault, pool, point, { needsZeros: false, write: async (offset, data) => void data.copy(out, offset) });
  } finally {
    await pool.close();
  }
  return out;
}

/** The keys under a prefix of a local-folder vault, sorted. */
export async function keysUnder(folder: string, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const info of new LocalFolderStore(folder).list(prefix)) found.push(info.key);
  return found.sort();
}

/** Another part acting at one moment: run once, before the first call on a key with the prefix. */
export interface StoreHook {
  prefix: string;
  run: () => Promise<void>;
}

/** Records every read, and runs a hook once before a create, or a ranged read, of a key with its prefix. */
export class HookedStore extends StoreView {
  readonly reads: { kind: "get" | "range"; key: string }[] = [];
  beforeCreate?: StoreHook;
  beforeRange?: StoreHook;

  override get(key: string) {
    this.reads.push({ kind: "get", key });
    return super.get(key);
  }

  override async getRange(key: string, offset: number, length: number) {
    this.reads.push({ kind: "range", key });
    const hook = this.beforeRange;
    if (hook && key.startsWith(hook.prefix)) {
      this.beforeRange = undefined;
      await hook.run();
    }
    return super.getRange(key, offset, length);
  }

  override async create(key: string, data: Uint8Array) {
    const hook = this.beforeCreate;
    if (hook && key.startsWith(hook.prefix)) {
      this.beforeCreate = undefined;
      await hook.run();
    }
    return super.create(key, data);
  }
}
