/**
 * Restore targets (issue 8, item 12). A block device is written only with --overwrite and only when
 * it holds the whole point (real loop devices, cleaned up after each test). With several sources in
 * a vault, `latest` takes the newest point of the one source that matches the target's kind and says
 * which, refuses and lists the sources when more than one could be meant, and `--source` chooses.
 */
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { runCli } from "../support/cli.ts";
import { MIB, diskImage, sha256, tempFolder, text } from "./vaults.ts";
import { rm } from "node:fs/promises";

const loopDevices: string[] = [];

/** A loop device over a file of `bytes` filled with 0xAB; detached in afterEach. */
async function loopDevice(scratch: string, name: string, bytes: number): Promise<{ device: string; backing: string }> {
  const backing = path.join(scratch, name);
  await writeFile(backing, Buffer.alloc(bytes, 0xab));
  const device = execFileSync("losetup", ["--find", "--show", backing], { encoding: "utf8" }).trim();
  loopDevices.push(device);
  return { device, backing };
}

function expectOneMessage(stderr: string, pattern: RegExp): void {
  const lines = stderr.trimEnd().split("\n");
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^bulwark restore: /);
  expect(lines[0]).toMatch(pattern);
}

describe("restore targets", () => {
  let scratch: string;
  let vault: string;
  const images: Record<string, Buffer> = {};
  const files: Record<string, string> = {};
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    scratch = await tempFolder("restore-targets");
    vault = path.join(scratch, "vault");
    expect((await runCli(["init", "--vault", vault])).code).toBe(0);
    images.a = diskImage("targets-a", 6);
    images.b = text("targets-b", 3 * MIB);
    images.c = diskImage("targets-c", 5);
    files.a = path.join(scratch, "a.img");
    files.b = path.join(scratch, "b.txt");
    files.c = path.join(scratch, "c.img");
    // Backed up in this order: c.img is the newest point of the vault.
    for (const name of ["a", "b", "c"]) {
      await writeFile(files[name], images[name]);
      const result = await runCli(["backup", files[name], "--vault", vault, "--json"]);
      expect(result.code, result.stderr).toBe(0);
      ids[name] = JSON.parse(result.stdout).id;
    }
  });

  afterEach(() => {
    while (loopDevices.length) execFileSync("losetup", ["--detach", loopDevices.pop()!]);
  });

  afterAll(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test("a block device without --overwrite is refused and keeps every byte", async () => {
    const { device, backing } = await loopDevice(scratch, "dev-no-overwrite", 8 * MIB);
    const result = await runCli(["restore", ids.a, "--vault", vault, "--to", device]);
    expect(result.code).toBe(2);
    expectOneMessage(result.stderr, /block device.*--overwrite/);
    expect((await readFile(backing)).equals(Buffer.alloc(8 * MIB, 0xab))).toBe(true);
  });

  test("a block device smaller than the point is refused even with --overwrite and keeps every byte", async () => {
    const { device, backing } = await loopDevice(scratch, "dev-small", 4 * MIB);
    const result = await runCli(["restore", ids.a, "--vault", vault, "--to", device, "--overwrite"]);
    expect(result.code).toBe(2);
    expectOneMessage(result.stderr, /4\.0 MiB.*6\.0 MiB|6\.0 MiB.*4\.0 MiB/);
    expect((await readFile(backing)).equals(Buffer.alloc(4 * MIB, 0xab))).toBe(true);
  });

  test("a block device large enough, with --overwrite, receives the point's bytes", async () => {
    const { device, backing } = await loopDevice(scratch, "dev-ok", 8 * MIB);
    const result = await runCli(["restore", ids.a, "--vault", vault, "--to", device, "--overwrite", "--json"]);
    expect(result.code, result.stderr).toBe(0);
    const written = await readFile(backing);
    expect(sha256(written.subarray(0, 6 * MIB))).toBe(sha256(images.a));
  });

  test("latest with two disk sources refuses and lists both", async () => {
    const to = path.join(scratch, "latest-ambiguous.img");
    const result = await runCli(["restore", "latest", "--vault", vault, "--to", to]);
    expect(result.code).toBe(2);
    expectOneMessage(result.stderr, /--source/);
    expect(result.stderr).toContain(files.a);
    expect(result.stderr).toContain(files.c);
    await expect(readFile(to)).rejects.toThrow();
  });

  test("latest to a file target takes the only file source and says so, though a disk point is newer", async () => {
    const to = path.join(scratch, "latest-file.txt");
    const result = await runCli(["restore", "latest", "--vault", vault, "--to", to]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(ids.b);
    expect(result.stdout).toContain(files.b);
    expect(sha256(await readFile(to))).toBe(sha256(images.b));
  });

  test("latest --source chooses among several sources", async () => {
    const to = path.join(scratch, "latest-chosen.img");
    const result = await runCli(["restore", "latest", "--vault", vault, "--to", to, "--source", files.a, "--json"]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ id: ids.a, source: files.a });
    expect(sha256(await readFile(to))).toBe(sha256(images.a));
  });

  test("latest --source naming no source of the vault is refused and lists the sources", async () => {
    const result = await runCli(["restore", "latest", "--vault", vault, "--to", path.join(scratch, "none.img"), "--source", path.join(scratch, "nope.img")]);
    expect(result.code).toBe(4);
    expectOneMessage(result.stderr, /nope\.img/);
    expect(result.stderr).toContain(files.a);
  });
});
