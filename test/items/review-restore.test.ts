/**
 * `restore --path` against a hostile point and a hostile target folder (issue 11): an ext4 volume
 * made by mke2fs -d, then one folder's directory entry renamed so the root holds a symlink to a
 * folder outside --to and a folder of the same name (what someone with write access to the disk
 * could do). Nothing may be written through a symlink, whether the restore made it or it was
 * already under --to; overlapping --path arguments restore each item once; names the target's
 * filesystem only just holds (240 bytes of UTF-8) restore; modes with set-id bits, folders' and
 * symlinks' own times are kept.
 */
import { spawnSync } from "node:child_process";
import { chmod, chown, lstat, mkdir, readdir, readFile, readlink, stat, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createWriteStream } from "node:fs";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PointBrowser } from "../../runtime/items/browse.ts";
import { restorePaths } from "../../runtime/items/restore-files.ts";
import type { StepContext } from "../../runtime/jobs/machine.ts";
import type { WorkloadEnvironment } from "../../runtime/workloads/environment.ts";
import { restoreFilesMachine } from "../../runtime/workloads/restore-files-machine.ts";
import { pseudoRandom, tempFolder } from "../cli/vaults.ts";
import { PointVault } from "./disk-points.ts";

const MTIME = new Date("2023-03-04T05:06:07Z");
const DIR_MTIME = new Date("2022-02-03T04:05:06Z");
const LINK_MTIME = new Date("2021-01-02T03:04:05Z");
/** 80 three-byte characters: 240 bytes, under Linux's 255-byte limit for one name. */
const LONG_NAME = "名".repeat(80);

