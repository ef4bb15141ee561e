/**
 * Copies between vaults through the real CLI (and the engine, to cut a copy short between its
 * phases): `init --like`, `copy` local→local, local→Azurite and Azurite→Azurite (server-side: no
 * pack byte uploaded by the process), a second copy copying nothing, an incremental copy moving
 * only new packs, a tampered source refused with nothing committed, copies cut short after
 * their packs or after their first point completed by a rerun, and a VM point bringing its member
 * disk point. Every copied point restores byte-identical from the destination.
 */
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { commitPoint } from "../../runtime/engine/commit.ts";
import { copyPoints } from "../../runtime/engine/copy.ts";
import { VaultLock } from "../../runtime/engine/locks.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { newPointId, Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { PASSPHRASE, runCli } from "../support/cli.ts";
import {
  AzuriteVaults,
  LocalVaults,
  MIB,
  cli,
  cliJson,
  diskImage,
  keysUnder,
  pseudoRandom,
  restoredHash,
  sha256,
  tempFolder,
  type BackupSummary,
} from "../cli/vaults.ts";

const OTHER_PASSPHRASE = "the copy's own passphrase, not the source's";
/** The destination opens with its own passphrase; the source (--from) with the suite's. */
const TO_ENV = { BULWARK_PASSPHRASE: OTHER_PASSPHRASE, BULWARK_FROM_PASSPHRASE: PASSPHRASE };

interface CopySummary {
  pointsCopied: number;
  pointsPresent: number;
  packsCopied: number;
  packsPresent: number;
  bytesCopied: number;
  bytesUploaded: number;
  points: string[];
}

let local: LocalVaults;
let azurite: AzuriteVaults;
let scratch: string;
let imagePath: string;
let filePath: string;
let source: string;
let points: Record<string, string>;

/** Sources made by the suite open with PASSPHRASE; destinations (made --like) with OTHER_PASSPHRASE. */
function copy(from: string, to: string, extra: string[] = [], fromPassphrase = PASSPHRASE) {
  return runCli(["copy", "--from", from, "--to", to, "--json", ...extra], { ...azurite.env, ...TO_ENV, BULWARK_FROM_PASSPHRASE: fromPassphrase });
}

async function copyJson(from: string, to: string, extra: string[] = [], fromPassphrase = PASSPHRASE): Promise<CopySummary> {
  const result = await copy(from, to, extra, fromPassphrase);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as CopySummary;
}

async function initLike(kind: LocalVaults | AzuriteVaults, label: string, like: string, likePassphrase = PASSPHRASE): Promise<string> {
  const location = kind.newLocation(label);
  const result = await cli(azurite, location, ["init", "--like", like, "--json"], { ...TO_ENV, BULWARK_FROM_PASSPHRASE: likePassphrase });
  expect(result.code, result.stderr).toBe(0);
  return location;
}

/** Every point of the suite restores from `vault` byte-identical to what was backed up. */
async function restoresIdentical(vault: string): Promise<void> {
  for (const [id, hash] of Object.entries(points)) {
    const to = path.join(scratch, `restored-${id.slice(0, 8)}`);
    const result = await cli(azurite, vault, ["restore", id, "--to", to, "--overwrite"], TO_ENV);
    expect(result.code, result.stderr).toBe(0);
    expect(sha256(await readFile(to))).toBe(hash);
  }
}

/** `verify --read-data` of a destination (which opens with its own passphrase) finds no problem. */
async function verifiesClean(vault: string): Promise<void> {
  const result = await cli(azurite, vault, ["verify", "--read-data", "--json"], TO_ENV);
  expect(result.code, result.stdout + result.stderr).toBe(0);
}

beforeAll(async () => {
  [local, azurite] = await Promise.all([LocalVaults.create(), AzuriteVaults.create()]);
  scratch = await tempFolder("copy");
  imagePath = path.join(scratch, "disk.img");
  filePath = path.join(scratch, "file.bin");
  const image = diskImage("copy", 6);
  const file = pseudoRandom("copy-file", 3 * MIB);
  await writeFile(imagePath, image);
  await writeFile(filePath, file);
  source = local.newLocation("source");
  expect((await cli(local, source, ["init"])).code).toBe(0);
  const disk = await cliJson<BackupSummary>(local, source, ["backup", imagePath]);
  const stream = await cliJson<BackupSummary>(local, source, ["backup", filePath]);
  points = { [disk.id]: sha256(image), [stream.id]: sha256(file) };
});

