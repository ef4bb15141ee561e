/**
 * README's examples work as written: every fenced block whose info string is `sh test` is run by
 * bash, in order, in the environment `npm run emulator` prints (test/emulator/environment.ts: one
 * emulator with Azurite and the sample world, its transient container created), with `bulwark` on
 * PATH as the real command and HOME a scratch folder (the examples write under ~). `set -e` stops a
 * block at the first command that fails, named on stderr; a count of `bulwark` runs checks none was
 * skipped.
 */
import { spawn } from "node:child_process";
import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { exampleEnvironment } from "../emulator/environment.ts";
import { seedSampleWorld } from "../emulator/seed.ts";
import { startAzureEmulator, type RunningAzureEmulator } from "../emulator/server.ts";
import { trackChild } from "../support/cleanup.ts";
import { CLI } from "../support/cli.ts";
import { tempFolder } from "./vaults.ts";

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../README.md");
/** The info string that marks a README block as run by this test. */
const MARKER = "sh test";

/** Each marked block's text, with the heading it sits under (for the test's title). */
export function markedBlocks(readme: string): { heading: string; script: string }[] {
  const blocks: { heading: string; script: string }[] = [];
  let heading = "";
  const lines = readme.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].startsWith("#")) heading = lines[i].replace(/^#+\s*/, "");
    if (lines[i].trim() !== "```" + MARKER) continue;
    const end = lines.indexOf("```", i + 1);
    if (end < 0) throw new Error(`README: the \`\`\`${MARKER} block at line ${i + 1} is not closed`);
    blocks.push({ heading, script: lines.slice(i + 1, end).join("\n") });
    i = end;
  }
  return blocks;
}

/** How many times a script runs `bulwark` (at a line's start or in `$(…)`). */
function bulwarkRuns(script: string): number {
  return [...script.matchAll(/(^|\$\()bulwark /gm)].length;
}

function runBash(script: string, env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // Each command that fails is named (ERR trap) before set -e stops the block.
  const prelude = "set -e -o pipefail\ntrap 'echo \"README example failed (exit $?): $BASH_COMMAND\" >&2' ERR\n";
  const child = trackChild(spawn("bash", ["--norc", "--noprofile", "-c", prelude + script], { env, cwd, stdio: ["ignore", "pipe", "pipe"] }));
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const blocks = markedBlocks(await readFile(README, "utf8"));

describe("README's examples", () => {
  let emulator: RunningAzureEmulator;
  let env: NodeJS.ProcessEnv;
  let home: string;
  let log: string;

  beforeAll(async () => {
    emulator = await startAzureEmulator({ azurite: true, lro: { retryAfterSeconds: 0, pollsBeforeDone: 1 } });
    const sample = await seedSampleWorld(emulator);
    home = await tempFolder("readme-home");
    const bin = await tempFolder("readme-bin");
    log = path.join(bin, "runs");
    // `bulwark` as the README's reader has it: the real command, each run counted.
    await writeFile(path.join(bin, "bulwark"), `#!/bin/sh\necho run >> '${log}'\nexec '${process.execPath}' '${CLI}' "$@"\n`);
    await chmod(path.join(bin, "bulwark"), 0o755);
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(BULWARK_|AZURE_)/.test(name) || name === "BULWARK_TEST_SCRYPT_N"));
    env = { ...inherited, ...(await exampleEnvironment(emulator, sample)), HOME: home, PATH: `${bin}:${process.env.PATH}` };
  }, 120_000);

  afterAll(async () => {
    await emulator?.stop();
  });

  test("README has blocks marked `sh test`, and each runs bulwark", () => {
    expect(blocks.length).toBeGreaterThanOrEqual(2);
    for (const block of blocks) expect(bulwarkRuns(block.script)).toBeGreaterThan(0);
  });

  test.each(blocks.map((block, index) => [index + 1, block.heading, block] as const))("block %i under \"%s\": every command succeeds", async (_n, _heading, block) => {
    await writeFile(log, "");
    const result = await runBash(block.script, env, home);
    expect(result.stderr.match(/^README example failed.*$/m)?.[0] ?? "", result.stderr).toBe("");
    expect(result.code, result.stderr).toBe(0);
    expect((await readFile(log, "utf8")).split("\n").filter(Boolean)).toHaveLength(bulwarkRuns(block.script));
  });
});
