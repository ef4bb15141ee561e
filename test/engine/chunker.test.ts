/** The FastCDC chunker: boundaries depend on content and key only, and an edit moves only nearby ones. */
import { createCipheriv, createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { Chunker, type ChunkerParams } from "../../runtime/engine/chunker.ts";

const PARAMS: ChunkerParams = { min: 2 * 1024, avg: 8 * 1024, max: 32 * 1024 };
const KEY = createHash("sha256").update("chunker test key").digest();

function random(seed: string, length: number): Buffer {
  const key = createHash("sha256").update(seed).digest().subarray(0, 16);
  return createCipheriv("aes-128-ctr", key, Buffer.alloc(16)).update(Buffer.alloc(length));
}

/** Cuts data the way backup-stream.ts does: in pieces, keeping the remainder between calls. */
function cut(chunker: Chunker, data: Buffer, pieceBytes = 100_000): number[] {
  const lengths: number[] = [];
  let buffered = Buffer.alloc(0);
  for (let at = 0; at < data.length; at += pieceBytes) {
    buffered = Buffer.concat([buffered, data.subarray(at, at + pieceBytes)]);
    const final = at + pieceBytes >= data.length;
    for (;;) {
      const length = chunker.next(buffered, final);
      if (length === 0) break;
      lengths.push(length);
      buffered = buffered.subarray(length);
      if (buffered.length === 0) break;
    }
  }
  return lengths;
}

function boundaries(lengths: number[]): number[] {
  const out: number[] = [];
  let at = 0;
  for (const length of lengths) out.push((at += length));
  return out;
}

describe("Chunker", () => {
  const data = random("data", 2 * 1024 * 1024);

  test("boundaries are deterministic, cover the input, and respect min and max", () => {
    const one = cut(new Chunker(KEY, PARAMS), data);
    const two = cut(new Chunker(KEY, PARAMS), data, 7_777); // fed in different pieces
    expect(two).toEqual(one);
    expect(one.reduce((a, b) => a + b, 0)).toBe(data.length);
    for (const length of one.slice(0, -1)) {
      expect(length).toBeGreaterThan(PARAMS.min);
      expect(length).toBeLessThanOrEqual(PARAMS.max);
    }
    // Around the average size: 2 MiB in 8 KiB chunks is roughly 256 of them.
    expect(one.length).toBeGreaterThan(150);
    expect(one.length).toBeLessThan(400);
  });

  test("boundaries depend on the key (ids and cut points reveal nothing without it)", () => {
    const other = createHash("sha256").update("another key").digest();
    expect(cut(new Chunker(other, PARAMS), data)).not.toEqual(cut(new Chunker(KEY, PARAMS), data));
  });

  test("inserting bytes near the start changes only the chunks near the insertion", () => {
    const before = boundaries(cut(new Chunker(KEY, PARAMS), data));
    const inserted = Buffer.from("a few inserted bytes");
    const edited = Buffer.concat([data.subarray(0, 5000), inserted, data.subarray(5000)]);
    const after = boundaries(cut(new Chunker(KEY, PARAMS), edited)).map((b) => b - inserted.length);
    const shared = after.filter((b) => before.includes(b));
    // All but the first couple of boundaries are found again, shifted by the insertion.
    expect(shared.length).toBeGreaterThanOrEqual(before.length - 3);
    expect(after.slice(3)).toEqual(before.slice(before.length - after.length + 3));
  });

  test("without final, an input with no boundary asks for more; zero-filled data is cut at max", () => {
    const chunker = new Chunker(KEY, PARAMS);
    expect(chunker.next(data.subarray(0, PARAMS.min), false)).toBe(0);
    expect(chunker.next(data.subarray(0, PARAMS.min), true)).toBe(PARAMS.min);
    const zeros = Buffer.alloc(100 * 1024);
    expect(cut(chunker, zeros)).toEqual([PARAMS.max, PARAMS.max, PARAMS.max, 100 * 1024 - 3 * PARAMS.max]);
  });

  test("rejects parameters that are not min < avg < max", () => {
    expect(() => new Chunker(KEY, { min: 8, avg: 8, max: 16 })).toThrow(/invalid chunker parameters/);
  });
});
