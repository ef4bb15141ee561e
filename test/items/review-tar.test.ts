/**
 * The files restore job's archive (items/tar.ts) read back by GNU tar: what `tar -tv` lists and
 * what `tar -x` extracts equal what was put in, for the entries ustar's fields cannot hold (paths
 * over 100 and over 255 bytes, non-ASCII names, symlink and hard link targets over 100 bytes, owners
 * past 7 octal digits, times before 1970 and with milliseconds) and for pax records whose length
 * crosses a power of ten (its own digits count in it).
 */
import { spawnSync } from "node:child_process";
import { createWriteStream } from "node:fs";
import { lstat, readFile, readlink, stat } from "node:fs/promises";
import path from "node:path";
import { Writable } from "node:stream";
import { beforeAll, describe, expect, test } from "vitest";
import { TarWriter, type TarEntry } from "../../runtime/items/tar.ts";
import { tempFolder } from "../cli/vaults.ts";

function tar(args: string[]): string {
  const result = spawnSync("tar", args, { encoding: "utf8", env: { ...process.env, TZ: "UTC", LC_ALL: "C.UTF-8" } });
  if (result.error) throw new Error(`GNU tar is needed to read this test's archive (CI installs it): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`tar ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

/** A path of `bytes` bytes: 200-byte folders, then a file name making up the rest. */
function longPath(prefix: string, bytes: number): string {
  const parts = [prefix];
  while (parts.join("/").length + 201 < bytes - 20) parts.push("d".repeat(200));
  const head = parts.join("/") + "/";
  return head + "f".repeat(bytes - head.length);
}

const MTIME = Date.UTC(2024, 4, 6, 7, 8, 9);
const BEFORE_1970 = Date.UTC(1969, 6, 20, 20, 17, 40);
const BIG_ID = 4_000_000_000;
const content = (name: string) => Buffer.from(`content of ${name}\n`);

/** Each entry once, with the content of its files. */
const ENTRIES: TarEntry[] = [
  { path: "top", type: "dir", mode: 0o750, uid: 1234, gid: 5678, mtime: MTIME },
  { path: "top/plain.txt", type: "file", mode: 0o640, uid: 1234, gid: 5678, mtime: MTIME },
  { path: "top/héllo wörld ☃.txt", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: MTIME },
  { path: longPath("top/over100", 150), type: "file", mode: 0o600, uid: 1, gid: 2, mtime: MTIME },
  { path: longPath("top/over255", 700), type: "file", mode: 0o600, uid: 1, gid: 2, mtime: MTIME },
  // The pax path record is 999 bytes; one byte more and it is 1001 (1000 would count 4 digits).
  { path: longPath("top/pax999", 989), type: "file", mode: 0o644, uid: 0, gid: 0, mtime: MTIME },
  { path: longPath("top/pax1001", 990), type: "file", mode: 0o644, uid: 0, gid: 0, mtime: MTIME },
  { path: "top/big-owner", type: "file", mode: 0o644, uid: BIG_ID, gid: BIG_ID + 1, mtime: MTIME },
  { path: "top/moon-landing", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: BEFORE_1970 },
  { path: "top/millis", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: MTIME + 250 },
  { path: "top/millis-before-1970", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: BEFORE_1970 + 250 },
  { path: "top/setuid", type: "file", mode: 0o4755, uid: 0, gid: 0, mtime: MTIME },
  { path: "top/long-link", type: "symlink", mode: 0o777, uid: 0, gid: 0, mtime: MTIME, linkTo: `../${"t".repeat(150)}/target` },
  { path: "top/hard", type: "hardlink", mode: 0o640, uid: 1234, gid: 5678, mtime: MTIME, linkTo: "top/plain.txt" },
  { path: longPath("top/hard-long", 300), type: "hardlink", mode: 0o600, uid: 1, gid: 2, mtime: MTIME, linkTo: longPath("top/over255", 700) },
];

/** A time as `tar --full-time` shows it in UTC: seconds, and a fraction without trailing zeros when there is one. */
function fullTime(ms: number): string {
  const seconds = new Date(Math.floor(ms / 1000) * 1000).toISOString().replace("T", " ").slice(0, 19);
  const fraction = ((ms % 1000) + 1000) % 1000;
  return fraction ? `${seconds}.${String(fraction).padStart(3, "0").replace(/0+$/, "")}` : seconds;
}

async function writeArchive(file: string): Promise<void> {
  const out = createWriteStream(file);
  const writer = new TarWriter(out);
  for (const entry of ENTRIES) {
    const bytes = entry.type === "file" ? content(entry.path) : undefined;
    await writer.begin({ ...entry, size: bytes?.length });
    if (bytes) await writer.write(bytes);
    await writer.end();
  }
  await writer.finish();
  await new Promise<void>((resolve, reject) => out.on("close", () => resolve()).on("error", reject));
}

describe("the files restore archive as GNU tar reads it", () => {
  let archive: string;

  beforeAll(async () => {
    archive = path.join(await tempFolder("review-tar"), "files.tar");
    await writeArchive(archive);
  });

  test("tar -tv lists every entry with its path, type, mode, owner, size, time and link target", () => {
    const lines = tar(["--numeric-owner", "--full-time", "-tvf", archive]).trimEnd().split("\n");
    expect(lines).toHaveLength(ENTRIES.length);
    lines.forEach((line, i) => {
      const entry = ENTRIES[i];
      const letter = { file: "-", dir: "d", symlink: "l", hardlink: "h" }[entry.type];
      // GNU tar widens its owner and time columns after a wide value, so fields are apart by any run of spaces.
      const match = /^(\S)(\S{9}) (\d+)\/(\d+)\s+(\d+) (\S+ \S+)\s+(.*)$/.exec(line);
      expect(match, line).not.toBeNull();
      const [, type, , uid, gid, size, time, rest] = match!;
      expect(type, entry.path).toBe(letter);
      expect([Number(uid), Number(gid)], entry.path).toEqual([entry.uid, entry.gid]);
      expect(Number(size), entry.path).toBe(entry.type === "file" ? content(entry.path).length : 0);
      // GNU tar 1.34 lists a negative time with a fraction wrongly (its own archives' too: -1.75 s as -0.25 s); -x sets it right, tested below.
      if (entry.mtime >= 0 || entry.mtime % 1000 === 0) expect(time, entry.path).toBe(fullTime(entry.mtime));
      const name = entry.type === "dir" ? `${entry.path}/` : entry.path;
      const expected = entry.type === "symlink" ? `${name} -> ${entry.linkTo}` : entry.type === "hardlink" ? `${name} link to ${entry.linkTo}` : name;
      expect(rest).toBe(expected);
    });
  });

  test("tar -x extracts contents, modes (set-id bits too), owners, times before 1970 and milliseconds, links", async () => {
    const to = await tempFolder("review-tar-x");
    tar(["--same-owner", "--same-permissions", "-xf", archive, "-C", to]);
    for (const entry of ENTRIES) {
      const at = path.join(to, entry.path);
      const info = await lstat(at);
      if (entry.type === "file") expect(await readFile(at), entry.path).toEqual(content(entry.path));
      if (entry.type === "symlink") expect(await readlink(at)).toBe(entry.linkTo);
      if (entry.type === "hardlink") expect(info.ino, entry.path).toBe((await stat(path.join(to, entry.linkTo!))).ino);
      if (entry.type === "symlink" || entry.type === "hardlink") continue;
      expect([info.mode & 0o7777, info.uid, info.gid], entry.path).toEqual([entry.mode, entry.uid, entry.gid]);
      expect(info.mtimeMs, entry.path).toBe(entry.mtime);
    }
  });

  test("a size past ustar's 11 octal digits (8 GiB) goes in a pax size record", async () => {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    });
    const writer = new TarWriter(sink);
    await writer.begin({ path: "huge.img", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: MTIME, size: 8 * 1024 ** 3 });
    const head = Buffer.concat(chunks);
    expect(head.subarray(512, 1024).toString("latin1")).toContain("size=8589934592\n");
    // The ustar size field holds its largest value, not a wrapped one.
    expect(head.subarray(1024 + 124, 1024 + 135).toString("latin1")).toBe("77777777777");
  });
});
