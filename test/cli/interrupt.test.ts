/**
 * Ctrl-C leaves nothing behind (issue 8, item 15), with the real CLI and real signals. SIGINT or
 * SIGTERM during a backup releases the vault lock and removes the local store's temporary files;
 * during a restore it removes the partial file; each exits 130 (SIGINT) or 143 (SIGTERM) with one
 * line. What a SIGKILLed run left (a partial file, temporary files, its lock) is removed by the
 * next run on this host. The moment to signal is chosen by watching the files the command makes.
 */
import type { ChildProcess } from "node:child_process";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { finished, runCli, startCli } from "../support/cli.ts";
import { MIB, pseudoRandom, sha256, tempFolder, waitFor } from "./vaults.ts";

async function entries(folder: string): Promise<string[]> {
  return readdir(folder).catch(() => []);
}

function expectOneLine(stderr: string, command: string, pattern: RegExp): void {
  const lines = stderr.trimEnd().split("\n");
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^bulwark ${command}: `));
  expect(lines[0]).toMatch(pattern);
}

describe("interrupted commands", () => {
  let scratch: string;
  let image: Buffer;
  let imagePath: string;
  const children: ChildProcess[] = [];

  /** A CLI child that is killed at the end whatever happens. */
  function start(args: string[]): ChildProcess {
    const child = startCli(args);
    children.push(child);
    return child;
  }

  beforeAll(async () => {
    scratch = await tempFolder("interrupt");
    // Random data: nothing deduplicates or compresses, so backup and restore take long enough to interrupt.
    image = pseudoRandom("interrupt", 192 * MIB);
    imagePath = path.join(scratch, "big.img");
    await writeFile(imagePath, image);
  });

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  async function newVault(name: string): Promise<string> {
    const vault = path.join(scratch, name);
    const init = await runCli(["init", "--vault", vault]);
    expect(init.code, init.stderr).toBe(0);
    return vault;
  }

  test.each([
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)("%s during a local backup leaves no lock and no temporary files, and exits %i with one line", async (signal, code) => {
    const vault = await newVault(`backup-${signal}`);
    const child = start(["backup", imagePath, "--vault", vault]);
    const done = finished(child);
    // The moment: the backup holds its lock and is writing its first pack.
    await waitFor("the backup's first temporary pack file", async () => (await entries(path.join(vault, ".tmp"))).length > 0 && (await entries(path.join(vault, "locks"))).length > 0, 60_000, 5);
    child.kill(signal);
    const result = await done;
    expect(result.code, result.stderr).toBe(code);
    expectOneLine(result.stderr, "backup", new RegExp(`interrupted by ${signal}`));
    expect(await entries(path.join(vault, "locks"))).toEqual([]);
    expect(await entries(path.join(vault, ".tmp"))).toEqual([]);
    expect(await entries(path.join(vault, "points"))).toEqual([]);
  });

  test("Ctrl-C twice during a local backup still leaves no lock and no temporary files", async () => {
    const vault = await newVault("backup-twice");
    const child = start(["backup", imagePath, "--vault", vault]);
    const done = finished(child);
    await waitFor("the backup's first temporary pack file", async () => (await entries(path.join(vault, ".tmp"))).length > 0 && (await entries(path.join(vault, "locks"))).length > 0, 60_000, 5);
    child.kill("SIGINT");
    child.kill("SIGINT");
    const result = await done;
    expect(result.code, result.stderr).toBe(130);
    expectOneLine(result.stderr, "backup", /interrupted by SIGINT/);
    expect(await entries(path.join(vault, "locks"))).toEqual([]);
    expect(await entries(path.join(vault, ".tmp"))).toEqual([]);
    expect(await entries(path.join(vault, "points"))).toEqual([]);
  });

  test("SIGINT during a restore leaves no partial file and no destination", async () => {
    const vault = await newVault("restore-int");
    expect((await runCli(["backup", imagePath, "--vault", vault])).code).toBe(0);
    const out = path.join(scratch, "restore-int-out", "restored.img");
    const child = start(["restore", "latest", "--vault", vault, "--to", out]);
    const done = finished(child);
    await waitFor("the restore's partial file", async () => (await entries(path.dirname(out))).some((n) => n.includes(".bulwark-partial-")), 60_000, 5);
    child.kill("SIGINT");
    const result = await done;
    expect(result.code, result.stderr).toBe(130);
    expectOneLine(result.stderr, "restore", /interrupted by SIGINT/);
    expect(await entries(path.dirname(out))).toEqual([]);
  });

  test("after a SIGKILLed restore, the next restore to the same place removes the partial file it left", async () => {
    const vault = await newVault("restore-kill");
    expect((await runCli(["backup", imagePath, "--vault", vault])).code).toBe(0);
    const out = path.join(scratch, "restore-kill-out", "restored.img");
    const child = start(["restore", "latest", "--vault", vault, "--to", out]);
    const done = finished(child);
    await waitFor("the restore's partial file", async () => (await entries(path.dirname(out))).some((n) => n.includes(".bulwark-partial-")), 60_000, 5);
    child.kill("SIGKILL");
    expect((await done).signal).toBe("SIGKILL");
    const left = (await entries(path.dirname(out))).filter((n) => n.includes(".bulwark-partial-"));
    expect(left).toHaveLength(1);
    const again = await runCli(["restore", "latest", "--vault", vault, "--to", out]);
    expect(again.code, again.stderr).toBe(0);
    expect(await entries(path.dirname(out))).toEqual(["restored.img"]);
    expect(sha256(await readFile(out))).toBe(sha256(image));
  });

  test("after a SIGKILLed backup, prune on this host is not blocked by the lock it left", async () => {
    const vault = await newVault("prune-after-kill");
    const child = start(["backup", imagePath, "--vault", vault]);
    const done = finished(child);
    await waitFor("the backup's lock and first temporary pack file", async () => (await entries(path.join(vault, ".tmp"))).length > 0 && (await entries(path.join(vault, "locks"))).length > 0, 60_000, 5);
    child.kill("SIGKILL");
    expect((await done).signal).toBe("SIGKILL");
    expect(await entries(path.join(vault, "locks"))).toHaveLength(1);
    const prune = await runCli(["prune", "--vault", vault]);
    expect(prune.code, prune.stderr).toBe(0);
    expect(await entries(path.join(vault, "locks"))).toEqual([]);
  });

  test("after a SIGKILLed backup, the next backup removes its temporary files and its lock", async () => {
    const vault = await newVault("backup-kill");
    const child = start(["backup", imagePath, "--vault", vault]);
    const done = finished(child);
    const holdsTempAndLock = async () => (await entries(path.join(vault, ".tmp"))).length > 0 && (await entries(path.join(vault, "locks"))).length > 0;
    // Frozen (SIGSTOP) while it holds a temporary file and its lock, then killed: a pack committed
    // between the check and the kill would otherwise leave no temporary file to clean.
    for (let attempt = 0; ; attempt++) {
      await waitFor("the backup's first temporary pack file", holdsTempAndLock, 60_000, 5);
      child.kill("SIGSTOP");
      if (await holdsTempAndLock()) break;
      child.kill("SIGCONT");
      if (attempt > 50) throw new Error("the backup never held a temporary file while stopped");
    }
    child.kill("SIGKILL");
    expect((await done).signal).toBe("SIGKILL");
    const leftTemp = await entries(path.join(vault, ".tmp"));
    const leftLocks = await entries(path.join(vault, "locks"));
    expect(leftTemp.length).toBeGreaterThan(0);
    expect(leftLocks).toHaveLength(1);
    const small = path.join(scratch, "small.img");
    await writeFile(small, pseudoRandom("small", 2 * MIB));
    const again = await runCli(["backup", small, "--vault", vault]);
    expect(again.code, again.stderr).toBe(0);
    expect((await entries(path.join(vault, ".tmp"))).filter((n) => leftTemp.includes(n))).toEqual([]);
    expect(await entries(path.join(vault, "locks"))).toEqual([]);
    expect((await stat(path.join(vault, "points"))).isDirectory()).toBe(true);
  });
});
