/**
 * Authenticated encryption and keyed ids. Every stored blob is AES-256-GCM with a fresh random
 * 96-bit nonce; its associated data binds what the blob claims to be (a chunk's id and type, or
 * an index, a manifest, a pack header), so a blob moved or swapped by someone without the key is
 * rejected. Chunk ids are HMAC-SHA256 under a secret id key, so a reader of the storage learns
 * nothing about content from ids.
 *
 * Which key seals a blob depends on the vault's format (SealFormat). Random 96-bit nonces allow at
 * most 2^32 encryptions under one key (NIST SP 800-38D, "Recommendation for Block Cipher Modes of
 * Operation: GCM and GMAC", section 8.3), and a vault of 100 TB seals over a billion chunks.
 *   3: everything under the data key itself, so the count grows with the vault's whole life.
 *   4: a chunk under HKDF-SHA256(ikm = data key, salt = empty, info = "bulwark chunk v4" || type
 *      || id) (RFC 5869). Ids are keyed content hashes, so one key seals one content, a few times
 *      at most (a re-staged job); the key depends only on the master keys and the id, so a pack
 *      copied to a vault sharing the master keys opens there as it is. Every other object
 *      (manifest, index, pack header, chain marker, tombstone, staged object) under
 *      HKDF-SHA256(ikm = data key, salt = 16 random bytes, info = "bulwark object v4"), the salt
 *      kept in the object's header:  "BWO" 0x04, salt, then nonce, ciphertext, tag as in 3, with
 *      the header authenticated too. Objects of either kind open in either format (openObject),
 *      so what a version-3 writer sealed stays readable beside them.
 *   5: data-key epochs (`bulwark key rotate --data`). A vault has a data key per epoch: epoch 0 is
 *      the master data key, each later one a random key kept in an epoch object (keyring.ts). Keys
 *      are derived as in 4, from the epoch's key, and every stored blob names the epoch that sealed
 *      it by the epoch key's id (KEY_ID_BYTES of HMAC-SHA256(epoch key, "bulwark/data-key-id"): it
 *      says which key, and nothing about the key):
 *        a chunk:  key id, nonce, ciphertext, tag; associated data type || id || key id;
 *        an object: "BWO" 0x05, key id, salt, then as in 4, under
 *                   HKDF-SHA256(ikm = epoch key, salt, info = "bulwark object v5").
 *      A reader takes the key the blob names (a DataKeyring holds every epoch's key); objects and
 *      chunks of formats 3 and 4 (copied from older vaults) open under epoch 0's key as before.
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, KeyObject, randomBytes } from "node:crypto";
import { IntegrityError } from "../errors.ts";

export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;
export const ID_BYTES = 32;

/** Raw key bytes, or a KeyObject made once (createCipheriv/createHmac re-import raw bytes on every call). */
export type SecretKey = Uint8Array | KeyObject;

export function secretKey(key: Uint8Array): KeyObject {
  return createSecretKey(key);
}

/** `prefix` (format 5's key id of a chunk) is written before the nonce, in the same one copy. */
export function seal(key: SecretKey, plaintext: Uint8Array | Uint8Array[], associatedData: Uint8Array, prefix?: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(associatedData);
  // Parts are encrypted in turn, so a caller need not join them first.
  const bodies = Array.isArray(plaintext) ? plaintext.map((part) => cipher.update(part)) : [cipher.update(plaintext)];
  const tail = cipher.final();
  return Buffer.concat([...(prefix ? [prefix] : []), nonce, ...bodies, tail, cipher.getAuthTag()]);
}

/** `what` names the blob in errors; a function is called only on failure (naming costs on the hot path). */
export function open(key: SecretKey, sealed: Uint8Array, associatedData: Uint8Array, what: string | (() => string)): Buffer {
  const name = () => (typeof what === "string" ? what : what());
  if (sealed.length < SEAL_OVERHEAD) {
    throw new IntegrityError(`${name()} is truncated (${sealed.length} bytes); run \`bulwark verify --read-data\``);
  }
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(associatedData);
  decipher.setAuthTag(tag);
  try {
    const body = decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES));
    const tail = decipher.final();
    return tail.length === 0 ? body : Buffer.concat([body, tail]);
  } catch (cause) {
    throw new IntegrityError(
      `${name()} failed authentication: it was modified or damaged in storage. ` +
        "Run `bulwark verify --read-data` to find every damaged object.",
      { cause },
    );
  }
}

/** How a vault seals: its format version (see the header). */
export type SealFormat = 3 | 4 | 5;
export const CURRENT_SEAL_FORMAT: SealFormat = 5;

