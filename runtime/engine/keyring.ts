/**
 * Key objects (keys/<id>): each wraps the vault's master keys under one key-encryption key. Adding
 * a passphrase, changing one or adding the customer's Key Vault key writes a new small key
 * object and never touches data, so it takes constant time whatever the vault's size.
 */
import { createHash, hkdfSync, randomBytes } from "node:crypto";
import { WrongKeyError, IntegrityError, ObjectExistsError, ObjectNotFoundError, ServiceError, UsageError, VaultBusyError } from "../errors.ts";
import type { KeyEncryptionKeyProvider, KeyParams } from "../keys/provider.ts";
import type { ObjectStore } from "../store/store.ts";
import { baseKeyBytes, dataKeyId, labelAssociatedData, newKeyring, open, seal, type DataKey, type DataKeyring } from "./crypto.ts";

export interface MasterKeys {
  /**
   * AES-256-GCM key of every stored blob: epoch 0's data key, which key objects wrap. An open
   * vault of format 5 holds its keyring of data-key epochs here instead (epoch 0 its base).
   */
  dataKey: DataKey;
  /** HMAC-SHA256 key of chunk ids (and the chunker's gear table). */
  idKey: Buffer;
}

export interface KeyObject {
  version: 1;
  id: string;
  kind: string;
  created: string;
  params: KeyParams;
  wrapped: string;
  /** sha256 of the fields above: a damaged key object is told apart from a wrong key. */
  checksum?: string;
}

const KEY_FIELDS = new Set(["version", "id", "kind", "created", "params", "wrapped", "checksum"]);

function keyChecksum(k: KeyObject): string {
  const { version, id, kind, created, params, wrapped } = k;
  return createHash("sha256").update(JSON.stringify({ version, id, kind, created, params, wrapped })).digest("hex");
}

export function newMasterKeys(): MasterKeys {
  return { dataKey: randomBytes(32), idKey: randomBytes(32) };
}

export function configDigest(config: Uint8Array): string {
  return createHash("sha256").update(config).digest("hex");
}

export async function writeKeyObject(
  store: ObjectStore,
  provider: KeyEncryptionKeyProvider,
  master: MasterKeys,
  digest: string,
): Promise<KeyObject> {
  const { kek, params } = await provider.create();
  const id = randomBytes(8).toString("hex");
  const plaintext = Buffer.from(
    JSON.stringify({ dataKey: baseKeyBytes(master.dataKey).toString("base64"), idKey: master.idKey.toString("base64"), configDigest: digest }),
  );
  const keyObject: KeyObject = {
    version: 1,
    id,
    kind: provider.kind,
    created: new Date().toISOString(),
    params,
    wrapped: seal(kek, plaintext, labelAssociatedData("key", `${id}/${provider.kind}`)).toString("base64"),
  };
  keyObject.checksum = keyChecksum(keyObject);
  await store.create(`keys/${id}`, Buffer.from(JSON.stringify(keyObject, null, 1)));
  return keyObject;
}

export async function listKeyObjects(store: ObjectStore): Promise<KeyObject[]> {
  const { keys, damaged } = await readKeyObjects(store);
  if (damaged.length > 0) {
    throw new IntegrityError(`key object ${damaged[0]} is damaged; open the vault with another key and remove it`);
  }
  return keys;
}

/** Every key object that parses and passes its checksum, and the names of those that do not. */
export async function readKeyObjects(store: ObjectStore): Promise<{ keys: KeyObject[]; damaged: string[] }> {
  const keys: KeyObject[] = [];
  const damaged: string[] = [];
  for await (const info of store.list("keys/")) {
    const body = await store.get(info.key);
    try {
      const parsed = JSON.parse(body.toString("utf8")) as KeyObject;
      if (parsed.version !== 1 || typeof parsed.wrapped !== "string" || `keys/${parsed.id}` !== info.key) throw new Error();
      // Key objects written before checksums existed have none; any other field is damage.
      if (Object.keys(parsed).some((field) => !KEY_FIELDS.has(field))) throw new Error();
      if (parsed.checksum !== undefined && parsed.checksum !== keyChecksum(parsed)) throw new Error();
      keys.push(parsed);
    } catch {
      damaged.push(info.key);
    }
  }
  return { keys: keys.sort((a, b) => a.created.localeCompare(b.created)), damaged: damaged.sort() };
}

