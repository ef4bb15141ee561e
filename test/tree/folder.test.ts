/**
 * Folder backup (issue 12, "Files and folders") through the real command line: a folder with
 * nested folders, a big file, a sparse file of zeros, 300 small files, symlinks (one dangling),
 * hard links, odd modes (setgid, sticky, 000), other owners, times with sub-second parts and a
 * fifo is backed up as a "tree" point; restored whole and by path it equals the source (bytes,
 * modes, owners, times, targets, links, holes); `ls` and `find` browse it; a second backup after
 * changes reads only the changed files and stores little; verify and forget --prune keep what the
 * points reference; --exclude leaves paths out; a file and a folder the backup cannot read (chmod
 * 000, backed up as uid 65534) are reported and the rest is committed (exit 6); a damaged index
 * chunk fails `ls` with exit 5.
 */
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, chown, link, lstat, mkdir, readdir, readFile, readlink, rm, symlink, truncate, unlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { packKey } from "../../runtime/engine/pack.ts";
import type { TreeLayout } from "../../runtime/engine/point.ts";
import { CLI, finished, PASSPHRASE } from "../support/cli.ts";
import { trackChild } from "../support/cleanup.ts";
import { allocatedBytes } from "../support/sparse.ts";
import { MIB, pseudoRandom, tempFolder, text } from "../cli/vaults.ts";
import { PointVault } from "../items/disk-points.ts";

const NOBODY = 65534;
const ZEROS_SIZE = 24 * MIB;

interface Summary {
  id: string;
  size: number;
  bytesRead: number;
  bytesNew: number;
  files: number;
  filesRead: number;
  filesUnchanged: number;
  folders: number;
  symlinks: number;
  hardLinks: number;
  special: number;
  problems: Array<{ path: string; error: string }>;
}

interface RestoreReport {
  files: number;
  directories: number;
  symlinks: number;
  hardLinks: number;
  bytesRead: number;
  skipped: Array<{ path: string; reason: string }>;
  damaged: unknown[];
}

interface Item {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  atimeMs: number;
  ino: number;
  target?: string;
}

/** Every item under a folder by relative path, from lstat alone (reading would move access times). */
async function snapshot(top: string): Promise<Map<string, Item>> {
  const items = new Map<string, Item>();
  const walk = async (relative: string) => {
    for (const name of await readdir(path.join(top, relative))) {
      const rel = relative ? `${relative}/${name}` : name;
      const info = await lstat(path.join(top, rel));
      const type = info.isDirectory() ? "dir" : info.isFile() ? "file" : info.isSymbolicLink() ? "symlink" : "other";
      items.set(rel, {
        type,
        mode: info.mode & 0o7777,
        uid: info.uid,
        gid: info.gid,
        size: type === "dir" ? 0 : info.size,
        mtimeMs: info.mtimeMs,
        atimeMs: info.atimeMs,
        ino: info.ino,
        ...(type === "symlink" ? { target: await readlink(path.join(top, rel)) } : {}),
      });
      if (type === "dir") await walk(rel);
    }
  };
  await walk("");
  return items;
}

async function sha256Of(file: string): Promise<string> {
  return createHash("sha256").update(await readFile(file)).digest("hex");
}

/** The restored tree equals the source as it was snapshotted: every attribute, every file's bytes, the hard-link groups. */
async function expectSameTree(source: Map<string, Item>, sourceTop: string, restoredTop: string, leftOut: string[]): Promise<void> {
  const restored = await snapshot(restoredTop);
  const expected = [...source.keys()].filter((p) => !leftOut.includes(p)).sort();
  expect([...restored.keys()].sort()).toEqual(expected);
  for (const rel of expected) {
    const a = source.get(rel)!;
    const b = restored.get(rel)!;
    expect({ rel, type: b.type, mode: b.mode, uid: b.uid, gid: b.gid, size: b.size, target: b.target }).toEqual({
      rel,
      type: a.type,
      mode: a.mode,
      uid: a.uid,
      gid: a.gid,
      size: a.size,
      target: a.target,
    });
    expect(Math.abs(b.mtimeMs - a.mtimeMs), `${rel} mtime`).toBeLessThan(0.01);
    // Access times of files (reading a folder or a symlink moves its own).
    if (a.type === "file") expect(Math.abs(b.atimeMs - a.atimeMs), `${rel} atime`).toBeLessThan(0.01);
  }
  // Names of one file in the source are names of one file restored, and no others are.
  for (const rel of expected) {
    for (const other of expected) {
      if (rel < other && source.get(rel)!.type === "file") expect(restored.get(rel)!.ino === restored.get(other)!.ino, `${rel} / ${other}`).toBe(source.get(rel)!.ino === source.get(other)!.ino);
    }
  }
  for (const rel of expected) if (source.get(rel)!.type === "file" && rel !== "zeros.bin") expect(await sha256Of(path.join(restoredTop, rel)), rel).toBe(await sha256Of(path.join(sourceTop, rel)));
}

