/**
 * What the CLI refuses, and how: a wrong or short passphrase, a missing vault, a source that
 * cannot be read each give one clear message on stderr, a documented exit code, and leave the
 * vault exactly as it was. Also: stored bytes hold none of the source's plaintext, --json output
 * parses, and runs that are not on a terminal print nothing on stderr when they succeed.
 */
import { spawn } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CLI, PASSPHRASE, finished } from "../support/cli.ts";
import {
  AzuriteVaults,
  LocalVaults,
  MIB,
  cli,
  contentObjects,
  diskImage,
  pseudoRandom,
  tempFolder,
  type BackupSummary,
  type VaultKind,
} from "./vaults.ts";

const MARKER = "BULWARK-PLAINTEXT-MARKER:7f3a9c";

/** One message line on stderr, naming the command. */
function expectOneMessage(stderr: string, pattern: RegExp): void {
  const lines = stderr.trimEnd().split("\n");
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^bulwark \w+: /);
  expect(lines[0]).toMatch(pattern);
}

describe.each(["local", "azurite"] as const)("refusals and confidentiality, %s vault", (kindName) => {
  let kind: VaultKind;
  let vault: string;
  let scratch: string;
  let imagePath: string;
  let before: [string, number][];

  beforeAll(async () => {
    kind = kindName === "local" ? await LocalVaults.create() : await AzuriteVaults.create();
    scratch = await tempFolder("refusals");
    vault = kind.newLocation("refusals");
    imagePath = path.join(scratch, "disk.img");
    await writeFile(imagePath, diskImage("refusals", 6));
    const init = await cli(kind, vault, ["init"]);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stderr).toBe("");
    expect(init.stdout).toMatch(/^created vault [0-9a-f]{32} at /);
    const backup = await cli(kind, vault, ["backup", imagePath, "--json"]);
    expect(backup.code, backup.stderr).toBe(0);
    expect(backup.stderr).toBe(""); // not on a terminal: no progress
    before = contentObjects(await kind.objects(vault));
  });

  afterAll(async () => {
    await kind?.close();
  });

  const unchanged = async () => expect(contentObjects(await kind.objects(vault))).toEqual(before);

  test("a wrong passphrase exits 3 with one message and changes nothing", async () => {
    const result = await cli(kind, vault, ["backup", imagePath], { BULWARK_PASSPHRASE: "a wrong but long enough passphrase" });
    expect(result.code).toBe(3);
    expect(result.stdout).toBe("");
    expectOneMessage(result.stderr, /wrong passphrase/);
    await unchanged();
  });

  test("a passphrase under 16 characters exits 2 with one message and changes nothing", async () => {
    const result = await cli(kind, vault, ["backup", imagePath], { BULWARK_PASSPHRASE: "short pass" });
    expect(result.code).toBe(2);
    expectOneMessage(result.stderr, /at least 16/);
    const init = await cli(kind, kind.newLocation("short"), ["init"], { BULWARK_PASSPHRASE: "fifteen chars!!" });
    expect(init.code).toBe(2);
    expectOneMessage(init.stderr, /15 characters.*at least 16/);
    await unchanged();
  });

  test("a missing vault exits 4 with one message and is not created", async () => {
    const missing = kind.newLocation("missing");
    for (const args of [["backup", imagePath], ["points"], ["restore", "latest", "--to", path.join(scratch, "x")], ["verify"]]) {
      const result = await cli(kind, missing, args);
      expect(result.code, `${args[0]}: ${result.stderr}`).toBe(4);
      expectOneMessage(result.stderr, /no vault at/);
    }
    expect((await kind.objects(missing)).size).toBe(0);
  });

  test("a missing source and a FIFO each exit 6, a folder forced --as disk exits 2, each with one message and changing nothing", async () => {
    const folder = path.join(scratch, "a-folder");
    await mkdir(folder, { recursive: true });
    const fifo = path.join(scratch, "a-fifo");
    await finished(spawn("mkfifo", [fifo]));
    const cases: [string[], number, RegExp][] = [
      [[path.join(scratch, "no-such.img")], 6, /does not exist/],
      [[fifo], 6, /not a regular file/],
      // A folder is backed up as a folder tree (test/tree); it is not a disk.
      [[folder, "--as", "disk"], 2, /is a folder, backed up as a folder tree/],
    ];
    for (const [args, code, message] of cases) {
      const result = await cli(kind, vault, ["backup", ...args]);
      expect(result.code, result.stderr).toBe(code);
      expectOneMessage(result.stderr, message);
    }
    await unchanged();
  });

  test("a source without read permission exits 6 with one message and changes nothing", async () => {
    const secret = path.join(scratch, "secret.img");
    await writeFile(secret, Buffer.alloc(MIB, 1));
    await chmod(secret, 0o000);
    let child;
    if (process.getuid?.() === 0) {
      // root reads any file, so run the CLI as nobody (it still reaches the vault through the
      // environment: an Azurite connection string, or a world-readable local folder).
      await chmod(scratch, 0o755);
      child = spawn(process.execPath, [CLI, "backup", secret, "--vault", vault], {
        env: { ...process.env, ...kind.env, BULWARK_PASSPHRASE: PASSPHRASE },
        stdio: ["ignore", "pipe", "pipe"],
        uid: 65534,
        gid: 65534,
      });
    } else {
      child = spawn(process.execPath, [CLI, "backup", secret, "--vault", vault], {
        env: { ...process.env, ...kind.env, BULWARK_PASSPHRASE: PASSPHRASE },
        stdio: ["ignore", "pipe", "pipe"],
      });
    }
    const result = await finished(child);
    expect(result.code, result.stderr).toBe(6);
    expectOneMessage(result.stderr, /permission denied/);
    await unchanged();
  });

  test("stored objects contain none of the source's plaintext, in a disk image or a plain file", async () => {
    const record = Buffer.from(`${MARKER} account=4242 balance=1000000\n`);
    const plain = Buffer.concat([Buffer.concat(Array(40_000).fill(record)), pseudoRandom("noise", MIB)]);
    const image = Buffer.alloc(4 * MIB);
    plain.copy(image, 0, 0, 3 * MIB);
    await writeFile(path.join(scratch, "marker.img"), image);
    await writeFile(path.join(scratch, "marker.txt"), plain);
    for (const source of ["marker.img", "marker.txt"]) {
      const result = await cli(kind, vault, ["backup", path.join(scratch, source), "--json", "--tag", "case=marker"]);
      expect(result.code, result.stderr).toBe(0);
      expect((JSON.parse(result.stdout) as BackupSummary).bytesNew).toBeGreaterThan(MIB);
    }
    const needles = [Buffer.from(MARKER), Buffer.from("account=4242"), Buffer.from(MARKER, "utf16le")];
    const objects = await kind.objects(vault);
    expect(objects.size).toBeGreaterThan(5);
    let searched = 0;
    for (const key of objects.keys()) {
      const bytes = await kind.read(vault, key);
      searched += bytes.length;
      for (const needle of needles) expect(bytes.includes(needle), `${key} holds plaintext`).toBe(false);
    }
    expect(searched).toBeGreaterThan(MIB);
    before = contentObjects(await kind.objects(vault));
  });

  // Usage errors are found before any store is touched: checking them once is enough.
  test.runIf(kindName === "local")("usage errors exit 2 with one message", async () => {
    const usage = [
      ["backup"],
      ["backup", imagePath, "--as", "tape"],
      ["backup", imagePath, "--tag", "novalue"],
      ["restore", "latest"],
      ["restore", "xyz!", "--to", path.join(scratch, "y")],
      ["forget"],
      ["verify", "--read-data-subset", "300%"],
      ["points", "--no-such-flag"],
    ];
    for (const args of usage) {
      const result = await cli(kind, vault, args);
      expect(result.code, `${args.join(" ")}: ${result.stderr}`).toBe(2);
      expectOneMessage(result.stderr, /./);
    }
    const unknown = await cli(kind, vault, ["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    await unchanged();
  });

  test("--json output of every read command parses; nothing on stderr when not on a terminal", async () => {
    for (const args of [["points"], ["verify"], ["key", "list"], ["forget", "--keep-last", "10", "--dry-run"], ["prune", "--dry-run"]]) {
      const result = await cli(kind, vault, [...args, "--json"]);
      expect(result.code, `${args.join(" ")}: ${result.stderr}`).toBe(0);
      expect(result.stderr).toBe("");
      expect(() => JSON.parse(result.stdout), result.stdout).not.toThrow();
      expect(result.stdout.trimEnd().split("\n")).toHaveLength(1);
    }
    // Without --json and not on a terminal: still no progress on stderr.
    const points = await cli(kind, vault, ["points"]);
    expect(points.code).toBe(0);
    expect(points.stderr).toBe("");
    const listed = (await cli(kind, vault, ["points", "--json"])).stdout;
    expect(points.stdout.trimEnd().split("\n")).toHaveLength(1 + (JSON.parse(listed) as unknown[]).length); // a header and a line per point
    await unchanged();
  });
});
