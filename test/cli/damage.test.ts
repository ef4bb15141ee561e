/**
 * Damage in storage is found and never restored as data: one flipped byte in any kind of stored
 * object (a pack's data, a pack's header, an index object, a point manifest, the config, a key
 * object) makes `verify --read-data` fail naming the problem (or opening fail, for config and
 * keys), and a restore that needs the damaged bytes fails without leaving a file behind.
 */
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  AzuriteVaults,
  LocalVaults,
  cli,
  cliJson,
  diskImage,
  keysUnder,
  restoredHash,
  sha256,
  tempFolder,
  verifyClean,
  type BackupSummary,
  type VaultKind,
  type VerifySummary,
} from "./vaults.ts";

describe.each(["local", "azurite"] as const)("damage, %s vault", (kindName) => {
  let kind: VaultKind;
  let vault: string;
  let scratch: string;
  let image: Buffer;
  let point: BackupSummary;
  let objects: Map<string, number>;

  beforeAll(async () => {
    kind = kindName === "local" ? await LocalVaults.create() : await AzuriteVaults.create();
    scratch = await tempFolder("damage");
    vault = kind.newLocation("damage");
    image = diskImage("damage", 3);
    await writeFile(path.join(scratch, "disk.img"), image);
    expect((await cli(kind, vault, ["init"])).code).toBe(0);
    point = await cliJson<BackupSummary>(kind, vault, ["backup", path.join(scratch, "disk.img")]);
    objects = await kind.objects(vault);
    expect(keysUnder(objects, "data/")).toHaveLength(1);
    expect(keysUnder(objects, "index/")).toHaveLength(1);
    expect(keysUnder(objects, "keys/")).toHaveLength(1);
  });

  afterAll(async () => {
    await kind?.close();
  });

  /** Flips one byte of an object (offset from the end when negative), runs body, then repairs it. */
  async function withFlippedByte(key: string, offset: number, body: () => Promise<void>): Promise<void> {
    const original = await kind.read(vault, key);
    const damaged = Buffer.from(original);
    const at = offset < 0 ? damaged.length + offset : offset;
    damaged[at] ^= 0x01;
    await kind.replace(vault, key, damaged);
    try {
      await body();
    } finally {
      await kind.replace(vault, key, original);
    }
  }

  async function verifyFails(): Promise<VerifySummary> {
    const result = await cli(kind, vault, ["verify", "--read-data", "--json"]);
    expect(result.code, result.stderr).toBe(5);
    const report = JSON.parse(result.stdout) as VerifySummary;
    expect(report.ok).toBe(false);
    expect(report.problems.length).toBeGreaterThan(0);
    return report;
  }

  async function restoreFails(pattern: RegExp): Promise<void> {
    const to = path.join(scratch, "restore-target", "out.img");
    const result = await cli(kind, vault, ["restore", point.id, "--to", to]);
    expect(result.code, result.stderr).toBe(5);
    expect(result.stderr).toMatch(pattern);
    expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
    // Neither the file nor a partial one is left behind.
    expect(await readdir(path.dirname(to)).catch(() => [])).toEqual([]);
  }

  test("the undamaged vault verifies and restores", async () => {
    await verifyClean(kind, vault);
    expect(await restoredHash(kind, vault, point.id, scratch)).toBe(sha256(image));
  });

  test("a flipped byte in a pack's data region: verify names the pack, a restore fails and writes nothing", async () => {
    const pack = keysUnder(objects, "data/")[0];
    const packId = pack.split("/")[2];
    for (const offset of [40, Math.floor(objects.get(pack)! / 2)]) {
      await withFlippedByte(pack, offset, async () => {
        const report = await verifyFails();
        expect(report.problems.join("\n")).toMatch(new RegExp(`pack ${packId}: .*damaged`));
        await restoreFails(/failed authentication|damaged/);
      });
    }
  });

  test("a flipped byte in a pack's header or its length: verify names the pack's header", async () => {
    const pack = keysUnder(objects, "data/")[0];
    const packId = pack.split("/")[2];
    for (const offset of [-30, -4]) {
      await withFlippedByte(pack, offset, async () => {
        const report = await verifyFails();
        expect(report.problems.join("\n")).toMatch(new RegExp(`pack ${packId}: .*header`));
      });
    }
  });

  test("a flipped byte in an index object: verify names it, a restore fails", async () => {
    const index = keysUnder(objects, "index/")[0];
    await withFlippedByte(index, 100, async () => {
      const report = await verifyFails();
      expect(report.problems.join("\n")).toContain(`index object ${index}`);
      await restoreFails(new RegExp(`index object ${index} failed authentication`));
    });
  });

  test("a flipped byte in a point manifest: verify names the point, restoring it fails", async () => {
    const key = `points/${point.id}`;
    await withFlippedByte(key, 20, async () => {
      const report = await verifyFails();
      expect(report.problems.join("\n")).toMatch(new RegExp(`point ${point.id}: .*failed authentication`));
      await restoreFails(new RegExp(`point ${point.id} failed authentication`));
      // Listing still shows every intact point, names the damaged one, and exits non-zero.
      const listing = await cli(kind, vault, ["points", "--json"]);
      expect(listing.code).toBe(5);
      expect(listing.stderr).toMatch(new RegExp(`point ${point.id}: .*failed authentication`));
      expect((JSON.parse(listing.stdout) as { id: string }[]).map((p) => p.id)).not.toContain(point.id);
    });
  });

  test("a flipped byte in the config: the vault does not open, and says its config is damaged", async () => {
    const config = (await kind.read(vault, "config")).toString("utf8");
    const offsets = [
      config.indexOf("bulwark-vault") + 3, // in the format name
      config.indexOf('"id"') + 10, // in the vault id
      config.indexOf("blockSize") + 12, // in a number
      config.indexOf("{") , // structure
    ];
    // Each check costs a CLI run: the remote vault gets the two most telling ones.
    for (const offset of kindName === "local" ? offsets : offsets.slice(0, 2)) {
      await withFlippedByte("config", offset, async () => {
        for (const args of kindName === "local" ? [["points"], ["verify", "--read-data"]] : [["points"]]) {
          const result = await cli(kind, vault, args);
          expect(result.code, `${offset}: ${result.stderr}`).toBe(5);
          expect(result.stderr).toMatch(/config object .*(damaged|modified)/);
          expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
        }
      });
    }
  });

  test("a flipped byte in a key object: the vault does not open, and says the key object is damaged (not a wrong passphrase)", async () => {
    const key = keysUnder(objects, "keys/")[0];
    const body = (await kind.read(vault, key)).toString("utf8");
    const offsets = [
      body.indexOf('"salt"') + 12, // the KDF salt
      body.indexOf('"N"') + 6, // a KDF parameter
      body.indexOf('"wrapped"') + 20, // the wrapped keys
      body.indexOf('"kind"') + 10, // the key's kind
    ];
    for (const offset of kindName === "local" ? offsets : offsets.slice(0, 2)) {
      await withFlippedByte(key, offset, async () => {
        const result = await cli(kind, vault, ["points"]);
        expect(result.code, `${offset}: ${result.stderr}`).toBe(5);
        expect(result.stderr).toMatch(new RegExp(`key object ${key} is damaged`));
        expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
      });
    }
    // Repaired, everything is as before.
    await verifyClean(kind, vault);
  });
});