afterAll(async () => {
  await Promise.all([local?.close(), azurite?.close()]);
});

describe("init --like", () => {
  test("makes a vault with its own id and key object that opens with its own passphrase, and refuses a wrong source key (exit 3)", async () => {
    const like = local.newLocation("like");
    const made = await cli(local, like, ["init", "--like", source, "--json"], TO_ENV);
    expect(made.code, made.stderr).toBe(0);
    const sourceId = JSON.parse((await readFile(path.join(source, "config"))).toString()).id;
    expect(JSON.parse(made.stdout)).toMatchObject({ like: sourceId, id: expect.not.stringMatching(sourceId) });
    const keys = keysUnder(await local.objects(like), "keys/");
    expect(keys).toHaveLength(1);
    expect(keysUnder(await local.objects(source), "keys/")).not.toContain(keys[0]);
    // Its own passphrase opens it; the source's does not.
    expect((await cli(local, like, ["points"], TO_ENV)).code).toBe(0);
    expect((await cli(local, like, ["points"])).code).toBe(3);
    const wrong = await cli(local, local.newLocation("like-wrong"), ["init", "--like", source], { ...TO_ENV, BULWARK_FROM_PASSPHRASE: "not the passphrase of the source vault" });
    expect(wrong.code).toBe(3);
  });

  test("a copy into a vault not made --like is refused, naming init --like (exit 2), and writes nothing", async () => {
    const stranger = local.newLocation("stranger");
    expect((await cli(local, stranger, ["init"], TO_ENV)).code).toBe(0);
    const before = await local.objects(stranger);
    const result = await copy(source, stranger);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("init --vault DEST --like SOURCE");
    expect([...(await local.objects(stranger)).keys()].filter((k) => !k.startsWith("locks/")).sort()).toEqual([...before.keys()].sort());
  });
});

