/**
 * Runs one command and measures it: wall time, and peak resident memory of its whole process tree.
 *
 * Memory comes from two sources and the larger is reported: polling /proc every 50 ms for the sum
 * of the tree's RSS (sees helper processes and worker pools, may miss a peak shorter than the
 * interval), and GNU time's %M (the kernel's exact high-water mark, but of the largest single
 * process, not the sum).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";

export interface CommandSpec {
  command: string;
  args: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface Measurement {
  seconds: number;
  /** max(polled tree RSS sum, GNU time %M), bytes. */
  peakRssBytes: number;
  polledTreePeakRssBytes: number;
  /** Undefined when GNU time is not available. */
  gnuTimeMaxRssBytes: number | undefined;
  exitCode: number;
  stdout: string;
  stderr: string;
  /** 1-minute load average when the step started: a hint of how noisy the timing was. */
  loadAverageAtStart: number;
}

const GNU_TIME = "/usr/bin/time";
const POLL_MS = 50;
const STDOUT_LIMIT = 8 << 20;
const STDERR_LIMIT = 64 << 10;

/** True when /usr/bin/time is GNU time (supports -f and -o). */
export function hasGnuTime(): boolean {
  if (!existsSync(GNU_TIME)) return false;
  const probe = spawnSync(GNU_TIME, ["-f", "%M", "true"], { encoding: "utf8" });
  return probe.status === 0 && /^\d+\s*$/.test(probe.stderr.trim().split("\n").pop() ?? "");
}

const pageSize = 4096;

async function rssOf(pid: number): Promise<number> {
  try {
    const statm = await readFile(`/proc/${pid}/statm`, "utf8");
    return Number(statm.split(" ")[1]) * pageSize;
  } catch {
    return 0; // exited between listing and reading
  }
}

async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return children;
  }
  for (const task of tasks) {
    try {
      const text = await readFile(`/proc/${pid}/task/${task}/children`, "utf8");
      for (const part of text.trim().split(/\s+/)) if (part !== "") children.push(Number(part));
    } catch {
      // task gone
    }
  }
  return children;
}

/** Sum of RSS over the descendants of `root` (not `root` itself when `excludeRoot`). */
async function treeRss(root: number, excludeRoot: boolean): Promise<number> {
  let total = excludeRoot ? 0 : await rssOf(root);
  const pending = await childrenOf(root);
  const seen = new Set<number>();
  while (pending.length > 0) {
    const pid = pending.pop()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    total += await rssOf(pid);
    pending.push(...(await childrenOf(pid)));
  }
  return total;
}

function appendLimited(current: string, chunk: Buffer, limit: number): string {
  const next = current + chunk.toString("utf8");
  return next.length > limit ? next.slice(next.length - limit) : next;
}

export async function measure(spec: CommandSpec, useGnuTime: boolean): Promise<Measurement> {
  const timeDir = useGnuTime ? await mkdtemp(join(tmpdir(), "bulwark-bench-")) : undefined;
  const timeFile = timeDir === undefined ? undefined : join(timeDir, "maxrss");
  const command = timeFile === undefined ? spec.command : GNU_TIME;
  const args = timeFile === undefined ? spec.args : ["-o", timeFile, "-f", "%M", spec.command, ...spec.args];
  const loadAverageAtStart = loadavg()[0];

  const started = performance.now();
  const child = spawn(command, args, { cwd: spec.cwd, env: spec.env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout = appendLimited(stdout, chunk, STDOUT_LIMIT)));
  child.stderr.on("data", (chunk: Buffer) => (stderr = appendLimited(stderr, chunk, STDERR_LIMIT)));

  let polledPeak = 0;
  let polling = true;
  const poller = (async () => {
    while (polling && child.pid !== undefined) {
      polledPeak = Math.max(polledPeak, await treeRss(child.pid, timeFile !== undefined));
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  })();

  const exitCode = await new Promise<number>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve(code ?? (signal === null ? 1 : 128)));
  });
  const seconds = (performance.now() - started) / 1000;
  polling = false;
  await poller;

  let gnuTimeMaxRssBytes: number | undefined;
  if (timeFile !== undefined) {
    const text = await readFile(timeFile, "utf8").catch(() => "");
    // GNU time writes "Command exited with non-zero status N" before the figure on failure.
    const figure = text.trim().split("\n").pop() ?? "";
    if (/^\d+$/.test(figure)) gnuTimeMaxRssBytes = Number(figure) * 1024;
    await rm(timeDir!, { recursive: true, force: true });
  }
  return {
    seconds,
    peakRssBytes: Math.max(polledPeak, gnuTimeMaxRssBytes ?? 0),
    polledTreePeakRssBytes: polledPeak,
    gnuTimeMaxRssBytes,
    exitCode,
    stdout,
    stderr,
    loadAverageAtStart,
  };
}

/** Reads a file once, so every tool starts a step with the same warm page cache. */
export async function readThrough(path: string): Promise<number> {
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) bytes += (chunk as Buffer).length;
  return bytes;
}

/** Reads every file under `dir` once (warms the page cache before a restore). */
export async function readTreeThrough(dir: string): Promise<number> {
  let bytes = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) bytes += await readThrough(join(entry.parentPath, entry.name));
  }
  return bytes;
}

/** Bytes of all regular files under `dir` (like `du -sb`, without directory entries). */
export async function treeBytes(dir: string): Promise<number> {
  let bytes = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) bytes += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return bytes;
}

/** Paths of regular files under `dir` whose name is `name`. */
export async function findFiles(dir: string, name: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name === name) found.push(join(entry.parentPath, entry.name));
  }
  return found;
}
