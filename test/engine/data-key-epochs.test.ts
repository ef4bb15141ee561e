/**
 * Issue 13, data-key epochs (vault format 5, `bulwark key rotate --data`): a rotation makes a new
 * random data key; new chunks and metadata are sealed under it and name it; every older point
 * stays readable, by every key object of the vault. Scenarios, on one small local vault (in
 * process, the CLI spawned only where it is what is tested):
 *   - a point before and one after a rotation restore byte-identical, the second made by a process
 *     that opened the vault with another passphrase, while a writer that opened the vault before the
 *     rotation keeps sealing under the old epoch;
 *   - which epoch sealed each pack, chunk, index object and manifest is read from the object itself,
 *     and the key id a blob carries is authenticated with it;
 *   - a damaged epoch object fails clearly (what it sealed names it; the rest still restores);
 *   - a planted epoch object (sealed under a key the attacker chose), and a real one copied to a newer
 *     number, are refused, never seal, and are named by verify; the next rotation passes them by;
 *   - two rotations at once: one makes the epoch, the other fails with exit 7, and every opener
 *     agrees on the newest;
 *   - a copy between vaults made --like, across rotations on both sides, brings the epoch keys it
 *     needs (which never seal there) and its points restore byte-identical;
 *   - a version-4 vault refuses a rotation and says what to do;
 *   - `bulwark key rotate --data` and `bulwark key list` through the real CLI.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, expect, test } from "vitest";
import { backupDisk } from "../../runtime/engine/backup.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { copyPoints } from "../../runtime/engine/copy.ts";
import { CHUNK_DATA, decodeChunk, encodeChunk } from "../../runtime/engine/chunk-codec.ts";
import {
  baseKeyBytes,
  dataKeyId,
  isKeyring,
  KEY_ID_BYTES,
  labelAssociatedData,
  newKeyring,
  objectKeyId,
  openObject,
  seal,
  sealObject,
  type DataKey,
} from "../../runtime/engine/crypto.ts";
import { configDigest, writeKeyObject, type Epoch } from "../../runtime/engine/keyring.ts";
import { packIdOfKey, readPackHeader } from "../../runtime/engine/pack.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { verifyVault } from "../../runtime/engine/verify.ts";
import { rotateDataKey } from "../../runtime/cli/key-action.ts";
import { IntegrityError, UsageError, VaultBusyError } from "../../runtime/errors.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { runCli } from "../support/cli.ts";
import { MIB, diskImage, pseudoRandom } from "../cli/vaults.ts";

const FIRST = "data-key epochs: the first passphrase";
const SECOND = "data-key epochs: the second passphrase";
const LIKE = "data-key epochs: the like vault's own passphrase";

const firstImage = diskImage("epochs-first", 2);
const secondImage = Buffer.from(firstImage);
pseudoRandom("epochs-second", 256 * 1024).copy(secondImage, MIB);
const thirdImage = Buffer.from(firstImage);
pseudoRandom("epochs-third", 128 * 1024).copy(thirdImage, 0);

let dir: string;
let location: string;
let store: LocalFolderStore;
let created: Vault;
let early: Vault;
let epoch1: Epoch;
let before: PointManifest;
let after: PointManifest;
let earlyAfter: PointManifest;
/** Object names present before the rotation, and after the backup sealed under epoch 1. */
let beforeRotation: Set<string>;
let afterNewEpoch: Set<string>;

async function open(at: ObjectStore, passphrase: string, loadIndex = true): Promise<Vault> {
  return Vault.open(at, new PassphraseProvider(passphrase), { loadIndex });
}

async function backup(vault: Vault, image: Buffer, name: string): Promise<PointManifest> {
  const source = { size: image.length, read: async (offset: number, length: number) => Buffer.from(image.subarray(offset, offset + length)) };
  return backupDisk(vault, source, { kind: "disk", source: { type: "image", path: `/${name}.img` }, tags: {} }, { threads: 1 });
}

async function restored(vault: Vault, point: PointManifest): Promise<Buffer> {
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    const out = Buffer.alloc(point.size);
    await restoreContent(vault, pool, point, { needsZeros: true, write: async (offset, data) => void data.copy(out, offset) });
    return out;
  } finally {
    await pool.close();
  }
}

async function names(at: ObjectStore, prefixes = ["data/", "index/", "points/", "chain/"]): Promise<Set<string>> {
  const found = new Set<string>();
  for (const prefix of prefixes) for await (const info of at.list(prefix)) found.add(info.key);
  return found;
}

function sealingKeyIdOf(dataKey: DataKey): string {
  if (!isKeyring(dataKey)) throw new Error("a version-5 vault holds a keyring");
  return dataKey.sealingKeyId;
}

/** Epoch 0's key: the master data key every key object wraps. */
function epochZeroKey(): Buffer {
  return baseKeyBytes(created.master.dataKey);
}

