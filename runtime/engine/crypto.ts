/**
 * Authenticated encryption and keyed ids. Every stored blob is AES-256-GCM with a fresh random
 * 96-bit nonce; its associated data binds what the blob claims to be (a chunk's id and type, or
 * an index, a manifest, a pack header), so a blob moved or swapped by someone without the key is
 * rejected. Chunk ids are HMAC-SHA256 under a secret id key, so a reader of the storage learns
 * nothing about content from ids.
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, randomBytes, type KeyObject } from "node:crypto";
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

export function seal(key: SecretKey, plaintext: Uint8Array | Uint8Array[], associatedData: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(associatedData);
  // Parts are encrypted in turn, so a caller need not join them first.
  const bodies = Array.isArray(plaintext) ? plaintext.map((part) => cipher.update(part)) : [cipher.update(plaintext)];
  const tail = cipher.final();
  return Buffer.concat([nonce, ...bodies, tail, cipher.getAuthTag()]);
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