/**
 * Tries every key object of the provider's kind. One that opens must also hold master keys that
 * `belong` to the vault (the config's master key check): a key object planted by someone without
 * the vault's keys (wrapping needs only a Key Vault key's public half) opens with the customer's
 * key but holds keys of its own, and is refused, never used, whatever order the store lists it in.
 */
export async function unlockMasterKeys(
  store: ObjectStore,
  provider: KeyEncryptionKeyProvider,
  digest: string,
  belongs: (master: MasterKeys) => boolean,
): Promise<{ master: MasterKeys; keyObject: KeyObject; foreign: string[] }> {
  const { keys, damaged } = await readKeyObjects(store);
  // A damaged key object must not pass for a wrong key: say so when no intact key opens.
  const damagedError = () =>
    new IntegrityError(
      `key object ${damaged.join(", ")} is damaged (it does not parse or fails its checksum) and no other ${provider.kind} key of the vault at ` +
        `${store.location} opens with the given key. Put back a copy of the object, or open the vault with another key`,
    );
  const candidates = keys.filter((k) => k.kind === provider.kind);
  if (candidates.length === 0) {
    if (damaged.length > 0) throw damagedError();
    throw new WrongKeyError(
      `the vault at ${store.location} has no ${provider.kind} key; open it with one of its keys (see \`bulwark key list\`)`,
    );
  }
  const foreign: string[] = [];
  // Why a key object's key-encryption key could not be recovered (a Key Vault key version that is gone, say): said at the end.
  const refusals = new Set<string>();
  // A key service that could not answer (denied, throttled, down): the key may well be right.
  let unanswered: ServiceError | undefined;
  for (const keyObject of candidates) {
    let kek: Buffer;
    try {
      kek = await provider.recover(keyObject.params);
    } catch (error) {
      if (error instanceof UsageError) throw error;
      if (error instanceof WrongKeyError) refusals.add(error.message);
      else if (error instanceof ServiceError) unanswered ??= error;
      continue;
    }
    let plaintext: Buffer;
    try {
      plaintext = open(kek, Buffer.from(keyObject.wrapped, "base64"), labelAssociatedData("key", `${keyObject.id}/${keyObject.kind}`), "key");
    } catch {
      continue;
    }
    let parsed: { dataKey: string; idKey: string; configDigest: string };
    try {
      parsed = JSON.parse(plaintext.toString("utf8"));
    } catch {
      foreign.push(`keys/${keyObject.id}`);
      continue;
    }
    // The config first: a changed config (its id, say) also fails the master key check, and must be named as what it is.
    if (parsed.configDigest !== digest) {
      throw new IntegrityError(
        `the vault's config object at ${store.location} was modified after the vault was created; do not trust this vault until it is checked`,
      );
    }
    const master = { dataKey: Buffer.from(String(parsed.dataKey), "base64"), idKey: Buffer.from(String(parsed.idKey), "base64") };
    if (master.dataKey.length !== 32 || master.idKey.length !== 32 || !belongs(master)) {
      foreign.push(`keys/${keyObject.id}`);
      continue;
    }
    return { master, keyObject, foreign };
  }
  if (foreign.length > 0) {
    throw new IntegrityError(
      `key object ${foreign.join(", ")} of the vault at ${store.location} opens with the given key but holds master keys that are not this vault's ` +
        "(they fail the config's master key check): it was written by someone who does not have the vault's keys. It is refused; " +
        "open the vault with another of its keys, and investigate who wrote it before removing it",
    );
  }
  if (damaged.length > 0) throw damagedError();
  // Not "wrong key" when the key service never answered: that is a storage/Azure failure to fix or retry.
  if (unanswered) throw unanswered;
  throw new WrongKeyError(
    provider.kind === "passphrase"
      ? `wrong passphrase for the vault at ${store.location}: no key of the vault opens with it. Check BULWARK_PASSPHRASE or --passphrase-file`
      : `no ${provider.kind} key of the vault at ${store.location} opens with the given key${refusals.size > 0 ? `: ${[...refusals].join("; ")}` : ""}`,
  );
}

