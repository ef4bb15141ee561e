/**
 * The customer-managed key through the real CLI: a vault opened only by a key in the customer's
 * Key Vault; after the customer rotates the key old points still restore; `bulwark key rotate`
 * rewraps to the newest version; a passphrase vault handed over to the Key Vault key opens only
 * with that key afterwards.
 */
import { KeyClient } from "@azure/keyvault-keys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KiB, MiB, type AzureWorld, expectNothingLeaked, pattern, restoreToFile, startWorld, expectCallsAllowedByRole } from "./harness.ts";

let world: AzureWorld;
let keyUrl: string;
let keys: KeyClient;
let diskId: string;
/** The environment that opens a vault with the Key Vault key only (no passphrase). */
let withKey: Record<string, string>;
const SIZE = 2 * MiB;

beforeAll(async () => {
  world = await startWorld({ seed: false });
  const { vaultUrl, vault } = await world.emulator.createKeyVault("customer-kv");
  vault.createKey("bulwark-cmk");
  keyUrl = `${vaultUrl}/keys/bulwark-cmk`;
  keys = new KeyClient(vaultUrl, world.emulator.credential(), { disableChallengeResourceVerification: true });
  withKey = { BULWARK_PASSPHRASE: "", BULWARK_KEY_VAULT_KEY: keyUrl };
  diskId = world.emulator.compute.createDisk(world.group, "kv-disk", SIZE).id;
  world.emulator.control.writeDisk(diskId, 0, pattern(1, 128 * KiB));
});

afterAll(async () => {
  await world?.stop();
});

describe("a vault under the customer's Key Vault key", () => {
  const vaultOf = () => `${world.dir}/kv-vault`;
  const images: Buffer[] = [];
  const points: string[] = [];

  async function backup(): Promise<void> {
    images.push(world.emulator.control.readImage(diskId));
    points.push((await world.json(["backup", diskId, "--vault", vaultOf()], withKey)).id);
    world.emulator.control.writeDisk(diskId, points.length * 256 * KiB, pattern(10 + points.length, 64 * KiB));
  }

  it("is created and used with the Key Vault key alone; a passphrase does not open it", async () => {
    await world.json(["init", "--vault", vaultOf(), "--key-vault-key", keyUrl], { BULWARK_PASSPHRASE: "" });
    await backup();
    const listed = await world.json<Array<{ kind: string; keyId: string; current: boolean }>>(["key", "list", "--vault", vaultOf()], withKey);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ kind: "azure-key-vault", current: true });
    const [version0] = (await keys.getKey("bulwark-cmk")).id!.split("/").slice(-1);
    expect(listed[0]!.keyId).toBe(`${keyUrl}/${version0}`);

    const withPassphrase = await world.cli(["points", "--vault", vaultOf()]);
    expect(withPassphrase.code).toBe(3);
    await expectNothingLeaked(world, [diskId]);
  });

  it("still restores old points after the customer rotates the key, and `key rotate` rewraps to the new version", async () => {
    const before = (await keys.getKey("bulwark-cmk")).id!;
    const rotated = (await keys.rotateKey("bulwark-cmk")).id!;
    expect(rotated).not.toBe(before);
    // Old points open with the version that wrapped them; new backups work too.
    await backup();
    for (const [i, point] of points.entries()) {
      expect((await restoreToFile(world, vaultOf(), point, `a-${i}.img`, withKey)).equals(images[i]!), `point ${i}`).toBe(true);
    }

    const result = await world.json<{ rotated: Array<{ from: string; to: string }> }>(["key", "rotate", "--vault", vaultOf()], withKey);
    expect(result.rotated).toEqual([expect.objectContaining({ from: before, to: rotated })]);
    const listed = await world.json<Array<{ keyId: string }>>(["key", "list", "--vault", vaultOf()], withKey);
    expect(listed.map((k) => k.keyId)).toEqual([rotated]);
    // Nothing more to do the second time.
    expect((await world.json<{ rotated: unknown[] }>(["key", "rotate", "--vault", vaultOf()], withKey)).rotated).toEqual([]);

    const mark = world.emulator.requestLog.length;
    await backup();
    for (const [i, point] of points.entries()) {
      expect((await restoreToFile(world, vaultOf(), point, `b-${i}.img`, withKey)).equals(images[i]!), `point ${i}`).toBe(true);
    }
    // From now on only the new version unwraps: the old one could be disabled by the customer.
    // A client's first request to Key Vault is answered with the bearer challenge (401) and sent again
    // with a token; an unwrap is now that first request (it no longer reads the key first).
    const unwraps = world.emulator.requestLog
      .slice(mark)
      .filter((r) => r.endpoint === "customer-kv" && /\/unwrapkey$/i.test(r.path) && r.status !== 401);
    expect(unwraps.length).toBeGreaterThanOrEqual(points.length);
    expect(unwraps.every((r) => r.path === `${new URL(rotated).pathname}/unwrapkey` && r.status === 200)).toBe(true);
    expect((await world.json(["verify", "--vault", vaultOf(), "--read-data"], withKey)).ok).toBe(true);
  });

  it("hands a passphrase vault over to the Key Vault key: afterwards only the key opens it", async () => {
    const vault = await world.newVault("handover");
    const image = world.emulator.control.readImage(diskId);
    const point = (await world.json(["backup", diskId, "--vault", vault])).id as string;
    const passphraseKey = (await world.json<Array<{ id: string; kind: string }>>(["key", "list", "--vault", vault]))[0]!;
    expect(passphraseKey.kind).toBe("passphrase");

    await world.json(["key", "add", "--vault", vault, "--new-key-vault-key", keyUrl]);
    const both = await world.json<Array<{ id: string; kind: string; keyId?: string }>>(["key", "list", "--vault", vault]);
    expect(both.map((k) => k.kind).sort()).toEqual(["azure-key-vault", "passphrase"]);
    expect(both.find((k) => k.kind === "azure-key-vault")!.keyId).toBe((await keys.getKey("bulwark-cmk")).id);

    // The key a vault was opened with cannot remove itself; the Key Vault key removes the passphrase.
    const self = await world.cli(["key", "remove", passphraseKey.id, "--vault", vault]);
    expect(self.code).toBe(2);
    await world.json(["key", "remove", passphraseKey.id, "--vault", vault], withKey);

    const byPassphrase = await world.cli(["points", "--vault", vault]);
    expect(byPassphrase.code).toBe(3);
    const restored = await restoreToFile(world, vault, point, "handover.img", withKey);
    expect(restored.equals(image)).toBe(true);
    expect((await world.json<unknown[]>(["key", "list", "--vault", vault], withKey)).length).toBe(1);
  });

  it("made only Azure calls that the backup role allows", () => {
    expectCallsAllowedByRole(world);
  });
});
