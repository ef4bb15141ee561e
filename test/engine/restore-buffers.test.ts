/**
 * Issue 13, engine speed: a restore decodes each pack range's chunks back to back into an output
 * buffer it lends to a worker and reuses for the next range, and decompresses through one reused
 * zstd context. Reuse must never let one chunk's bytes reach another's place: these restore points
 * whose chunks differ in size, codec, compressibility and repetition, through worker threads and
 * in process, and compare every byte; and they hold the reused decompressor to refusing what a
 * damaged or hostile frame could make it write.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { zstdCompressSync } from "node:zlib";
import { afterAll, beforeAll, expect, test } from "vitest";
import { backupDisk, backupFileStream } from "../../runtime/engine/backup.ts";
import type { BlockSource } from "../../runtime/engine/backup-blocks.ts";
import { CodecPool, prestartCodecThreads } from "../../runtime/engine/codec-pool.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { ZstdInto } from "../../runtime/engine/zstd-into.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openFileTarget } from "../../runtime/sources/local.ts";
import { openStore } from "../../runtime/store/open.ts";
import { pattern } from "../support/bytes.ts";

const BLOCK = 64 * 1024;
let dir: string;
let vault: Vault;
let pool: CodecPool;
let disk: Buffer;
let diskPoint: PointManifest;
let file: Buffer;
let filePoint: PointManifest;

/** Words of a small vocabulary: compresses about 3x, like the benchmark's text regions. */
function text(seed: number, length: number): Buffer {
  const words = ["vault", "restore", "chunk", "pack", "range", "worker", "buffer", "azure", "disk", "point"];
  const random = pattern(seed, length);
  const parts: string[] = [];
  let size = 0;
  for (let i = 0; size < length; i++) {
    const word = words[random[i % length]! % words.length]!;
    parts.push(word);
    size += word.length + 1;
  }
  return Buffer.from(parts.join(" ")).subarray(0, length);
}

/**
 * A disk of 64 KiB blocks of every kind a restore meets: 24 MiB that compress to a few dozen
 * bytes a block (more raw bytes than one output buffer holds, in one pack range), random blocks
 * stored raw, text, zero blocks (holes), the same block at five places, and a short last block.
 */
function mixedDisk(): Buffer {
  const blocks: Buffer[] = [];
  const repeated = pattern(77, BLOCK);
  for (let i = 0; i < 384; i++) {
    const nearlyConstant = Buffer.alloc(BLOCK, i % 251);
    nearlyConstant.writeUInt32LE(i, (i * 97) % (BLOCK - 4));
    blocks.push(nearlyConstant);
  }
  for (let i = 0; i < 96; i++) {
    if (i % 20 === 3) blocks.push(repeated);
    else if (i % 7 === 0) blocks.push(Buffer.alloc(BLOCK));
    else if (i % 2 === 0) blocks.push(pattern(1000 + i, BLOCK));
    else blocks.push(text(2000 + i, BLOCK));
  }
  blocks.push(text(9, 12_345));
  return Buffer.concat(blocks);
}

function sourceOf(bytes: Buffer): BlockSource {
  return { size: bytes.length, read: async (offset, length) => Buffer.from(bytes.subarray(offset, offset + length)) };
}

async function restoreToFile(point: PointManifest, through: CodecPool, name: string): Promise<Buffer> {
  const destination = path.join(dir, name);
  const target = await openFileTarget(destination, point.size);
  try {
    await restoreContent(vault, through, point, target);
    await target.commit();
  } catch (error) {
    await target.abort();
    throw error;
  }
  return readFile(destination);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bulwark-restore-buffers-"));
  const { store } = await openStore(path.join(dir, "vault"));
  // Content-defined chunks of 16-256 KiB, so a stream point's chunks differ in size.
  vault = await Vault.init(store, new PassphraseProvider("restore buffers test passphrase"), {
    chunker: { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 },
  });
  pool = new CodecPool(vault.master, { threads: 2, zstdLevel: vault.config.zstdLevel });
  disk = mixedDisk();
  diskPoint = await backupDisk(vault, sourceOf(disk), { kind: "disk", source: { type: "image", path: "/restore-buffers.img" }, tags: {} });
  file = Buffer.concat([text(5, 3 * 1024 * 1024 + 777), pattern(6, 2 * 1024 * 1024 + 3), Buffer.alloc(300_000, 7), text(8, 1024 * 1024)]);
  filePoint = await backupFileStream(
    vault,
    (async function* () {
      for (let at = 0; at < file.length; at += 1_000_003) yield file.subarray(at, at + 1_000_003);
    })(),
    { kind: "file", source: { type: "file", path: "/restore-buffers.bin" }, tags: {} },
  );
}, 120_000);

