/**
 * The local disk image case: one tool backs up version 1 of the image, then version 2 at the same
 * path, then restores the second point, which must be byte-identical to version 2.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, rm, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { sha256File } from "./image.ts";
import type { GeneratedImages } from "./image.ts";
import { measure, readThrough, readTreeThrough, treeBytes } from "./measure.ts";
import type { CommandSpec, Measurement } from "./measure.ts";
import type { Tool, ToolWorkspace } from "./tools/tool.ts";

export type StepName = "init" | "firstBackup" | "secondBackup" | "restore";

export interface StepResult {
  seconds: number;
  /** Image size / seconds; undefined for init. */
  throughputBytesPerSecond?: number;
  peakRssBytes: number;
  polledTreePeakRssBytes: number;
  gnuTimeMaxRssBytes?: number;
  loadAverageAtStart: number;
  /** What the tool itself reported, where it reports anything. */
  report?: Record<string, unknown>;
}

export interface ToolRun {
  steps: Partial<Record<StepName, StepResult>>;
  vaultBytes?: number;
  /** Highest peak RSS over all steps. */
  peakRssBytes?: number;
  restoredSha256?: string;
  restoreIdentical?: boolean;
  error?: string;
}

export interface CaseOptions {
  workRoot: string;
  useGnuTime: boolean;
  keep: boolean;
  log: (line: string) => void;
}

export class StepFailed extends Error {}

/** Runs one measured step; a non-zero exit throws StepFailed with the command and its output's tail. */
export async function runStep(step: string, spec: CommandSpec, options: CaseOptions): Promise<Measurement> {
  const measured = await measure(spec, options.useGnuTime);
  if (measured.exitCode !== 0) {
    const tail = measured.stderr.trim().split("\n").slice(-8).join("\n") || measured.stdout.trim().split("\n").slice(-8).join("\n");
    throw new StepFailed(`${step}: \`${[spec.command, ...spec.args].join(" ")}\` exited ${measured.exitCode}:\n${tail}`);
  }
  return measured;
}

export function stepResult(measured: Measurement, imageBytes: number | undefined, report?: Record<string, unknown>): StepResult {
  return {
    seconds: measured.seconds,
    throughputBytesPerSecond: imageBytes === undefined ? undefined : imageBytes / measured.seconds,
    peakRssBytes: measured.peakRssBytes,
    polledTreePeakRssBytes: measured.polledTreePeakRssBytes,
    gnuTimeMaxRssBytes: measured.gnuTimeMaxRssBytes,
    loadAverageAtStart: measured.loadAverageAtStart,
    report,
  };
}

/** Points `sourcePath` at `imagePath` without copying (a hard link; same path, new inode). */
async function placeSource(imagePath: string, sourcePath: string): Promise<void> {
  await unlink(sourcePath).catch(() => undefined);
  await link(imagePath, sourcePath);
}

