/**
 * Issue 13, per-chunk keys (vault format 4): each chunk is sealed under a key derived from the
 * data key and the chunk's own type and id, and each other object under a key derived from the
 * data key and a random salt in its header, so no key's count of random-nonce AES-GCM encryptions
 * grows with the vault (NIST SP 800-38D 8.3 allows 2^32). Scenarios:
 *   - the derivation is HKDF-SHA256 as documented; two chunks' keys differ, and one's ciphertext
 *     does not open under the other's key, nor under the data key itself;
 *   - a chunk moved to another id's place fails authentication (in a codec call, and in a real
 *     vault, where restore refuses it with exit 5), as does a changed manifest;
 *   - metadata objects carry a versioned header with a fresh salt; a changed salt or a cut header
 *     is damage; objects and chunks a version-3 writer sealed still open;
 *   - a version-4 vault (made through Vault.init's version override since the CLI makes version 5,
 *     test/engine/data-key-epochs.test.ts) round-trips through backup, restore, verify --read-data,
 *     forget --prune, and stores only format-4 objects;
 *   - a version-3 vault (made through Vault.init's version override) still backs up, restores,
 *     verifies and prunes, and stays version 3 in every object it gets; its points copied into a
 *     vault of the current version made `init --like` it restore there.
 */
import { cp, readFile, writeFile } from "node:fs/promises";
import { createCipheriv, hkdfSync, randomBytes } from "node:crypto";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CHUNK_DATA, CHUNK_TREE, decodeChunk, encodeChunk } from "../../runtime/engine/chunk-codec.ts";
import {
  baseKeyBytes,
  chunkAssociatedData,
  chunkSealingKey,
  hasObjectHeader,
  keyedId,
  labelAssociatedData,
  OBJECT_SALT_BYTES,
  open,
  openObject,
  sealObject,
} from "../../runtime/engine/crypto.ts";
import { IntegrityError } from "../../runtime/errors.ts";
import { packIdOfKey, readPackHeader, type PackEntry } from "../../runtime/engine/pack.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import { PASSPHRASE, runCli } from "../support/cli.ts";
import {
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
  verifyClean,
  type BackupSummary,
} from "../cli/vaults.ts";

const BLOCK = 64 * 1024;
const keys = { dataKey: randomBytes(32), idKey: randomBytes(32), format: 4 as const };

