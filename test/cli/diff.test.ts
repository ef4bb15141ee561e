/**
 * `bulwark diff A B`: an ext4 image (mke2fs -d) backed up, then a file changed, one added and one
 * removed with debugfs, backed up again: the changed byte ranges are exactly the 64 KiB blocks where
 * the two image files differ (compared here byte by byte), and --files names exactly those three
 * files. A folder backed up twice the same way; points of two sources are refused.
 */
import { execFileSync } from "node:child_process";
import { copyFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import type { ByteRange, PointDiff } from "../../runtime/cli/diff-command.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { newPointId, Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import { PASSPHRASE, runCli, runJson } from "../support/cli.ts";
import { pseudoRandom, tempFolder, text } from "./vaults.ts";

const BLOCK = 64 * 1024;

/** The blocks where two byte strings differ, adjacent ones merged, as diff reports them. */
function differingRanges(a: Buffer, b: Buffer): ByteRange[] {
  const ranges: ByteRange[] = [];
  const size = Math.max(a.length, b.length);
  for (let start = 0; start < size; start += BLOCK) {
    const end = Math.min(start + BLOCK, size);
    if (a.subarray(start, end).equals(b.subarray(start, end))) continue;
    const last = ranges.at(-1);
    if (last && last.offset + last.length === start) last.length += end - start;
    else ranges.push({ offset: start, length: end - start });
  }
  return ranges;
}

function debugfs(image: string, requests: string[]): void {
  execFileSync("debugfs", ["-w", "-f", "-", image], { input: requests.join("\n") + "\n", stdio: ["pipe", "ignore", "pipe"] });
}

describe("bulwark diff", () => {
  let scratch: string;
  let vault: string;
  const ids: Record<string, string> = {};
  const images: Record<string, Buffer> = {};

  beforeAll(async () => {
    scratch = await tempFolder("diff");
    vault = path.join(scratch, "vault");
    const content = path.join(scratch, "content");
    await mkdir(path.join(content, "etc"), { recursive: true });
    await writeFile(path.join(content, "etc", "app.conf"), text("app.conf", 3000));
    await writeFile(path.join(content, "etc", "keep.conf"), text("keep.conf", 5000));
    await writeFile(path.join(content, "old.log"), text("old.log", 20_000));
    await writeFile(path.join(content, "data.bin"), pseudoRandom("data", 200_000));
    const image = path.join(scratch, "disk.img");
    execFileSync("mke2fs", ["-q", "-F", "-t", "ext4", "-d", content, image, "8M"], { stdio: "ignore" });
    expect((await runCli(["init", "--vault", vault])).code).toBe(0);
    images.before = await readFile(image);
    ids.imageBefore = (await runJson<{ id: string }>(["backup", image, "--vault", vault])).id;

    // One file changed (rewritten longer), one added, one removed.
    const host = path.join(scratch, "host");
    await mkdir(host);
    await writeFile(path.join(host, "app.conf"), text("app.conf v2", 4500));
    await writeFile(path.join(host, "new.txt"), text("new", 7000));
    debugfs(image, ["rm /etc/app.conf", `write ${path.join(host, "app.conf")} /etc/app.conf`, `write ${path.join(host, "new.txt")} /new.txt`, "rm /old.log"]);
    images.after = await readFile(image);
    ids.imageAfter = (await runJson<{ id: string }>(["backup", image, "--vault", vault])).id;

    // The same changes to a folder.
    ids.folderBefore = (await runJson<{ id: string }>(["backup", content, "--vault", vault])).id;
    await copyFile(path.join(host, "app.conf"), path.join(content, "etc", "app.conf"));
    await copyFile(path.join(host, "new.txt"), path.join(content, "new.txt"));
    await rm(path.join(content, "old.log"));
    ids.folderAfter = (await runJson<{ id: string }>(["backup", content, "--vault", vault])).id;
  }, 120_000);

  const changedPaths = (diff: PointDiff, prefix: string) =>
    Object.fromEntries((diff.files ?? []).filter((f) => f.type !== "dir").map((f) => [f.path.slice(prefix.length), f.change]));

  test("the changed byte ranges of two disk points are exactly the blocks where the images differ", async () => {
    const diff = await runJson<PointDiff>(["diff", ids.imageBefore, ids.imageAfter, "--vault", vault]);
    const expected = differingRanges(images.before, images.after);
    expect(expected.length).toBeGreaterThan(0);
    expect(diff.disks).toEqual([{ disk: "", sizes: { from: images.before.length, to: images.after.length }, ranges: expected, changedBytes: expected.reduce((s, r) => s + r.length, 0) }]);
    expect(diff.files).toBeUndefined();
  });

  test("--files on the ext4 points names the changed, added and removed file, and nothing else", async () => {
    const diff = await runJson<PointDiff>(["diff", ids.imageBefore, ids.imageAfter, "--vault", vault, "--files"]);
    expect(changedPaths(diff, "/volume")).toEqual({ "/etc/app.conf": "changed", "/new.txt": "added", "/old.log": "removed" });
    expect(diff.files!.find((f) => f.path === "/volume/etc/app.conf")?.differs).toContain("size");
  });

  test("two folder points: the same three files, in the text a person reads", async () => {
    const diff = await runJson<PointDiff>(["diff", ids.folderBefore, ids.folderAfter, "--vault", vault]);
    expect(diff.disks).toEqual([]);
    expect(changedPaths(diff, "")).toEqual({ "/etc/app.conf": "changed", "/new.txt": "added", "/old.log": "removed" });
    const shown = await runCli(["diff", ids.folderBefore, ids.folderAfter, "--vault", vault]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain("files: 1 added, 1 removed, 1 changed\n");
    expect(shown.stdout).toMatch(/^\+ \/new\.txt$/m);
    expect(shown.stdout).toMatch(/^- \/old\.log$/m);
    expect(shown.stdout).toMatch(/^M \/etc\/app\.conf {2}\(size, mtime\)$/m);
  });

  test("a point against itself: nothing changed", async () => {
    const diff = await runJson<PointDiff>(["diff", ids.imageAfter, ids.imageAfter, "--vault", vault, "--files"]);
    expect(diff.disks[0].ranges).toEqual([]);
    expect(diff.files).toEqual([]);
  });

  test("two VM points: each disk's ranges under its name, and files under /os/volume", async () => {
    // VM points as the Azure backup writes them: a group whose members are disk points (here the image's two).
    const vm = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/web";
    const opened = await Vault.open((await openStore(vault)).store, new PassphraseProvider(PASSPHRASE), { loadIndex: false });
    const vmPoint = async (member: string): Promise<string> => {
      const disk = await opened.readPoint(member);
      const point: PointManifest = {
        version: 1, id: newPointId(), time: new Date().toISOString(), kind: "vm", source: { type: "azure-vm", path: vm }, size: disk.size, tags: {},
        members: [{ role: "os", point: member }], stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, durationMs: 0 },
      };
      await opened.writePoint(point);
      return point.id;
    };
    const [before, after] = [await vmPoint(ids.imageBefore), await vmPoint(ids.imageAfter)];
    const diff = await runJson<PointDiff>(["diff", before, after, "--vault", vault, "--files"]);
    expect(diff.disks.map((d) => [d.disk, d.ranges])).toEqual([["os", differingRanges(images.before, images.after)]]);
    expect(changedPaths(diff, "/os/volume")).toEqual({ "/etc/app.conf": "changed", "/new.txt": "added", "/old.log": "removed" });
  });

  test("points of two sources are refused with one line, exit 2", async () => {
    const result = await runCli(["diff", ids.imageBefore, ids.folderAfter, "--vault", vault]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(result.stderr.trimEnd()).toMatch(/^bulwark diff: points \w{12} and \w{12} are of different sources \(disk .*disk\.img and tree .*content\): diff compares two points of one source$/);
  });
});
