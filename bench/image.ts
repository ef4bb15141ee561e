/**
 * Deterministic synthetic disk images for the benchmark.
 *
 * Version 1 is a sequence of 1 MiB regions, each pseudo-randomly zero (~30%), text-like (~40%,
 * words from a fixed vocabulary, compresses ~3-4x) or random (~30%). Version 2 is version 1 with
 * ~2% of its 4 KiB blocks rewritten in clustered runs of 1-16 blocks, the way a file system
 * rewrites a disk. Everything derives from (size, seed): the same arguments give the same bytes on
 * every machine. Images stream to disk in 4 MiB pieces and are never held in memory.
 */
import { createCipheriv, createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, copyFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Bump when the bytes a (size, seed) produce change, so cached images are regenerated. */
export const GENERATOR_VERSION = 1;

export const BLOCK_SIZE = 4096;
export const REGION_SIZE = 1 << 20;
const PIECE_SIZE = 4 << 20;
const REGIONS_PER_PIECE = PIECE_SIZE / REGION_SIZE;

export type RegionKind = "zero" | "text" | "random";

/** How version 2 differs from version 1; printed and recorded so readers know what changed. */
export interface RewritePlan {
  /** Rewritten runs, sorted by first block, not overlapping. */
  runs: Array<{ firstBlock: number; blockCount: number }>;
  blocksTotal: number;
  blocksRewritten: number;
}

export interface ImageLayout {
  sizeBytes: number;
  seed: string;
  regionKinds: RegionKind[];
}

export interface GeneratedImages {
  version1Path: string;
  version2Path: string;
  version1Sha256: string;
  version2Sha256: string;
  sizeBytes: number;
  seed: string;
  description: ImageDescription;
  /** True when both images came from the cache under .bench/. */
  fromCache: boolean;
}

export interface ImageDescription {
  generatorVersion: number;
  regionSize: number;
  regions: { zero: number; text: number; random: number };
  blockSize: number;
  blocksTotal: number;
  blocksRewritten: number;
  rewrittenRuns: number;
  rewrittenFraction: number;
  runLengthBlocks: { min: number; max: number; mean: number };
  rewrittenByRegionKind: { zero: number; text: number; random: number };
  rewriteRule: string;
}

// ---------------------------------------------------------------------------------------------
// Pseudo-random sources

/** A keyed AES-128-CTR keystream: fast (AES-NI), deterministic, addressable by stream and offset. */
export class Keystream {
  readonly #key: Buffer;
  #zeros = Buffer.alloc(0);

  constructor(seed: string, purpose: string) {
    this.#key = createHash("sha256").update(`bulwark-bench/${seed}/${purpose}`).digest().subarray(0, 16);
  }

  /** Fills `out` with the keystream of sub-stream `streamId`; each sub-stream is 2^64 blocks long. */
  fill(out: Buffer, streamId: number): Buffer {
    const iv = Buffer.alloc(16);
    iv.writeUInt32BE(Math.floor(streamId / 0x1_0000_0000), 0);
    iv.writeUInt32BE(streamId >>> 0, 4);
    const cipher = createCipheriv("aes-128-ctr", this.#key, iv);
    if (this.#zeros.length < out.length) this.#zeros = Buffer.alloc(out.length);
    // CTR never buffers, so update() returns exactly as many bytes as it is given.
    cipher.update(this.#zeros.subarray(0, out.length)).copy(out);
    cipher.final();
    return out;
  }
}

/** sfc32: a small, good 32-bit PRNG for layout decisions (few calls, so speed does not matter). */
export class SmallRng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: string, purpose: string) {
    const h = createHash("sha256").update(`bulwark-bench/${seed}/${purpose}`).digest();
    this.#a = h.readUInt32LE(0);
    this.#b = h.readUInt32LE(4);
    this.#c = h.readUInt32LE(8);
    this.#d = h.readUInt32LE(12);
    for (let i = 0; i < 16; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** Uniform float in [0, 1). */
  next(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}

// ---------------------------------------------------------------------------------------------
// Text-like content

/**
 * A fixed vocabulary: 4096 pseudo-words of 2-10 letters, made from a constant seed so it is the
 * same for every image. Words are drawn with a skew toward the first ones (like word frequencies in
 * real text), which is what makes the text compress ~3-4x with a fast zstd level.
 */
class Vocabulary {
  readonly bytes: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint8Array;
  readonly zipf: Uint16Array;
  static readonly SIZE = 4096;

  constructor() {
    const rng = new SmallRng("vocabulary", "v1");
    const letters = "etaoinshrdlcumwfgypbvkjxqz";
    const parts: number[] = [];
    this.offsets = new Uint32Array(Vocabulary.SIZE);
    this.lengths = new Uint8Array(Vocabulary.SIZE);
    for (let w = 0; w < Vocabulary.SIZE; w++) {
      const length = rng.int(2, 10);
      this.offsets[w] = parts.length;
      this.lengths[w] = length;
      for (let i = 0; i < length; i++) {
        // Skew letters toward the frequent ones, as in English.
        const u = rng.next();
        parts.push(letters.charCodeAt(Math.floor(u * u * letters.length)));
      }
    }
    this.bytes = Uint8Array.from(parts);
    // Zipf's law (frequency ~ 1/rank), as in natural language: a 16-bit draw indexes this table.
    this.zipf = new Uint16Array(65536);
    let total = 0;
    for (let w = 1; w <= Vocabulary.SIZE; w++) total += 1 / w;
    let cumulative = 0;
    let w = 0;
    for (let u = 0; u < 65536; u++) {
      const target = ((u + 0.5) / 65536) * total;
      while (w < Vocabulary.SIZE - 1 && cumulative + 1 / (w + 1) < target) cumulative += 1 / ++w;
      this.zipf[u] = w;
    }
  }
}

const vocabulary = new Vocabulary();
const SPACE = 0x20;
const COMMA = 0x2c;
const PERIOD = 0x2e;
const NEWLINE = 0x0a;

/**
 * Fills `out` with text-like bytes: words separated by spaces, with commas, full stops and line
 * breaks. `randomness` supplies the choices (two bytes per word; it must be at least as long as
 * `out`, which is always enough since every word takes at least three bytes).
 */
export function fillText(out: Buffer, randomness: Buffer): void {
  const { bytes, offsets, lengths, zipf } = vocabulary;
  let pos = 0;
  let r = 0;
  let wordsOnLine = 0;
  const end = out.length;
  while (pos < end) {
    const a = randomness[r];
    const b = randomness[r + 1];
    r += 2;
    const word = zipf[a | (b << 8)];
    const offset = offsets[word];
    const length = lengths[word];
    for (let i = 0; i < length && pos < end; i++) out[pos++] = bytes[offset + i];
    if (pos >= end) break;
    wordsOnLine++;
    const punct = randomness[r - 1] ^ randomness[r - 2] ^ (word & 0xff);
    if (wordsOnLine >= 12 && (punct & 3) === 0) {
      out[pos++] = PERIOD;
      if (pos < end) out[pos++] = NEWLINE;
      wordsOnLine = 0;
    } else if ((punct & 0x1f) === 1) {
      out[pos++] = COMMA;
      if (pos < end) out[pos++] = SPACE;
    } else {
      out[pos++] = SPACE;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Layout and version 2's rewrites

export function planLayout(sizeBytes: number, seed: string): ImageLayout {
  const rng = new SmallRng(seed, "layout");
  const regionCount = sizeBytes / REGION_SIZE;
  const regionKinds: RegionKind[] = new Array(regionCount);
  for (let i = 0; i < regionCount; i++) {
    const u = rng.next();
    regionKinds[i] = u < 0.3 ? "zero" : u < 0.7 ? "text" : "random";
  }
  return { sizeBytes, seed, regionKinds };
}

/** Fraction of 4 KiB blocks version 2 rewrites. */
export const REWRITE_FRACTION = 0.02;

/**
 * Picks the blocks version 2 rewrites: clusters (a hot spot anywhere on the disk) of 1-6 runs each,
 * the runs within 1 MiB of the cluster's centre and 1-16 blocks long, until 2% of all blocks are
 * rewritten. Overlapping runs merge.
 */
export function planRewrites(sizeBytes: number, seed: string): RewritePlan {
  const rng = new SmallRng(seed, "rewrites");
  const blocksTotal = sizeBytes / BLOCK_SIZE;
  const target = Math.round(blocksTotal * REWRITE_FRACTION);
  const rewritten = new Uint8Array(blocksTotal);
  const spread = REGION_SIZE / BLOCK_SIZE;
  let count = 0;
  while (count < target) {
    const centre = rng.int(0, blocksTotal - 1);
    const runsInCluster = rng.int(1, 6);
    for (let k = 0; k < runsInCluster && count < target; k++) {
      const first = Math.max(0, Math.min(blocksTotal - 1, centre + rng.int(-spread, spread)));
      const length = rng.int(1, 16);
      for (let b = first; b < Math.min(blocksTotal, first + length) && count < target; b++) {
        if (rewritten[b] === 0) {
          rewritten[b] = 1;
          count++;
        }
      }
    }
  }
  const runs: RewritePlan["runs"] = [];
  for (let b = 0; b < blocksTotal; ) {
    if (rewritten[b] === 0) {
      b++;
      continue;
    }
    const first = b;
    while (b < blocksTotal && rewritten[b] === 1) b++;
    runs.push({ firstBlock: first, blockCount: b - first });
  }
  return { runs, blocksTotal, blocksRewritten: count };
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Writes version 1 to `path`, returning its SHA-256. Streams in 4 MiB pieces. */
async function writeVersion1(path: string, layout: ImageLayout): Promise<string> {
  const keystream = new Keystream(layout.seed, "v1");
  const piece = Buffer.alloc(PIECE_SIZE);
  const randomness = Buffer.alloc(REGION_SIZE);
  const hash = createHash("sha256");
  const file = await open(path, "w");
  try {
    const regionCount = layout.regionKinds.length;
    for (let first = 0; first < regionCount; first += REGIONS_PER_PIECE) {
      const inPiece = Math.min(REGIONS_PER_PIECE, regionCount - first);
      for (let j = 0; j < inPiece; j++) {
        const region = piece.subarray(j * REGION_SIZE, (j + 1) * REGION_SIZE);
        const index = first + j;
        switch (layout.regionKinds[index]) {
          case "zero":
            region.fill(0);
            break;
          case "random":
            keystream.fill(region, index);
            break;
          case "text":
            fillText(region, keystream.fill(randomness, index));
            break;
        }
      }
      const chunk = piece.subarray(0, inPiece * REGION_SIZE);
      hash.update(chunk);
      await file.write(chunk, 0, chunk.length, first * REGION_SIZE);
    }
  } finally {
    await file.close();
  }
  return hash.digest("hex");
}

/**
 * Makes version 2 by copying version 1 and overwriting the planned runs in place. A run in a text
 * region gets new text, in a random region new random bytes, and in a zero region new text (a
 * file system writing into free space; zeros over zeros would be no change at all).
 */
async function writeVersion2(
  version1Path: string,
  path: string,
  layout: ImageLayout,
  plan: RewritePlan,
): Promise<void> {
  await copyFile(version1Path, path);
  const keystream = new Keystream(layout.seed, "v2");
  const file = await open(path, "r+");
  try {
    let runIndex = 0;
    for (const run of plan.runs) {
      // A run may straddle a region boundary; fill each block by its own region's kind.
      const bytes = Buffer.alloc(run.blockCount * BLOCK_SIZE);
      const randomness = keystream.fill(Buffer.alloc(bytes.length), runIndex++);
      const textBytes = Buffer.alloc(bytes.length);
      fillText(textBytes, keystream.fill(Buffer.alloc(bytes.length), 0x8000_0000 + runIndex));
      for (let i = 0; i < run.blockCount; i++) {
        const offset = (run.firstBlock + i) * BLOCK_SIZE;
        const kind = layout.regionKinds[Math.floor(offset / REGION_SIZE)];
        const source = kind === "random" ? randomness : textBytes;
        source.copy(bytes, i * BLOCK_SIZE, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
      }
      await file.write(bytes, 0, bytes.length, run.firstBlock * BLOCK_SIZE);
    }
  } finally {
    await file.close();
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: PIECE_SIZE })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export function describe(layout: ImageLayout, plan: RewritePlan): ImageDescription {
  const regions = { zero: 0, text: 0, random: 0 };
  for (const kind of layout.regionKinds) regions[kind]++;
  const byKind = { zero: 0, text: 0, random: 0 };
  let min = Infinity;
  let max = 0;
  for (const run of plan.runs) {
    min = Math.min(min, run.blockCount);
    max = Math.max(max, run.blockCount);
    for (let i = 0; i < run.blockCount; i++) {
      byKind[layout.regionKinds[Math.floor(((run.firstBlock + i) * BLOCK_SIZE) / REGION_SIZE)]]++;
    }
  }
  return {
    generatorVersion: GENERATOR_VERSION,
    regionSize: REGION_SIZE,
    regions,
    blockSize: BLOCK_SIZE,
    blocksTotal: plan.blocksTotal,
    blocksRewritten: plan.blocksRewritten,
    rewrittenRuns: plan.runs.length,
    rewrittenFraction: plan.blocksRewritten / plan.blocksTotal,
    runLengthBlocks: { min, max, mean: plan.blocksRewritten / Math.max(1, plan.runs.length) },
    rewrittenByRegionKind: byKind,
    rewriteRule:
      "clusters at pseudo-random spots, each 1-6 runs of 1-16 blocks within 1 MiB of the cluster centre " +
      "(touching runs merge); new text in text and zero regions, new random bytes in random regions",
  };
}

/**
 * Returns versions 1 and 2 of the image for (size, seed), generating them into `cacheDir` unless a
 * complete pair is already there. A pair is complete once its metadata file exists; it is written
 * last, so an interrupted generation is simply redone.
 */
export async function ensureImages(
  cacheDir: string,
  sizeBytes: number,
  seed: string,
  log: (line: string) => void,
): Promise<GeneratedImages> {
  if (sizeBytes <= 0 || sizeBytes % PIECE_SIZE !== 0) {
    throw new Error(`image size must be a positive multiple of 4 MiB, got ${sizeBytes} bytes`);
  }
  if (!/^[A-Za-z0-9._-]+$/.test(seed)) throw new Error(`seed must be letters, digits, '.', '_' or '-': ${seed}`);
  await mkdir(cacheDir, { recursive: true });
  const stem = join(cacheDir, `image-${sizeBytes}-${seed}-g${GENERATOR_VERSION}`);
  const version1Path = `${stem}-v1.img`;
  const version2Path = `${stem}-v2.img`;
  const metaPath = `${stem}.json`;
  const layout = planLayout(sizeBytes, seed);
  const plan = planRewrites(sizeBytes, seed);
  const description = describe(layout, plan);

  const cached = await readFile(metaPath, "utf8").then(
    (text) => JSON.parse(text) as { version1Sha256: string; version2Sha256: string },
    () => undefined,
  );
  if (cached !== undefined) {
    const sizes = await Promise.all([stat(version1Path), stat(version2Path)]).catch(() => undefined);
    if (sizes !== undefined && sizes[0].size === sizeBytes && sizes[1].size === sizeBytes) {
      return { version1Path, version2Path, ...cached, sizeBytes, seed, description, fromCache: true };
    }
  }

  await rm(metaPath, { force: true });
  log(`generating ${formatBytes(sizeBytes)} image pair (seed ${seed}) into ${cacheDir} ...`);
  const started = performance.now();
  const version1Sha256 = await writeVersion1(`${version1Path}.partial`, layout);
  await rename(`${version1Path}.partial`, version1Path);
  await writeVersion2(version1Path, `${version2Path}.partial`, layout, plan);
  await rename(`${version2Path}.partial`, version2Path);
  const version2Sha256 = await sha256File(version2Path);
  await writeFile(metaPath, JSON.stringify({ version1Sha256, version2Sha256, description }, null, 2));
  log(`generated in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { version1Path, version2Path, version1Sha256, version2Sha256, sizeBytes, seed, description, fromCache: false };
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && value % 1024 === 0) {
    value /= 1024;
    unit++;
  }
  if (value >= 1024 && unit < units.length - 1) {
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit++;
    }
    return `${value.toFixed(2)} ${units[unit]}`;
  }
  return `${value} ${units[unit]}`;
}