describe("sealing format 4", () => {
  test("a chunk's key is HKDF-SHA256(data key, empty salt, 'bulwark chunk v4' || type || id), so two chunks' keys differ and neither opens the other", () => {
    const first = pseudoRandom("first chunk", 64 * 1024);
    const second = pseudoRandom("second chunk", 64 * 1024);
    const firstId = randomBytes(32);
    const secondId = randomBytes(32);
    const firstKey = chunkSealingKey(keys.dataKey, CHUNK_DATA, firstId);
    const info = Buffer.concat([Buffer.from("bulwark chunk v4"), Buffer.of(CHUNK_DATA), firstId]);
    expect(firstKey.export()).toEqual(Buffer.from(hkdfSync("sha256", keys.dataKey, Buffer.alloc(0), info, 32)));
    expect(chunkSealingKey(keys.dataKey, CHUNK_TREE, firstId).export()).not.toEqual(firstKey.export());
    const secondKey = chunkSealingKey(keys.dataKey, CHUNK_DATA, secondId);
    expect(secondKey.export()).not.toEqual(firstKey.export());

    const sealed = encodeChunk(keys, CHUNK_DATA, firstId, first, 1).sealed;
    const ad = chunkAssociatedData(CHUNK_DATA, firstId);
    // [codec byte][payload]: the random chunk is stored raw.
    expect(open(firstKey, sealed, ad, "first").subarray(1)).toEqual(first);
    expect(() => open(secondKey, sealed, ad, "first under the second's key")).toThrow(/failed authentication/);
    expect(() => open(keys.dataKey, sealed, ad, "first under the data key")).toThrow(/failed authentication/);
    const secondSealed = encodeChunk(keys, CHUNK_DATA, secondId, second, 1).sealed;
    expect(decodeChunk(keys, CHUNK_DATA, secondId, secondSealed, second.length, "test", { checkId: false })).toEqual(second);
  });

  test("a chunk moved to another id's or type's place fails authentication", () => {
    const raw = pseudoRandom("moved chunk", 4096);
    const id = randomBytes(32);
    const sealed = encodeChunk(keys, CHUNK_DATA, id, raw, 1).sealed;
    expect(() => decodeChunk(keys, CHUNK_DATA, randomBytes(32), sealed, raw.length, "test", { checkId: false })).toThrow(IntegrityError);
    expect(() => decodeChunk(keys, CHUNK_TREE, id, sealed, raw.length, "test", { checkId: false })).toThrow(/failed authentication/);
  });

  test("a chunk a version-3 writer sealed under the data key still opens in format 4; a format-4 chunk does not open as format 3", () => {
    const raw = Buffer.from("a chunk copied raw from a version-3 vault ".repeat(100));
    const id = randomBytes(32);
    const old = encodeChunk({ ...keys, format: 3 }, CHUNK_DATA, id, raw, 1).sealed;
    expect(open(keys.dataKey, old, chunkAssociatedData(CHUNK_DATA, id), "old").length).toBeGreaterThan(0);
    expect(decodeChunk(keys, CHUNK_DATA, id, old, raw.length, "test", { checkId: false })).toEqual(raw);
    const current = encodeChunk(keys, CHUNK_DATA, id, raw, 1).sealed;
    expect(() => decodeChunk({ ...keys, format: 3 }, CHUNK_DATA, id, current, raw.length, "test", { checkId: false })).toThrow(IntegrityError);
  });

  test("metadata objects carry a versioned header with a fresh 16-byte salt; a changed salt or a cut header is damage; format-3 objects still open", () => {
    const plain = Buffer.from(JSON.stringify({ point: "abc", sequence: 1 }));
    const ad = labelAssociatedData("chain", "chain/k/000000000001");
    const one = sealObject(keys.dataKey, plain, ad, 4);
    const two = sealObject(keys.dataKey, plain, ad, 4);
    expect(hasObjectHeader(one) && hasObjectHeader(two)).toBe(true);
    expect(one.subarray(0, 4)).toEqual(Buffer.from("BWO\x04", "latin1"));
    expect(one.subarray(4, 4 + OBJECT_SALT_BYTES)).not.toEqual(two.subarray(4, 4 + OBJECT_SALT_BYTES));
    expect(openObject(keys.dataKey, one, ad, "one")).toEqual(plain);
    expect(openObject(keys.dataKey, two, ad, "two")).toEqual(plain);
    // Not under the data key: under the key its salt derives.
    expect(() => open(keys.dataKey, one.subarray(4 + OBJECT_SALT_BYTES), ad, "one")).toThrow(IntegrityError);

    const salted = Buffer.from(one);
    salted[4] ^= 1;
    expect(() => openObject(keys.dataKey, salted, ad, "chain marker k/1")).toThrow(/chain marker k\/1 failed authentication/);
    expect(() => openObject(keys.dataKey, one.subarray(0, 30), ad, "cut")).toThrow(IntegrityError);
    expect(() => openObject(keys.dataKey, one, labelAssociatedData("chain", "chain/k/000000000002"), "moved")).toThrow(IntegrityError);

    const old = sealObject(keys.dataKey, plain, ad, 3);
    expect(openObject(keys.dataKey, old, ad, "old")).toEqual(plain);
    // A format-3 object whose random nonce happens to begin like format 4's header (once in 2^32) still opens.
    const nonce = Buffer.concat([Buffer.from("BWO\x04", "latin1"), randomBytes(8)]);
    const cipher = createCipheriv("aes-256-gcm", keys.dataKey, nonce).setAAD(ad);
    const lookalike = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
    expect(hasObjectHeader(lookalike)).toBe(true);
    expect(openObject(keys.dataKey, lookalike, ad, "lookalike")).toEqual(plain);
  });
});