/** The folder every test starts from. */
async function makeFolder(top: string): Promise<void> {
  await mkdir(path.join(top, "a/b/c"), { recursive: true });
  await mkdir(path.join(top, "many"));
  await mkdir(path.join(top, "shared"));
  await mkdir(path.join(top, "logs"));
  await writeFile(path.join(top, "hello.txt"), "hello, folder\n");
  await writeFile(path.join(top, "big.bin"), pseudoRandom("big", 6 * MIB));
  await writeFile(path.join(top, "zeros.bin"), "");
  await truncate(path.join(top, "zeros.bin"), ZEROS_SIZE);
  for (let i = 0; i < 300; i++) await writeFile(path.join(top, "many", `f${String(i).padStart(4, "0")}.txt`), `small file ${i}\n`.repeat(1 + (i % 7)));
  await writeFile(path.join(top, "a/b/c/deep.conf"), text("deep", 3000));
  await writeFile(path.join(top, "a/b/x.conf"), text("x", 500));
  await writeFile(path.join(top, "logs/app.log"), text("log", 2000));
  await writeFile(path.join(top, "linked.txt"), text("linked", 9000));
  await link(path.join(top, "linked.txt"), path.join(top, "a/also-linked.txt"));
  await link(path.join(top, "linked.txt"), path.join(top, "shared/third-name.txt"));
  await symlink("hello.txt", path.join(top, "sym"));
  await symlink("nowhere/at/all", path.join(top, "a/dangling"));
  await writeFile(path.join(top, "secret"), "root reads it anyway\n");
  await chmod(path.join(top, "secret"), 0o000);
  await chown(path.join(top, "hello.txt"), 1234, 5678);
  await chmod(path.join(top, "hello.txt"), 0o640);
  await chown(path.join(top, "a"), 4321, 8765);
  await chmod(path.join(top, "a"), 0o2750);
  await chmod(path.join(top, "shared"), 0o1777);
  execFileSync("mkfifo", [path.join(top, "pipe")]);
  // Access times after modification times and recent, so relatime does not move them when read.
  const now = Date.now() / 1000;
  await utimes(path.join(top, "hello.txt"), now - 10.25, 1_600_000_000.123456);
  await utimes(path.join(top, "a/b/c/deep.conf"), now - 20.5, 1_500_000_000.5);
  await utimes(path.join(top, "a/b"), now - 30, 1_400_000_000.75);
}

/** Runs the CLI as uid/gid 65534 (nobody), for whom chmod 000 means unreadable. */
function runAsNobody(args: string[]) {
  return finished(trackChild(spawn(process.execPath, [CLI, ...args], { uid: NOBODY, gid: NOBODY, env: { ...process.env, BULWARK_PASSPHRASE: PASSPHRASE }, stdio: ["ignore", "pipe", "pipe"] })));
}

