/**
 * Sparse multi-GiB images, cheap to make: a file truncated to its size (a hole, no disk space) with
 * data written at a few offsets, and the same layout as the expected bytes of a restore, hashed
 * without ever holding the image in memory. A tree node of a block map covers 4096 blocks of
 * 64 KiB (256 MiB), so offsets spread over several GiB put data in several tree nodes.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm, stat } from "node:fs/promises";

export const GiB = 1024 * 1024 * 1024;
/** What one tree node of a block map covers: 4096 blocks of 64 KiB. */
export const TREE_NODE_BYTES = 4096 * 64 * 1024;

export interface Region {
  offset: number;
  data: Buffer;
}

/** Creates (or resizes) `file` to `size` bytes, a hole except for `regions`, written in order. */
export async function writeSparseImage(file: string, size: number, regions: Region[]): Promise<void> {
  const handle = await open(file, "w");
  try {
    await handle.truncate(size);
    for (const r of regions) await handle.write(r.data, 0, r.data.length, r.offset);
  } finally {
    await handle.close();
  }
}

/** Writes more regions into an existing image (an incremental change). */
export async function patchImage(file: string, regions: Region[]): Promise<void> {
  const handle = await open(file, "r+");
  try {
    for (const r of regions) await handle.write(r.data, 0, r.data.length, r.offset);
  } finally {
    await handle.close();
  }
}

/**
 * The sha256 of a `size`-byte image that is zero except for `regions` (later regions win where
 * they overlap earlier ones), computed piece by piece: no buffer of the image's size.
 */
export function expectedHash(size: number, regions: Region[]): string {
  const hash = createHash("sha256");
  const zeros = Buffer.alloc(16 * 1024 * 1024);
  // Flatten overlaps: cut every region into the parts not covered by a later one.
  const cuts = [...new Set([0, size, ...regions.flatMap((r) => [r.offset, r.offset + r.data.length])])].sort((a, b) => a - b);
  for (let i = 0; i + 1 < cuts.length; i++) {
    const [start, end] = [cuts[i]!, cuts[i + 1]!];
    const owner = regions.findLast((r) => r.offset <= start && r.offset + r.data.length >= end);
    if (owner) {
      hash.update(owner.data.subarray(start - owner.offset, end - owner.offset));
      continue;
    }
    for (let at = start; at < end; at += zeros.length) hash.update(zeros.subarray(0, Math.min(zeros.length, end - at)));
  }
  return hash.digest("hex");
}

/** The sha256 of a file, streamed. */
export async function hashFile(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Bytes of disk a file really takes (holes take none). */
export async function allocatedBytes(file: string): Promise<number> {
  return (await stat(file)).blocks * 512;
}

/**
 * What an image holds: byte ranges with known content (data, or zeros written over data), zero
 * everywhere else. Later writes replace earlier ones at the same offset and length.
 */
export class ImageLayout {
  readonly size: number;
  private readonly regions = new Map<number, Buffer>();

  constructor(size: number) {
    this.size = size;
  }

  set(offset: number, data: Buffer): Region {
    for (const [at, bytes] of this.regions) {
      const overlaps = at < offset + data.length && offset < at + bytes.length;
      if (overlaps && (at !== offset || bytes.length !== data.length)) throw new Error(`region at ${offset} overlaps the one at ${at} (test layout error)`);
    }
    this.regions.set(offset, data);
    return { offset, data };
  }

  get all(): Region[] {
    return [...this.regions].map(([offset, data]) => ({ offset, data })).sort((a, b) => a.offset - b.offset);
  }

  /** Bytes of regions that hold something other than zeros: what a hole-keeping restore allocates. */
  get dataBytes(): number {
    return this.all.filter((r) => r.data.some((b) => b !== 0)).reduce((n, r) => n + r.data.length, 0);
  }

  /** Tree nodes (256 MiB each) that hold data. */
  get treeNodes(): number[] {
    const nodes = new Set<number>();
    for (const r of this.all.filter((r) => r.data.some((b) => b !== 0))) {
      for (let n = Math.floor(r.offset / TREE_NODE_BYTES); n <= Math.floor((r.offset + r.data.length - 1) / TREE_NODE_BYTES); n++) nodes.add(n);
    }
    return [...nodes].sort((a, b) => a - b);
  }

  copy(): ImageLayout {
    const other = new ImageLayout(this.size);
    for (const r of this.all) other.set(r.offset, r.data);
    return other;
  }
}

/**
 * The byte ranges [start, end] of a file that hold allocated blocks, from the file system's
 * extent map (`filefrag`, e2fsprogs, which the emulator's seed uses too); undefined where it is
 * missing or the file system has no extent map (FIEMAP).
 */
export async function allocatedRanges(file: string): Promise<Array<[number, number]> | undefined> {
  const run = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    let stdout = "";
    const child = spawn("filefrag", ["-s", "-e", "-b1", file], { stdio: ["ignore", "pipe", "ignore"] });
    child.stdout.on("data", (d) => (stdout += d));
    child.once("error", () => resolve({ code: -1, stdout: "" }));
    child.once("close", (code) => resolve({ code, stdout }));
  });
  if (run.code !== 0 || !/extents? found/.test(run.stdout)) return undefined;
  return [...run.stdout.matchAll(/^\s*\d+:\s*(\d+)\.\.\s*(\d+):/gm)].map((m) => [Number(m[1]), Number(m[2])]);
}