/** The stored objects of a local vault folder that are sealed metadata (not config, keys, locks or packs). */
async function sealedMetadata(kind: LocalVaults, location: string): Promise<string[]> {
  const objects = await kind.objects(location);
  return ["points/", "index/", "chain/", "forgotten/"].flatMap((prefix) => keysUnder(objects, prefix));
}

/** Every pack's entries, with the pack's bytes. */
async function packs(kind: LocalVaults, location: string, vault: Vault): Promise<{ key: string; bytes: Buffer; entries: PackEntry[] }[]> {
  const found = [];
  for (const key of keysUnder(await kind.objects(location), "data/")) {
    const bytes = await kind.read(location, key);
    const entries = await readPackHeader(vault.master.dataKey, packIdOfKey(key)!, bytes.length, async (o, l) => bytes.subarray(o, o + l));
    found.push({ key, bytes, entries });
  }
  return found;
}

/** In one pack, a data chunk `b` whose id is `needed`, and another chunk `a` of the same sealed length. */
function twoChunksOfOneLength(stored: { key: string; bytes: Buffer; entries: PackEntry[] }[], needed: Set<string>) {
  for (const pack of stored) {
    const data = pack.entries.filter((e) => e.type === CHUNK_DATA);
    for (const b of data.filter((e) => needed.has(e.id.toString("hex")))) {
      const a = data.find((e) => e !== b && e.length === b.length);
      if (a) return { pack, a, b };
    }
  }
  throw new Error("no pack holds a needed data chunk and another of its length");
}

function sealedHeaderOf(pack: Buffer): Buffer {
  const length = pack.readUInt32LE(pack.length - 4);
  return pack.subarray(pack.length - 4 - length, pack.length - 4);
}

async function openVault(location: string): Promise<Vault> {
  return Vault.open((await openStore(location)).store, new PassphraseProvider(PASSPHRASE), { loadIndex: false });
}

