/**
 * Key Vault key versions with an expiry (issue 10, item 4). A rotation policy gives every version an
 * expiry (the program's: one year), and Key Vault keeps unwrapping with an expired version while it
 * refuses to wrap with one: "Operations outside the nbf / exp window are automatically disallowed,
 * except for decrypt, release, unwrap, and verify" (MicrosoftDocs/azure-docs
 * articles/key-vault/keys/about-keys-details.md). @azure/keyvault-keys' CryptographyClient checks
 * expiresOn itself before an unwrap (sdk/keyvault/keyvault-keys/src/cryptographyClient.ts,
 * ensureValid), which would lock a vault out of its own keys a year after a key object was written.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KeyVaultEmulator } from "../emulator/keyvault.ts";
import { type AzureWorld, restoreToFile, startWorld } from "./harness.ts";

let world: AzureWorld;
let keyVault: KeyVaultEmulator;
let keyUrl: string;
let withKey: Record<string, string>;
const KEY = "expiring-cmk";

beforeAll(async () => {
  world = await startWorld({ seed: false });
  const created = await world.emulator.createKeyVault("versions-kv");
  keyVault = created.vault;
  keyVault.createKey(KEY);
  keyUrl = `${created.vaultUrl}/keys/${KEY}`;
  withKey = { BULWARK_PASSPHRASE: "", BULWARK_KEY_VAULT_KEY: keyUrl };
});

afterAll(async () => {
  await world?.stop();
});

const yesterday = () => new Date(Date.now() - 24 * 3600_000);

describe("a vault under a Key Vault key whose versions expire", () => {
  const vaultOf = () => `${world.dir}/expiring-vault`;
  const source = () => `${world.dir}/expiring-source.bin`;
  let point = "";
  let bytes: Buffer;
  let firstVersion = "";

  it("still opens after the version that wrapped its key object has expired, and `key rotate` rewraps with the current version", async () => {
    const { writeFile } = await import("node:fs/promises");
    bytes = (await import("node:crypto")).randomBytes(96 * 1024);
    await writeFile(source(), bytes);
    await world.json(["init", "--vault", vaultOf(), "--key-vault-key", keyUrl], { BULWARK_PASSPHRASE: "" });
    point = (await world.json<{ id: string }>(["backup", source(), "--vault", vaultOf()], withKey)).id;
    firstVersion = keyVault.versions(KEY)[0]!;

    // The customer's rotation policy makes a new version; the old one reaches its expiry.
    keyVault.createKey(KEY);
    const current = keyVault.versions(KEY).at(-1)!;
    keyVault.setExpiry(KEY, firstVersion, yesterday());

    expect((await restoreToFile(world, vaultOf(), point, "after-expiry.bin", withKey)).equals(bytes)).toBe(true);
    const unwraps = world.emulator.requestLog.filter((r) => r.endpoint === "versions-kv" && /\/unwrapkey$/i.test(r.path));
    expect(unwraps.at(-1)).toMatchObject({ path: `/keys/${KEY}/${firstVersion}/unwrapkey`, status: 200 });

    const rotated = await world.json<{ rotated: Array<{ from: string; to: string }> }>(["key", "rotate", "--vault", vaultOf()], withKey);
    expect(rotated.rotated).toEqual([expect.objectContaining({ from: `${keyUrl}/${firstVersion}`, to: `${keyUrl}/${current}` })]);
    const listed = await world.json<Array<{ keyId: string }>>(["key", "list", "--vault", vaultOf()], withKey);
    expect(listed.map((k) => k.keyId)).toEqual([`${keyUrl}/${current}`]);
  });

  it("refuses to wrap with an expired newest version and says to rotate the key", async () => {
    const current = keyVault.versions(KEY).at(-1)!;
    keyVault.setExpiry(KEY, current, yesterday());
    const refused = await world.cli(["init", "--vault", `${world.dir}/expired-newest`, "--key-vault-key", keyUrl], { BULWARK_PASSPHRASE: "" });
    expect(refused.code).toBe(8);
    expect(refused.stderr).toContain(`${keyUrl}/${current}`);
    expect(refused.stderr).toMatch(/expired/);
    expect(refused.stderr).toMatch(/rotate the key/i);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    // What it wrapped before still opens.
    expect((await restoreToFile(world, vaultOf(), point, "expired-newest.bin", withKey)).equals(bytes)).toBe(true);
  });

  it("a Key Vault that denies the unwrap is reported as access denied (exit 8), never as a wrong key (exit 3)", async () => {
    world.emulator.control.throttle({ path: /\/unwrapkey$/i, times: 20, status: 403 });
    const denied = await world.cli(["points", "--vault", vaultOf()], withKey);
    world.emulator.control.clearFaults();
    expect(denied.code, denied.stderr).toBe(8);
    expect(denied.stderr).toMatch(/access denied by Key Vault/);
    expect(denied.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("a key whose versions are gone (deleted and purged) ends in one message naming the version and what to do", async () => {
    const current = keyVault.versions(KEY).at(-1)!;
    keyVault.deleteKey(KEY);
    const gone = await world.cli(["points", "--vault", vaultOf()], withKey);
    expect(gone.code).toBe(3);
    expect(gone.stderr).toContain(`${keyUrl}/${current}`);
    expect(gone.stderr).toMatch(/no longer exists in Key Vault/);
    expect(gone.stderr).toMatch(/recover/);
    expect(gone.stderr.trim().split("\n")).toHaveLength(1);
  });
});
