/**
 * A closed codec pool hands its idle threads to the next pool (an agent's worker runs many job
 * steps in one process; a thread's start costs more than a small step's codec work). The next
 * pool's work must be sealed under the next pool's keys only — a reused thread that kept the
 * previous vault's keys would seal a point the vault it is written to cannot open.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Worker } from "node:worker_threads";
import { afterAll, beforeAll, expect, test } from "vitest";
import { CHUNK_DATA, decodeChunk } from "../../runtime/engine/chunk-codec.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { keyedId } from "../../runtime/engine/crypto.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import { pattern } from "../support/bytes.ts";

let dir: string;
let first: Vault;
let second: Vault;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bulwark-codec-reuse-"));
  first = await Vault.init((await openStore(path.join(dir, "first"))).store, new PassphraseProvider("first vault passphrase"));
  second = await Vault.init((await openStore(path.join(dir, "second"))).store, new PassphraseProvider("second vault passphrase"));
}, 60_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function threadIds(pool: CodecPool): number[] {
  return (pool as unknown as { workers: Worker[] }).workers.map((w) => w.threadId);
}

test("a pool after a closed one reuses its threads and seals under its own vault's keys, not the previous one's", async () => {
  const raw = pattern(7, 64 * 1024);
  const firstPool = new CodecPool(first.master, { threads: 2 });
  const firstThreads = threadIds(firstPool);
  await firstPool.encodeBatch(CHUNK_DATA, Buffer.from(raw), [{ id: keyedId(first.master.idKey, raw), offset: 0, length: raw.length }]);
  await firstPool.close();

  const secondPool = new CodecPool(second.master, { threads: 2 });
  try {
    expect(threadIds(secondPool).sort()).toEqual(firstThreads.sort());
    const id = keyedId(second.master.idKey, raw);
    // Both threads get work: each must have taken the second vault's keys.
    const sealed = await Promise.all([0, 1, 2, 3].map(() => secondPool.encodeBatch(CHUNK_DATA, Buffer.from(raw), [{ id, offset: 0, length: raw.length }])));
    for (const [chunk] of sealed) {
      expect(decodeChunk(second.master, CHUNK_DATA, id, chunk!.sealed, raw.length, "test").equals(raw)).toBe(true);
      expect(() => decodeChunk(first.master, CHUNK_DATA, id, chunk!.sealed, raw.length, "test")).toThrow();
    }
  } finally {
    await secondPool.close();
  }
});
