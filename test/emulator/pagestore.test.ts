/**
 * The emulator's page store at a real disk size (issue 13's 64 GiB azure-disk case): a sparse
 * 64 GiB image holds scattered writes in little memory, a frozen copy stays point-in-time while the
 * disk is written, the diff and the valid ranges of a window are exactly the pages written or
 * cleared in it, and a truncated copy loses its tail.
 */
import { describe, expect, test } from "vitest";
import { PageImage } from "./pagestore.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function bytes(seed: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 31 + i * 7) & 0xff || 1;
  return out;
}

describe("a sparse 64 GiB page image", () => {
  test("scattered writes read back, diff per 150 MiB window against a frozen copy, and the copy keeps its bytes", () => {
    const disk = new PageImage(64 * GiB);
    const offsets = Array.from({ length: 2000 }, (_, i) => i * 32 * MiB + (i % 7) * 64 * KiB);
    offsets.forEach((offset, i) => disk.write(offset, bytes(i, 4 * KiB)));
    expect(disk.storedBytes).toBe(2000 * 4 * KiB);
    const golden = disk.freeze();

    // Overwrite every tenth write with new bytes, clear every eleventh, write a page into a hole.
    const rewritten = offsets.filter((_, i) => i % 10 === 0);
    rewritten.forEach((offset, i) => disk.write(offset + 512, bytes(9000 + i, 1024)));
    const cleared = offsets.filter((_, i) => i % 11 === 5);
    cleared.forEach((offset) => disk.clear(offset, 4 * KiB));
    disk.write(40 * GiB + 512, bytes(7, 512));

    const window = 150 * MiB;
    const changed: Array<[number, number]> = [];
    const gone: Array<[number, number]> = [];
    for (let start = 0; start < disk.size; start += window) {
      const { changed: c, cleared: k } = disk.diff(golden, start, Math.min(disk.size, start + window) - 1);
      changed.push(...c.map((r): [number, number] => [r.start, r.end + 1]));
      gone.push(...k.map((r): [number, number] => [r.start, r.end + 1]));
    }
    // A page rewritten and then cleared was valid before and is not now: cleared.
    const stillWritten = rewritten.filter((o) => !cleared.includes(o));
    const expectedChanged: Array<[number, number]> = [...stillWritten.map((o): [number, number] => [o + 512, o + 1536]), [40 * GiB + 512, 40 * GiB + 1024]];
    expect(changed).toEqual(expectedChanged.sort((a, b) => a[0] - b[0]));
    expect(gone).toEqual(cleared.map((o) => [o, o + 4 * KiB]));

    // The frozen copy still holds the first bytes; the disk the new ones.
    expect(golden.read(offsets[0], 4 * KiB).equals(bytes(0, 4 * KiB))).toBe(true);
    expect(disk.read(offsets[0] + 512, 1024).equals(bytes(9000, 1024))).toBe(true);
    expect(disk.read(cleared[0], 4 * KiB).equals(Buffer.alloc(4 * KiB))).toBe(true);
    expect(golden.validRanges(0, 64 * MiB - 1)).toEqual([
      { start: offsets[0], end: offsets[0] + 4 * KiB - 1 },
      { start: offsets[1], end: offsets[1] + 4 * KiB - 1 },
    ]);
    // Nothing written since a copy: no difference.
    expect(disk.freeze().diff(disk)).toEqual({ changed: [], cleared: [] });
  });

  test("a truncated copy loses the pages past its end and leaves the original whole", () => {
    const image = new PageImage(4 * MiB + 512);
    image.write(4 * MiB - 512, bytes(1, 1024));
    const short = image.truncated(512);
    expect(short.size).toBe(4 * MiB);
    expect(short.validRanges()).toEqual([{ start: 4 * MiB - 512, end: 4 * MiB - 1 }]);
    expect(image.validRanges()).toEqual([{ start: 4 * MiB - 512, end: 4 * MiB + 511 }]);
    image.write(0, bytes(2, 512));
    expect(short.validRanges()).toHaveLength(1);
  });
});
