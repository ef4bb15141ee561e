/**
 * A vault: the layer above the object store. It owns the config and key objects, the chunk index
 * (loaded from every index object), the point manifests, and reading chunks back. Writing new
 * chunks goes through a VaultWriter (vault-writer.ts).
 *
 * Layout (all objects write-once):
 *   config              plain JSON: format, version, chunking parameters (no secrets)
 *   keys/<id>           master keys wrapped under one key-encryption key
 *   data/<xx>/<pack>    packs of sealed chunks
 *   index/<name>        sealed lists of which chunk is where, written after their packs
 *   index-gen/<n>       the index compacted by prune into shards index-shards/<n>/<prefix> (index-shards.ts)
 *   points/<id>         sealed recovery-point manifests, written last
 *   locks/<name>        who is using the vault (see locks.ts)
 */
import { createHmac, randomBytes } from "node:crypto";
import { constants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { BulwarkError, IntegrityError, NotFoundError, ObjectExistsError, ObjectNotFoundError, UsageError } from "../errors.ts";
import type { KeyEncryptionKeyProvider } from "../keys/provider.ts";
import type { ObjectStore } from "../store/store.ts";
import { decodeChunk, hexId } from "./chunk-codec.ts";
import type { ChunkLocation } from "./chunk-index.ts";
import { baseKeyBytes, isKeyring, labelAssociatedData, openObject, sealObject, type SealFormat } from "./crypto.ts";
import { forEachIndexEntry } from "./index-file.ts";
import { generationName, listGenerations, readNewestGeneration, ShardReader } from "./index-shards.ts";
import { addEpochs, configDigest, epochKeyring, newMasterKeys, readEpochs, unlockMasterKeys, writeKeyObject, type Epochs, type KeyObject, type MasterKeys } from "./keyring.ts";
import { packKey } from "./pack.ts";
import { sourceIdentity, type PointManifest } from "./point.ts";
import { describeMissing, missingPoints } from "./chain.ts";
import { markCatalogComplete } from "./catalog.ts";
import { VaultIndex } from "./vault-index.ts";

/**
 * Version 2 bound the master keys to the config (masterKeyCheck) and chained each source's points
 * (chain.ts). Version 3 keeps an Azure Blob vault's lock objects in the sibling
 * container `<vault>-locks` (runtime/store/azure-blob.ts): a Bulwark of version 2 would look for
 * locks only in the vault container, miss a running backup's lock and prune what it needs, so it
 * must refuse the vault, and it does (it opens only version 2). Version 4 (this one) seals each
 * chunk under a key derived from its id and each other object under a key derived from a random
 * salt in its header (crypto.ts), so no key's count of random-nonce encryptions grows with the
 * vault; a Bulwark of version 3 refuses it (it opens only version 3). Version 5 (this one) adds
 * data-key epochs (`bulwark key rotate --data`, keyring.ts): every chunk and object names the
 * epoch key that sealed it (crypto.ts), which a Bulwark of version 4 could not open, so it refuses
 * the vault (it opens only versions 3 and 4). Version 3 and 4 vaults open and are written as they
 * are (their format is the vault's `master.format`) and have one data key; older vaults are
 * refused with a clear message: nothing migrates.
 */
export const VAULT_VERSION = 5;

/** The versions this Bulwark opens; a vault's version is also how it seals (SealFormat). */
export type VaultVersion = 3 | 4 | 5;

export interface VaultConfig {
  format: "bulwark-vault";
  version: VaultVersion;
  id: string;
  created: string;
  /** Block size of disk images' block maps. */
  blockSize: number;
  /** Content-defined chunking of files: minimum, average and maximum chunk size. */
  chunker: { min: number; avg: number; max: number };
  /** Packs are closed once they reach this size. */
  packSize: number;
  zstdLevel: number;
  /**
   * A keyed fingerprint of the master keys, written once at init. A key object whose keys do not
   * match it is refused: wrapping needs only the public half of a Key Vault key, so anyone who can
   * write keys/ could otherwise plant master keys of their own and read every later backup.
   */
  masterKeyCheck: string;
}

export const DEFAULT_CONFIG = {
  blockSize: 64 * 1024,
  chunker: { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 },
  packSize: 32 * 1024 * 1024,
  zstdLevel: 1,
};

export class Vault {
  readonly store: ObjectStore;
  readonly config: VaultConfig;
  /** The master keys (in version 5, the keyring of data-key epochs), and the format the vault seals in (its version). */
  readonly master: MasterKeys & { format: SealFormat };
  /** Version 5: the epoch objects read, valid and refused (keyring.ts). */
  epochs: Epochs = { valid: [], refused: [], highestNumber: 0 };
  readonly keyObject: KeyObject;
  index = new VaultIndex();
  /** Names of the index objects loaded into `index` (the delta: those the newest generation does not cover). */
  readonly indexObjects: string[] = [];
  /** Key objects that opened with the given key but hold master keys not this vault's (planted): verify reports them. */
  foreignKeyObjects: string[] = [];
  private readonly configBytes: Buffer;

  private constructor(store: ObjectStore, configBytes: Buffer, config: VaultConfig, master: MasterKeys, keyObject: KeyObject, epochs?: Epochs) {
    this.store = store;
    this.configBytes = configBytes;
    this.config = config;
    const dataKey = config.version >= 5 ? epochKeyring(master, epochs ?? this.epochs) : master.dataKey;
    this.master = { dataKey, idKey: master.idKey, format: config.version };
    this.epochs = epochs ?? this.epochs;
    this.keyObject = keyObject;
  }

  static async init(
    store: ObjectStore,
    provider: KeyEncryptionKeyProvider,
    /** `version: 3` makes a vault of the previous format (for tests that prove it still works). */
    overrides: Partial<Omit<VaultConfig, "format" | "id" | "created" | "masterKeyCheck">> = {},
    /** Another vault's master keys (init --like: runtime/engine/copy.ts), so points and packs are valid in both; its epochs are its own. */
    like: MasterKeys = newMasterKeys(),
  ): Promise<Vault> {
    const master = { dataKey: baseKeyBytes(like.dataKey), idKey: like.idKey };
    if (await store.stat("config")) {
      throw new UsageError(`a vault already exists at ${store.location}; use it, or choose another location`);
    }
    const id = randomBytes(16).toString("hex");
    const config: VaultConfig = {
      format: "bulwark-vault",
      version: VAULT_VERSION,
      id,
      created: new Date().toISOString(),
      ...DEFAULT_CONFIG,
      ...overrides,
      masterKeyCheck: masterKeyCheck(master, id),
    };
    const configBytes = Buffer.from(JSON.stringify(config, null, 1));
    // The key first, then the config: a vault exists once its config does, and then it can be opened.
    const keyObject = await writeKeyObject(store, provider, master, configDigest(configBytes));
    try {
      await store.create("config", configBytes);
    } catch (error) {
      await store.delete(`keys/${keyObject.id}`);
      if (error instanceof ObjectExistsError) {
        throw new UsageError(`a vault was created at ${store.location} at the same moment by another process; use it`);
      }
      throw error;
    }
    const vault = new Vault(store, configBytes, config, master, keyObject);
    // No manifest yet: every point will have its catalog entry, so lookups need never scan.
    await markCatalogComplete(vault);
    return vault;
  }

  static async open(store: ObjectStore, provider: KeyEncryptionKeyProvider, options: { loadIndex?: boolean } = {}): Promise<Vault> {
    let configBytes: Buffer;
    try {
      configBytes = await store.get("config");
    } catch (error) {
      if (error instanceof ObjectNotFoundError) {
        throw new NotFoundError(`no vault at ${store.location}: check the location, or create one with \`bulwark init --vault ...\``);
      }
      throw error;
    }
    let config: VaultConfig;
    try {
      config = JSON.parse(configBytes.toString("utf8")) as VaultConfig;
    } catch {
      throw new IntegrityError(`the config object of the vault at ${store.location} is damaged`);
    }
    if (config?.format !== "bulwark-vault") {
      // Key objects beside it mean this was a vault whose config is damaged, not some other folder.
      for await (const _ of store.list("keys/")) {
        throw new IntegrityError(`the config object of the vault at ${store.location} is damaged (it names no Bulwark vault format)`);
      }
      throw new NotFoundError(`${store.location} does not hold a Bulwark vault`);
    }
    if (config.version !== VAULT_VERSION && config.version !== 4 && config.version !== 3) {
      // A config this version wrote, then damaged, fails the digest its key objects hold.
      await unlockMasterKeys(store, provider, configDigest(configBytes), () => true).catch((error: unknown) => {
        if (error instanceof IntegrityError) throw error;
      });
      if (typeof config.version === "number" && config.version < VAULT_VERSION) {
        throw new UsageError(
          `the vault at ${store.location} has format version ${config.version}, written by an earlier Bulwark; this Bulwark reads versions 3 to ${VAULT_VERSION} ` +
            "(master keys bound to the config, chained points, lock objects outside WORM) and does not migrate: restore from it with the Bulwark that wrote it, and make a new vault with `bulwark init`",
        );
      }
      throw new UsageError(`the vault at ${store.location} has format version ${config.version}; upgrade Bulwark to open it`);
    }
    if (typeof config.masterKeyCheck !== "string") {
      throw new IntegrityError(`the config object of the vault at ${store.location} is damaged (it has no master key check)`);
    }
    const { master, keyObject, foreign } = await unlockMasterKeys(
      store,
      provider,
      configDigest(configBytes),
      (keys) => masterKeyCheck(keys, config.id) === config.masterKeyCheck,
    );
    const epochs = config.version >= 5 ? await readEpochs(store, master, config.id) : undefined;
    const vault = new Vault(store, configBytes, config, master, keyObject, epochs);
    vault.foreignKeyObjects = foreign;
    if (options.loadIndex !== false) await vault.loadIndex();
    return vault;
  }

  get keys(): MasterKeys {
    return this.master;
  }

  async loadIndex(): Promise<void> {
    await this.reloadIndex();
  }

  /**
   * Loads the index objects written since this vault was opened (by other writers, or by
   * promotion). If one it loaded is gone (a prune consolidated them), or a prune made a newer
   * generation of shards, the index is loaded anew, so no chunk stays findable that prune removed.
   * Index objects the newest generation covers (a prune stopped before deleting them) are not
   * loaded: its shards hold their entries.
   */
  async reloadIndex(): Promise<void> {
    const present: string[] = [];
    for await (const info of this.store.list("index/")) present.push(info.key);
    // Generations after index objects: a prune between the two listings covered what the first listed.
    const generations = await listGenerations(this.store);
    // After the listing: an index object listed was sealed under an epoch whose object existed before
    // it, and a listing after a write sees it (Azure Storage's strong consistency: "subsequent reads see
    // the latest update", MicrosoftDocs/azure-docs articles/storage/blobs/concurrency-manage.md).
    await this.refreshEpochs();
    const presentSet = new Set(present);
    const newest = generations.sort().at(-1);
    const current = this.index.generation && generationName(this.index.generation.sequence);
    if (this.indexObjects.some((name) => !presentSet.has(name)) || newest !== current) {
      const generation = newest === undefined ? undefined : await readNewestGeneration(this.store, this.master.dataKey, [newest]);
      this.index = new VaultIndex(generation && new ShardReader(this.store, this.master.dataKey, generation));
      this.indexObjects.length = 0;
    }
    const known = new Set([...this.indexObjects, ...(this.index.generation?.covers ?? [])]);
    const names = present.filter((name) => !known.has(name));
    await mapLimit(names, 8, async (name) => {
      const sealed = await this.store.get(name);
      forEachIndexEntry(this.master.dataKey, name, sealed, (pack, type, id, offset, length, rawLength) =>
        this.index.addEntry(id, pack, offset, length, rawLength, type),
      );
      this.indexObjects.push(name);
    });
  }

  /**
   * Adds the epochs made since this vault was opened (another process's rotation), so what other
   * writers sealed under them opens here; this process keeps sealing under the epoch it opened
   * with. Whether any was added.
   */
  async refreshEpochs(): Promise<boolean> {
    if (!isKeyring(this.master.dataKey)) return false;
    const known = new Set([...this.epochs.valid, ...this.epochs.refused].map((e) => e.name));
    const added = await readEpochs(this.store, this.master, this.config.id, known);
    addEpochs(this.master.dataKey, added);
    this.epochs = {
      valid: [...this.epochs.valid, ...added.valid],
      refused: [...this.epochs.refused, ...added.refused],
      highestNumber: added.highestNumber,
    };
    return added.valid.length > 0;
  }

  /** Where a chunk lies; an id the shards hold must be prepared first (vault.index.prepare). */
  locate(id: Uint8Array): ChunkLocation {
    const location = this.index.lookup(id);
    if (!location || location === "pending") {
      throw new IntegrityError(
        `chunk ${hexId(id)} is referenced but not in the vault's index: the vault is damaged. Run \`bulwark verify\`.`,
      );
    }
    return location;
  }

  /** Reads and checks one chunk (on this thread: for metadata and small reads). */
  async readChunk(type: number, id: Uint8Array): Promise<Buffer> {
    await this.index.prepare([id], { present: true });
    const location = this.locate(id);
    if (location.type !== type) throw new IntegrityError(`chunk ${hexId(id)} has the wrong type in the index`);
    const sealed = await this.store.getRange(packKey(location.pack), location.offset, location.length);
    return decodeChunk(this.master, type, id, sealed, location.rawLength, `pack ${location.pack}`);
  }

  // ---- points ----

  async writePoint(manifest: PointManifest): Promise<void> {
    const plain = zstdCompressSync(Buffer.from(JSON.stringify(manifest)), {
      params: { [constants.ZSTD_c_compressionLevel]: 3 },
    });
    await this.store.create(`points/${manifest.id}`, sealObject(this.master.dataKey, plain, labelAssociatedData("point", manifest.id), this.master.format));
  }

  async readPoint(id: string): Promise<PointManifest> {
    const sealed = await this.store.get(`points/${id}`);
    const open = () => openObject(this.master.dataKey, sealed, labelAssociatedData("point", id), `point ${id}`);
    let plain: Buffer;
    try {
      plain = open();
    } catch (error) {
      // A point another writer sealed under an epoch made after this vault was opened.
      if (!(error instanceof IntegrityError) || !(await this.refreshEpochs())) throw error;
      plain = open();
    }
    const manifest = JSON.parse(zstdDecompressSync(plain).toString("utf8")) as PointManifest;
    if (manifest.id !== id) throw new IntegrityError(`point object ${id} holds the manifest of ${manifest.id}`);
    return manifest;
  }

  async listPointIds(): Promise<string[]> {
    const ids: string[] = [];
    for await (const info of this.store.list("points/")) ids.push(info.key.slice("points/".length));
    return ids;
  }

  /** Every point, oldest first. */
  /**
   * Every point, oldest first. Strict by default: a damaged manifest throws, because whoever acts on
   * the whole list (prune, retention) must not act without it. With skipDamaged, damaged manifests
   * are left out and named through onDamaged, so one damaged point does not hide all the others.
   */
  async listPoints(options: { skipDamaged?: boolean; onDamaged?: (id: string, error: unknown) => void } = {}): Promise<PointManifest[]> {
    const read = await mapLimit(await this.listPointIds(), 8, async (id) => {
      try {
        return await this.readPoint(id);
      } catch (error) {
        // A point deleted between listing and reading (retention, forget) is simply gone.
        if (error instanceof ObjectNotFoundError) return undefined;
        if (!options.skipDamaged || !(error instanceof IntegrityError)) throw error;
        options.onDamaged?.(id, error);
        return undefined;
      }
    });
    const points = read.filter((p): p is PointManifest => p !== undefined);
    return points.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
  }

  /** An id, a unique prefix of one, or "latest" (optionally among points matching a filter). */
  async resolvePoint(reference: string, filter?: (p: PointManifest) => boolean): Promise<PointManifest> {
    if (reference === "latest") {
      const damaged: string[] = [];
      const points = (await this.listPoints({ skipDamaged: true, onDamaged: (id) => damaged.push(id) })).filter(filter ?? (() => true));
      if (damaged.length > 0) {
        // A damaged manifest has no readable time: it might be the newest. Say so rather than guess.
        throw new IntegrityError(
          `"latest" is ambiguous: the manifests of ${damaged.length} points are damaged (${damaged.map((d) => d.slice(0, 12)).join(", ")}); ` +
            "run `bulwark verify`, and restore a point by its id",
        );
      }
      const latest = points.at(-1);
      if (!latest) throw new NotFoundError(`the vault at ${this.store.location} holds no recovery point yet`);
      // A newer point of the same source that was deleted outside retention: "latest" would silently be an older one.
      const source = sourceIdentity(latest);
      const newer = (await missingPoints(this, points)).filter(
        (m) => m.source && sourceIdentity({ kind: m.source.kind, source: m.source }) === source && (!m.time || m.time > latest.time),
      );
      if (newer.length > 0) {
        throw new IntegrityError(
          `"latest" of ${latest.source.path} would be point ${latest.id.slice(0, 12)}, but a newer point of it is missing: ${describeMissing(newer.at(-1)!)}. ` +
            "Run `bulwark verify`; restore a point by its id if you accept an older one",
        );
      }
      return latest;
    }
    if (!/^[0-9a-f]{4,64}$/.test(reference)) {
      throw new UsageError(`"${reference}" is not a point id: give an id, a unique prefix of at least 4 characters, or "latest"`);
    }
    // A whole id is read directly: listing every point costs a request per 5,000 of them.
    if (reference.length === 32 && (await this.store.stat(`points/${reference}`))) return this.readPoint(reference);
    const matches = (await this.listPointIds()).filter((id) => id.startsWith(reference));
    if (matches.length === 0) throw new NotFoundError(`no recovery point ${reference} in the vault; list them with \`bulwark points\``);
    if (matches.length > 1) throw new UsageError(`"${reference}" matches ${matches.length} points; give more characters`);
    return this.readPoint(matches[0]);
  }
}

/** A keyed fingerprint of the master keys (HMAC under the id key), bound to the vault's id. */
export function masterKeyCheck(master: MasterKeys, vaultId: string): string {
  return createHmac("sha256", master.idKey).update("bulwark/master-key-check/").update(vaultId).update(baseKeyBytes(master.dataKey)).digest("hex");
}

export function newPointId(): string {
  return randomBytes(16).toString("hex");
}

/** Runs fn over items with at most `limit` at once, keeping order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  });
  await Promise.all(runners);
  return results;
}

export function isBulwarkError(error: unknown): error is BulwarkError {
  return error instanceof BulwarkError;
}