/**
 * Checks that `file` holds exactly `layout`, without reading the whole (multi-GiB) file: the size
 * is right, every region reads back as it should, and nothing else is allocated: every extent of
 * the file lies within a region with data (what is not allocated reads as zeros). Without an
 * extent map, the file may allocate no more than a reference file holding only the data regions
 * (the regions are 4 KiB-aligned random bytes, so they are allocated, plus a few blocks of slack
 * for the file system's extent blocks). Returns a description of the first mismatch.
 */
export async function compareWithLayout(file: string, layout: ImageLayout): Promise<string | undefined> {
  const info = await stat(file);
  if (info.size !== layout.size) return `size ${info.size}, expected ${layout.size}`;
  const handle = await open(file, "r");
  try {
    for (const r of layout.all) {
      const got = Buffer.alloc(r.data.length);
      await handle.read(got, 0, got.length, r.offset);
      if (!got.equals(r.data)) return `the ${r.data.length} bytes at ${r.offset} differ`;
    }
  } finally {
    await handle.close();
  }
  const data = layout.all.filter((r) => r.data.some((b) => b !== 0));
  const extents = await allocatedRanges(file);
  if (extents) {
    // A restore writes whole 64 KiB blocks: the rest of a block that holds data may be allocated
    // (and must read as zeros); nothing else may be.
    const BLOCK = 64 * 1024;
    const blockHasData = (at: number) => {
      const block = Math.floor(at / BLOCK) * BLOCK;
      return data.some((r) => r.offset < block + BLOCK && block < r.offset + r.data.length);
    };
    const handle = await open(file, "r");
    try {
      for (const [start, end] of extents) {
        let at = start;
        while (at <= end) {
          const region = data.find((r) => r.offset <= at && at < r.offset + r.data.length);
          if (region) {
            at = region.offset + region.data.length;
            continue;
          }
          if (!blockHasData(at)) return `bytes ${at}..${end} are allocated outside every data region and its blocks`;
          const next = Math.min(end + 1, Math.floor(at / BLOCK) * BLOCK + BLOCK, ...data.filter((r) => r.offset > at).map((r) => r.offset));
          const bytes = Buffer.alloc(next - at);
          await handle.read(bytes, 0, bytes.length, at);
          if (bytes.some((b) => b !== 0)) return `bytes ${at}..${next - 1}, in a block with data but outside it, are not zero`;
          at = next;
        }
      }
    } finally {
      await handle.close();
    }
    return undefined;
  }
  const reference = `${file}.reference`;
  try {
    await writeSparseImage(reference, layout.size, layout.all.filter((r) => r.data.some((b) => b !== 0)));
    const expected = await allocatedBytes(reference);
    const allocated = info.blocks * 512;
    if (allocated > expected + 64 * 1024) return `${allocated} bytes allocated, more than the ${expected} of the data regions alone: something outside them was written`;
  } finally {
    await rm(reference, { force: true });
  }
  return undefined;
}
