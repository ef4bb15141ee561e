/**
 * Offline seeding end to end through the real CLI, with Azurite as Azure: a folder vault made
 * `init --like` the Azure vault takes the first full backup, `seed journal` lists and signs its
 * objects, the folder is shipped (uploaded as it is into a staging container, as a Data Box or
 * Import/Export job stages it), and `copy` from the staging container checks the journal and
 * imports it server-side. A staged seed with a flipped byte (in a manifest, in a pack), an extra or
 * a missing object, or an edited journal is refused with exit 5 and nothing committed in the
 * vault. The next online backup of the same source deduplicates against the seeded point and
 * continues its chain; both points restore byte-identical.
 */
import { BlobServiceClient } from "@azure/storage-blob";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import { PASSPHRASE, runCli } from "../support/cli.ts";
import { AzuriteVaults, LocalVaults, MIB, cli, cliJson, diskImage, keysUnder, pseudoRandom, sha256, tempFolder, type BackupSummary } from "../cli/vaults.ts";

const SEED_PASSPHRASE = "the seed folder's own passphrase";
/** The Azure vault opens with the suite's passphrase, the seed folder with its own. */
const SEED_ENV = { BULWARK_PASSPHRASE: SEED_PASSPHRASE, BULWARK_FROM_PASSPHRASE: PASSPHRASE };
const IMPORT_ENV = { BULWARK_PASSPHRASE: PASSPHRASE, BULWARK_FROM_PASSPHRASE: SEED_PASSPHRASE };

let local: LocalVaults;
let azurite: AzuriteVaults;
let service: BlobServiceClient;
let scratch: string;
let imagePath: string;
let image: Buffer;
let vault: string;
let seed: string;
let seeded: BackupSummary;

/** Ships the seed folder: every file uploaded as it is into a new staging container, `change` applied on the way. */
async function ship(change: (objects: Map<string, Buffer>) => void = () => {}): Promise<string> {
  const objects = new Map<string, Buffer>();
  for (const key of (await local.objects(seed)).keys()) objects.set(key, await readFile(path.join(seed, key)));
  change(objects);
  const name = `staged-${randomBytes(4).toString("hex")}`;
  const container = service.getContainerClient(name);
  await container.create();
  for (const [key, bytes] of objects) await container.getBlockBlobClient(key).upload(bytes, bytes.length);
  return `${azurite.azurite.blobEndpoint}/${name}`;
}

function flipByte(objects: Map<string, Buffer>, key: string): void {
  const bytes = Buffer.from(objects.get(key)!);
  bytes[Math.floor(bytes.length / 2)] ^= 0x01;
  objects.set(key, bytes);
}

function importFrom(staged: string) {
  return runCli(["copy", "--from", staged, "--to", vault, "--json"], { ...azurite.env, ...IMPORT_ENV });
}

async function expectNothingCommitted(): Promise<void> {
  const objects = await azurite.objects(vault);
  expect(keysUnder(objects, "points/")).toEqual([]);
  expect(keysUnder(objects, "index/")).toEqual([]);
  expect(keysUnder(objects, "chain/")).toEqual([]);
}

beforeAll(async () => {
  [local, azurite] = await Promise.all([LocalVaults.create(), AzuriteVaults.create()]);
  service = BlobServiceClient.fromConnectionString(azurite.azurite.connectionString);
  scratch = await tempFolder("seed");
  image = diskImage("seed", 12);
  imagePath = path.join(scratch, "server.img");
  await writeFile(imagePath, image);
  vault = azurite.newLocation("vault");
  expect((await cli(azurite, vault, ["init"])).code).toBe(0);
  seed = local.newLocation("seed");
  const made = await cli(azurite, seed, ["init", "--like", vault], SEED_ENV);
  expect(made.code, made.stderr).toBe(0);
  seeded = await cliJson<BackupSummary>(azurite, seed, ["backup", imagePath], SEED_ENV);
});

afterAll(async () => {
  await Promise.all([local?.close(), azurite?.close()]);
});

