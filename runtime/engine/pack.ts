/**
 * Pack objects: many sealed chunks back to back, then a sealed header that lists them, then the
 * header's length (4 bytes, little endian). The header makes a pack self-describing, so the index
 * can be rebuilt from packs and verify can check that index and packs agree.
 *
 *   [blob 0][blob 1]...[blob n-1][sealed header][u32 header length]
 *   header plaintext: u32 count, then per blob: u8 type, 32-byte id, u32 length, u32 raw length
 */
import { IntegrityError } from "../errors.ts";
import { CURRENT_SEAL_FORMAT, ID_BYTES, labelAssociatedData, openObject, sealObject, type DataKey, type SealFormat } from "./crypto.ts";

export interface PackEntry {
  type: number;
  id: Buffer;
  offset: number;
  length: number;
  rawLength: number;
}

const ENTRY_BYTES = 1 + ID_BYTES + 4 + 4;

export function packKey(packId: string): string {
  return `data/${packId.slice(0, 2)}/${packId}`;
}

export function packIdOfKey(key: string): string | undefined {
  const match = /^data\/([0-9a-f]{2})\/([0-9a-f]{32})$/.exec(key);
  return match && match[2].startsWith(match[1]) ? match[2] : undefined;
}

export function encodePackTrailer(dataKey: DataKey, packId: string, entries: PackEntry[], format: SealFormat = CURRENT_SEAL_FORMAT): Buffer {
  const header = Buffer.allocUnsafe(4 + entries.length * ENTRY_BYTES);
  header.writeUInt32LE(entries.length, 0);
  let at = 4;
  for (const entry of entries) {
    header[at] = entry.type;
    header.set(entry.id, at + 1);
    header.writeUInt32LE(entry.length, at + 1 + ID_BYTES);
    header.writeUInt32LE(entry.rawLength, at + 5 + ID_BYTES);
    at += ENTRY_BYTES;
  }
  const sealed = sealObject(dataKey, header, labelAssociatedData("pack-header", packId), format);
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32LE(sealed.length, 0);
  return Buffer.concat([sealed, length]);
}

/** Reads the header from the tail of a pack of the given size. */
export async function readPackHeader(
  dataKey: DataKey,
  packId: string,
  size: number,
  readRange: (offset: number, length: number) => Promise<Buffer>,
): Promise<PackEntry[]> {
  const where = `pack ${packId}`;
  if (size < 4) throw new IntegrityError(`${where} is truncated (${size} bytes)`);
  const tailLength = Math.min(size, 64 * 1024);
  const tail = await readRange(size - tailLength, tailLength);
  const headerLength = tail.readUInt32LE(tail.length - 4);
  if (headerLength + 4 > size) throw new IntegrityError(`${where} has a damaged header length`);
  const sealed =
    headerLength + 4 <= tail.length
      ? tail.subarray(tail.length - 4 - headerLength, tail.length - 4)
      : await readRange(size - 4 - headerLength, headerLength);
  const header = openObject(dataKey, sealed, labelAssociatedData("pack-header", packId), `header of ${where}`);
  const count = header.readUInt32LE(0);
  if (header.length !== 4 + count * ENTRY_BYTES) throw new IntegrityError(`header of ${where} is malformed`);
  const entries: PackEntry[] = [];
  let offset = 0;
  for (let i = 0, at = 4; i < count; i++, at += ENTRY_BYTES) {
    const length = header.readUInt32LE(at + 1 + ID_BYTES);
    entries.push({
      type: header[at],
      id: Buffer.from(header.subarray(at + 1, at + 1 + ID_BYTES)),
      offset,
      length,
      rawLength: header.readUInt32LE(at + 5 + ID_BYTES),
    });
    offset += length;
  }
  if (offset !== size - 4 - headerLength) throw new IntegrityError(`header of ${where} does not match its size`);
  return entries;
}