function run(tool: string, args: string[]): void {
  const result = spawnSync(tool, args, { encoding: "utf8" });
  if (result.error) throw new Error(`${tool} is needed to make this test's volume (CI installs it): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
}

/** Whether anything at all is in a folder (the place a write through a symlink would land). */
async function entries(folder: string): Promise<string[]> {
  return (await readdir(folder)).sort();
}

describe("restore --path never writes outside --to, and keeps what the point holds", () => {
  let vaults: PointVault;
  let source: string;
  let outside: string;
  let pointId: string;

  beforeAll(async () => {
    const work = await tempFolder("review-restore");
    outside = await tempFolder("review-restore-outside");
    source = path.join(work, "tree");
    await mkdir(path.join(source, "escapf"), { recursive: true });
    await writeFile(path.join(source, "escapf/passwd"), "root::0:0::/:/bin/sh\n");
    // After the edit below, the root holds `escape -> outside` and a folder `escape` holding passwd.
    await symlink(outside, path.join(source, "escape"));
    await mkdir(path.join(source, "etc/deep"), { recursive: true });
    await writeFile(path.join(source, "etc/hosts"), "127.0.0.1 localhost\n");
    await writeFile(path.join(source, "etc/deep/note"), "deep\n");
    await writeFile(path.join(source, "etc/tool"), "#!/bin/sh\n");
    await chown(path.join(source, "etc/tool"), 1234, 5678);
    await chmod(path.join(source, "etc/tool"), 0o4755);
    await writeFile(path.join(source, "etc", LONG_NAME), "a long name\n");
    await symlink("hosts", path.join(source, "etc/hosts.link"));
    // After the edit below, its target holds a NUL (a name no system call takes).
    await mkdir(path.join(source, "odd"));
    await symlink("target-with-a-nul-inside", path.join(source, "odd/nul.link"));
    await writeFile(path.join(source, "odd/fine.txt"), "fine\n");
    // After the edit below, named "slash/name": not a name anywhere.
    await writeFile(path.join(source, "odd/slashXname"), "refused\n");
    // More than a stream's buffer of archive, so the files restore job waits on its upload.
    await mkdir(path.join(source, "data"));
    await writeFile(path.join(source, "data/blob.bin"), pseudoRandom("blob", 300_000));
    for (const file of ["etc/hosts", "etc/deep/note", "etc/tool", `etc/${LONG_NAME}`]) await utimes(path.join(source, file), MTIME, MTIME);
    await utimes(path.join(source, "etc/deep"), DIR_MTIME, DIR_MTIME);
    await utimes(path.join(source, "etc"), DIR_MTIME, DIR_MTIME);
    const { lutimes } = await import("node:fs/promises");
    await lutimes(path.join(source, "etc/hosts.link"), LINK_MTIME, LINK_MTIME);

    const image = path.join(work, "hostile.img");
    run("mke2fs", ["-q", "-F", "-t", "ext4", "-b", "1024", "-d", source, image, "8M"]);
    const bytes = await readFile(image);
    const at = bytes.indexOf("escapf");
    if (at < 0 || bytes.indexOf("escapf", at + 1) >= 0) throw new Error("expected the name escapf once in the image");
    bytes.write("escape", at, "latin1");
    const nul = bytes.indexOf("target-with-a-nul-inside");
    if (nul < 0) throw new Error("expected the symlink's target in the image");
    bytes[nul + 6] = 0;
    const slash = bytes.indexOf("slashXname");
    if (slash < 0 || bytes.indexOf("slashXname", slash + 1) >= 0) throw new Error("expected the name slashXname once in the image");
    bytes.write("/", slash + 5, "latin1");
    await writeFile(image, bytes);
    vaults = await PointVault.create("review-restore");
    pointId = (await vaults.backup(image)).id;
  }, 60_000);

  afterAll(async () => {
    await vaults?.close();
  });

  async function restore(paths: string[], to: string, overwrite = false, browsed?: (browser: PointBrowser) => void) {
    const { vault } = await vaults.open();
    const browser = await PointBrowser.open(vault, pointId);
    browsed?.(browser);
    return restorePaths(browser, paths, to, { overwrite });
  }

  test("a folder and a symlink of one name in a hostile volume: nothing is written through the symlink, the second of the two is reported damaged", async () => {
    const out = await tempFolder("review-restore-dup");
    const report = await restore(["/volume"], out);
    expect(await entries(outside)).toEqual([]);
    // (odd/nul.link is damaged too: see below.)
    expect(report.damaged.map((d) => d.path).sort()).toEqual(["/volume/escape", "/volume/odd/nul.link"]);
    expect(report.damaged.find((d) => d.path === "/volume/escape")!.error).toContain("two entries named escape");
    expect(await readFile(path.join(out, "volume/etc/hosts"), "utf8")).toBe("127.0.0.1 localhost\n");
  });

  test("a symlink whose target holds a NUL is reported damaged, a name holding a slash left out and named once, the rest of their folder restored", async () => {
    const out = await tempFolder("review-restore-nul");
    let browser: PointBrowser | undefined;
    const report = await restore(["/volume/odd"], out, false, (b) => (browser = b));
    expect(report.damaged.map((d) => d.path)).toEqual(["/volume/odd/nul.link"]);
    // The name with a "/" is left out and named once, though both passes listed its folder.
    expect([...browser!.refusedNames]).toEqual(['/volume/odd: "slash/name"']);
    expect(report.damaged[0].error).toContain("NUL");
    expect(await entries(path.join(out, "volume/odd"))).toEqual(["fine.txt"]);
  });

  test("a symlink already under --to is not followed to write a file, with or without --overwrite", async () => {
    const out = await tempFolder("review-restore-planted");
    await symlink(outside, path.join(out, "volume"));
    for (const overwrite of [false, true]) {
      await expect(restore(["/volume/etc/hosts"], out, overwrite)).rejects.toThrow(/volume is a symlink/);
      expect(await entries(outside)).toEqual([]);
    }
    // Deeper down too: a symlink where a folder on the way would be made.
    const deeper = await tempFolder("review-restore-planted-deep");
    await mkdir(path.join(deeper, "volume"));
    await symlink(outside, path.join(deeper, "volume/etc"));
    await expect(restore(["/volume/etc/deep/note"], deeper, true)).rejects.toThrow(/etc is a symlink/);
    expect(await entries(outside)).toEqual([]);
  });

  test("--to naming a file, not a folder, is refused with what to do, and the file is left as it was", async () => {
    const file = path.join(await tempFolder("review-restore-to-file"), "notes.txt");
    await writeFile(file, "mine\n");
    await expect(restore(["/volume/etc"], file)).rejects.toThrow(`${file} is not a folder: give --to a folder (it is made if missing)`);
    expect(await readFile(file, "utf8")).toBe("mine\n");
  });

  test("--overwrite replaces a symlink that stands where a file is restored, and does not write through it", async () => {
    const out = await tempFolder("review-restore-replace-link");
    await mkdir(path.join(out, "volume/etc"), { recursive: true });
    const victim = path.join(outside, "victim");
    await writeFile(victim, "untouched\n");
    try {
      await symlink(victim, path.join(out, "volume/etc/hosts"));
      await restore(["/volume/etc/hosts"], out, true);
      expect((await lstat(path.join(out, "volume/etc/hosts"))).isFile()).toBe(true);
      expect(await readFile(victim, "utf8")).toBe("untouched\n");
    } finally {
      await (await import("node:fs/promises")).rm(victim);
    }
  });

  test("overlapping and repeated --path arguments restore each item once, reporting nothing damaged", async () => {
    const out = await tempFolder("review-restore-overlap");
    const report = await restore(["/volume/etc", "/volume/etc/hosts", "/volume/etc/deep", "/volume/etc"], out);
    expect(report).toMatchObject({ files: 4, symlinks: 1, damaged: [], skipped: [] });
    expect(await readFile(path.join(out, "volume/etc/deep/note"), "utf8")).toBe("deep\n");
  });

  test("names of 240 bytes of UTF-8 restore; set-id bits survive the owner change; folders and symlinks keep their own times", async () => {
    const out = await tempFolder("review-restore-attrs");
    const report = await restore(["/volume/etc"], out);
    expect(report).toMatchObject({ damaged: [], skipped: [] });
    expect(await readFile(path.join(out, "volume/etc", LONG_NAME), "utf8")).toBe("a long name\n");
    const tool = await stat(path.join(out, "volume/etc/tool"));
    expect([tool.mode & 0o7777, tool.uid, tool.gid]).toEqual([0o4755, 1234, 5678]);
    expect((await stat(path.join(out, "volume/etc"))).mtimeMs).toBe(DIR_MTIME.getTime());
    expect((await stat(path.join(out, "volume/etc/deep"))).mtimeMs).toBe(DIR_MTIME.getTime());
    expect(await readlink(path.join(out, "volume/etc/hosts.link"))).toBe("hosts");
    expect((await lstat(path.join(out, "volume/etc/hosts.link"))).mtimeMs).toBe(LINK_MTIME.getTime());
    // No temporary file is left beside them.
    expect(await entries(path.join(out, "volume/etc"))).toEqual([LONG_NAME, "deep", "hosts", "hosts.link", "tool"].sort());
  });

  /** The files restore job's restore step, with transient storage replaced by `upload` (what uploadStream does with the archive). */
  async function restoreJob(paths: string[], upload: (archive: Readable, signal: AbortSignal) => Promise<unknown>) {
    const { vault } = await vaults.open();
    const env = {
      openVault: async () => vault,
      transient: {
        blob: () => ({ uploadStream: (archive: Readable, _block: number, _concurrency: number, options: { abortSignal: AbortSignal }) => upload(archive, options.abortSignal) }),
        urlOf: (name: string) => `https://transient.example/${name}`,
      },
    } as unknown as WorkloadEnvironment;
    const machine = restoreFilesMachine(env);
    const ctx = { jobId: "1-review", job: { jobId: "1-review", runs: 1 }, signal: new AbortController().signal, clock: { now: () => Date.now() }, log: () => {} } as unknown as StepContext;
    return machine.states.restore!.step(ctx, machine.start({ vault: "local", pointId, paths }));
  }

  test("the files restore job archives the point's root without an absolute member, and no member outside it", async () => {
    const archive = path.join(await tempFolder("review-restore-job"), "files.tar");
    const done = await restoreJob(["/"], (stream) => pipeline(stream, createWriteStream(archive)));
    expect("done" in done && done.done).toBe(true);
    const listed = spawnSync("tar", ["-tf", archive], { encoding: "utf8" });
    expect(listed.status, listed.stderr).toBe(0);
    const members = listed.stdout.trimEnd().split("\n");
    expect(members).toContain("volume/data/blob.bin");
    expect(members.filter((m) => m.startsWith("/") || m.split("/").includes(".."))).toEqual([]);
  });

  test("the files restore job fails with its upload's error when the upload stops, instead of waiting for it forever", async () => {
    const refused = new Error("the transient container refused the upload");
    const step = restoreJob(["/volume/data"], async () => {
      throw refused;
    });
    await expect(step).rejects.toThrow(refused.message);
  }, 15_000);
});
