/**
 * Issue 8, where the engine's parts meet: locks that fail closed (a garbled lock, a writer paused
 * past the stale period, a prune host whose clock is ahead), a deleted newest point that does not go
 * unnoticed, and sources told apart exactly. Real local vaults, the real CLI where a person would
 * use it, and clocks moved only where the scenario is about time.
 */
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { backupFileStream, withWriter } from "../../runtime/engine/backup.ts";
import { backupStream } from "../../runtime/engine/backup-stream.ts";
import { commitPoint, MissingDataError } from "../../runtime/engine/commit.ts";
import { forgetPoint } from "../../runtime/engine/chain.ts";
import { STALE_AFTER_MS, VaultLock, type LockClock } from "../../runtime/engine/locks.ts";
import { manifestOf } from "../../runtime/engine/backup.ts";
import { pruneVault } from "../../runtime/engine/prune.ts";
import { verifyVault } from "../../runtime/engine/verify.ts";
import { readStaged, recordStaged } from "../../runtime/engine/stage.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { IntegrityError, VaultBusyError } from "../../runtime/errors.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { CLI, PASSPHRASE, runCli, runJson } from "../support/cli.ts";
import { agedView } from "../support/store-view.ts";
import { waitFor } from "../support/wait.ts";

let folder: string;
beforeAll(async () => {
  folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-parts-meet-"));
});
afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

class ManualLockClock implements LockClock {
  at = 0;
  monotonic(): number {
    return this.at;
  }
}

async function newVault(name: string): Promise<{ dir: string; store: LocalFolderStore; vault: Vault }> {
  const dir = path.join(folder, name);
  await runJson(["init", "--vault", dir]);
  const store = new LocalFolderStore(dir);
  return { dir, store, vault: await Vault.open(store, new PassphraseProvider(PASSPHRASE)) };
}

function once(bytes: Buffer): AsyncIterable<Uint8Array> {
  return (async function* () {
    yield bytes;
  })();
}

test("a garbled lock object blocks prune and backups: an unreadable lock counts as held", async () => {
  const { dir, store } = await newVault("garbled");
  await store.create("locks/0123456789abcdef0123456789abcdef", Buffer.from("\u0000\u0001 not a lock {"));
  await expect(VaultLock.acquire(store, "exclusive", "prune")).rejects.toBeInstanceOf(VaultBusyError);
  await expect(VaultLock.acquire(store, "shared", "backup")).rejects.toBeInstanceOf(VaultBusyError);
  const prune = await runCli(["prune", "--vault", dir]);
  expect(prune.code).toBe(7);
  expect(prune.stderr).toMatch(/cannot be read \(counted as held\)/);
  expect(prune.stderr).toMatch(/bulwark unlock/);
  // Nothing was left behind by the refused attempts: only the garbled lock.
  expect((await readdir(path.join(dir, "locks"))).length).toBe(1);
});