/** The key ids an object names: a pack's header and every chunk in it, or a metadata object's header. */
async function keyIdsOf(vault: Vault, name: string): Promise<Set<string>> {
  const bytes = await vault.store.get(name);
  const packId = packIdOfKey(name);
  if (!packId) return new Set([String(objectKeyId(bytes))]);
  const headerLength = bytes.readUInt32LE(bytes.length - 4);
  const ids = new Set([String(objectKeyId(bytes.subarray(bytes.length - 4 - headerLength, bytes.length - 4)))]);
  const entries = await readPackHeader(vault.master.dataKey, packId, bytes.length, async (o, l) => bytes.subarray(o, o + l));
  for (const entry of entries) ids.add(bytes.subarray(entry.offset, entry.offset + KEY_ID_BYTES).toString("hex"));
  return ids;
}

test("format 5 binds a blob to the key id it carries: changed to another epoch's id it fails authentication; what format 4 sealed under epoch 0 still opens", () => {
  const base = randomBytes(32);
  const later = randomBytes(32);
  const ring = newKeyring(base);
  ring.keys.set(dataKeyId(later), later);
  ring.sealingKeyId = dataKeyId(later);
  const keys = { dataKey: ring, idKey: randomBytes(32), format: 5 as const };
  const raw = pseudoRandom("format 5 chunk", 4096);
  const id = randomBytes(32);
  const chunk = encodeChunk(keys, CHUNK_DATA, id, raw, 1).sealed;
  expect(chunk.subarray(0, KEY_ID_BYTES).toString("hex")).toBe(dataKeyId(later));
  expect(decodeChunk(keys, CHUNK_DATA, id, chunk, raw.length, "test", { checkId: false })).toEqual(raw);
  const relabelled = Buffer.from(chunk);
  Buffer.from(dataKeyId(base), "hex").copy(relabelled, 0);
  expect(() => decodeChunk(keys, CHUNK_DATA, id, relabelled, raw.length, "test", { checkId: false })).toThrow(/failed authentication/);

  const ad = labelAssociatedData("point", "p");
  const object = sealObject(ring, raw, ad, 5);
  expect(objectKeyId(object)).toBe(dataKeyId(later));
  expect(openObject(ring, object, ad, "object")).toEqual(raw);
  const moved = Buffer.from(object);
  Buffer.from(dataKeyId(base), "hex").copy(moved, 4);
  expect(() => openObject(ring, moved, ad, "object")).toThrow(/object failed authentication/);

  const older = encodeChunk({ ...keys, dataKey: base, format: 4 }, CHUNK_DATA, id, raw, 1).sealed;
  expect(decodeChunk(keys, CHUNK_DATA, id, older, raw.length, "test", { checkId: false })).toEqual(raw);
  expect(openObject(ring, sealObject(base, raw, ad, 4), ad, "format 4 object")).toEqual(raw);
});

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "bulwark-epochs-"));
  location = path.join(dir, "vault");
  store = new LocalFolderStore(location);
  created = await Vault.init(store, new PassphraseProvider(FIRST));
  await writeKeyObject(store, new PassphraseProvider(SECOND), created.master, configDigest(await store.get("config")));
}, 60_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("a point before and one after a rotation restore byte-identical; the rotation opens with every key object; a writer opened before it keeps the old epoch", async () => {
  early = await open(store, FIRST);
  before = await backup(created, firstImage, "disk");
  beforeRotation = await names(store);

  epoch1 = await rotateDataKey(created);
  expect(epoch1).toMatchObject({ name: "epochs/0000000001", epoch: 1 });

  // Opened with the other passphrase: the rotation needed only the one it ran with.
  const viaSecond = await open(store, SECOND);
  expect(sealingKeyIdOf(viaSecond.master.dataKey)).toBe(epoch1.keyId);
  after = await backup(viaSecond, secondImage, "disk");
  afterNewEpoch = await names(store);

  // The writer that opened before the rotation seals under epoch 0 until it ends, and reads epoch 1's points.
  expect(sealingKeyIdOf(early.master.dataKey)).toBe(dataKeyId(epochZeroKey()));
  earlyAfter = await backup(early, thirdImage, "disk");
  expect((await restored(early, await early.readPoint(after.id))).equals(secondImage)).toBe(true);

  const fresh = await open(store, FIRST);
  expect((await restored(fresh, await fresh.readPoint(before.id))).equals(firstImage)).toBe(true);
  expect((await restored(fresh, await fresh.readPoint(after.id))).equals(secondImage)).toBe(true);
  expect((await restored(fresh, await fresh.readPoint(earlyAfter.id))).equals(thirdImage)).toBe(true);
}, 60_000);

