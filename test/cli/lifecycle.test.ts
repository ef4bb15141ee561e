/**
 * A vault's life beyond one backup: several backups writing it at once, forgetting and pruning
 * points by retention rules, and its keys (add, change, remove), which rewrap the master keys
 * without touching any data.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { finished, startCli } from "../support/cli.ts";
import {
  AzuriteVaults,
  LocalVaults,
  MIB,
  cli,
  cliJson,
  contentObjects,
  diskImage,
  initVaultInProcess,
  keysUnder,
  pseudoRandom,
  restoredHash,
  sha256,
  tempFolder,
  verifyClean,
  type BackupSummary,
  type VaultKind,
} from "./vaults.ts";

let scratch: string;
beforeAll(async () => {
  scratch = await tempFolder("lifecycle");
});

describe.each(["local", "azurite"] as const)("concurrent backups, %s vault", (kindName) => {
  let kind: VaultKind;
  beforeAll(async () => {
    kind = kindName === "local" ? await LocalVaults.create() : await AzuriteVaults.create();
  });
  afterAll(async () => {
    await kind?.close();
  });

  test("three backups of different and overlapping sources into one vault at once all succeed, and every point restores", async () => {
    const vault = kind.newLocation("concurrent");
    await initVaultInProcess(kind, vault);
    const x = diskImage(`x-${kindName}`, 6);
    const xChanged = Buffer.from(x);
    pseudoRandom("x-changed", 1.5 * MIB).copy(xChanged, 2 * MIB); // shares three quarters with x
    const y = Buffer.concat([pseudoRandom(`y-${kindName}`, 3 * MIB), Buffer.from(x.subarray(0, 2 * MIB))]);
    const sources = new Map<string, Buffer>([
      [path.join(scratch, `x-${kindName}.img`), x],
      [path.join(scratch, `x-changed-${kindName}.img`), xChanged],
      [path.join(scratch, `y-${kindName}.data`), y],
    ]);
    for (const [file, bytes] of sources) await writeFile(file, bytes);

    const results = await Promise.all(
      [...sources.keys()].map((file) => finished(startCli(["backup", file, "--vault", vault, "--json"], kind.env))),
    );
    for (const result of results) {
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toBe("");
    }
    const summaries = results.map((r) => JSON.parse(r.stdout) as BackupSummary);
    expect(new Set(summaries.map((s) => s.id)).size).toBe(3);

    await verifyClean(kind, vault);
    const points = await cliJson<BackupSummary[]>(kind, vault, ["points"]);
    expect(points.map((p) => p.id).sort()).toEqual(summaries.map((s) => s.id).sort());
    for (const summary of summaries) {
      expect(await restoredHash(kind, vault, summary.id, scratch)).toBe(sha256(sources.get(summary.source)!));
    }
  });
});

describe("forget and prune, local vault", () => {
  let kind: LocalVaults;
  let vault: string;
  const images = new Map<string, Buffer>();
  let a: string;
  let b: string;
  const aPoints: BackupSummary[] = [];
  let bPoint: BackupSummary;

  beforeAll(async () => {
    kind = await LocalVaults.create();
    vault = kind.newLocation("forget");
    await initVaultInProcess(kind, vault);
    a = path.join(scratch, "a.img");
    b = path.join(scratch, "b.img");
    // Three generations of A, each mostly new data (its own pack), and one of B.
    for (let generation = 0; generation < 3; generation++) {
      const image = pseudoRandom(`a/${generation}`, MIB);
      await writeFile(a, image);
      const point = await cliJson<BackupSummary>(kind, vault, ["backup", a]);
      images.set(point.id, image);
      aPoints.push(point);
    }
    const image = pseudoRandom("b", MIB);
    await writeFile(b, image);
    bPoint = await cliJson<BackupSummary>(kind, vault, ["backup", b]);
    images.set(bPoint.id, image);
  });

  afterAll(async () => {
    await kind?.close();
  });

  test("forget without any --keep-* rule is refused and removes nothing", async () => {
    const before = contentObjects(await kind.objects(vault));
    const result = await cli(kind, vault, ["forget", "--prune"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/at least one --keep-\*/);
    expect(contentObjects(await kind.objects(vault))).toEqual(before);
  });

  test("--dry-run reports what GFS rules would remove, per source, and removes nothing", async () => {
    const before = contentObjects(await kind.objects(vault));
    type ForgetResult = { keep: string[]; remove: string[]; dryRun: boolean };
    // All points fall in one hour, day, week...: each bucket keeps the newest point of each source.
    for (const rule of [["--keep-last", "1"], ["--keep-daily", "7"], ["--keep-hourly", "3", "--keep-monthly", "2"]]) {
      const result = await cliJson<ForgetResult>(kind, vault, ["forget", ...rule, "--dry-run", "--prune"]);
      expect(result.dryRun).toBe(true);
      expect(result.keep.sort()).toEqual([aPoints[2].id, bPoint.id].sort());
      expect(result.remove.sort()).toEqual([aPoints[0].id, aPoints[1].id].sort());
    }
    const lastTwo = await cliJson<ForgetResult>(kind, vault, ["forget", "--keep-last", "2", "--keep-yearly", "1", "--dry-run"]);
    expect(lastTwo.remove).toEqual([aPoints[0].id]);
    expect(contentObjects(await kind.objects(vault))).toEqual(before);
  });

  test("--keep-last 1 --prune removes the other points and their packs; kept points restore and the vault verifies", async () => {
    const before = await kind.objects(vault);
    const packsBefore = keysUnder(before, "data/");
    expect(packsBefore).toHaveLength(4);
    const result = await cliJson<{ remove: string[]; prune: { packsDeleted: number } }>(kind, vault, ["forget", "--keep-last", "1", "--prune"]);
    expect(result.remove.sort()).toEqual([aPoints[0].id, aPoints[1].id].sort());
    expect(result.prune.packsDeleted).toBe(2);
    const after = await kind.objects(vault);
    expect(keysUnder(after, "data/")).toHaveLength(2);
    expect(keysUnder(after, "points/").sort()).toEqual([`points/${aPoints[2].id}`, `points/${bPoint.id}`].sort());
    await verifyClean(kind, vault);
    for (const id of [aPoints[2].id, bPoint.id]) expect(await restoredHash(kind, vault, id, scratch)).toBe(sha256(images.get(id)!));
  });
});

