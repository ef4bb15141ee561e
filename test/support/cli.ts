/** Runs the real `bulwark` command in a child process, as a user or a script would. */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { trackChild } from "./cleanup.ts";

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../runtime/cli/main.ts");
export const PASSPHRASE = "test passphrase: correct horse battery staple";

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  // Tracked: killed after the test (or file) that started it if it is still running then.
  return trackChild(
    spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, BULWARK_PASSPHRASE: PASSPHRASE, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return finished(startCli(args, env));
}

export function finished(child: ChildProcess): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => (stdout += d));
  child.stderr?.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Runs the command and parses its --json output; fails loudly with stderr when it did not succeed. */
export async function runJson<T = Record<string, unknown>>(args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> {
  const result = await runCli([...args, "--json"], env);
  if (result.code !== 0) throw new Error(`bulwark ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}