export async function runImageCase(tool: Tool, images: GeneratedImages, options: CaseOptions): Promise<ToolRun> {
  const workDir = resolve(options.workRoot, tool.name);
  const ws: ToolWorkspace = {
    workDir,
    repoDir: join(workDir, "repo"),
    cacheDir: join(workDir, "cache"),
    sourcePath: join(workDir, "src", "disk.img"),
    passphrase: randomBytes(24).toString("base64url"),
  };
  const restoreDir = join(workDir, "restore");
  const run: ToolRun = { steps: {} };
  const size = images.sizeBytes;
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
  await rm(workDir, { recursive: true, force: true });
  await mkdir(join(workDir, "src"), { recursive: true });
  await mkdir(ws.cacheDir, { recursive: true });
  await mkdir(restoreDir, { recursive: true });
  try {
    options.log(`${tool.name}: init`);
    run.steps.init = stepResult(await runStep("init", tool.init(ws), options), undefined);

    await placeSource(images.version1Path, ws.sourcePath);
    await readThrough(ws.sourcePath);
    options.log(`${tool.name}: first backup (version 1)`);
    let measured = await runStep("firstBackup", tool.backup(ws, "v1"), options);
    run.steps.firstBackup = stepResult(measured, size, tool.parseBackupReport(measured.stdout));
    options.log(`${tool.name}:   ${measured.seconds.toFixed(1)} s, peak ${mib(measured.peakRssBytes)} MiB`);

    await placeSource(images.version2Path, ws.sourcePath);
    await readThrough(ws.sourcePath);
    options.log(`${tool.name}: second backup (version 2, same path)`);
    measured = await runStep("secondBackup", tool.backup(ws, "v2"), options);
    run.steps.secondBackup = stepResult(measured, size, tool.parseBackupReport(measured.stdout));
    options.log(`${tool.name}:   ${measured.seconds.toFixed(1)} s, peak ${mib(measured.peakRssBytes)} MiB`);

    run.vaultBytes = await treeBytes(ws.repoDir);
    options.log(`${tool.name}:   vault ${mib(run.vaultBytes)} MiB`);

    await readTreeThrough(ws.repoDir);
    options.log(`${tool.name}: restore of the second point`);
    measured = await runStep("restore", tool.restore(ws, "v2", restoreDir), options);
    run.steps.restore = stepResult(measured, size);
    options.log(`${tool.name}:   ${measured.seconds.toFixed(1)} s, peak ${mib(measured.peakRssBytes)} MiB`);

    const restored = await tool.restoredPath(ws, restoreDir);
    run.restoredSha256 = await sha256File(restored);
    run.restoreIdentical = run.restoredSha256 === images.version2Sha256;
    options.log(`${tool.name}:   restored image ${run.restoreIdentical ? "is byte-identical to" : "DIFFERS from"} version 2 (sha256)`);
  } catch (error) {
    if (!(error instanceof StepFailed)) throw error;
    run.error = error.message;
    options.log(`${tool.name}: FAILED ${error.message}`);
  } finally {
    const peaks = Object.values(run.steps).map((step) => step.peakRssBytes);
    if (peaks.length > 0) run.peakRssBytes = Math.max(...peaks);
    await rm(restoreDir, { recursive: true, force: true });
    if (!options.keep) await rm(workDir, { recursive: true, force: true });
  }
  return run;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * Combines several rounds of one tool into one figure per step: the median time (robust against a
 * neighbour's burst of load on a shared machine), the highest memory, and the restore counted as
 * identical only if it was in every round. A failed round fails the whole.
 */
export function combineRounds(rounds: ToolRun[]): ToolRun {
  if (rounds.length === 1) return rounds[0];
  const failed = rounds.find((round) => round.error !== undefined);
  if (failed !== undefined) return { ...failed, error: `round ${rounds.indexOf(failed) + 1}: ${failed.error}` };
  const steps: ToolRun["steps"] = {};
  for (const step of ["init", "firstBackup", "secondBackup", "restore"] as StepName[]) {
    const results = rounds.map((round) => round.steps[step]).filter((result) => result !== undefined);
    if (results.length === 0) continue;
    const seconds = median(results.map((result) => result.seconds));
    const throughputs = results.map((result) => result.throughputBytesPerSecond).filter((t) => t !== undefined);
    steps[step] = {
      seconds,
      throughputBytesPerSecond: throughputs.length === 0 ? undefined : median(throughputs),
      peakRssBytes: Math.max(...results.map((result) => result.peakRssBytes)),
      polledTreePeakRssBytes: Math.max(...results.map((result) => result.polledTreePeakRssBytes)),
      gnuTimeMaxRssBytes: results.every((result) => result.gnuTimeMaxRssBytes !== undefined)
        ? Math.max(...results.map((result) => result.gnuTimeMaxRssBytes!))
        : undefined,
      loadAverageAtStart: median(results.map((result) => result.loadAverageAtStart)),
      report: results[results.length - 1].report,
    };
  }
  return {
    steps,
    vaultBytes: median(rounds.map((round) => round.vaultBytes ?? 0)),
    peakRssBytes: Math.max(...rounds.map((round) => round.peakRssBytes ?? 0)),
    restoredSha256: rounds[rounds.length - 1].restoredSha256,
    restoreIdentical: rounds.every((round) => round.restoreIdentical === true),
  };
}