describe("keys, local vault", () => {
  let kind: LocalVaults;
  let vault: string;
  const second = "second passphrase, also long enough";
  const third = "third passphrase: changed by key passwd";

  beforeAll(async () => {
    kind = await LocalVaults.create();
    vault = kind.newLocation("keys");
    await initVaultInProcess(kind, vault);
    await writeFile(path.join(scratch, "keys.img"), diskImage("keys", 3));
    await cliJson(kind, vault, ["backup", path.join(scratch, "keys.img")]);
  });

  afterAll(async () => {
    await kind?.close();
  });

  const opensWith = async (passphrase: string) => (await cli(kind, vault, ["points"], { BULWARK_PASSPHRASE: passphrase })).code;

  test("key add writes one key object and touches nothing else; both passphrases then open the vault", async () => {
    const before = contentObjects(await kind.objects(vault));
    const added = await cliJson<{ id: string }>(kind, vault, ["key", "add"], { BULWARK_NEW_PASSPHRASE: second });
    const after = contentObjects(await kind.objects(vault));
    // Constant time: exactly one new object, under keys/; data, index and points are as they were.
    const newObjects = after.filter(([k]) => !before.some(([b]) => b === k));
    expect(newObjects.map(([k]) => k)).toEqual([`keys/${added.id}`]);
    expect(after.filter(([k]) => !k.startsWith("keys/"))).toEqual(before.filter(([k]) => !k.startsWith("keys/")));
    expect(await opensWith(second)).toBe(0);
    expect(await opensWith("test passphrase: correct horse battery staple")).toBe(0);
    const keys = await cliJson<{ id: string; current: boolean }[]>(kind, vault, ["key", "list"]);
    expect(keys).toHaveLength(2);
  });

  test("key passwd replaces the key it was opened with: the old passphrase fails, the new one works", async () => {
    const before = contentObjects(await kind.objects(vault));
    const changed = await cliJson<{ id: string; removed: string }>(kind, vault, ["key", "passwd"], {
      BULWARK_PASSPHRASE: second,
      BULWARK_NEW_PASSPHRASE: third,
    });
    const after = contentObjects(await kind.objects(vault));
    expect(after.filter(([k]) => !k.startsWith("keys/"))).toEqual(before.filter(([k]) => !k.startsWith("keys/")));
    expect(keysUnder(new Map(after), "keys/")).toContain(`keys/${changed.id}`);
    expect(keysUnder(new Map(after), "keys/")).not.toContain(`keys/${changed.removed}`);
    expect(await opensWith(second)).toBe(3);
    expect(await opensWith(third)).toBe(0);
  });

  test("key remove KEYID: that key no longer opens the vault; the key in use cannot be removed", async () => {
    const keys = await cliJson<{ id: string; current: boolean }[]>(kind, vault, ["key", "list"], { BULWARK_PASSPHRASE: third });
    const original = keys.find((k) => !k.current)!;
    const current = keys.find((k) => k.current)!;
    const refused = await cli(kind, vault, ["key", "remove", current.id], { BULWARK_PASSPHRASE: third });
    expect(refused.code).toBe(2);
    const removed = await cliJson<{ removed: string }>(kind, vault, ["key", "remove", original.id], { BULWARK_PASSPHRASE: third });
    expect(removed.removed).toBe(original.id);
    expect(await opensWith("test passphrase: correct horse battery staple")).toBe(3);
    expect(await opensWith(third)).toBe(0);
  });
});
