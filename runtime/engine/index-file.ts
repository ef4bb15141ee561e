/**
 * Index objects: which chunks live where. Each backup writes its own index objects, named at
 * random, after the packs they describe are durable, so concurrent writers never contend for one
 * object and no entry is ever lost to a lost update.
 *
 *   plaintext: "BWIX" u8 version, then groups: 16-byte pack id, u32 count,
 *              count x (u8 type, 32-byte id, u32 offset, u32 length, u32 raw length)
 */
import { IntegrityError } from "../errors.ts";
import { CURRENT_SEAL_FORMAT, ID_BYTES, labelAssociatedData, openObject, sealObject, type DataKey, type SealFormat } from "./crypto.ts";
import type { PackEntry } from "./pack.ts";

const MAGIC = Buffer.from("BWIX\x01", "latin1");
const ENTRY_BYTES = 1 + ID_BYTES + 12;
/** A pack's group header: its 16-byte id and a u32 count of its entries. */
const GROUP_BYTES = 20;

/** The plaintext layout, for writers that build it in bulk (the scale benchmark's synthesis). */
export const INDEX_LAYOUT = { magic: MAGIC, groupBytes: GROUP_BYTES, entryBytes: ENTRY_BYTES } as const;

export interface IndexedPack {
  packId: string;
  entries: PackEntry[];
}

export function encodeIndex(dataKey: DataKey, name: string, packs: IndexedPack[], format: SealFormat = CURRENT_SEAL_FORMAT): Buffer {
  let size = MAGIC.length;
  for (const pack of packs) size += GROUP_BYTES + pack.entries.length * ENTRY_BYTES;
  const plain = Buffer.allocUnsafe(size);
  MAGIC.copy(plain, 0);
  let at = MAGIC.length;
  for (const pack of packs) {
    plain.write(pack.packId, at, "hex");
    plain.writeUInt32LE(pack.entries.length, at + 16);
    at += GROUP_BYTES;
    for (const entry of pack.entries) {
      plain[at] = entry.type;
      plain.set(entry.id, at + 1);
      plain.writeUInt32LE(entry.offset, at + 1 + ID_BYTES);
      plain.writeUInt32LE(entry.length, at + 5 + ID_BYTES);
      plain.writeUInt32LE(entry.rawLength, at + 9 + ID_BYTES);
      at += ENTRY_BYTES;
    }
  }
  return sealIndexPlaintext(dataKey, name, plain, format);
}

/** Seals an index object's plaintext (laid out as INDEX_LAYOUT says) under its name. */
export function sealIndexPlaintext(dataKey: DataKey, name: string, plain: Uint8Array, format: SealFormat = CURRENT_SEAL_FORMAT): Buffer {
  return sealObject(dataKey, plain, labelAssociatedData("index", name), format);
}

/**
 * Cuts a list of packs into parts of at most `maxEntries` entries each (a pack's entries may span
 * two parts: loading adds entries one by one, so a pack named by two objects is whole again).
 */
export function splitIndex(packs: IndexedPack[], maxEntries: number): IndexedPack[][] {
  const parts: IndexedPack[][] = [];
  let part: IndexedPack[] = [];
  let entries = 0;
  for (const pack of packs) {
    for (let at = 0; at < pack.entries.length; ) {
      const take = Math.min(maxEntries - entries, pack.entries.length - at);
      part.push({ packId: pack.packId, entries: pack.entries.slice(at, at + take) });
      at += take;
      entries += take;
      if (entries === maxEntries) {
        parts.push(part);
        part = [];
        entries = 0;
      }
    }
  }
  if (part.length > 0 || parts.length === 0) parts.push(part);
  return parts;
}

/**
 * Walks an index object's entries without building an object per entry (a vault's whole index is
 * loaded at open: millions of short-lived objects would swell the heap). `id` is a view, valid
 * only during the call.
 */
export function forEachIndexEntry(
  dataKey: DataKey,
  name: string,
  sealed: Uint8Array,
  visit: (packId: string, type: number, id: Uint8Array, offset: number, length: number, rawLength: number) => void,
): void {
  const plain = openObject(dataKey, sealed, labelAssociatedData("index", name), `index object ${name}`);
  if (!plain.subarray(0, MAGIC.length).equals(MAGIC)) throw new IntegrityError(`index object ${name} has an unknown format`);
  let at = MAGIC.length;
  while (at < plain.length) {
    if (at + 20 > plain.length) throw new IntegrityError(`index object ${name} is malformed`);
    const packId = plain.toString("hex", at, at + 16);
    const count = plain.readUInt32LE(at + 16);
    at += 20;
    if (at + count * ENTRY_BYTES > plain.length) throw new IntegrityError(`index object ${name} is malformed`);
    for (let i = 0; i < count; i++, at += ENTRY_BYTES) {
      visit(
        packId,
        plain[at],
        plain.subarray(at + 1, at + 1 + ID_BYTES),
        plain.readUInt32LE(at + 1 + ID_BYTES),
        plain.readUInt32LE(at + 5 + ID_BYTES),
        plain.readUInt32LE(at + 9 + ID_BYTES),
      );
    }
  }
}

export function decodeIndex(dataKey: DataKey, name: string, sealed: Uint8Array): IndexedPack[] {
  const packs: IndexedPack[] = [];
  forEachIndexEntry(dataKey, name, sealed, (packId, type, id, offset, length, rawLength) => {
    let pack = packs.at(-1);
    if (!pack || pack.packId !== packId) packs.push((pack = { packId, entries: [] }));
    pack.entries.push({ type, id: Buffer.from(id), offset, length, rawLength });
  });
  return packs;
}
