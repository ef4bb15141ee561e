/**
 * `bulwark completion bash`: the script the real command prints, loaded into a real bash and asked
 * as bash asks it (COMP_WORDS, COMP_CWORD, then _bulwark): commands, subcommands, options, option
 * values, and file names where an option takes a path. zsh is not installed here: the zsh script is
 * checked with `zsh -n` only where zsh exists.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import { commands } from "../../runtime/cli/commands.ts";
import { runCli } from "../support/cli.ts";
import { tempFolder } from "./vaults.ts";

const hasZsh = spawnSync("sh", ["-c", "command -v zsh"]).status === 0;

describe("bulwark completion", () => {
  let script: string;
  let folder: string;

  beforeAll(async () => {
    const printed = await runCli(["completion", "bash"]);
    expect(printed.code, printed.stderr).toBe(0);
    folder = await tempFolder("completion");
    script = path.join(folder, "bulwark.bash");
    await writeFile(script, printed.stdout);
    await mkdir(path.join(folder, "vaults"));
    await writeFile(path.join(folder, "pass.txt"), "x");
  }, 60_000);

  /** What bash's completion offers for the words typed so far (the last one being completed). */
  function complete(...typed: string[]): string[] {
    const quoted = typed.map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(" ");
    const out = execFileSync("bash", ["--norc", "-c", `source "$1"; COMP_WORDS=(bulwark ${quoted}); COMP_CWORD=${typed.length}; _bulwark; printf '%s\\n' "\${COMPREPLY[@]}"`, "bash", script], {
      cwd: folder,
      encoding: "utf8",
    });
    return out.split("\n").filter(Boolean).sort();
  }

  test("bulwark ba completes to backup, and an empty word lists every command", () => {
    expect(complete("ba")).toEqual(["backup"]);
    expect(complete("")).toEqual([...Object.keys(commands), "--help", "--version", "help"].sort());
  });

  test("bulwark backup --va completes to --vault; every option of a command is offered", () => {
    expect(complete("backup", "--va")).toEqual(["--vault"]);
    expect(complete("restore", "--")).toEqual([...Object.keys(commands.restore.options).map((o) => `--${o}`), "--help"].sort());
  });

  test("subcommands come from the usage lines: agent w → worker, key r → remove, rotate", () => {
    expect(complete("agent", "w")).toEqual(["worker"]);
    expect(complete("key", "r")).toEqual(["remove", "rotate"]);
    expect(complete("help", "res")).toEqual(["restore"]);
  });

  test("a path option completes file names, a choice option its values, a free value nothing", () => {
    expect(complete("backup", "x.img", "--vault", "va")).toEqual(["vaults"]);
    expect(complete("points", "--passphrase-file", "pa")).toEqual(["pass.txt"]);
    expect(complete("backup", "x.img", "--as", "")).toEqual(["disk", "file"]);
    expect(complete("forget", "--keep-last", "")).toEqual([]);
  });

  test("an unknown shell is one line naming the two, exit 2", async () => {
    const result = await runCli(["completion", "fish"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('bulwark completion: give the shell: bulwark completion bash|zsh (not "fish")\n');
  });

  test.skipIf(!hasZsh)("the zsh script parses (zsh -n)", async () => {
    const zsh = await runCli(["completion", "zsh"]);
    const file = path.join(folder, "bulwark.zsh");
    await writeFile(file, zsh.stdout);
    expect(spawnSync("zsh", ["-n", file]).status).toBe(0);
  });
});