/*
 * Data-key epochs (vault format 5, `bulwark key rotate --data`).
 *
 * Where the keys live. Epoch 0's data key is the master data key, in every key object. Each later
 * epoch's key is 32 random bytes in an object of its own, `epochs/<n>` (n in ten digits, so the
 * names sort), sealed with AES-256-GCM under the epoch-wrapping key
 *   HKDF-SHA256(ikm = master data key, salt = master id key, info = "bulwark epoch wrap v5")
 * with associated data naming the vault's id, the object's name and the key's id. The seal is the
 * object's MAC: only a holder of the master keys can write an epoch object that opens, so a person
 * with write access to storage and only the public half of a Key Vault key (who can plant a key
 * object, which the config's master key check refuses) cannot plant a data key of their own
 * either, nor move an epoch object to another number or vault. What fails is refused: never used
 * to seal or open, and named by `bulwark verify` and `bulwark key list`.
 *
 * Which keys open an epoch: every key object, because every one wraps the master keys the epochs
 * are wrapped under; a rotation run with one passphrase needs no other. What rotation therefore
 * protects against: a data key that leaked alone (from a worker's memory, a dump, a log) reads only
 * the data sealed under its epoch, not what later epochs seal; and it bounds one key's use to its
 * epoch. What it does not: anyone holding the master keys (any key object's passphrase or Key
 * Vault key, with read access to storage) reads every epoch, past and future. Against that, change
 * or remove the key-encryption key (`key passwd`, `key remove`) and make a new vault; rotation alone
 * does not help. Chunk ids keep the master id key, so a chunk already stored under an older epoch
 * is deduplicated, not sealed again.
 *
 * Which epoch is the newest: the highest n whose object is valid. Objects are create-only (on Azure
 * Blob a Put Blob with If-None-Match: *, runtime/store/azure-blob.ts), so two rotations at once
 * cannot both make epoch n: the second's create fails and it says so. A writer
 * that opened the vault before a rotation keeps sealing under the epoch it read until it ends;
 * both epochs open everywhere, so nothing is lost. Someone with write access can still delete an
 * epoch object (what it sealed becomes unreadable, as if the data were deleted) or the newest one
 * (writers fall back to the previous epoch, an older key but still a secret one).
 *
 * Copies. A vault made `init --like` shares the master keys (so epoch 0), not the epochs: its own
 * rotations number from 1. `bulwark copy` brings every epoch key of the source the destination
 * lacks, rewrapped for the destination as `epochs/from-<key id>`: such a key opens what was
 * copied and never seals.
 */

const EPOCH_PREFIX = "epochs/";
const EPOCH_WRAP_INFO = Buffer.from("bulwark epoch wrap v5", "utf8");
const EPOCH_FIELDS = ["version", "epoch", "keyId", "created", "wrapped"];
/** Far more than any vault rotates; a store holding more was written by something else. */
const MAX_EPOCH_OBJECTS = 10_000;
const MAX_EPOCH_OBJECT_BYTES = 4096;
/** The highest number a ten-digit epoch name holds. */
const MAX_EPOCH_NUMBER = 9_999_999_999;

export interface Epoch {
  /** The object's name: `epochs/<n>`, or `epochs/from-<key id>` for a key a copy brought. */
  name: string;
  /** n for the vault's own epochs; undefined for a copied key, which never seals. */
  epoch: number | undefined;
  keyId: string;
  created: string;
  key: Buffer;
}

export interface Epochs {
  /** Valid epoch objects, own epochs in order, then copied keys. */
  valid: Epoch[];
  /** Objects under epochs/ that failed their check, with why. */
  refused: { name: string; reason: string }[];
  /** The highest own epoch number among all names, valid or not (the next rotation takes one more). */
  highestNumber: number;
}