describe("bulwark backup DIR: a folder as a tree point", () => {
  let work: string;
  let top: string;
  let vault: PointVault;
  let first: Summary;
  let before: Map<string, Item>;
  let newest: string;

  beforeAll(async () => {
    execFileSync("mkfifo", ["--version"], { stdio: "ignore" });
    work = await tempFolder("tree");
    top = path.join(work, "top");
    await makeFolder(top);
    vault = await PointVault.create("tree");
    before = await snapshot(top);
    first = await vault.json<Summary>(["backup", top]);
  });

  afterAll(async () => {
    await vault?.close();
  });

  test("the first backup reads every file and records every item once", () => {
    expect(first.files).toBe(300 + 10);
    expect(first.filesRead).toBe(300 + 8);
    expect(first.hardLinks).toBe(2);
    expect(first.filesUnchanged).toBe(0);
    expect(first.symlinks).toBe(2);
    expect(first.special).toBe(1);
    expect(first.folders).toBe(1 + 6);
    expect(first.problems).toEqual([]);
    // New raw bytes: 6 MiB of random data, one 4 MiB chunk of zeros (stored once for all six), the small files.
    expect(first.bytesNew).toBeLessThan(11 * MIB);
  });

  test("restored whole, the folder equals the source: bytes, modes, owners, times, symlinks, hard links, sparse zeros; the fifo is named as not restored", async () => {
    const out = path.join(await tempFolder("tree-restore"), "out");
    const result = await vault.run(["restore", first.id, "--to", out, "--json"]);
    expect(result.code, result.stderr).toBe(6);
    const report = JSON.parse(result.stdout) as RestoreReport;
    expect(report.skipped).toEqual([{ path: "/pipe", reason: "special files (devices, sockets, pipes) are not restored" }]);
    expect(report.damaged).toEqual([]);
    await expectSameTree(before, top, out, ["pipe"]);
    // The zeros came back as a hole.
    expect(await allocatedBytes(path.join(out, "zeros.bin"))).toBeLessThan(MIB);
    expect((await lstat(path.join(out, "zeros.bin"))).size).toBe(ZEROS_SIZE);
  });

  test("ls, find and restore --path browse the point with the folder as its root, reading only what they need", async () => {
    const rootListing = await vault.json<Array<{ name: string; type: string; mode: number; uid: number; target?: string }>>(["ls", first.id, "/"]);
    expect(rootListing.map((e) => e.name)).toEqual(["a", "big.bin", "hello.txt", "linked.txt", "logs", "many", "pipe", "secret", "shared", "sym", "zeros.bin"]);
    expect(rootListing.find((e) => e.name === "pipe")!.type).toBe("other");
    expect(rootListing.find((e) => e.name === "sym")!.target).toBe("hello.txt");
    expect(rootListing.find((e) => e.name === "hello.txt")).toMatchObject({ type: "file", mode: 0o640, uid: 1234 });
    const many = await vault.json<Array<{ name: string }>>(["ls", first.id, "/many"]);
    expect(many.length).toBe(300);
    expect(many[299].name).toBe("f0299.txt");
    const found = await vault.json<Array<{ path: string }>>(["find", first.id, "*.conf"]);
    expect(found.map((e) => e.path)).toEqual(["/a/b/c/deep.conf", "/a/b/x.conf"]);

    const out = await tempFolder("tree-path");
    const restored = await vault.json<RestoreReport>(["restore", first.id, "--path", "/a/b", "--path", "/hello.txt", "--to", out]);
    expect(restored.files).toBe(3);
    // Listings and three small files: neither the big file's chunks nor the zeros are fetched.
    expect(restored.bytesRead).toBeLessThan(2 * MIB);
    expect(await readFile(path.join(out, "a/b/c/deep.conf"))).toEqual(await readFile(path.join(top, "a/b/c/deep.conf")));
    expect((await lstat(path.join(out, "a/b"))).mtimeMs).toBeCloseTo(1_400_000_000_750, 3);
    expect((await lstat(path.join(out, "hello.txt"))).uid).toBe(1234);
  });

  test("a second backup reads only new and changed files, takes the rest from the first point, and stores little; verify and forget --prune keep what it references", async () => {
    await writeFile(path.join(top, "many/f0007.txt"), "changed\n");
    await writeFile(path.join(top, "a/new.txt"), text("new", 100));
    await unlink(path.join(top, "many/f0008.txt"));
    const bigTimes = await lstat(path.join(top, "big.bin"));
    await utimes(path.join(top, "big.bin"), bigTimes.atime, new Date(bigTimes.mtimeMs + 1000));
    const changed = await snapshot(top);
    const second = await vault.json<Summary>(["backup", top]);
    expect(second.filesRead).toBe(3);
    // 310 files: three read, two further names of the hard-linked one, the rest unchanged.
    expect(second.files).toBe(310);
    expect(second.filesUnchanged).toBe(305);
    expect(second.bytesRead).toBe(6 * MIB + "changed\n".length + 100);
    // big.bin was read again but its chunks dedup: what is new is metadata and two small files.
    expect(second.bytesNew).toBeLessThan(MIB);

    const verify = await vault.run(["verify", "--read-data"]);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const forget = await vault.run(["forget", "--keep-last", "1", "--prune"]);
    expect(forget.code, forget.stderr).toBe(0);
    const out = path.join(await tempFolder("tree-second"), "out");
    const result = await vault.run(["restore", second.id, "--to", out]);
    expect(result.code, result.stderr).toBe(6);
    await expectSameTree(changed, top, out, ["pipe"]);
  });

  test("--exclude leaves out the paths its globs match (a matching folder is not entered)", async () => {
    const point = await vault.json<Summary>(["backup", top, "--exclude", "**/*.log", "--exclude", "many", "--exclude", "a/b/**"]);
    const listing = await vault.json<Array<{ path: string }>>(["find", point.id, "*"]);
    const paths = listing.map((e) => e.path);
    expect(paths).toContain("/logs");
    expect(paths).toContain("/a/b");
    expect(paths.filter((p) => p.endsWith(".log") || p.startsWith("/many") || p.startsWith("/a/b/"))).toEqual([]);
    expect(point.files).toBe(8);
    newest = point.id;
  });

  test("a damaged index chunk fails ls with exit 5 naming the damage", async () => {
    const { vault: opened } = await vault.open();
    const layout = (await opened.readPoint(newest)).content as TreeLayout;
    const where = opened.locate(Buffer.from(layout.index[0], "hex"));
    const key = packKey(where.pack);
    const original = await vault.readObject(key);
    const damaged = Buffer.from(original);
    damaged[where.offset + Math.floor(where.length / 2)] ^= 0x01;
    await vault.replaceObject(key, damaged);
    try {
      const result = await vault.run(["ls", newest, "/"]);
      expect(result.code).toBe(5);
      expect(result.stderr).toMatch(/damaged|authenticat/i);
    } finally {
      await vault.replaceObject(key, original);
    }
  });
});

