/**
 * A filesystem whose folders loop (damaged, or edited by someone with write access to the disk):
 * a FAT volume made by mkfs.vfat and mtools, then one folder's directory entry pointed back at its
 * parent's cluster. `find` and `restore --path` walk each folder once, name the loop, exit 5 and
 * still finish the rest of the volume, instead of walking forever.
 */
import { spawnSync } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { tempFolder } from "../cli/vaults.ts";
import { PointVault } from "./disk-points.ts";

function run(tool: string, args: string[]): void {
  const result = spawnSync(tool, args, { encoding: "utf8" });
  if (result.error) throw new Error(`${tool} is needed to make this test's volume (CI installs it): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
}

/** The offset of the one 32-byte directory entry whose 8.3 name is `name` (padded as FAT stores it). */
function entryOffset(image: Buffer, name: string): number {
  const stored = Buffer.from(name.padEnd(11, " "), "latin1");
  const found: number[] = [];
  for (let at = image.indexOf(stored); at >= 0; at = image.indexOf(stored, at + 1)) if (at % 32 === 0) found.push(at);
  if (found.length !== 1) throw new Error(`expected one directory entry named ${name}, found ${found.length}`);
  return found[0];
}

describe("folders that loop", () => {
  let vaults: PointVault;
  let pointId: string;

  beforeAll(async () => {
    const work = await tempFolder("folder-loops");
    const image = path.join(work, "loop.img");
    run("truncate", ["-s", "20M", image]);
    run("mkfs.vfat", ["-F", "16", "-n", "LOOPS", image]);
    await writeFile(path.join(work, "note.txt"), "kept\n");
    run("mmd", ["-i", image, "::/OUTER", "::/OUTER/INNER"]);
    run("mcopy", ["-i", image, path.join(work, "note.txt"), "::/OUTER/NOTE.TXT"]);
    // INNER's entry (in OUTER's cluster) now starts at OUTER's own cluster: OUTER/INNER is OUTER again.
    const bytes = await readFile(image);
    const outer = entryOffset(bytes, "OUTER");
    const inner = entryOffset(bytes, "INNER");
    bytes.writeUInt16LE(bytes.readUInt16LE(outer + 26), inner + 26);
    await writeFile(image, bytes);
    vaults = await PointVault.create("folder-loops");
    pointId = (await vaults.backup(image)).id;
  }, 60_000);

  afterAll(async () => {
    await vaults?.close();
  });

  test("find names the loop, exits 5, and lists everything else once", async () => {
    const found = await vaults.run(["find", pointId, "*"]);
    expect(found.code).toBe(5);
    // FAT's node ids are directory entries' places: INNER (read from OUTER's cluster) is new once, and found again inside itself.
    expect(found.stderr).toContain("/volume/OUTER/INNER/INNER is a folder already listed elsewhere");
    expect(found.stdout.trim().split("\n")).toEqual([
      "/volume",
      "/volume/OUTER",
      "/volume/OUTER/INNER",
      "/volume/OUTER/INNER/INNER",
      "/volume/OUTER/INNER/NOTE.TXT",
      "/volume/OUTER/NOTE.TXT",
    ]);
  });

  test("restore --path restores the volume once, names the loop, exits 5", async () => {
    const out = await tempFolder("folder-loops-out");
    const restored = await vaults.run(["restore", pointId, "--path", "/volume", "--to", out]);
    expect(restored.code).toBe(5);
    expect(restored.stderr).toContain("/volume/OUTER/INNER/INNER was not restored");
    expect(await readFile(path.join(out, "volume/OUTER/NOTE.TXT"), "utf8")).toBe("kept\n");
    expect((await readdir(path.join(out, "volume/OUTER"))).sort()).toEqual(["INNER", "NOTE.TXT"]);
    expect(await readdir(path.join(out, "volume/OUTER/INNER"))).toEqual(["NOTE.TXT"]);
  });
});