describe("offline seeding", () => {
  test("seed journal lists every object of the folder with its size and SHA-256, for the vault it names", async () => {
    const result = await cliJson<{ objects: number; destination: { id: string; url: string } }>(azurite, seed, ["seed", "journal", "--for", vault], SEED_ENV);
    const journal = JSON.parse((await readFile(path.join(seed, "bulwark-journal.json"))).toString()) as {
      objects: { key: string; size: number; sha256: string }[];
      destination: { id: string };
      mac: string;
    };
    const files = [...(await local.objects(seed)).entries()].filter(([k]) => k !== "bulwark-journal.json" && !k.startsWith("locks/"));
    expect(journal.objects.map((o) => [o.key, o.size])).toEqual(files.sort(([a], [b]) => a.localeCompare(b)));
    for (const o of journal.objects) expect(o.sha256).toBe(sha256(await readFile(path.join(seed, o.key))));
    const vaultId = JSON.parse((await azurite.read(vault, "config")).toString()).id;
    expect(result).toMatchObject({ objects: files.length, destination: { id: vaultId } });
    expect(journal.mac).toMatch(/^[0-9a-f]{64}$/);
  });

  test("a journal for a vault not made --like the seed is refused (exit 2)", async () => {
    const stranger = azurite.newLocation("stranger");
    expect((await cli(azurite, stranger, ["init"])).code).toBe(0);
    const result = await cli(azurite, seed, ["seed", "journal", "--for", stranger], SEED_ENV);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--like");
  });

  test.each([
    ["a flipped byte in a point manifest", (o: Map<string, Buffer>) => flipByte(o, [...o.keys()].find((k) => k.startsWith("points/"))!)],
    ["a flipped byte in a pack", (o: Map<string, Buffer>) => flipByte(o, [...o.keys()].find((k) => k.startsWith("data/"))!)],
    ["an extra object and a missing one", (o: Map<string, Buffer>) => {
      o.set("index/planted", Buffer.from("planted"));
      o.delete([...o.keys()].find((k) => k.startsWith("chain/"))!);
    }],
    ["an edited journal", (o: Map<string, Buffer>) => {
      const journal = JSON.parse(o.get("bulwark-journal.json")!.toString()) as { objects: { size: number }[] };
      journal.objects[0].size += 1;
      o.set("bulwark-journal.json", Buffer.from(JSON.stringify(journal)));
    }],
  ])("a staged seed with %s is refused (exit 5) and nothing is committed in the vault", async (_what, change) => {
    const result = await importFrom(await ship(change));
    expect(result.code, result.stderr).toBe(5);
    expect(result.stderr).toMatch(/journal|fails authentication/);
    await expectNothingCommitted();
  });

  test("the staged seed imports server-side after its journal checks; the next online backup is incremental against it and both restore byte-identical", async () => {
    const staged = await ship();
    const result = await importFrom(staged);
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { pointsCopied: number; packsCopied: number; bytesCopied: number; bytesUploaded: number; seedChecked: boolean };
    expect(report).toMatchObject({ pointsCopied: 1, seedChecked: true, bytesUploaded: 0 });
    expect(report.bytesCopied).toBeGreaterThan(0);

    const changed = Buffer.from(image);
    pseudoRandom("seed-change", 256 * 1024).copy(changed, 5 * MIB);
    await writeFile(imagePath, changed);
    const online = await cliJson<BackupSummary>(azurite, vault, ["backup", imagePath]);
    expect(online.bytesRead).toBe(changed.length);
    expect(online.bytesNew).toBeLessThanOrEqual(512 * 1024);

    const opened = await openStore(vault, { AZURE_STORAGE_CONNECTION_STRING: azurite.azurite.connectionString });
    const azure = await Vault.open(opened.store, new PassphraseProvider(PASSPHRASE), { loadIndex: false });
    expect((await azure.readPoint(online.id)).chain).toEqual({ sequence: 2, previous: seeded.id });

    for (const [id, expected] of [[seeded.id, image], [online.id, changed]] as const) {
      const to = path.join(scratch, `restored-${id.slice(0, 8)}`);
      const restored = await cli(azurite, vault, ["restore", id, "--to", to]);
      expect(restored.code, restored.stderr).toBe(0);
      expect(sha256(await readFile(to))).toBe(sha256(expected));
    }
  });
});
