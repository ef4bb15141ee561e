/**
 * Issue 8, item 8: a compression/encryption worker thread that dies is replaced. The batch it held
 * fails (so the backup in flight fails with an error that says what happened, instead of waiting
 * forever for an answer that never comes), and the pool goes on: the next backup through the same
 * pool succeeds and restores byte for byte.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { backupBlocks, type BlockSource } from "../../runtime/engine/backup-blocks.ts";
import { manifestOf } from "../../runtime/engine/backup.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { VaultWriter } from "../../runtime/engine/vault-writer.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import type { Worker } from "node:worker_threads";
import { pattern } from "../support/bytes.ts";

const PASSPHRASE = "codec pool recovery passphrase";
let dir: string;
let vault: Vault;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bulwark-codec-pool-"));
  const { store } = await openStore(path.join(dir, "vault"));
  vault = await Vault.init(store, new PassphraseProvider(PASSPHRASE));
}, 60_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** 24 MiB of varied bytes (six 4 MiB reads, so several batches go to the workers). */
function image(seed: number): Buffer {
  const out = Buffer.alloc(24 * 1024 * 1024);
  for (let offset = 0; offset < out.length; offset += 64 * 1024) pattern(seed * 10_000 + offset / 1024, 64 * 1024).copy(out, offset);
  return out;
}

function sourceOf(bytes: Buffer): BlockSource {
  return { size: bytes.length, read: async (offset, length) => Buffer.from(bytes.subarray(offset, offset + length)) };
}

async function backupThrough(pool: CodecPool, bytes: Buffer) {
  const writer = new VaultWriter(vault, pool);
  const started = Date.now();
  try {
    const result = await backupBlocks(vault, writer, sourceOf(bytes));
    await writer.finish();
    return manifestOf({ kind: "disk", source: { type: "image", path: "/codec-pool.img" }, tags: {} }, bytes.length, result.content, result.bytesRead, writer, started);
  } catch (error) {
    await writer.abort();
    throw error;
  }
}

test("a codec worker thread killed mid-backup is replaced and the next backup succeeds", async () => {
  const pool = new CodecPool(vault.master, { threads: 2, zstdLevel: vault.config.zstdLevel });
  try {
    // Kill the thread that takes the first batch, right after it was handed over.
    const workers = (pool as unknown as { workers: Worker[] }).workers;
    const encodeBatch = pool.encodeBatch.bind(pool);
    let killed = false;
    pool.encodeBatch = (type, buffer, items) => {
      const batch = encodeBatch(type, buffer, items);
      if (!killed) {
        killed = true;
        void workers[0]!.terminate();
      }
      return batch;
    };
    await expect(backupThrough(pool, image(1))).rejects.toThrow(/worker thread died .*the thread was replaced/);
    expect(killed).toBe(true);
    expect(pool.replaced).toBe(1);
    expect(pool.threads).toBe(2);

    // The same pool backs up again, and the point restores to the same bytes.
    const second = image(2);
    const point = await backupThrough(pool, second);
    const restored = Buffer.alloc(second.length);
    await restoreContent(vault, pool, point, { needsZeros: true, write: async (offset, data) => void data.copy(restored, offset) });
    expect(restored.equals(second)).toBe(true);
  } finally {
    await pool.close();
  }
}, 60_000);