test("a writer paused past the stale period while a prune runs does not commit a point with missing data", async () => {
  const { dir, store, vault } = await newVault("paused");
  const source = path.join(folder, "paused.bin");
  const bytes = randomBytes(3 * 1024 * 1024);
  await writeFile(source, bytes);
  // A point whose chunks the paused writer will deduplicate against, then forgotten: its packs are prune's to delete.
  const first = await backupFileStream(vault, once(bytes), { kind: "file", source: { type: "file", path: source } }, { threads: 1 });
  const clock = new ManualLockClock();
  const lock = await VaultLock.acquire(store, "shared", "backup", { clock });
  await vault.reloadIndex();
  let refused: unknown;
  await withWriter(
    vault,
    { lock, threads: 1 },
    (writer) => backupStream(vault, writer, once(bytes)),
    async (result, writer) => {
      expect(writer.stats.chunksNew).toBe(0); // everything deduplicated against the first point
      // The writer pauses 35 minutes: no refresh; at the store its lock ages past the stale period.
      clock.at += 35 * 60_000;
      await forgetPoint(vault, first.id, "retention"); // the first point goes, as retention would
      const aged = await agedView(store, 35 * 60_000, "locks/", "data/");
      const pruneLock = await VaultLock.acquire(aged, "exclusive", "prune");
      const pruning = await Vault.open(aged, new PassphraseProvider(PASSPHRASE));
      const pool = new CodecPool(pruning.master, { threads: 1 });
      try {
        const report = await pruneVault(pruning, pool, { lock: pruneLock });
        expect(report.packsDeleted).toBeGreaterThan(0);
      } finally {
        await pool.close();
        await pruneLock.release();
      }
      // The writer wakes up and commits: its lock lapsed, so it is retaken and the data re-proven.
      const manifest = manifestOf({ kind: "file", source: { type: "file", path: source } }, bytes.length, result.content, bytes.length, writer, Date.now());
      refused = await commitPoint(vault, manifest, lock).catch((error: unknown) => error);
    },
  );
  await lock.release();
  expect(refused).toBeInstanceOf(MissingDataError);
  expect(String((refused as Error).message)).toMatch(/does not hold|not in the vault/);
  // No point was written; the vault is consistent.
  expect(await readdir(path.join(dir, "points"))).toEqual([]);
  expect((await runCli(["verify", "--vault", dir, "--read-data"])).code).toBe(0);
});

const faketime = (() => {
  try {
    execFileSync("faketime", ["-f", "+0", "true"]);
    return true;
  } catch {
    return false;
  }
})();

test("a prune host whose clock is 40 minutes ahead deletes nothing a running backup uses", async () => {
  expect(faketime, "faketime (Debian package faketime) is installed by .ci/run").toBe(true);
  const { dir, store, vault } = await newVault("skewed");
  const bytes = randomBytes(72 * 1024 * 1024);
  const lock = await VaultLock.acquire(store, "shared", "backup");
  let prune: { code: number | null; stderr: string } | undefined;
  let point: string | undefined;
  try {
    await withWriter(
      vault,
      { lock, threads: 1 },
      async (writer) => {
        const result = await backupStream(vault, writer, once(bytes));
        // Mid-backup: packs in storage that no index object names yet, and a fresh lock.
        await waitFor("the backup's first committed pack", () => writer.packsWritten.length > 0, 120_000, 20);
        expect(writer.packsWritten.length).toBeGreaterThan(0);
        prune = await new Promise((resolve, reject) => {
          const child = spawn("faketime", ["-f", "+40m", process.execPath, CLI, "prune", "--vault", dir], {
            env: { ...process.env, BULWARK_PASSPHRASE: PASSPHRASE },
            stdio: ["ignore", "ignore", "pipe"],
          });
          let stderr = "";
          child.stderr.on("data", (d) => (stderr += d));
          child.once("error", reject);
          child.once("close", (code) => resolve({ code, stderr }));
        });
        return result;
      },
      async (result, writer) => {
        const manifest = manifestOf({ kind: "file", source: { type: "file", path: "skewed.bin" } }, bytes.length, result.content, bytes.length, writer, Date.now());
        await commitPoint(vault, manifest, lock);
        point = manifest.id;
      },
    );
  } finally {
    await lock.release();
  }
  // The backup's lock is live on the store's clock, whatever the prune host's clock says.
  expect(prune?.stderr).toMatch(/in use by `backup`/);
  expect(prune?.code).toBe(7);
  const out = path.join(folder, "skewed-restored");
  expect((await runCli(["restore", point!, "--vault", dir, "--to", out])).code).toBe(0);
  expect((await readFile(out)).equals(bytes)).toBe(true);
}, 120_000);