const CHUNK_KEY_INFO = Buffer.from("bulwark chunk v4", "utf8");
const OBJECT_KEY_INFO = Buffer.from("bulwark object v4", "utf8");
const OBJECT_KEY_INFO_5 = Buffer.from("bulwark object v5", "utf8");
const KEY_ID_INFO = Buffer.from("bulwark/data-key-id", "utf8");
const OBJECT_MAGIC = Buffer.from([0x42, 0x57, 0x4f, 0x04]);
const OBJECT_MAGIC_5 = Buffer.from([0x42, 0x57, 0x4f, 0x05]);
export const OBJECT_SALT_BYTES = 16;
/** The key id a format-5 blob carries: enough to tell a vault's few epoch keys apart, nothing about them. */
export const KEY_ID_BYTES = 8;
const OBJECT_HEADER_BYTES = OBJECT_MAGIC.length + OBJECT_SALT_BYTES;
const OBJECT_HEADER_BYTES_5 = OBJECT_MAGIC_5.length + KEY_ID_BYTES + OBJECT_SALT_BYTES;
/** RFC 5869 2.2: an absent salt is HashLen zero bytes. */
const EMPTY_SALT = Buffer.alloc(32);
/** HKDF-Expand's one block for a 32-byte key: T(1) = HMAC(PRK, info || 0x01). */
const FIRST_BLOCK = Buffer.from([1]);

/**
 * A vault's data keys in format 5, one per epoch: every key this process knows by key id (hex),
 * and which of them new blobs are sealed under (the newest epoch's, when the vault was opened).
 * Plain data, so a codec worker thread receives it as it is (importDataKey).
 */
export interface DataKeyring {
  /** Every epoch's key by key id in hex; epoch 0's is the master data key. */
  readonly keys: Map<string, SecretKey>;
  /** The key id of the epoch new chunks and objects are sealed under. */
  sealingKeyId: string;
  /** Epoch 0's key: formats 3 and 4 seal under it, and what they sealed opens under it. */
  readonly base: SecretKey;
  /** Epoch objects that failed their check (keyring.ts): named when a blob's key is not found. */
  readonly refused: string[];
}

/** What a vault's blobs are sealed under: one key (formats 3 and 4, or epoch 0 alone) or a keyring. */
export type DataKey = SecretKey | DataKeyring;

export function isKeyring(key: DataKey): key is DataKeyring {
  return "sealingKeyId" in key;
}

/** The id format-5 blobs carry of the key that sealed them: HMAC-SHA256(key, "bulwark/data-key-id"), cut. */
export function dataKeyId(key: SecretKey): string {
  return createHmac("sha256", key).update(KEY_ID_INFO).digest().subarray(0, KEY_ID_BYTES).toString("hex");
}

/** A keyring of epoch 0 alone, to which a vault adds its later epochs. */
export function newKeyring(base: SecretKey): DataKeyring {
  const id = dataKeyId(base);
  return { keys: new Map([[id, base]]), sealingKeyId: id, base, refused: [] };
}

/** A lone key as a keyring (once per key object: its id costs an HMAC). */
const loneKeyrings = new WeakMap<object, DataKeyring>();

function keyringOf(key: DataKey): DataKeyring {
  if (isKeyring(key)) return key;
  let ring = loneKeyrings.get(key);
  if (!ring) {
    ring = newKeyring(key);
    loneKeyrings.set(key, ring);
  }
  return ring;
}

function baseKey(key: DataKey): SecretKey {
  return isKeyring(key) ? key.base : key;
}

/** Epoch 0's key bytes: the master data key, which key objects wrap and the config's check binds. */
export function baseKeyBytes(key: DataKey): Buffer {
  return keyBytes(baseKey(key));
}

function importKey(key: SecretKey): KeyObject {
  return key instanceof KeyObject ? key : createSecretKey(key);
}

/** The same keys as KeyObjects, imported once (a worker thread receives raw bytes). */
export function importDataKey(key: DataKey): DataKey {
  if (!isKeyring(key)) return importKey(key);
  const keys = new Map([...key.keys].map(([id, k]) => [id, importKey(k)] as const));
  return { keys, sealingKeyId: key.sealingKeyId, base: importKey(key.base), refused: [...key.refused] };
}

function sealingKeyOf(ring: DataKeyring): SecretKey {
  const key = ring.keys.get(ring.sealingKeyId);
  if (!key) throw new Error(`the keyring has no key ${ring.sealingKeyId} to seal under`);
  return key;
}

/** A blob names a key id no epoch of the vault holds: damaged, or sealed under an epoch this process has not read. */
function unknownEpoch(ring: DataKeyring, keyId: Uint8Array, what: string): IntegrityError {
  const refused = ring.refused.length > 0 ? ` Epoch objects that failed their check: ${ring.refused.join(", ")}.` : "";
  return new IntegrityError(
    `${what} failed authentication: it names data key ${Buffer.from(keyId).toString("hex")}, which no valid epoch object of the vault holds.${refused} ` +
      "It was damaged in storage, or sealed under an epoch made after this command started (`bulwark key rotate --data`: run the command again). " +
      "Run `bulwark verify --read-data` to find every damaged object.",
  );
}

