/**
 * How one chunk is stored: [1 byte codec][payload], compressed with zstd when that pays, then
 * sealed (AES-256-GCM) with the chunk's type and id as associated data. Decoding checks the
 * authentication tag, decompresses, and checks that the bytes hash back to the id they are
 * stored under, so a restore can never write bytes other than those backed up.
 *
 * Format 4 seals each chunk under a key derived from the data key, its type and its id
 * (crypto.ts, chunkSealingKey). A chunk a format-3 writer sealed under the data key itself (a pack
 * copied raw from a version-3 vault sharing the master keys) still opens in a format-4 vault.
 * Format 5 seals under the newest data-key epoch and opens under the epoch the chunk names
 * (crypto.ts, sealChunk and openChunk).
 */
import { constants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { IntegrityError } from "../errors.ts";
import { CURRENT_SEAL_FORMAT, keyedId, openChunk, sealChunk, type DataKey, type SealFormat, type SecretKey } from "./crypto.ts";
import type { ZstdInto } from "./zstd-into.ts";

export const CHUNK_DATA = 0;
export const CHUNK_TREE = 1;

const CODEC_RAW = 0;
const CODEC_ZSTD = 1;
const CODEC_BYTE = [Buffer.from([CODEC_RAW]), Buffer.from([CODEC_ZSTD])];

/** Store compressed only when it saves at least this fraction. */
const MIN_SAVING = 0.03;

export interface ChunkKeys {
  /** One key, or a vault's keyring of data-key epochs (format 5). */
  dataKey: DataKey;
  idKey: SecretKey;
  /** The vault's format; the current one when absent. */
  format?: SealFormat;
}

export interface EncodedChunk {
  sealed: Buffer;
  compressed: boolean;
}

export function encodeChunk(
  keys: ChunkKeys,
  type: number,
  id: Uint8Array,
  raw: Uint8Array,
  zstdLevel: number,
): EncodedChunk {
  let codec = CODEC_RAW;
  let payload: Uint8Array = raw;
  if (raw.length >= 64 && zstdLevel > 0 && !looksIncompressible(raw)) {
    const packed = zstdCompressSync(raw, {
      params: { [constants.ZSTD_c_compressionLevel]: zstdLevel, [constants.ZSTD_c_checksumFlag]: 0 },
      // One output buffer for the whole chunk, not 16 KiB pieces joined afterwards.
      chunkSize: raw.length + 1024,
    });
    if (packed.length <= raw.length * (1 - MIN_SAVING)) {
      codec = CODEC_ZSTD;
      payload = packed;
    }
  }
  const sealed = sealChunk(keys.dataKey, keys.format ?? CURRENT_SEAL_FORMAT, type, id, [CODEC_BYTE[codec], payload]);
  return { sealed, compressed: codec === CODEC_ZSTD };
}

/**
 * Random or already-compressed bytes (encrypted files, media, archives) cost zstd a full pass for
 * nothing. An order-0 entropy estimate over a sample of the bytes says so in a few microseconds:
 * near 8 bits per byte, zstd cannot save the 3% that storing compressed requires.
 */
export function looksIncompressible(raw: Uint8Array): boolean {
  if (raw.length < 4096) return false;
  const counts = new Uint32Array(256);
  let samples = 0;
  for (let i = 0; i < raw.length; i += 31) {
    counts[raw[i]]++;
    samples++;
  }
  let bits = 0;
  for (const count of counts) {
    if (count === 0) continue;
    const p = count / samples;
    bits -= p * Math.log2(p);
  }
  // A uniform sample of ~2000 bytes estimates ~7.9 bits; text is 4-5, machine code about 6.
  return bits > 7.6;
}

export function decodeChunk(
  keys: ChunkKeys,
  type: number,
  id: Uint8Array,
  sealed: Uint8Array,
  rawLength: number,
  where: string,
  options: { checkId?: boolean } = {},
): Buffer {
  const plaintext = openSealedChunk(keys, type, id, sealed, where);
  let raw: Buffer;
  if (plaintext[0] === CODEC_RAW) raw = plaintext.subarray(1);
  else if (plaintext[0] === CODEC_ZSTD) {
    // One output buffer of the known size; anything longer than the chunk is refused outright.
    try {
      raw = zstdDecompressSync(plaintext.subarray(1), { chunkSize: rawLength + 64, maxOutputLength: Math.max(rawLength, 1) });
    } catch (cause) {
      throw new IntegrityError(`chunk ${hexId(id)} in ${where} does not decompress to its recorded size: the vault is damaged`, { cause });
    }
  }
  else throw new IntegrityError(`chunk ${hexId(id)} in ${where} has an unknown codec ${plaintext[0]}`);
  // The authentication tag already binds these bytes to this id under the vault's key; re-hashing
  // (on by default, and always in verify) also catches a writer that sealed the wrong bytes.
  if (raw.length !== rawLength || (options.checkId !== false && !keyedId(keys.idKey, raw).equals(id))) {
    throw new IntegrityError(
      `chunk ${hexId(id)} in ${where} does not match its id: the vault is damaged. ` +
        "Run `bulwark verify --read-data` and back the source up again.",
    );
  }
  return raw;
}

/**
 * decodeChunk for a restore: the chunk's raw bytes go into output[at, at + rawLength), zstd
 * decompressing straight there through one reused context, instead of into a new buffer per
 * chunk. The id is not re-hashed: the authentication tag binds the bytes to it (verify
 * --read-data re-hashes).
 */
export function decodeChunkInto(
  keys: ChunkKeys,
  type: number,
  id: Uint8Array,
  sealed: Uint8Array,
  rawLength: number,
  where: string,
  output: Uint8Array,
  at: number,
  zstd: ZstdInto,
): void {
  const plaintext = openSealedChunk(keys, type, id, sealed, where);
  const payload = plaintext.subarray(1);
  if (plaintext[0] === CODEC_RAW) {
    if (payload.length !== rawLength) {
      throw new IntegrityError(`chunk ${hexId(id)} in ${where} does not match its recorded size: the vault is damaged. Run \`bulwark verify --read-data\`.`);
    }
    output.set(payload, at);
  } else if (plaintext[0] === CODEC_ZSTD) {
    if (!zstd.decompress(payload, output, at, rawLength)) {
      throw new IntegrityError(`chunk ${hexId(id)} in ${where} does not decompress to its recorded size: the vault is damaged`);
    }
  } else throw new IntegrityError(`chunk ${hexId(id)} in ${where} has an unknown codec ${plaintext[0]}`);
}

function openSealedChunk(keys: ChunkKeys, type: number, id: Uint8Array, sealed: Uint8Array, where: string): Buffer {
  return openChunk(keys.dataKey, keys.format ?? CURRENT_SEAL_FORMAT, type, id, sealed, () => `chunk ${hexId(id)} in ${where}`);
}

export function hexId(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString("hex").slice(0, 16);
}