test("deleting the newest point is reported by verify and points, and restore latest refuses to use an older one", async () => {
  const { dir } = await newVault("newest");
  const source = path.join(folder, "newest.bin");
  await writeFile(source, randomBytes(1024 * 1024));
  const older = await runJson<{ id: string }>(["backup", source, "--vault", dir]);
  await writeFile(source, randomBytes(1024 * 1024));
  const newest = await runJson<{ id: string }>(["backup", source, "--vault", dir]);
  expect((await runCli(["verify", "--vault", dir])).code).toBe(0);

  await rm(path.join(dir, "points", newest.id)); // someone with write access to the storage

  const verify = await runCli(["verify", "--vault", dir]);
  expect(verify.code).toBe(5);
  expect(verify.stdout).toContain(`point ${newest.id}`);
  expect(verify.stdout).toMatch(/deleted outside retention/);
  const points = await runCli(["points", "--vault", dir]);
  expect(points.code).toBe(5);
  expect(points.stdout).toContain(older.id.slice(0, 12));
  expect(points.stderr).toContain(`point ${newest.id}`);
  const restore = await runCli(["restore", "latest", "--vault", dir, "--to", path.join(folder, "newest-restored")]);
  expect(restore.code).toBe(5);
  expect(restore.stderr).toContain(newest.id);
  await expect(readFile(path.join(folder, "newest-restored"))).rejects.toThrow();
  // The older point is still restorable by its id.
  expect((await runCli(["restore", older.id, "--vault", dir, "--to", path.join(folder, "older-restored")])).code).toBe(0);
});

test("points removed by forget are not reported missing, and a deleted middle point is", async () => {
  const { dir } = await newVault("chain");
  const source = path.join(folder, "chain.bin");
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    await writeFile(source, randomBytes(256 * 1024));
    ids.push((await runJson<{ id: string }>(["backup", source, "--vault", dir])).id);
  }
  await runJson(["forget", "--vault", dir, "--keep-last", "3", "--prune"]);
  expect((await runCli(["verify", "--vault", dir])).code).toBe(0);
  await rm(path.join(dir, "points", ids[2]));
  const verify = await runCli(["verify", "--vault", dir, "--json"]);
  expect(verify.code).toBe(5);
  const report = JSON.parse(verify.stdout);
  expect(report.missingPoints).toBe(1);
  expect(report.problems.join("\n")).toContain(ids[2]);
  expect(report.problems.join("\n")).not.toContain(ids[0]);
});

test("forget groups sources exactly: Case.img and case.img are two sources, each keeps its newest point", async () => {
  const { dir } = await newVault("case");
  const upper = path.join(folder, "Case.bin");
  const lower = path.join(folder, "case.bin");
  await writeFile(upper, randomBytes(128 * 1024));
  await writeFile(lower, randomBytes(128 * 1024));
  const a = await runJson<{ id: string }>(["backup", upper, "--vault", dir]);
  const b = await runJson<{ id: string }>(["backup", lower, "--vault", dir]);
  const forget = await runJson<{ keep: string[]; remove: string[] }>(["forget", "--vault", dir, "--keep-last", "1"]);
  expect(forget.remove).toEqual([]);
  expect(forget.keep.sort()).toEqual([a.id, b.id].sort());
});

test.each([1, 2])("a vault of format version %i gets a clear error, not a wrong answer (version 2 kept Azure locks where this one no longer looks)", async (version) => {
  const { dir } = await newVault(`old-format-${version}`);
  const config = JSON.parse(await readFile(path.join(dir, "config"), "utf8"));
  config.version = version;
  if (version === 1) delete config.masterKeyCheck;
  await rm(path.join(dir, "config"));
  await writeFile(path.join(dir, "config"), JSON.stringify(config));
  const result = await runCli(["points", "--vault", dir]);
  // The key objects bind the config's digest: a rewritten config is reported as modified, never opened.
  expect(result.code).not.toBe(0);
  expect(result.stderr).toMatch(new RegExp(`format version ${version}|modified after the vault was created`));
});

test("the lock a holder cannot confirm is taken afresh before it acts, and refused if another holds the vault", async () => {
  const { store } = await newVault("lapse");
  const clock = new ManualLockClock();
  const lock = await VaultLock.acquire(store, "shared", "backup", { clock });
  expect(await lock.assertHeld()).toEqual({ lapsed: false });
  clock.at += STALE_AFTER_MS;
  // Meanwhile a prune took the vault (the holder's lock looked stale to it).
  const aged = await agedView(store, STALE_AFTER_MS + 60_000, "locks/");
  const prune = await VaultLock.acquire(aged, "exclusive", "prune");
  await expect(lock.assertHeld()).rejects.toThrow(/lapsed/);
  await prune.release();
  expect(await lock.assertHeld()).toEqual({ lapsed: true });
  await lock.release();
});

