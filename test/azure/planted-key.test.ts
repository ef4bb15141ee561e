/**
 * Issue 8, item 6: a key object planted by someone who can write the vault's storage but has none
 * of its keys. RSA-OAEP wrapping needs only the public half of the customer's Key Vault key, which
 * anyone allowed to read the key can fetch; the attacker wraps master keys of their own with it.
 * Such an object must never open the vault, whatever order the store lists key objects in.
 */
import { KeyClient } from "@azure/keyvault-keys";
import { createHash, createPublicKey, constants, publicEncrypt, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { labelAssociatedData, seal } from "../../runtime/engine/crypto.ts";
import { type AzureWorld, startWorld } from "./harness.ts";

let world: AzureWorld;
let keyUrl: string;
let keys: KeyClient;

beforeAll(async () => {
  world = await startWorld({ seed: false });
  const { vaultUrl, vault } = await world.emulator.createKeyVault("planted-kv");
  vault.createKey("bulwark-cmk");
  keyUrl = `${vaultUrl}/keys/bulwark-cmk`;
  keys = new KeyClient(vaultUrl, world.emulator.credential(), { disableChallengeResourceVerification: true });
});

afterAll(async () => {
  await world?.stop();
});

/** What an attacker writes: their own master keys, wrapped with the Key Vault key's public half only. */
async function plantKeyObject(vaultDir: string, created: string): Promise<string> {
  const key = await keys.getKey("bulwark-cmk");
  const publicKey = createPublicKey({ key: { kty: "RSA", n: Buffer.from(key.key!.n!).toString("base64url"), e: Buffer.from(key.key!.e!).toString("base64url") }, format: "jwk" });
  const kek = randomBytes(32);
  const wrappedKek = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, kek);
  const configDigest = createHash("sha256").update(await readFile(path.join(vaultDir, "config"))).digest("hex");
  const id = randomBytes(8).toString("hex");
  const kind = "azure-key-vault";
  const plaintext = Buffer.from(JSON.stringify({ dataKey: randomBytes(32).toString("base64"), idKey: randomBytes(32).toString("base64"), configDigest }));
  const object: Record<string, unknown> = {
    version: 1,
    id,
    kind,
    created,
    params: { keyId: key.id!, algorithm: "RSA-OAEP-256", wrappedKek: wrappedKek.toString("base64") },
    wrapped: seal(kek, plaintext, labelAssociatedData("key", `${id}/${kind}`)).toString("base64"),
  };
  const { version, params, wrapped } = object;
  object.checksum = createHash("sha256").update(JSON.stringify({ version, id, kind, created, params, wrapped })).digest("hex");
  await writeFile(path.join(vaultDir, "keys", id), JSON.stringify(object, null, 1));
  return id;
}

test("a key object wrapped with the Key Vault key's public half is refused with an integrity error, and nothing is written under its keys", async () => {
  // A new vault of the customer's (passphrase only so far): empty, so old code would have opened it with the planted keys.
  const vault = path.join(world.dir, "planted-vault");
  await world.json(["init", "--vault", vault]);
  const planted = await plantKeyObject(vault, new Date().toISOString());
  const withKey = { BULWARK_PASSPHRASE: "", BULWARK_KEY_VAULT_KEY: keyUrl };
  const points = await world.cli(["points", "--vault", vault], withKey);
  expect(points.code).toBe(5);
  expect(points.stderr).toContain(`keys/${planted}`);
  expect(points.stderr).toMatch(/not this vault's/);
  const source = path.join(world.dir, "planted-source.bin");
  await writeFile(source, randomBytes(64 * 1024));
  const backup = await world.cli(["backup", source, "--vault", vault], withKey);
  expect(backup.code).toBe(5);
  // The genuine key still opens the vault, and verify names the planted object.
  const verify = await world.cli(["verify", "--vault", vault]);
  expect(verify.code).toBe(0);
});

test("a planted key object listed before the genuine one is skipped: the customer's key opens the vault with its own master keys, and verify names it", async () => {
  const vault = path.join(world.dir, "planted-kv-vault");
  const withKey = { BULWARK_PASSPHRASE: "", BULWARK_KEY_VAULT_KEY: keyUrl };
  await world.json(["init", "--vault", vault, "--key-vault-key", keyUrl], { BULWARK_PASSPHRASE: "" });
  const source = path.join(world.dir, "planted-kv-source.bin");
  const bytes = randomBytes(256 * 1024);
  await writeFile(source, bytes);
  const first = await world.json<{ id: string }>(["backup", source, "--vault", vault], withKey);
  const planted = await plantKeyObject(vault, "2000-01-01T00:00:00.000Z"); // tried first: key objects are tried oldest first
  const out = path.join(world.dir, "planted-kv-restored");
  await world.json(["restore", first.id, "--vault", vault, "--to", out], withKey);
  expect((await readFile(out)).equals(bytes)).toBe(true);
  const verify = await world.cli(["verify", "--vault", vault], withKey);
  expect(verify.code).toBe(5);
  expect(verify.stdout).toContain(`keys/${planted}`);
});