test("every pack, chunk, index object, manifest and chain marker names the epoch that sealed it: epoch 1 after the rotation, epoch 0 before it and from the writer opened before it", async () => {
  const zero = dataKeyId(epochZeroKey());
  const reader = await open(store, FIRST, false);
  const everything = await names(store);
  const sealedUnderOne = [...afterNewEpoch].filter((n) => !beforeRotation.has(n));
  const sealedUnderZero = [...beforeRotation, ...[...everything].filter((n) => !afterNewEpoch.has(n))];
  for (const prefix of ["data/", "index/", "points/", "chain/"]) {
    expect(sealedUnderOne.some((n) => n.startsWith(prefix)), prefix).toBe(true);
    expect(sealedUnderZero.some((n) => n.startsWith(prefix)), prefix).toBe(true);
  }
  for (const name of sealedUnderOne) expect([...(await keyIdsOf(reader, name))], name).toEqual([epoch1.keyId]);
  for (const name of sealedUnderZero) expect([...(await keyIdsOf(reader, name))], name).toEqual([zero]);
}, 30_000);

test("a damaged epoch object fails clearly: reading what it sealed (a manifest, the index) names it, exit 5; what epoch 0 sealed still reads", async () => {
  const damagedAt = path.join(dir, "damaged");
  await cp(location, damagedAt, { recursive: true });
  const file = path.join(damagedAt, "epochs", "0000000001");
  const body = JSON.parse(await readFile(file, "utf8")) as { wrapped: string };
  const wrapped = Buffer.from(body.wrapped, "base64");
  wrapped[wrapped.length - 1] ^= 1;
  await writeFile(file, JSON.stringify({ ...body, wrapped: wrapped.toString("base64") }));

  const damaged = await open(new LocalFolderStore(damagedAt), FIRST, false);
  expect(damaged.epochs.refused.map((r) => r.name)).toEqual(["epochs/0000000001"]);
  const failure = await damaged.readPoint(after.id).catch((error: unknown) => error);
  expect(failure).toBeInstanceOf(IntegrityError);
  expect((failure as IntegrityError).exitCode).toBe(5);
  expect((failure as Error).message).toMatch(new RegExp(`point ${after.id} failed authentication: it names data key ${epoch1.keyId}.*epochs/0000000001`));
  // The index holds objects epoch 1 sealed: loading it stops with the same clear message, not a half index.
  await expect(damaged.loadIndex()).rejects.toThrow(new RegExp(`index object index/\\w+ failed authentication: it names data key ${epoch1.keyId}.*epochs/0000000001`));
  expect((await damaged.readPoint(before.id)).id).toBe(before.id);
}, 30_000);

test("a planted epoch object (a key the attacker chose) and a real one copied to a newer number are refused, never seal, and verify names them; the next rotation passes their numbers by", async () => {
  // Someone with write access but not the master keys: a well-formed object, wrapped under a key of their own.
  const attackerKey = randomBytes(32);
  const keyId = dataKeyId(attackerKey);
  const planted = {
    version: 1,
    epoch: 2,
    keyId,
    created: new Date().toISOString(),
    wrapped: seal(randomBytes(32), attackerKey, labelAssociatedData("epoch", `${created.config.id}/epochs/0000000002/${keyId}`)).toString("base64"),
  };
  await store.create("epochs/0000000002", Buffer.from(JSON.stringify(planted)));
  // A rollback: epoch 1's real object under a newer number, to make writers seal under it again.
  await store.create("epochs/0000000003", await store.get("epochs/0000000001"));

  const vault = await open(store, FIRST);
  expect(vault.epochs.refused.map((r) => r.name)).toEqual(["epochs/0000000002", "epochs/0000000003"]);
  expect(sealingKeyIdOf(vault.master.dataKey)).toBe(epoch1.keyId);
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    const report = await verifyVault(vault, pool, { readDataPercent: 0 });
    for (const name of ["epochs/0000000002", "epochs/0000000003"]) {
      expect(report.problems.some((p) => p.includes(`epoch object ${name} is refused`)), name).toBe(true);
    }
  } finally {
    await pool.close();
  }
  const point = await backup(vault, thirdImage, "planted");
  expect([...(await keyIdsOf(vault, `points/${point.id}`))]).toEqual([epoch1.keyId]);

  const next = await rotateDataKey(vault);
  expect(next).toMatchObject({ name: "epochs/0000000004", epoch: 4 });
  expect(sealingKeyIdOf((await open(store, SECOND, false)).master.dataKey)).toBe(next.keyId);
}, 60_000);

/** A store whose create of an epoch object waits until `parties` callers have reached it: both rotations have read the epochs by then. */
function meetingAtEpochCreate(inner: ObjectStore, arrived: () => void, allThere: Promise<void>): ObjectStore {
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property === "create") {
        return async (key: string, data: Uint8Array) => {
          if (key.startsWith("epochs/")) {
            arrived();
            await allThere;
          }
          return target.create(key, data);
        };
      }
      const value = Reflect.get(target, property, receiver) as unknown;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

