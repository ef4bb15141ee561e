/**
 * Bulwark itself, through its command line (runtime/cli/main.ts) run by the project's Node 24,
 * directly rather than through npx so no wrapper process is counted in its memory. The code run is
 * a copy of runtime/ taken when the run starts (under .bench/code/<digest>/).
 */
import { createHash } from "node:crypto";
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { CommandSpec } from "../measure.ts";
import { lastJsonLine, probe } from "./tool.ts";
import type { Detection, Tool, ToolWorkspace } from "./tool.ts";

export class Bulwark implements Tool {
  readonly name = "bulwark" as const;
  readonly #projectDir: string;
  readonly #frozenRoot: string;
  readonly #node: string;
  /** The CLI entry that the steps run: inside the frozen copy once detect() has made it. */
  #main: string;

  /**
   * @param frozenRoot where detect() copies runtime/, so every step of the run (and every size of a
   *   multi-size run) runs the same code even while others edit the working tree.
   */
  constructor(projectDir: string, frozenRoot: string) {
    this.#projectDir = projectDir;
    this.#frozenRoot = frozenRoot;
    this.#main = join(projectDir, "runtime/cli/main.ts");
    const major = Number(process.versions.node.split(".")[0]);
    this.#node = major >= 24 ? process.execPath : join(projectDir, "node_modules/.bin/node");
  }

  detect(): Detection {
    if (!existsSync(this.#main)) {
      return {
        available: false,
        reason: `${this.#main} does not exist yet`,
        howToInstall: "check out a Bulwark version with the CLI and run `npm ci`",
      };
    }
    const runtimeDir = join(this.#projectDir, "runtime");
    const digest = treeDigest(runtimeDir);
    const frozen = join(this.#frozenRoot, digest);
    if (!existsSync(join(frozen, "runtime/cli/main.ts"))) {
      const partial = `${frozen}.partial`;
      rmSync(partial, { recursive: true, force: true });
      mkdirSync(partial, { recursive: true });
      cpSync(runtimeDir, join(partial, "runtime"), { recursive: true });
      // "type": "module" and package resolution as in the project.
      copyFileSync(join(this.#projectDir, "package.json"), join(partial, "package.json"));
      symlinkSync(join(this.#projectDir, "node_modules"), join(partial, "node_modules"));
      rmSync(frozen, { recursive: true, force: true });
      renameSync(partial, frozen);
    }
    this.#main = join(frozen, "runtime/cli/main.ts");
    const help = probe(this.#node, [this.#main, "--help"]);
    if (help === undefined) {
      return { available: false, reason: "`bulwark --help` failed", howToInstall: "run `npm ci` in the project" };
    }
    const reported = probe(this.#node, [this.#main, "--version"]);
    const commit = probe("git", ["-C", this.#projectDir, "rev-parse", "--short", "HEAD"]);
    const dirty = probe("git", ["-C", this.#projectDir, "status", "--porcelain", "--", "runtime"]);
    const version = [
      reported?.split("\n")[0] ?? "bulwark",
      commit === undefined ? "" : `git ${commit}${dirty ? " + uncommitted changes in runtime/" : ""}`,
      // Several people change runtime/ at once: the content digest says exactly which code ran.
      `runtime/ sha256 ${digest}`,
      `node ${this.#node === process.execPath ? process.versions.node : "24"}`,
    ]
      .filter((part) => part !== "")
      .join(", ");
    return { available: true, version };
  }

  settings(): Record<string, string> {
    return {
      command: "node runtime/cli/main.ts (CLI defaults), from a copy of runtime/ frozen at the start of the run",
      source: "raw disk image (*.img, fixed-size block map)",
      // Read from runtime/engine/vault.ts DEFAULT_CONFIG when this was written; the vault records its own.
      defaults: "64 KiB blocks, zstd level 3, AES-256-GCM, 32 MiB packs, scrypt N=2^17 for the passphrase (as of writing)",
    };
  }

  #env(ws: ToolWorkspace): NodeJS.ProcessEnv {
    return { ...process.env, BULWARK_PASSPHRASE: ws.passphrase };
  }

  init(ws: ToolWorkspace): CommandSpec {
    return { command: this.#node, args: [this.#main, "init", "--vault", ws.repoDir], env: this.#env(ws), cwd: ws.workDir };
  }

  backup(ws: ToolWorkspace): CommandSpec {
    return {
      command: this.#node,
      args: [this.#main, "backup", ws.sourcePath, "--vault", ws.repoDir, "--json"],
      env: this.#env(ws),
      cwd: ws.workDir,
    };
  }

  parseBackupReport(stdout: string): Record<string, unknown> {
    const report = lastJsonLine(stdout, (value) => "id" in value);
    if (report === undefined) return {};
    return {
      pointId: report.id,
      bytesProcessed: report.bytesRead,
      bytesNew: report.bytesNew,
      bytesAdded: report.bytesStored,
      ...Object.fromEntries(Object.entries(report).filter(([key]) => !["id", "bytesRead", "bytesNew", "bytesStored"].includes(key))),
    };
  }

  restore(ws: ToolWorkspace, _label: string, restoreDir: string): CommandSpec {
    return {
      command: this.#node,
      args: [this.#main, "restore", "latest", "--vault", ws.repoDir, "--to", join(restoreDir, "disk.img")],
      env: this.#env(ws),
      cwd: ws.workDir,
    };
  }

  async restoredPath(_ws: ToolWorkspace, restoreDir: string): Promise<string> {
    return join(restoreDir, "disk.img");
  }
}

/** A short digest of every file under `dir` (paths and contents, in a stable order). */
function treeDigest(dir: string): string {
  const hash = createHash("sha256");
  const files = readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
  for (const file of files) hash.update(`${file.slice(dir.length)}\0`).update(readFileSync(file)).update("\0");
  return hash.digest("hex").slice(0, 12);
}