interface EpochObject {
  version: 1;
  epoch: number | null;
  keyId: string;
  created: string;
  wrapped: string;
}

export function epochName(epoch: number): string {
  return `${EPOCH_PREFIX}${String(epoch).padStart(10, "0")}`;
}

function epochNumberOf(name: string): number | undefined {
  const match = /^epochs\/(\d{10})$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

function epochWrapKey(master: MasterKeys): Buffer {
  return Buffer.from(hkdfSync("sha256", baseKeyBytes(master.dataKey), master.idKey, EPOCH_WRAP_INFO, 32));
}

function epochAssociatedData(vaultId: string, name: string, keyId: string): Buffer {
  return labelAssociatedData("epoch", `${vaultId}/${name}/${keyId}`);
}

async function writeEpochObject(store: ObjectStore, master: MasterKeys, vaultId: string, name: string, epoch: number | null, key: Buffer): Promise<Epoch> {
  const keyId = dataKeyId(key);
  const created = new Date().toISOString();
  const body: EpochObject = {
    version: 1,
    epoch,
    keyId,
    created,
    wrapped: seal(epochWrapKey(master), key, epochAssociatedData(vaultId, name, keyId)).toString("base64"),
  };
  await store.create(name, Buffer.from(JSON.stringify(body, null, 1)));
  return { name, epoch: epoch ?? undefined, keyId, created, key };
}

/** Opens one epoch object, or says why it is refused. */
function openEpochObject(master: MasterKeys, vaultId: string, name: string, body: Buffer): Epoch | string {
  const own = epochNumberOf(name);
  const copied = /^epochs\/from-([0-9a-f]{16})$/.exec(name)?.[1];
  if (own === undefined && copied === undefined) return "it is not an epoch object's name";
  if (body.length > MAX_EPOCH_OBJECT_BYTES) return `it is ${body.length} bytes, larger than any epoch object`;
  let parsed: EpochObject;
  try {
    parsed = JSON.parse(body.toString("utf8")) as EpochObject;
  } catch {
    return "it does not parse";
  }
  if (
    typeof parsed !== "object" ||
    parsed === null ||
    Object.keys(parsed).sort().join() !== [...EPOCH_FIELDS].sort().join() ||
    parsed.version !== 1 ||
    typeof parsed.keyId !== "string" ||
    typeof parsed.created !== "string" ||
    typeof parsed.wrapped !== "string" ||
    (own !== undefined ? parsed.epoch !== own : parsed.epoch !== null || parsed.keyId !== copied)
  ) {
    return "its fields are not an epoch object's";
  }
  let key: Buffer;
  try {
    key = open(epochWrapKey(master), Buffer.from(parsed.wrapped, "base64"), epochAssociatedData(vaultId, name, parsed.keyId), name);
  } catch {
    return "it fails authentication under the vault's master keys: it is damaged, or was written by someone who does not have them";
  }
  if (key.length !== 32 || dataKeyId(key) !== parsed.keyId) return "the key it holds is not the key its id names";
  return { name, epoch: own, keyId: parsed.keyId, created: parsed.created, key };
}

/** Every object under epochs/, each checked; `known` names already read are skipped (a refresh). */
export async function readEpochs(store: ObjectStore, master: MasterKeys, vaultId: string, known: ReadonlySet<string> = new Set()): Promise<Epochs> {
  const names: string[] = [];
  for await (const info of store.list(EPOCH_PREFIX)) {
    if (names.length >= MAX_EPOCH_OBJECTS) {
      throw new IntegrityError(
        `the vault at ${store.location} holds more than ${MAX_EPOCH_OBJECTS} objects under ${EPOCH_PREFIX}, far more than rotations make: ` +
          "something other than Bulwark wrote them; investigate before using the vault",
      );
    }
    names.push(info.key);
  }
  const epochs: Epochs = { valid: [], refused: [], highestNumber: 0 };
  for (const name of names.sort()) {
    epochs.highestNumber = Math.max(epochs.highestNumber, epochNumberOf(name) ?? 0);
    if (known.has(name)) continue;
    const opened = openEpochObject(master, vaultId, name, await store.get(name));
    if (typeof opened === "string") epochs.refused.push({ name, reason: opened });
    else epochs.valid.push(opened);
  }
  // Own epochs by number (the names sort so), then copied keys.
  epochs.valid.sort((a, b) => (a.epoch ?? Infinity) - (b.epoch ?? Infinity));
  return epochs;
}

/**
 * The epochs of `held` (those a process opened with) whose object is no longer in the store as it
 * was read: deleted, or its number made again with another key (a rotation after the deletion).
 * What the process sealed under such a key opens for no one else, so a commit must not rely on it.
 */
export async function epochsNoLongerStored(store: ObjectStore, master: MasterKeys, vaultId: string, held: readonly Epoch[]): Promise<string[]> {
  const lost: string[] = [];
  for (const epoch of held) {
    const body = await store.get(epoch.name).catch((error) => {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    });
    const opened = body && openEpochObject(master, vaultId, epoch.name, body);
    if (typeof opened !== "object" || opened.keyId !== epoch.keyId) lost.push(epoch.name);
  }
  return lost;
}

/** The keyring of epoch 0 and the given epochs, sealing under the newest own epoch. */
export function epochKeyring(master: MasterKeys, epochs: Epochs): DataKeyring {
  const ring = newKeyring(baseKeyBytes(master.dataKey));
  addEpochs(ring, epochs);
  const newest = epochs.valid.filter((e) => e.epoch !== undefined).at(-1);
  if (newest) ring.sealingKeyId = newest.keyId;
  return ring;
}

/** Adds epochs read later (by another process's rotation) to a keyring, to open with; what it seals under stays. */
export function addEpochs(ring: DataKeyring, epochs: Epochs): void {
  for (const epoch of epochs.valid) ring.keys.set(epoch.keyId, epoch.key);
  for (const { name } of epochs.refused) if (!ring.refused.includes(name)) ring.refused.push(name);
}

/**
 * Makes epoch `epoch` with a new random data key. Create-only: when another rotation made that
 * number first, this one fails and says so (exit 7), so the vault never has two newest epochs.
 */
export async function createEpoch(store: ObjectStore, master: MasterKeys, vaultId: string, epoch: number): Promise<Epoch> {
  // Past ten digits the name is no epoch's (epochNumberOf): every opener would refuse the new epoch and keep sealing under the old key.
  if (epoch > MAX_EPOCH_NUMBER) {
    throw new IntegrityError(
      `the vault at ${store.location} holds ${epochName(epoch - 1)}, the last number an epoch can take, so no rotation can make a newer epoch. ` +
        "Rotations number epochs one by one: it was written by something else (`bulwark verify` says whether it is refused). Investigate, remove it, and rotate again",
    );
  }
  try {
    return await writeEpochObject(store, master, vaultId, epochName(epoch), epoch, randomBytes(32));
  } catch (error) {
    if (!(error instanceof ObjectExistsError)) throw error;
    throw new VaultBusyError(
      `another rotation made data-key epoch ${epoch} of the vault at ${store.location} at the same moment; it is the newest epoch now and new data is sealed under it. ` +
        "Run `bulwark key rotate --data` again only if you want yet another epoch",
    );
  }
}

/** Brings an epoch key of another vault sharing the master keys (a copy's source), to open what came from there. */
export async function importEpochKey(store: ObjectStore, master: MasterKeys, vaultId: string, key: Buffer): Promise<Epoch> {
  const name = `${EPOCH_PREFIX}from-${dataKeyId(key)}`;
  try {
    return await writeEpochObject(store, master, vaultId, name, null, key);
  } catch (error) {
    if (!(error instanceof ObjectExistsError)) throw error;
    // Brought by an earlier (interrupted) copy: it is used only if it passes its check like any other.
    const opened = openEpochObject(master, vaultId, name, await store.get(name));
    if (typeof opened === "string") throw new IntegrityError(`epoch object ${name} of the vault at ${store.location} is refused: ${opened}`);
    return opened;
  }
}