afterAll(async () => {
  await pool?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("a disk point of compressed, raw, repeated, zero and short blocks restores byte for byte through the worker threads", async () => {
  const restored = await restoreToFile(diskPoint, pool, "disk-workers.img");
  expect(restored.length).toBe(disk.length);
  expect(restored.equals(disk)).toBe(true);
  // Zero blocks stayed holes: fewer bytes allocated than the file's size.
  expect((await stat(path.join(dir, "disk-workers.img"))).blocks * 512).toBeLessThan(disk.length);
});

test("a stream point whose chunks all differ in size restores byte for byte, in process and through the workers", async () => {
  const inProcess = new CodecPool(vault.master, { threads: 0 });
  try {
    expect((await restoreToFile(filePoint, inProcess, "file-here.bin")).equals(file)).toBe(true);
    expect((await restoreToFile(diskPoint, inProcess, "disk-here.img")).equals(disk)).toBe(true);
  } finally {
    await inProcess.close();
  }
  expect((await restoreToFile(filePoint, pool, "file-workers.bin")).equals(file)).toBe(true);
});

test("two restores at once through one pool share no output buffer: each gets its own point's bytes", async () => {
  const [a, b] = await Promise.all([restoreToFile(diskPoint, pool, "disk-twice.img"), restoreToFile(filePoint, pool, "file-twice.bin")]);
  expect(a.equals(disk)).toBe(true);
  expect(b.equals(file)).toBe(true);
});

test("codec threads started before the vault's keys are known are taken by the next pool, told its keys, and restore its point", async () => {
  prestartCodecThreads(2);
  const late = new CodecPool(vault.master, { threads: 2, zstdLevel: vault.config.zstdLevel });
  try {
    expect((await restoreToFile(diskPoint, late, "disk-prestarted.img")).equals(disk)).toBe(true);
  } finally {
    await late.close();
  }
});

test("a chunk larger than the reused output buffers (a vault of 16 MiB blocks) restores through a buffer of its own", async () => {
  const { store } = await openStore(path.join(dir, "large-blocks"));
  const largeBlocks = await Vault.init(store, new PassphraseProvider("restore buffers test passphrase"), { blockSize: 16 * 1024 * 1024 });
  const image = Buffer.concat([text(31, 6 * 1024 * 1024), pattern(32, 4 * 1024 * 1024 + 99)]);
  const point = await backupDisk(largeBlocks, sourceOf(image), { kind: "disk", source: { type: "image", path: "/large-blocks.img" }, tags: {} });
  const destination = path.join(dir, "large-blocks.img");
  const target = await openFileTarget(destination, point.size);
  const itsPool = new CodecPool(largeBlocks.master, { threads: 2 });
  try {
    await restoreContent(largeBlocks, itsPool, point, target);
    await target.commit();
  } finally {
    await itsPool.close();
  }
  expect((await readFile(destination)).equals(image)).toBe(true);
});

test("the reused zstd context writes a frame only into its own place and refuses frames that do not decompress to their recorded size", () => {
  const zstd = new ZstdInto();
  try {
    // On the Node this project pins, the context really is reused (not the per-call fallback).
    expect(zstd.reusesContext).toBe(true);
    const first = text(11, 70_000);
    const second = text(12, 5_000);
    const output = Buffer.alloc(80_000, 0xee);
    expect(zstd.decompress(zstdCompressSync(first), output, 3, first.length)).toBe(true);
    expect(zstd.decompress(zstdCompressSync(second), output, 3 + first.length, second.length)).toBe(true);
    expect(output.subarray(3, 3 + first.length).equals(first)).toBe(true);
    expect(output.subarray(3 + first.length, 3 + first.length + second.length).equals(second)).toBe(true);
    expect(output[2]).toBe(0xee);
    expect(output.subarray(3 + first.length + second.length).every((byte) => byte === 0xee)).toBe(true);

    const frame = zstdCompressSync(second);
    const scratch = Buffer.alloc(10_000);
    // Longer than recorded, shorter than recorded, damaged, trailing bytes, truncated, outside the buffer.
    expect(zstd.decompress(frame, scratch, 0, second.length - 1)).toBe(false);
    expect(zstd.decompress(frame, scratch, 0, second.length + 1)).toBe(false);
    expect(zstd.decompress(pattern(13, 200), scratch, 0, 200)).toBe(false);
    expect(zstd.decompress(Buffer.concat([frame, Buffer.from([1, 2, 3])]), scratch, 0, second.length)).toBe(false);
    expect(zstd.decompress(frame.subarray(0, frame.length - 4), scratch, 0, second.length)).toBe(false);
    expect(zstd.decompress(frame, scratch, scratch.length - 10, second.length)).toBe(false);
    expect(zstd.decompress(frame, scratch, -1, second.length)).toBe(false);
    // After every refusal the next good frame still decodes.
    expect(zstd.decompress(frame, scratch, 1, second.length)).toBe(true);
    expect(scratch.subarray(1, 1 + second.length).equals(second)).toBe(true);
  } finally {
    zstd.close();
  }
});

test("a restored file larger than the background flush interval is complete once committed", async () => {
  const destination = path.join(dir, "flushed.bin");
  const size = 70 * 1024 * 1024;
  const piece = pattern(21, 1024 * 1024);
  const target = await openFileTarget(destination, size);
  for (let at = 0; at < size; at += 2 * piece.length) {
    await target.write(at, piece);
    await target.writev!(at + piece.length, [piece.subarray(0, 1000), piece.subarray(1000)]);
  }
  await target.commit();
  const written = await readFile(destination);
  expect(written.length).toBe(size);
  for (let at = 0; at < size; at += piece.length) expect(written.subarray(at, at + piece.length).equals(piece)).toBe(true);
});