describe("copy", () => {
  let localCopy: string;
  let azureCopy: string;

  test("local → local copies every point with the packs it needs; restores are byte-identical; a second run copies nothing", async () => {
    localCopy = await initLike(local, "copy", source);
    const sourcePacks = keysUnder(await local.objects(source), "data/");
    const first = await copyJson(source, localCopy);
    expect(first).toMatchObject({ pointsCopied: 2, pointsPresent: 0, packsCopied: sourcePacks.length, packsPresent: 0 });
    const copied = await local.objects(localCopy);
    expect(keysUnder(copied, "data/")).toEqual(sourcePacks);
    expect(first.bytesCopied).toBe(sourcePacks.reduce((sum, k) => sum + copied.get(k)!, 0));
    await restoresIdentical(localCopy);
    await verifiesClean(localCopy);
    const second = await copyJson(source, localCopy);
    expect(second).toMatchObject({ pointsCopied: 0, pointsPresent: 2, packsCopied: 0, bytesCopied: 0 });
  });

  test("an incremental copy moves only the packs of the new point", async () => {
    const changed = Buffer.from(await readFile(imagePath));
    pseudoRandom("copy-change", 256 * 1024).copy(changed, 5 * MIB);
    const changedPath = path.join(scratch, "disk-changed.img");
    await writeFile(changedPath, changed);
    const point = await cliJson<BackupSummary>(local, source, ["backup", changedPath]);
    points[point.id] = sha256(changed);
    const report = await copyJson(source, localCopy, [point.id.slice(0, 8)]);
    expect(report).toMatchObject({ pointsCopied: 1, packsCopied: 1 });
    expect(report.bytesCopied).toBeLessThan(2 * MIB);
    await restoresIdentical(localCopy);
  });

  test("local → Azurite, then Azurite → Azurite server-side (no pack byte through the process): restores byte-identical", async () => {
    azureCopy = await initLike(azurite, "azcopy", source);
    const toAzure = await copyJson(source, azureCopy);
    expect(toAzure).toMatchObject({ pointsCopied: 3 });
    expect(toAzure.bytesUploaded).toBe(toAzure.bytesCopied);
    const region2 = await initLike(azurite, "region2", azureCopy, OTHER_PASSPHRASE);
    const serverSide = await copyJson(azureCopy, region2, [], OTHER_PASSPHRASE);
    expect(serverSide).toMatchObject({ pointsCopied: 3, packsCopied: toAzure.packsCopied, bytesCopied: toAzure.bytesCopied, bytesUploaded: 0 });
    await restoresIdentical(region2);
    expect((await copyJson(azureCopy, region2, [], OTHER_PASSPHRASE)).packsCopied).toBe(0);
  });

  test("a flipped byte in a source pack is refused (exit 5) with nothing committed in the destination", async () => {
    const target = await initLike(azurite, "tampered", azureCopy, OTHER_PASSPHRASE);
    const pack = keysUnder(await azurite.objects(azureCopy), "data/")[0];
    const original = await azurite.read(azureCopy, pack);
    const damaged = Buffer.from(original);
    damaged[Math.floor(damaged.length / 3)] ^= 0x01;
    await azurite.replace(azureCopy, pack, damaged);
    try {
      const result = await copy(azureCopy, target, [], OTHER_PASSPHRASE);
      expect(result.code, result.stderr).toBe(5);
      expect(result.stderr).toContain("fails authentication");
      const objects = await azurite.objects(target);
      expect(keysUnder(objects, "points/")).toEqual([]);
      expect(keysUnder(objects, "index/")).toEqual([]);
      expect(keysUnder(objects, "chain/")).toEqual([]);
    } finally {
      await azurite.replace(azureCopy, pack, original);
    }
  });

  test("a copy cut short after its packs, or after its first point, leaves the destination valid and a rerun completes it", async () => {
    const from = await Vault.open(new LocalFolderStore(source), new PassphraseProvider(PASSPHRASE));
    const open = async (location: string) => Vault.open(new LocalFolderStore(location), new PassphraseProvider(OTHER_PASSPHRASE), { loadIndex: false });
    const targets: string[] = [];
    for (const cutAt of ["packs", "point"] as const) {
      const target = await initLike(local, `cut-${cutAt}`, source);
      targets.push(target);
      const cut = new Error(`cut at ${cutAt}`);
      const cutShort = copyPoints(from, await open(target), {
        onPhase: (phase) => {
          if (phase.phase === cutAt) throw cut;
        },
      });
      await expect(cutShort).rejects.toBe(cut);
      const left = await local.objects(target);
      expect(keysUnder(left, "points/")).toHaveLength(cutAt === "packs" ? 0 : 1);
      expect(keysUnder(left, "index/").length).toBeGreaterThan(0);
      const rerun = await copyPoints(from, await open(target));
      expect(rerun).toMatchObject({ pointsCopied: cutAt === "packs" ? 3 : 2, pointsPresent: cutAt === "packs" ? 0 : 1, packsCopied: 0 });
    }
    // Valid and complete: what each holds verifies, and every point restores from it.
    await verifiesClean(targets[0]);
    await restoresIdentical(targets[1]);
  });

  test("a VM point copied by its id brings its member disk point, committed before it", async () => {
    const from = await Vault.open(new LocalFolderStore(source), new PassphraseProvider(PASSPHRASE));
    const diskId = Object.keys(points)[0];
    const vm: PointManifest = {
      version: 1,
      id: newPointId(),
      time: new Date().toISOString(),
      kind: "vm",
      source: { type: "azure-vm", path: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1" },
      size: 0,
      tags: {},
      members: [{ role: "os", point: diskId }],
      stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, durationMs: 0 },
    };
    const lock = await VaultLock.acquire(from.store, "shared", "test: a VM group");
    await commitPoint(from, vm, lock).finally(() => lock.release());
    const target = await initLike(local, "vm", source);
    const to = await Vault.open(new LocalFolderStore(target), new PassphraseProvider(OTHER_PASSPHRASE), { loadIndex: false });
    const report = await copyPoints(from, to, { references: [vm.id.slice(0, 8)] });
    expect(report).toMatchObject({ pointsCopied: 2, points: [diskId, vm.id] });
    expect((await to.readPoint(vm.id)).members).toEqual([{ role: "os", point: diskId }]);
  });

  test("a copy from a vault of the current version into a version-3 vault made like it is refused: its chunks would not open there", async () => {
    const from = await Vault.open(new LocalFolderStore(source), new PassphraseProvider(PASSPHRASE));
    const older = await Vault.init(new LocalFolderStore(local.newLocation("v3")), new PassphraseProvider(OTHER_PASSPHRASE), { version: 3 }, from.master);
    await expect(copyPoints(from, older)).rejects.toThrow(/format version 5 .* version 3/);
    expect(await older.listPointIds()).toEqual([]);
  });
});
