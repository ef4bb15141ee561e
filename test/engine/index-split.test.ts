/**
 * Prune writes the index it keeps as several objects of bounded size (index-file.ts splitIndex):
 * one object for a whole vault stopped working past about 47 million chunks, because Node's
 * AES-GCM seals at most 2^31 - 1 bytes in one call (the object's plaintext is 45 bytes a chunk).
 * Scenarios: the parts hold every entry once and none more than the bound, a pack's entries may
 * span two objects and load whole again, and a vault with nothing left still gets one (empty) object.
 */
import { randomBytes } from "node:crypto";
import { expect, test } from "vitest";
import { ChunkIndex } from "../../runtime/engine/chunk-index.ts";
import { encodeIndex, forEachIndexEntry, splitIndex, type IndexedPack } from "../../runtime/engine/index-file.ts";

function packs(sizes: number[]): IndexedPack[] {
  return sizes.map((size) => ({
    packId: randomBytes(16).toString("hex"),
    entries: Array.from({ length: size }, (_, i) => ({ type: 0, id: randomBytes(32), offset: i * 100, length: 100, rawLength: 400 })),
  }));
}

test("the kept index is cut into objects of at most the bound, every entry once and in order, a pack spanning two objects", () => {
  const all = packs([5, 12, 1, 7]);
  const parts = splitIndex(all, 8);
  expect(parts.map((part) => part.reduce((sum, pack) => sum + pack.entries.length, 0))).toEqual([8, 8, 8, 1]);
  const flat = (list: IndexedPack[]) => list.flatMap((pack) => pack.entries.map((entry) => `${pack.packId}:${entry.id.toString("hex")}:${entry.offset}`));
  expect(parts.flatMap(flat)).toEqual(flat(all));
  // The second pack (12 entries) starts in the first object and ends in the third.
  expect(parts.filter((part) => part.some((pack) => pack.packId === all[1]!.packId))).toHaveLength(3);
});

test("objects written from the parts load into one index that locates every chunk in its pack", () => {
  const dataKey = randomBytes(32);
  const all = packs([3, 10, 4]);
  const index = new ChunkIndex();
  for (const [n, part] of splitIndex(all, 6).entries()) {
    const name = `index/part-${n}`;
    forEachIndexEntry(dataKey, name, encodeIndex(dataKey, name, part), (pack, type, id, offset, length, rawLength) =>
      index.addEntry(id, pack, offset, length, rawLength, type),
    );
  }
  expect(index.size).toBe(17);
  for (const pack of all) for (const entry of pack.entries) expect(index.lookup(entry.id)).toMatchObject({ pack: pack.packId, offset: entry.offset });
});

test("a vault with no chunk left still gets one empty index object, as before", () => {
  expect(splitIndex([], 8)).toEqual([[]]);
  expect(splitIndex(packs([8]), 8)).toHaveLength(1);
});