test("verify and prune agree on what an interrupted backup left and say when it goes", async () => {
  const { dir, store, vault } = await newVault("leftovers");
  // A backup that dies after committing packs, before any index object names them.
  await expect(
    withWriter(vault, { threads: 1 }, async (writer) => {
      await backupStream(vault, writer, once(randomBytes(40 * 1024 * 1024)));
      await waitFor("the backup's first committed pack", () => writer.packsWritten.length > 0, 120_000, 20);
      throw new Error("killed");
    }),
  ).rejects.toThrow("killed");
  const verify = JSON.parse((await runCli(["verify", "--vault", dir, "--json"])).stdout);
  expect(verify.unindexedPacks).toBeGreaterThan(0);
  expect(verify.unindexedRemovableNow).toBe(0);
  const after = Date.parse(verify.unindexedRemovableAfter);
  expect(after).toBeGreaterThan(Date.now() + 25 * 60_000);
  const dryRun = await runJson<{ unindexedPacksDeleted: number }>(["prune", "--vault", dir, "--dry-run"]);
  expect(dryRun.unindexedPacksDeleted).toBe(0);
  const text = await runCli(["verify", "--vault", dir]);
  expect(text.stdout).toMatch(/prune removes 0 now, the others from /);
  // 35 minutes later (at the store): both say they go now.
  const aged = await agedView(store, 35 * 60_000, "data/");
  const agedVault = await Vault.open(aged, new PassphraseProvider(PASSPHRASE));
  const lock = await VaultLock.acquire(aged, "exclusive", "prune");
  const pool = new CodecPool(agedVault.master, { threads: 1 });
  try {
    const report = await verifyVault(agedVault, pool, { readDataPercent: 0, storeNow: lock.storeNow() });
    expect(report.unindexedRemovableNow).toBe(verify.unindexedPacks);
    const pruned = await pruneVault(agedVault, pool, { lock, dryRun: true });
    expect(pruned.unindexedPacksDeleted).toBe(verify.unindexedPacks);
  } finally {
    await pool.close();
    await lock.release();
  }
});

test("staged objects are bound to their job: another job's staged index and drafts do not open, and drafts naming foreign points are refused", async () => {
  const { vault } = await newVault("staged-binding");
  const staging = new LocalFolderStore(path.join(folder, "staged-binding-staging"));
  const draft = (id: string, job: string) =>
    ({ version: 1, id, time: new Date().toISOString(), kind: "disk", source: { type: "azure-managed-disk", path: "/subscriptions/s/d" }, size: 0, tags: {}, details: { job }, stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, durationMs: 0 } }) as PointManifest;
  await recordStaged(vault, staging, "job-a", [], [draft("a".repeat(32), "job-a")]);
  // Job A's own read works; job B (objects copied into its staging by someone with write access) cannot open them.
  expect((await readStaged(vault, staging, "job-a", new Set(["a".repeat(32)]))).drafts).toHaveLength(1);
  await expect(readStaged(vault, staging, "job-b")).rejects.toBeInstanceOf(IntegrityError);
  // Drafts sealed for the job but naming a point the job does not derive, or another job, are refused.
  await recordStaged(vault, staging, "job-a", [], [draft("b".repeat(32), "job-a")]);
  await expect(readStaged(vault, staging, "job-a", new Set(["a".repeat(32)]))).rejects.toThrow(/not this job's/);
  await recordStaged(vault, staging, "job-a", [], [draft("a".repeat(32), "job-b")]);
  await expect(readStaged(vault, staging, "job-a", new Set(["a".repeat(32)]))).rejects.toThrow(/not this job's/);
});
