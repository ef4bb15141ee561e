/**
 * A committed point's immutability is what the storage reports, never what Bulwark hoped to set:
 * Bulwark sets no per-object policy (README, "Immutability"); the vault container's default policy
 * protects every object, and a backup job says whether one applies to its point.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { immutabilityOf } from "../../runtime/engine/stage.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { openStore } from "../../runtime/store/open.ts";
import { RetryingStore } from "../../runtime/store/retry.ts";
import { Azurite } from "../support/azurite.ts";

let azurite: Azurite;
let folder: string;
beforeAll(async () => {
  azurite = await Azurite.start();
  folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-immutability-"));
});
afterAll(async () => {
  await azurite?.stop();
  await rm(folder, { recursive: true, force: true });
});

describe("a committed point's immutability", () => {
  test("a folder vault is reported as having none, not as protected", async () => {
    const store = new RetryingStore(new LocalFolderStore(folder));
    expect(store.immutableUntil).toBeUndefined();
    const result = await immutabilityOf(store, "points/abc");
    expect(result.until).toBeUndefined();
    expect(result.report).toMatch(/^none: .* has no immutability, so whoever can write there can delete points\/abc$/);
  });

  test("a Blob container with no default policy (Azurite) is asked, and reported as applying none", async () => {
    const opened = await openStore(`${azurite.blobEndpoint}/unprotected`, { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString });
    await opened.prepare();
    await opened.store.create("points/abc", Buffer.from("manifest"));
    expect(opened.store.immutableUntil).toBeTypeOf("function");
    const result = await immutabilityOf(opened.store, "points/abc");
    expect(result.until).toBeUndefined();
    expect(result.report).toMatch(/^none: no immutability policy applies to points\/abc at .*unprotected\/; give the vault container a default policy/);
  });

  test("a retention date the storage reports is passed on as the point's protection", async () => {
    const until = new Date("2027-01-01T00:00:00Z");
    const store = Object.assign(new LocalFolderStore(folder), { immutableUntil: async () => until });
    expect(await immutabilityOf(store, "points/abc")).toEqual({ until, report: expect.stringMatching(/^points\/abc is under the storage's immutability policy until 2027-01-01T00:00:00\.000Z: while the policy is Locked .* an Unlocked policy can still be shortened or removed/) });
  });

  test("a storage that cannot be asked is reported as unknown, with why", async () => {
    const store = Object.assign(new LocalFolderStore(folder), {
      immutableUntil: async () => {
        throw new Error("AuthorizationPermissionMismatch");
      },
    });
    const result = await immutabilityOf(store, "points/abc");
    expect(result.until).toBeUndefined();
    expect(result.report).toMatch(/^unknown: could not read the immutability of points\/abc \(.*AuthorizationPermissionMismatch/);
  });
});
