/**
 * Bulwark itself, through its command line (runtime/cli/main.ts) run by the project's Node 24,
 * directly rather than through npx so no wrapper process is counted in its memory.
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { CommandSpec } from "../measure.ts";
import { lastJsonLine, probe } from "./tool.ts";
import type { Detection, Tool, ToolWorkspace } from "./tool.ts";

export class Bulwark implements Tool {
  readonly name = "bulwark" as const;
  readonly #projectDir: string;
  readonly #node: string;
  readonly #main: string;

  constructor(projectDir: string) {
    this.#projectDir = projectDir;
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
      // Several people change runtime/ at once: the content hash says exactly which code ran.
      `runtime/ sha256 ${runtimeDigest(join(this.#projectDir, "runtime"))}`,
      `node ${this.#node === process.execPath ? process.versions.node : "24"}`,
    ]
      .filter((part) => part !== "")
      .join(", ");
    return { available: true, version };
  }

  settings(): Record<string, string> {
    return {
      command: "node runtime/cli/main.ts (CLI defaults)",
      source: "raw disk image (*.img, fixed-size block map)",
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
function runtimeDigest(dir: string): string {
  const hash = createHash("sha256");
  const files = readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
  for (const file of files) hash.update(`${file.slice(dir.length)}\0`).update(readFileSync(file)).update("\0");
  return hash.digest("hex").slice(0, 12);
}