describe.each([4, 3] as const)("a version %i vault", (version) => {
  let kind: LocalVaults;
  let location: string;
  let scratch: string;
  let imagePath: string;
  let first: BackupSummary;
  let second: BackupSummary;
  const image = diskImage(`per-chunk-keys-${version}`, 6);
  const changed = Buffer.from(image);

  beforeAll(async () => {
    kind = await LocalVaults.create();
    scratch = await tempFolder(`per-chunk-keys-${version}`);
    location = kind.newLocation(`v${version}`);
    imagePath = path.join(scratch, "disk.img");
    await writeFile(imagePath, image);
    await Vault.init((await openStore(location)).store, new PassphraseProvider(PASSPHRASE), { version });
    pseudoRandom("changed", 256 * 1024).copy(changed, 2 * MIB);
  });

  afterAll(async () => {
    await kind?.close();
  });

  test("backs up twice, restores both points byte-identical and verifies with --read-data", async () => {
    first = await cliJson<BackupSummary>(kind, location, ["backup", imagePath]);
    await writeFile(imagePath, changed);
    second = await cliJson<BackupSummary>(kind, location, ["backup", imagePath]);
    expect(second.bytesNew).toBeLessThan(MIB);
    expect(await restoredHash(kind, location, first.id, scratch)).toBe(sha256(image));
    expect(await restoredHash(kind, location, second.id, scratch)).toBe(sha256(changed));
    const report = await verifyClean(kind, location);
    expect(report.points).toBe(2);
    expect(report.chunksChecked).toBeGreaterThan(0);
  });

  test(`stores every object in format ${version}: chunks under ${version === 4 ? "their own keys" : "the data key"}, metadata ${version === 4 ? "with" : "without"} a salted header`, async () => {
    const config = JSON.parse((await kind.read(location, "config")).toString("utf8")) as { version: number };
    expect(config.version).toBe(version);
    const vault = await openVault(location);
    expect(vault.master.format).toBe(version);
    const metadata = await sealedMetadata(kind, location);
    expect(metadata.length).toBeGreaterThanOrEqual(6);
    for (const key of metadata) expect(hasObjectHeader(await kind.read(location, key)), key).toBe(version === 4);
    const stored = await packs(kind, location, vault);
    expect(stored.length).toBeGreaterThan(0);
    for (const pack of stored) {
      expect(hasObjectHeader(sealedHeaderOf(pack.bytes)), pack.key).toBe(version === 4);
      for (const entry of pack.entries) {
        const sealed = pack.bytes.subarray(entry.offset, entry.offset + entry.length);
        const underDataKey = () => open(baseKeyBytes(vault.master.dataKey), sealed, chunkAssociatedData(entry.type, entry.id), "chunk");
        if (version === 4) expect(underDataKey).toThrow(IntegrityError);
        else expect(underDataKey().length).toBeGreaterThan(0);
        expect(decodeChunk(vault.master, entry.type, entry.id, sealed, entry.rawLength, pack.key).length).toBe(entry.rawLength);
      }
    }
  });

  test("forget --keep-last 1 --prune removes the first point's own chunks; the second restores and the vault verifies", async () => {
    const result = await cliJson<{ remove: string[]; prune: { packsDeleted: number } }>(kind, location, ["forget", "--keep-last", "1", "--prune"]);
    expect(result.remove).toEqual([first.id]);
    const tombstone = await kind.read(location, `forgotten/${first.id}`);
    expect(hasObjectHeader(tombstone)).toBe(version === 4);
    expect(await restoredHash(kind, location, second.id, scratch)).toBe(sha256(changed));
    expect((await verifyClean(kind, location)).points).toBe(1);
  });

  test.runIf(version === 3)("its points copied (bulwark copy) into a vault of the current version made --like it restore there byte-identical: packs move as they are, sealed under the data key", async () => {
    const copy = kind.newLocation("v4-like-v3");
    const made = await cli(kind, copy, ["init", "--like", location], { BULWARK_FROM_PASSPHRASE: PASSPHRASE });
    expect(made.code, made.stderr).toBe(0);
    const copied = await runCli(["copy", "--from", location, "--to", copy, "--json"], { BULWARK_FROM_PASSPHRASE: PASSPHRASE });
    expect(copied.code, copied.stderr).toBe(0);
    expect(JSON.parse(copied.stdout)).toMatchObject({ pointsCopied: 1 });
    expect((await openVault(copy)).master.format).toBe(5);
    expect(await restoredHash(kind, copy, second.id, scratch)).toBe(sha256(changed));
  });

  test.runIf(version === 4)("a chunk copied over another of the same length, one the kept point needs, makes its restore fail authentication (exit 5)", async () => {
    const damaged = kind.newLocation(`v${version}-swapped`);
    await cp(location, damaged, { recursive: true });
    const vault = await openVault(damaged);
    const needed = new Set<string>();
    for (let at = 0; at < changed.length; at += BLOCK) needed.add(keyedId(vault.master.idKey, changed.subarray(at, at + BLOCK)).toString("hex"));
    // The image's random blocks are stored raw, so their sealed chunks all have one length.
    const { pack, a, b } = twoChunksOfOneLength(await packs(kind, damaged, vault), needed);
    pack.bytes.copy(pack.bytes, b.offset, a.offset, a.offset + a.length);
    await writeFile(path.join(damaged, pack.key), pack.bytes);
    const restore = await cli(kind, damaged, ["restore", second.id, "--to", path.join(scratch, "swapped.img")]);
    expect(restore.code).toBe(5);
    expect(restore.stderr).toMatch(/failed authentication/);
  });

  test.runIf(version === 4)("a point manifest whose sealed bytes were changed is refused as damaged, not misread", async () => {
    const damaged = kind.newLocation(`v${version}-manifest`);
    await cp(location, damaged, { recursive: true });
    const key = `points/${second.id}`;
    const bytes = await readFile(path.join(damaged, key));
    // Format 4: a byte of the salt; format 3: a byte of the nonce.
    bytes[5] ^= 0x80;
    await writeFile(path.join(damaged, key), bytes);
    const restore = await cli(kind, damaged, ["restore", second.id, "--to", path.join(scratch, "manifest.img")]);
    expect(restore.code).toBe(5);
    expect(restore.stderr).toMatch(new RegExp(`point ${second.id} failed authentication`));
  });
});
