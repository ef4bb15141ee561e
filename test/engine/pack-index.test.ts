/** Pack headers and index objects: they round trip, and any change to their bytes is rejected. */
import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import { decodeChunk, encodeChunk, looksIncompressible, CHUNK_DATA } from "../../runtime/engine/chunk-codec.ts";
import { keyedId } from "../../runtime/engine/crypto.ts";
import { decodeIndex, encodeIndex, type IndexedPack } from "../../runtime/engine/index-file.ts";
import { encodePackTrailer, packIdOfKey, packKey, readPackHeader, type PackEntry } from "../../runtime/engine/pack.ts";

const keys = { dataKey: randomBytes(32), idKey: randomBytes(32) };

/** A real pack: sealed chunks back to back, then the trailer. */
function buildPack(packId: string, count: number): { bytes: Buffer; entries: PackEntry[]; raws: Buffer[] } {
  const entries: PackEntry[] = [];
  const raws: Buffer[] = [];
  const parts: Buffer[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const raw = i % 2 ? randomBytes(1000 + i) : Buffer.from(`compressible ${i} `.repeat(200));
    const id = keyedId(keys.idKey, raw);
    const { sealed } = encodeChunk(keys, CHUNK_DATA, id, raw, 3);
    entries.push({ type: CHUNK_DATA, id, offset, length: sealed.length, rawLength: raw.length });
    raws.push(raw);
    parts.push(sealed);
    offset += sealed.length;
  }
  parts.push(encodePackTrailer(keys.dataKey, packId, entries));
  return { bytes: Buffer.concat(parts), entries, raws };
}

const reader = (bytes: Buffer) => async (offset: number, length: number) => bytes.subarray(offset, offset + length);

describe("pack header", () => {
  const packId = randomBytes(16).toString("hex");
  const pack = buildPack(packId, 40);

  test("round trips: the header lists every chunk at its offset, and each chunk decodes to its bytes", async () => {
    const header = await readPackHeader(keys.dataKey, packId, pack.bytes.length, reader(pack.bytes));
    expect(header).toEqual(pack.entries);
    header.forEach((entry, i) => {
      const sealed = pack.bytes.subarray(entry.offset, entry.offset + entry.length);
      expect(decodeChunk(keys, entry.type, entry.id, sealed, entry.rawLength, "test")).toEqual(pack.raws[i]);
    });
    expect(packIdOfKey(packKey(packId))).toBe(packId);
    expect(packIdOfKey(`data/00/${packId}`)).toBe(packId.startsWith("00") ? packId : undefined);
  });

  test("a flipped byte anywhere in the header or its length, or the header of another pack, is rejected", async () => {
    const headerStart = pack.entries.at(-1)!.offset + pack.entries.at(-1)!.length;
    for (let at = headerStart; at < pack.bytes.length; at += 97) {
      const damaged = Buffer.from(pack.bytes);
      damaged[at] ^= 0x01;
      await expect(readPackHeader(keys.dataKey, packId, damaged.length, reader(damaged)), `byte ${at}`).rejects.toBeInstanceOf(IntegrityError);
    }
    for (const at of [pack.bytes.length - 1, pack.bytes.length - 4]) {
      const damaged = Buffer.from(pack.bytes);
      damaged[at] ^= 0x80;
      await expect(readPackHeader(keys.dataKey, packId, damaged.length, reader(damaged))).rejects.toBeInstanceOf(IntegrityError);
    }
    // Moved under another pack's name, the header does not authenticate.
    await expect(readPackHeader(keys.dataKey, randomBytes(16).toString("hex"), pack.bytes.length, reader(pack.bytes))).rejects.toThrow(
      /failed authentication/,
    );
    await expect(readPackHeader(randomBytes(32), packId, pack.bytes.length, reader(pack.bytes))).rejects.toBeInstanceOf(IntegrityError);
  });

  test("a flipped byte in a chunk is rejected, and so is a chunk read under another id", () => {
    const entry = pack.entries[3];
    const sealed = Buffer.from(pack.bytes.subarray(entry.offset, entry.offset + entry.length));
    sealed[sealed.length >> 1] ^= 0x01;
    expect(() => decodeChunk(keys, entry.type, entry.id, sealed, entry.rawLength, "test")).toThrow(IntegrityError);
    const intact = pack.bytes.subarray(entry.offset, entry.offset + entry.length);
    expect(() => decodeChunk(keys, entry.type, pack.entries[4].id, intact, entry.rawLength, "test")).toThrow(IntegrityError);
  });
});

describe("index object", () => {
  const name = `index/${randomBytes(16).toString("hex")}`;
  const packs: IndexedPack[] = [0, 1, 2].map((p) => {
    const packId = randomBytes(16).toString("hex");
    return { packId, entries: buildPack(packId, 5 + p).entries };
  });

  test("round trips every pack and entry", () => {
    expect(decodeIndex(keys.dataKey, name, encodeIndex(keys.dataKey, name, packs))).toEqual(packs);
    expect(decodeIndex(keys.dataKey, name, encodeIndex(keys.dataKey, name, []))).toEqual([]);
  });

  test("a flipped byte anywhere, a truncation, or another object's name is rejected", () => {
    const sealed = encodeIndex(keys.dataKey, name, packs);
    for (let at = 0; at < sealed.length; at += 13) {
      const damaged = Buffer.from(sealed);
      damaged[at] ^= 0x01;
      expect(() => decodeIndex(keys.dataKey, name, damaged), `byte ${at}`).toThrow(IntegrityError);
    }
    expect(() => decodeIndex(keys.dataKey, name, sealed.subarray(0, sealed.length - 1))).toThrow(IntegrityError);
    expect(() => decodeIndex(keys.dataKey, name, sealed.subarray(0, 10))).toThrow(/truncated/);
    expect(() => decodeIndex(keys.dataKey, `index/${randomBytes(16).toString("hex")}`, sealed)).toThrow(/failed authentication/);
  });
});

describe("compression is skipped only where it cannot pay", () => {
  test("random bytes are recognised as incompressible; text, code-like and zero-heavy data are not", () => {
    const random = randomBytes(64 * 1024);
    const text = Buffer.from("the quick brown fox jumps over the lazy dog, again and again; ".repeat(1100).slice(0, 64 * 1024));
    const sparse = Buffer.alloc(64 * 1024);
    for (let i = 0; i < sparse.length; i += 97) sparse[i] = i & 0xff;
    // Half random, half zeros: high entropy nowhere near 8 bits, and zstd halves it.
    const mixed = Buffer.concat([randomBytes(32 * 1024), Buffer.alloc(32 * 1024)]);
    expect(looksIncompressible(random)).toBe(true);
    expect(looksIncompressible(text)).toBe(false);
    expect(looksIncompressible(sparse)).toBe(false);
    expect(looksIncompressible(mixed)).toBe(false);
    const keys = { dataKey: randomBytes(32), idKey: randomBytes(32) };
    const id = randomBytes(32);
    expect(encodeChunk(keys, 0, id, random, 1).compressed).toBe(false);
    expect(encodeChunk(keys, 0, id, mixed, 1).compressed).toBe(true);
    expect(encodeChunk(keys, 0, id, text, 1).compressed).toBe(true);
  });
});