function keyBytes(key: SecretKey): Buffer {
  return "export" in key ? key.export() : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
}

/** HKDF-Extract of each data key seen (a vault has one per epoch; a WeakMap forgets keys no longer used). */
const chunkKeyRoots = new WeakMap<object, KeyObject>();

function chunkKeyRoot(dataKey: SecretKey): KeyObject {
  let root = chunkKeyRoots.get(dataKey);
  if (!root) {
    root = createSecretKey(createHmac("sha256", EMPTY_SALT).update(keyBytes(dataKey)).digest());
    chunkKeyRoots.set(dataKey, root);
  }
  return root;
}

/**
 * The key that seals one chunk in formats 4 and 5 (from the epoch's key): HKDF-SHA256 with an
 * empty salt, whose Extract step (the same for every chunk) is done once per data key, so each
 * chunk costs one HMAC. A KeyObject: Node's AES-GCM takes one for about 50 microseconds less CPU
 * per 64 KiB chunk than raw key bytes.
 */
export function chunkSealingKey(dataKey: SecretKey, type: number, id: Uint8Array): KeyObject {
  const hmac = createHmac("sha256", chunkKeyRoot(dataKey));
  return createSecretKey(hmac.update(CHUNK_KEY_INFO).update(Buffer.of(type)).update(id).update(FIRST_BLOCK).digest());
}

/** Format 5's associated data of a chunk: format 4's, then the key id it carries. */
function chunkAssociatedData5(type: number, id: Uint8Array, keyId: Uint8Array): Buffer {
  const ad = Buffer.allocUnsafe(1 + ID_BYTES + KEY_ID_BYTES);
  ad[0] = type;
  ad.set(id, 1);
  ad.set(keyId, 1 + ID_BYTES);
  return ad;
}

/** Seals a chunk's parts (codec byte, payload) in the given format; in 5, under the newest epoch. */
export function sealChunk(dataKey: DataKey, format: SealFormat, type: number, id: Uint8Array, parts: Uint8Array[]): Buffer {
  if (format === 3) return seal(baseKey(dataKey), parts, chunkAssociatedData(type, id));
  if (format === 4) return seal(chunkSealingKey(baseKey(dataKey), type, id), parts, chunkAssociatedData(type, id));
  const ring = keyringOf(dataKey);
  const keyId = Buffer.from(ring.sealingKeyId, "hex");
  return seal(chunkSealingKey(sealingKeyOf(ring), type, id), parts, chunkAssociatedData5(type, id, keyId), keyId);
}

/**
 * Opens a chunk. In format 5 under the epoch key it names; a chunk a format-4 or format-3 writer
 * sealed under epoch 0 (a pack copied from an older vault sharing the master keys) is tried as
 * such before it is called damaged, as format 4 tries format 3.
 */
export function openChunk(dataKey: DataKey, format: SealFormat, type: number, id: Uint8Array, sealed: Uint8Array, what: () => string): Buffer {
  const base = baseKey(dataKey);
  const associatedData = chunkAssociatedData(type, id);
  if (format === 3) return open(base, sealed, associatedData, what);
  const asOlderFormat = () => {
    try {
      return open(chunkSealingKey(base, type, id), sealed, associatedData, what);
    } catch (error) {
      try {
        return open(base, sealed, associatedData, what);
      } catch {
        throw error;
      }
    }
  };
  if (format === 4) return asOlderFormat();
  const ring = keyringOf(dataKey);
  const keyId = sealed.subarray(0, KEY_ID_BYTES);
  const key = sealed.length >= KEY_ID_BYTES + SEAL_OVERHEAD ? ring.keys.get(Buffer.from(keyId).toString("hex")) : undefined;
  if (!key) {
    try {
      return asOlderFormat();
    } catch (error) {
      if (sealed.length < KEY_ID_BYTES + SEAL_OVERHEAD) throw error;
      throw unknownEpoch(ring, keyId, what());
    }
  }
  try {
    return open(chunkSealingKey(key, type, id), sealed.subarray(KEY_ID_BYTES), chunkAssociatedData5(type, id, keyId), what);
  } catch (error) {
    try {
      return asOlderFormat();
    } catch {
      throw error;
    }
  }
}

function objectKey(dataKey: SecretKey, salt: Uint8Array, info: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", dataKey, salt, info, 32));
}

