/**
 * What the benchmark needs from a backup tool: how to find it, and the commands for each step.
 * Each tool is a small adapter; the steps, timing and checks are the same for all of them.
 */
import { spawnSync } from "node:child_process";
import type { CommandSpec } from "../measure.ts";

export type ToolName = "bulwark" | "restic" | "borg";
export const TOOL_NAMES: readonly ToolName[] = ["bulwark", "restic", "borg"];

export type Detection =
  | { available: true; version: string }
  | { available: false; reason: string; howToInstall: string };

/** One tool's folders for one run; the source path is the same for both versions. */
export interface ToolWorkspace {
  /** Everything of this tool's run lives under here. */
  workDir: string;
  /** The repository / vault folder whose size is the vault size. */
  repoDir: string;
  /** The tool's local cache and config folder, kept out of $HOME and out of the vault size. */
  cacheDir: string;
  /** Absolute path of the image being backed up (version 1, then version 2, same path). */
  sourcePath: string;
  /** Passphrase for the repository's encryption, fresh for every run, passed only by environment. */
  passphrase: string;
}

export interface Tool {
  readonly name: ToolName;
  detect(): Detection;
  /** Settings that matter for a fair comparison, recorded in the results. */
  settings(): Record<string, string>;
  init(ws: ToolWorkspace): CommandSpec;
  backup(ws: ToolWorkspace, label: string): CommandSpec;
  /** What the tool itself reports about a backup (bytes added, ...), from its output. */
  parseBackupReport(stdout: string): Record<string, unknown>;
  restore(ws: ToolWorkspace, label: string, restoreDir: string): CommandSpec;
  /** Where the restored image ended up under `restoreDir`. */
  restoredPath(ws: ToolWorkspace, restoreDir: string): Promise<string>;
}

/** Runs `command args` and returns its trimmed stdout, or undefined if it cannot run. */
export function probe(command: string, args: string[]): string | undefined {
  const result = spawnSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 });
  if (result.error !== undefined || result.status !== 0) return undefined;
  return `${result.stdout}`.trim() || `${result.stderr}`.trim();
}

/** The last line of `stdout` that parses as a JSON object satisfying `accept`. */
export function lastJsonLine(stdout: string, accept: (value: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
  const lines = stdout.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i].trim();
    if (!line.startsWith("{")) continue;
    try {
      const value = JSON.parse(line) as unknown;
      if (typeof value === "object" && value !== null && accept(value as Record<string, unknown>)) {
        return value as Record<string, unknown>;
      }
    } catch {
      // not JSON; keep looking
    }
  }
  return undefined;
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The one path in `found`, or an error saying what the restore left behind. */
export function onlyFile(found: string[], dir: string): string {
  if (found.length !== 1) throw new Error(`expected one restored image under ${dir}, found ${found.length}`);
  return found[0];
}