test("two rotations at once: exactly one makes the epoch, the other fails with exit 7 saying so, and every opener agrees on the newest", async () => {
  let count = 0;
  let release!: () => void;
  const allThere = new Promise<void>((resolve) => (release = resolve));
  const arrived = () => {
    if (++count === 2) release();
  };
  const one = await open(meetingAtEpochCreate(store, arrived, allThere), FIRST, false);
  const two = await open(meetingAtEpochCreate(store, arrived, allThere), SECOND, false);
  const results = await Promise.allSettled([rotateDataKey(one), rotateDataKey(two)]);
  const made = results.filter((r): r is PromiseFulfilledResult<Epoch> => r.status === "fulfilled").map((r) => r.value);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as Error);
  expect(made).toHaveLength(1);
  expect(made[0]).toMatchObject({ name: "epochs/0000000005", epoch: 5 });
  expect(failed).toHaveLength(1);
  expect(failed[0]).toBeInstanceOf(VaultBusyError);
  expect((failed[0] as VaultBusyError).exitCode).toBe(7);
  expect(failed[0]!.message).toMatch(/another rotation made data-key epoch 5 .* it is the newest epoch now/);
  for (const passphrase of [FIRST, SECOND]) {
    expect(sealingKeyIdOf((await open(store, passphrase, false)).master.dataKey)).toBe(made[0]!.keyId);
  }
}, 60_000);

test("a copy into a vault made --like, across rotations on both sides, brings the source's epoch keys (which never seal there) and its points restore byte-identical", async () => {
  const source = await open(store, FIRST);
  const likeStore = new LocalFolderStore(path.join(dir, "like"));
  const like = await Vault.init(likeStore, new PassphraseProvider(LIKE), {}, source.master);
  // --like shares the master keys (epoch 0), not the epochs: the new vault numbers its own from 1.
  expect(like.epochs.valid).toEqual([]);
  const ownEpoch = await rotateDataKey(like);
  expect(ownEpoch.name).toBe("epochs/0000000001");
  expect(ownEpoch.keyId).not.toBe(epoch1.keyId);

  const destination = await open(likeStore, LIKE);
  const report = await copyPoints(source, destination, { references: [before.id, after.id], threads: 1 });
  expect(report.pointsCopied).toBe(2);

  const reopened = await open(likeStore, LIKE);
  const copiedKeys = reopened.epochs.valid.filter((e) => e.epoch === undefined).map((e) => e.name);
  expect(copiedKeys).toEqual(expect.arrayContaining([`epochs/from-${epoch1.keyId}`]));
  expect(reopened.epochs.refused).toEqual([]);
  expect(sealingKeyIdOf(reopened.master.dataKey)).toBe(ownEpoch.keyId);
  expect((await restored(reopened, await reopened.readPoint(before.id))).equals(firstImage)).toBe(true);
  expect((await restored(reopened, await reopened.readPoint(after.id))).equals(secondImage)).toBe(true);
}, 60_000);

test("a version-4 vault refuses a rotation and says how to get epochs", async () => {
  const older = await Vault.init(new LocalFolderStore(path.join(dir, "v4")), new PassphraseProvider(FIRST), { version: 4 });
  const refusal = await rotateDataKey(older).catch((error: unknown) => error);
  expect(refusal).toBeInstanceOf(UsageError);
  expect((refusal as Error).message).toMatch(/format version 4, which has one data key and no epochs; make a vault of the current version with `bulwark init --vault NEW --like/);
}, 30_000);

test("`bulwark key rotate --data` makes the next epoch through the real CLI, and `bulwark key list` shows the epochs, the sealing one marked", async () => {
  const rotated = await runCli(["key", "rotate", "--data", "--vault", location, "--json"], { BULWARK_PASSPHRASE: SECOND });
  expect(rotated.code, rotated.stderr).toBe(0);
  const made = JSON.parse(rotated.stdout) as { epoch: number; keyId: string; name: string };
  expect(made).toMatchObject({ epoch: 6, name: "epochs/0000000006" });
  const listed = await runCli(["key", "list", "--vault", location], { BULWARK_PASSPHRASE: FIRST });
  expect(listed.code, listed.stderr).toBe(0);
  expect(listed.stdout).toMatch(/data-key epochs \(\* seals new data\):/);
  expect(listed.stdout).toMatch(new RegExp(`\\* epoch 6 +${made.keyId}  epochs/0000000006`));
  expect(listed.stdout).toMatch(new RegExp(`  epoch 1 +${epoch1.keyId}  epochs/0000000001`));
  expect(listed.stdout).toMatch(/refused .*epochs\/0000000002.*fails authentication under the vault's master keys/);
}, 60_000);
