/**
 * Round trips through the real CLI, against a local folder and against Azurite: disk images come
 * back byte-identical and sparse, small changes cost little, content-defined chunking survives
 * insertions, and points can be listed and named by prefix or "latest".
 */
import { stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  AzuriteVaults,
  LocalVaults,
  MIB,
  cli,
  cliJson,
  diskImage,
  pseudoRandom,
  restoredHash,
  sha256,
  sha256File,
  tempFolder,
  text,
  verifyClean,
  type BackupSummary,
  type VaultKind,
} from "./vaults.ts";

/** Twelve 1 MiB regions, each kind (zero, text, random) four times: a third of it holes. */
const IMAGE_MIB = 12;
const BLOCK = 64 * 1024;

describe.each(["local", "azurite"] as const)("round trip, %s vault", (kindName) => {
  let kind: VaultKind;
  let vault: string;
  let scratch: string;
  let imagePath: string;
  let image: Buffer;
  let first: BackupSummary;

  beforeAll(async () => {
    kind = kindName === "local" ? await LocalVaults.create() : await AzuriteVaults.create();
    scratch = await tempFolder("roundtrip");
    vault = kind.newLocation("roundtrip");
    image = diskImage("roundtrip", IMAGE_MIB);
    imagePath = path.join(scratch, "disk.img");
    await writeFile(imagePath, image);
    const init = await cli(kind, vault, ["init", "--json"]);
    expect(init.code, init.stderr).toBe(0);
    expect(JSON.parse(init.stdout)).toMatchObject({ id: expect.stringMatching(/^[0-9a-f]{32}$/) });
  });

  afterAll(async () => {
    await kind?.close();
  });

  test("a disk image restores byte-identical, with holes where the source was zero", async () => {
    first = await cliJson<BackupSummary>(kind, vault, ["backup", imagePath, "--tag", "env=test", "--tag", "owner=ops"]);
    expect(first).toMatchObject({ kind: "disk", size: image.length, bytesRead: image.length });
    expect(first.id).toMatch(/^[0-9a-f]{32}$/);
    // A third of the image is zero and stored as nothing; the text compresses.
    expect(first.bytesNew).toBeLessThan(image.length * 0.7);
    expect(first.bytesStored).toBeLessThan(first.bytesNew);

    const to = path.join(scratch, "restored.img");
    const restore = await cli(kind, vault, ["restore", first.id, "--to", to]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.stderr).toBe("");
    expect(await sha256File(to)).toBe(sha256(image));
    const info = await stat(to);
    expect(info.size).toBe(image.length);
    const zeroBytes = (IMAGE_MIB / 3) * MIB;
    expect(info.blocks * 512).toBeLessThanOrEqual(image.length - zeroBytes + MIB);
  });

  test("a second backup after changing a few blocks reads everything but stores only those blocks", async () => {
    const changed = Buffer.from(image);
    // One block in a text region, one in a zero region, one in a random region.
    for (const block of [20, 100, 180]) pseudoRandom(`change/${block}`, BLOCK).copy(changed, block * BLOCK);
    await writeFile(imagePath, changed);
    const second = await cliJson<BackupSummary>(kind, vault, ["backup", imagePath]);
    expect(second.id).not.toBe(first.id);
    expect(second.bytesRead).toBe(image.length);
    // Three new data blocks and one new block-map node (192 ids of 32 bytes).
    expect(second.bytesNew).toBe(3 * BLOCK + (image.length / BLOCK) * 32);
    expect(second.bytesStored).toBeLessThan(4 * BLOCK);

    expect(await restoredHash(kind, vault, second.id, scratch)).toBe(sha256(changed));
    expect(await restoredHash(kind, vault, first.id, scratch)).toBe(sha256(image));
  });

  test("a plain file is chunked by content: bytes inserted in the middle leave most chunks shared", async () => {
    const size = 16 * MIB;
    const original = Buffer.concat([pseudoRandom("file", size / 2), text("file", size / 2)]);
    const filePath = path.join(scratch, "data.bin.file");
    await writeFile(filePath, original);
    const one = await cliJson<BackupSummary>(kind, vault, ["backup", filePath]);
    expect(one).toMatchObject({ kind: "file", size, bytesRead: size });
    expect(one.chunksNew).toBeGreaterThan(4); // content-defined chunks of about 1 MiB, not one blob

    const edited = Buffer.concat([original.subarray(0, size / 2 - 12345), Buffer.from("INSERTED BYTES ".repeat(300)), original.subarray(size / 2 - 12345)]);
    await writeFile(filePath, edited);
    const two = await cliJson<BackupSummary>(kind, vault, ["backup", filePath]);
    expect(two.bytesRead).toBe(edited.length);
    // Only the chunk(s) around the insertion are new.
    expect(two.bytesNew).toBeLessThan(size * 0.3);
    expect(two.chunksNew).toBeLessThan(one.chunksNew / 2);

    expect(await restoredHash(kind, vault, one.id, scratch)).toBe(sha256(original));
    expect(await restoredHash(kind, vault, two.id, scratch)).toBe(sha256(edited));
  });

  test("points --json lists every point with id, time, source, size and tags; restore by prefix and latest", async () => {
    const points = await cliJson<BackupSummary[]>(kind, vault, ["points"]);
    expect(points).toHaveLength(4);
    for (const p of points) {
      expect(p.id).toMatch(/^[0-9a-f]{32}$/);
      expect(Number.isNaN(Date.parse(p.time))).toBe(false);
      expect(typeof p.source).toBe("string");
      expect(p.size).toBeGreaterThan(0);
    }
    expect(points.map((p) => p.time)).toEqual([...points.map((p) => p.time)].sort());
    expect(points[0]).toMatchObject({ id: first.id, source: imagePath, size: image.length, tags: { env: "test", owner: "ops" } });
    expect(points[1].tags).toEqual({});

    // A unique prefix names a point; an ambiguous or unknown one is refused.
    expect(await restoredHash(kind, vault, first.id.slice(0, 8), scratch)).toBe(sha256(image));
    const unknown = await cli(kind, vault, ["restore", "ffffffffffff", "--to", path.join(scratch, "nothing")]);
    if (!points.some((p) => p.id.startsWith("ffffffffffff"))) {
      expect(unknown.code).toBe(4);
      expect(unknown.stderr).toMatch(/no recovery point ffffffffffff/);
    }
    const latest = points.at(-1)!;
    const latestTo = path.join(scratch, "latest.out");
    const restored = await cli(kind, vault, ["restore", "latest", "--to", latestTo, "--json"]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(JSON.parse(restored.stdout)).toMatchObject({ id: latest.id, size: latest.size });
    expect((await stat(latestTo)).size).toBe(latest.size);

    // Restoring onto an existing file is refused without --overwrite.
    const again = await cli(kind, vault, ["restore", "latest", "--to", latestTo]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists.*--overwrite/);

    await verifyClean(kind, vault);
  });
});