describe("bulwark backup DIR as a user who cannot read everything", () => {
  test("an unreadable file and folder are named on stderr and in problems, the rest is committed, exit 6", async () => {
    const work = await tempFolder("tree-nobody");
    await chmod(work, 0o755);
    const top = path.join(work, "top");
    await mkdir(path.join(top, "closed"), { recursive: true });
    await writeFile(path.join(top, "ok.txt"), "readable\n");
    await writeFile(path.join(top, "closed/inside.txt"), "hidden\n");
    await writeFile(path.join(top, "locked.txt"), "not for nobody\n");
    await chmod(path.join(top, "locked.txt"), 0o000);
    await chmod(path.join(top, "closed"), 0o000);
    const vault = await PointVault.create("tree-nobody");
    try {
      execFileSync("chown", ["-R", `${NOBODY}:${NOBODY}`, vault.location]);
      await chmod(path.dirname(vault.location), 0o755);
      const result = await runAsNobody(["backup", top, "--vault", vault.location, "--json"]);
      expect(result.code, result.stderr).toBe(6);
      const summary = JSON.parse(result.stdout) as Summary;
      expect(summary.problems.map((p) => p.path).sort()).toEqual(["closed", "locked.txt"]);
      expect(result.stderr).toContain("locked.txt was not backed up: it could not be opened (permission denied)");
      expect(result.stderr).toContain("closed was not backed up: its folder could not be listed (permission denied)");
      const listing = await vault.json<Array<{ name: string }>>(["ls", summary.id, "/"]);
      expect(listing.map((e) => e.name)).toEqual(["closed", "ok.txt"]);
      const out = await tempFolder("tree-nobody-out");
      await vault.json(["restore", summary.id, "--path", "/ok.txt", "--to", out]);
      expect(await readFile(path.join(out, "ok.txt"), "utf8")).toBe("readable\n");
    } finally {
      await vault.close();
      await rm(top, { recursive: true, force: true });
    }
  });
});