/** Seals a metadata object (not a chunk) in the given format; in 5, under the newest epoch. */
export function sealObject(dataKey: DataKey, plaintext: Uint8Array, associatedData: Uint8Array, format: SealFormat = CURRENT_SEAL_FORMAT): Buffer {
  if (format === 3) return seal(baseKey(dataKey), plaintext, associatedData);
  if (format === 4) {
    const header = Buffer.concat([OBJECT_MAGIC, randomBytes(OBJECT_SALT_BYTES)]);
    const salt = header.subarray(OBJECT_MAGIC.length);
    return Buffer.concat([header, seal(objectKey(baseKey(dataKey), salt, OBJECT_KEY_INFO), plaintext, Buffer.concat([header, associatedData]))]);
  }
  const ring = keyringOf(dataKey);
  const header = Buffer.concat([OBJECT_MAGIC_5, Buffer.from(ring.sealingKeyId, "hex"), randomBytes(OBJECT_SALT_BYTES)]);
  const salt = header.subarray(OBJECT_MAGIC_5.length + KEY_ID_BYTES);
  return Buffer.concat([header, seal(objectKey(sealingKeyOf(ring), salt, OBJECT_KEY_INFO_5), plaintext, Buffer.concat([header, associatedData]))]);
}

function startsWith(sealed: Uint8Array, magic: Buffer, headerBytes: number): boolean {
  return sealed.length >= headerBytes && magic.equals(sealed.subarray(0, magic.length));
}

/**
 * Opens a metadata object sealed in any format. An object that starts with a format-4 or -5
 * header but fails as one is also tried as format 3: a format-3 object's random nonce begins with
 * those four bytes once in 2^32 objects, and must not be called damaged for it.
 */
export function openObject(dataKey: DataKey, sealed: Uint8Array, associatedData: Uint8Array, what: string): Buffer {
  const base = baseKey(dataKey);
  const asFormat3 = () => open(base, sealed, associatedData, what);
  let headerBytes: number;
  let key: SecretKey | undefined;
  let info: Buffer;
  if (startsWith(sealed, OBJECT_MAGIC_5, OBJECT_HEADER_BYTES_5)) {
    const ring = keyringOf(dataKey);
    const keyId = sealed.subarray(OBJECT_MAGIC_5.length, OBJECT_MAGIC_5.length + KEY_ID_BYTES);
    [headerBytes, key, info] = [OBJECT_HEADER_BYTES_5, ring.keys.get(Buffer.from(keyId).toString("hex")), OBJECT_KEY_INFO_5];
    if (!key) {
      try {
        return asFormat3();
      } catch {
        throw unknownEpoch(ring, keyId, what);
      }
    }
  } else if (startsWith(sealed, OBJECT_MAGIC, OBJECT_HEADER_BYTES)) {
    [headerBytes, key, info] = [OBJECT_HEADER_BYTES, base, OBJECT_KEY_INFO];
  } else {
    return asFormat3();
  }
  const header = sealed.subarray(0, headerBytes);
  const salt = header.subarray(headerBytes - OBJECT_SALT_BYTES);
  try {
    return open(objectKey(key, salt, info), sealed.subarray(headerBytes), Buffer.concat([header, associatedData]), what);
  } catch (error) {
    try {
      return asFormat3();
    } catch {
      throw error;
    }
  }
}

/** Whether a stored object carries format 4's header. */
export function hasObjectHeader(sealed: Uint8Array): boolean {
  return startsWith(sealed, OBJECT_MAGIC, OBJECT_HEADER_BYTES);
}

/** The key id a format-5 object names (which epoch sealed it), or undefined for an older format. */
export function objectKeyId(sealed: Uint8Array): string | undefined {
  if (!startsWith(sealed, OBJECT_MAGIC_5, OBJECT_HEADER_BYTES_5)) return undefined;
  return Buffer.from(sealed.subarray(OBJECT_MAGIC_5.length, OBJECT_MAGIC_5.length + KEY_ID_BYTES)).toString("hex");
}

export function keyedId(idKey: SecretKey, data: Uint8Array): Buffer {
  return createHmac("sha256", idKey).update(data).digest();
}

/** Associated data for a chunk blob: its type byte and its id. */
export function chunkAssociatedData(type: number, id: Uint8Array): Buffer {
  const ad = Buffer.allocUnsafe(1 + ID_BYTES);
  ad[0] = type;
  ad.set(id, 1);
  return ad;
}

export function labelAssociatedData(label: string, name: string): Buffer {
  return Buffer.from(`bulwark/${label}/${name}`, "utf8");
}

export const ZERO_ID = Buffer.alloc(ID_BYTES);

export function isZeroId(id: Uint8Array): boolean {
  for (let i = 0; i < id.length; i++) if (id[i] !== 0) return false;
  return true;
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}
