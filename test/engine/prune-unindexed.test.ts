/**
 * A pack that no index object names is what a crashed backup leaves, and prune deletes it once it is
 * old enough. But someone with write access to the vault can make a pack unindexed without any key:
 * delete the index object that names it. Prune must then keep a pack whose chunks a point still
 * references (and say so), and still delete a crashed backup's pack that no point references.
 */
import { randomBytes } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { expect, test } from "vitest";
import { backupDisk, withWriter } from "../../runtime/engine/backup.ts";
import { STALE_AFTER_MS } from "../../runtime/engine/locks.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { backupStream } from "../../runtime/engine/backup-stream.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { StoreView } from "../support/store-view.ts";
import { tempFolder } from "../cli/vaults.ts";
import { BLOCK, disk, keysUnder, prune, restore, source } from "./shard-vaults.ts";

const provider = new PassphraseProvider("prune unindexed test passphrase");

/** A new vault in a scratch folder named for the scenario. */
async function newVault(label: string): Promise<{ folder: string; vault: Vault }> {
  const folder = path.join(await tempFolder(label), "vault");
  return { folder, vault: await Vault.init(new LocalFolderStore(folder), provider) };
}

/** The vault opened afresh (as the next command would), through a view of its store when given. */
function reopen(folder: string, store: ObjectStore = new LocalFolderStore(folder)): Promise<Vault> {
  return Vault.open(store, provider);
}

/** The vault as a prune an hour later sees it: every pack past the age of a crashed backup's. */
function anHourLater(folder: string): StoreView {
  return new StoreView(new LocalFolderStore(folder), { ageOf: (key) => (key.startsWith("data/") ? 2 * STALE_AFTER_MS : 0) });
}

test("an index object deleted by someone with write access (no key): prune keeps the pack a point still references, names it, and the point still restores", async () => {
  const { folder, vault } = await newVault("prune-unindexed");
  // Point A's packs hold every data block; point B (another disk, every other block changed) reuses
  // the rest of them and writes its own tree nodes (each holds a changed block's id) into packs of its own.
  const bytesA = randomBytes(8 * BLOCK);
  const pointA = await backupDisk(vault, source(bytesA), disk("a"));
  const indexOfA = await keysUnder(folder, "index/");
  const bytesB = Buffer.from(bytesA);
  for (let block = 0; block < 8; block += 2) randomBytes(BLOCK).copy(bytesB, block * BLOCK);
  const pointB = await backupDisk(await reopen(folder), source(bytesB), disk("b"));
  // Point A is forgotten, and its index object deleted: A's packs are named by no index, yet B needs them.
  await rm(path.join(folder, "points", pointA.id));
  const removed = await Promise.all(indexOfA.map(async (key) => ({ key, bytes: await readFile(path.join(folder, key)) })));
  for (const { key } of removed) await rm(path.join(folder, key));

  const report = await prune(await reopen(folder, anHourLater(folder)));
  expect(report.unindexedPacksDeleted).toBe(0);
  expect(report.kept.some((line) => /no index names it, yet point .* references chunks in it/.test(line))).toBe(true);
  // Until the index names them again the point cannot be restored (it fails, naming a chunk)...
  await expect(restore(await reopen(folder), pointB)).rejects.toThrow(/not in the vault's index/);
  // ...and with the index object put back (a copy, a soft-deleted version), it restores whole: the data survived the prune.
  for (const { key, bytes } of removed) await writeFile(path.join(folder, key), bytes);
  expect(await restore(await reopen(folder), pointB)).toEqual(bytesB);
});

test("a crashed backup's pack that no point references is still deleted once old enough", async () => {
  const { folder, vault } = await newVault("prune-crashed");
  const bytes = randomBytes(4 * BLOCK);
  const point = await backupDisk(vault, source(bytes), disk("kept"));
  const before = await keysUnder(folder, "data/");
  // A backup that dies after committing packs, before any index object names them.
  const crashing = await reopen(folder);
  await expect(
    withWriter(crashing, { threads: 1 }, async (writer) => {
      await backupStream(crashing, writer, (async function* () {
        yield randomBytes(40 * 1024 * 1024);
      })());
      throw new Error("killed");
    }),
  ).rejects.toThrow("killed");
  const crashed = (await keysUnder(folder, "data/")).filter((key) => !before.includes(key));
  expect(crashed.length).toBeGreaterThan(0);

  const report = await prune(await reopen(folder, anHourLater(folder)));
  expect(report.unindexedPacksDeleted).toBe(crashed.length);
  expect(await keysUnder(folder, "data/")).toEqual(before);
  expect(await restore(await reopen(folder), point)).toEqual(bytes);
});
