/**
 * The item-level restore case (issue 11, "Speed"): one file and one large folder out of a big disk
 * point, against the alternative of restoring the whole disk and loop-mounting it.
 *
 * The disk: a sparse image (64 GiB by default) with a GPT made by sgdisk and one ext4 partition
 * spanning it, made by mke2fs -d from a folder holding a 20 MiB pseudo-random file, a folder of
 * 10,000 small text files and some GiB of other files (pseudo-random and text-like, so the point
 * is not mostly zeros). It is cached under .bench/images/ like the image case's images.
 *
 * Setup (timed, not a target): `bulwark init` and `bulwark backup` of the image. Measured:
 *   1. `bulwark restore POINT --path /part1/<file> --to DIR --json`: wall time, bytesRead (bytes
 *      fetched from the vault) against the disk's size and the point's stored size, peak RSS;
 *   2. `bulwark ls POINT /part1/<folder> --json` of the 10,000-entry folder, and `bulwark ls POINT`
 *      of the root (process start, key derivation, vault and point open, partition table), so the
 *      listing's own share is their difference;
 *   3. the alternative: `bulwark restore POINT --to disk.img` (the whole disk), `mount -o
 *      loop,ro,offset=` of its partition, `cp` of the file, umount.
 * restic is no yardstick here: `restic dump` and `restic restore --include` address files of a
 * snapshot, and a disk image is one file to restic, so it has no item-level restore from it either.
 */
import { spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { cpus, loadavg, platform, release, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { markdownTable } from "./disk-case.ts";
import { Keystream, SmallRng, fillText, formatBytes, sha256File } from "./image.ts";
import { StepFailed, runStep, stepResult } from "./image-case.ts";
import type { CaseOptions, StepResult } from "./image-case.ts";
import { hasGnuTime, readTreeThrough, treeBytes } from "./measure.ts";
import type { CommandSpec, Measurement } from "./measure.ts";
import { renderTargets } from "./report.ts";
import type { TargetResult } from "./report.ts";
import type { Bulwark } from "./tools/bulwark.ts";
import type { ToolWorkspace } from "./tools/tool.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SECTOR = 512;
/** Bumped whenever the image's content or layout changes, so a cached image is not reused. */
const ITEMS_GENERATOR_VERSION = 1;
export const ITEMS_DEFAULT_SIZE = 64 * GiB;
export const ITEMS_MIN_SIZE = 512 * MiB;
/** The partition starts at 1 MiB (sgdisk's default alignment) and leaves 1 MiB at the end for the backup GPT. */
const PARTITION_START = 1 * MiB;
const TARGET_FILE_BYTES = 20 * MiB;
const FOLDER_ENTRIES = 10_000;
const SMALL_FILE_BYTES = { min: 200, max: 4000 };
const OTHER_FILE_BYTES = 64 * MiB;
/** Other data at the default size; a quarter of the disk when that is less (small trial runs). */
const OTHER_BYTES_MAX = 2 * GiB;
const PIECE = 4 * MiB;
/** Runs of each measured command; the median time is reported (the machine is shared and noisy). */
const RESTORE_REPEATS = 3;
const LIST_REPEATS = 5;
export const READ_TARGET_FRACTION = 0.01;
export const LIST_TARGET_SECONDS = 1;

export interface ItemsImagePlan {
  sizeBytes: number;
  partitionStart: number;
  partitionBytes: number;
  /** Paths inside the filesystem (from its root). */
  targetFile: { path: string; bytes: number };
  folder: { path: string; entries: number };
  otherFiles: Array<{ path: string; bytes: number; content: "random" | "text" }>;
  otherBytes: number;
}

/** The layout of the disk for a size: pure, so it can be checked without making the image. */
export function planItemsImage(sizeBytes: number): ItemsImagePlan {
  if (!Number.isInteger(sizeBytes) || sizeBytes < ITEMS_MIN_SIZE || sizeBytes % MiB !== 0) {
    throw new Error(`the items case needs a disk of at least ${formatBytes(ITEMS_MIN_SIZE)}, a whole number of MiB; got ${sizeBytes} bytes`);
  }
  const partitionBytes = sizeBytes - PARTITION_START - MiB;
  const otherBytes = Math.min(OTHER_BYTES_MAX, Math.floor(sizeBytes / 4 / OTHER_FILE_BYTES) * OTHER_FILE_BYTES);
  const otherFiles: ItemsImagePlan["otherFiles"] = [];
  for (let i = 0; i < otherBytes / OTHER_FILE_BYTES; i++) {
    const content = i % 2 === 0 ? "random" : "text";
    const name = content === "random" ? `blob-${String(i).padStart(3, "0")}.bin` : `log-${String(i).padStart(3, "0")}.txt`;
    otherFiles.push({ path: `data/${name}`, bytes: OTHER_FILE_BYTES, content });
  }
  return {
    sizeBytes,
    partitionStart: PARTITION_START,
    partitionBytes,
    targetFile: { path: "srv/reports/ledger-2026-q3.bin", bytes: TARGET_FILE_BYTES },
    folder: { path: "srv/mail", entries: FOLDER_ENTRIES },
    otherFiles,
    otherBytes,
  };
}

export interface ItemsImage {
  path: string;
  plan: ItemsImagePlan;
  seed: string;
  targetSha256: string;
  /** Bytes the image holds on disk (its allocated blocks): what is not a hole. */
  allocatedBytes: number;
  fromCache: boolean;
}

function run(tool: string, args: string[]): string {
  const result = spawnSync(tool, args, { encoding: "utf8", maxBuffer: 16 * MiB });
  if (result.error) throw new Error(`${tool} is needed by the items case (apt-get install -y e2fsprogs gdisk mount): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${result.status}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** Writes `bytes` of pseudo-random or text-like content, a piece at a time; stream ids are unique per file. */
async function writeContent(path: string, bytes: number, content: "random" | "text", keystream: Keystream, fileIndex: number): Promise<void> {
  const piece = Buffer.alloc(Math.min(PIECE, bytes));
  const randomness = Buffer.alloc(piece.length);
  const file = await open(path, "w");
  try {
    for (let at = 0, n = 0; at < bytes; at += piece.length, n++) {
      const part = piece.subarray(0, Math.min(piece.length, bytes - at));
      const stream = fileIndex * 1_000_000 + n;
      if (content === "random") keystream.fill(part, stream);
      else fillText(part, keystream.fill(randomness.subarray(0, part.length), stream));
      await file.write(part, 0, part.length, at);
    }
  } finally {
    await file.close();
  }
}

/** The folder the ext4 filesystem is made from. */
async function makeSourceFolder(root: string, plan: ItemsImagePlan, seed: string): Promise<void> {
  const keystream = new Keystream(seed, "items");
  const rng = new SmallRng(seed, "items/small-files");
  await mkdir(join(root, dirname(plan.targetFile.path)), { recursive: true });
  await mkdir(join(root, plan.folder.path), { recursive: true });
  await mkdir(join(root, "data"), { recursive: true });
  await writeContent(join(root, plan.targetFile.path), plan.targetFile.bytes, "random", keystream, 0);
  for (let i = 0; i < plan.folder.entries; i++) {
    const name = `msg-${String(i).padStart(5, "0")}.eml`;
    await writeContent(join(root, plan.folder.path, name), rng.int(SMALL_FILE_BYTES.min, SMALL_FILE_BYTES.max), "text", keystream, 1 + i);
  }
  for (const [i, other] of plan.otherFiles.entries()) {
    await writeContent(join(root, other.path), other.bytes, other.content, keystream, 1 + plan.folder.entries + i);
  }
}

/**
 * Returns the case's disk image for (size, seed), making it under `cacheDir` unless it is there.
 * The metadata file is written last, so an interrupted build is redone.
 */
export async function ensureItemsImage(cacheDir: string, sizeBytes: number, seed: string, log: (line: string) => void): Promise<ItemsImage> {
  const plan = planItemsImage(sizeBytes);
  const stem = join(cacheDir, `items-${sizeBytes}-${seed}-g${ITEMS_GENERATOR_VERSION}`);
  const imagePath = `${stem}.img`;
  const metaPath = `${stem}.json`;
  const cached = await readFile(metaPath, "utf8").then(
    (text) => JSON.parse(text) as { targetSha256: string },
    () => undefined,
  );
  const size = await stat(imagePath).then((s) => s.size, () => undefined);
  if (cached !== undefined && size === sizeBytes) {
    return { path: imagePath, plan, seed, targetSha256: cached.targetSha256, allocatedBytes: (await stat(imagePath)).blocks * SECTOR, fromCache: true };
  }

  await rm(metaPath, { force: true });
  await mkdir(cacheDir, { recursive: true });
  const source = `${stem}.source`;
  const partial = `${stem}.img.partial`;
  await rm(source, { recursive: true, force: true });
  log(`items: making the ${formatBytes(sizeBytes)} disk (seed ${seed}): writing ${formatBytes(plan.otherBytes + plan.targetFile.bytes)} of files and a ${plan.folder.entries}-entry folder ...`);
  const started = performance.now();
  try {
    await makeSourceFolder(source, plan, seed);
    const targetSha256 = await sha256File(join(source, plan.targetFile.path));
    log(`items:   files written in ${((performance.now() - started) / 1000).toFixed(1)} s; mke2fs -d and sgdisk ...`);
    await rm(partial, { force: true });
    run("truncate", ["-s", String(sizeBytes), partial]);
    // The filesystem is made in place at the partition's offset, so the sparse disk is never copied.
    run("mke2fs", [
      "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "bench-root",
      "-E", `offset=${plan.partitionStart}`, "-d", source, partial, `${plan.partitionBytes / KiB}k`,
    ]);
    run("sgdisk", ["-n", `1:${plan.partitionStart / SECTOR}:+${plan.partitionBytes / KiB}K`, "-t", "1:8300", "-c", "1:root", partial]);
    await rename(partial, imagePath);
    await writeFile(metaPath, `${JSON.stringify({ generatorVersion: ITEMS_GENERATOR_VERSION, seed, plan, targetSha256 }, null, 2)}\n`);
    log(`items:   disk made in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return { path: imagePath, plan, seed, targetSha256, allocatedBytes: (await stat(imagePath)).blocks * SECTOR, fromCache: false };
  } finally {
    await rm(source, { recursive: true, force: true });
    await rm(partial, { force: true });
  }
}

export interface ItemsBenchSettings {
  sizeBytes: number;
  seed: string;
  outPath: string;
  imagesDir: string;
  keep: boolean;
  log: (line: string) => void;
}

/** A step with its CPU seconds (user + system), which a loaded machine stretches far less than wall time. */
export type CpuStep = StepResult & { cpuSeconds?: number };

export interface MeasuredCommand {
  /** Medians over the runs. */
  seconds: number;
  cpuSeconds?: number;
  runs: CpuStep[];
  peakRssBytes: number;
}

export interface ItemsCaseResult {
  backup?: { step: StepResult; report: Record<string, unknown>; vaultBytes: number };
  fileRestore?: MeasuredCommand & { bytesRead: number; bytesWritten: number; files: number; identical: boolean };
  listFolder?: MeasuredCommand & { entries: number };
  listRoot?: MeasuredCommand & { entries: number };
  alternative?: {
    restore: CpuStep;
    restoredAllocatedBytes: number;
    mountSeconds: number;
    copy: StepResult;
    umountSeconds: number;
    totalSeconds: number;
    identical: boolean;
  };
  error?: string;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function combined(runs: CpuStep[]): MeasuredCommand {
  const cpu = runs.map((r) => r.cpuSeconds).filter((c) => c !== undefined);
  return {
    seconds: median(runs.map((r) => r.seconds)),
    cpuSeconds: cpu.length === runs.length ? median(cpu) : undefined,
    runs,
    peakRssBytes: Math.max(...runs.map((r) => r.peakRssBytes)),
  };
}

/** Runs a step under GNU time (when there is one) for its CPU seconds as well. */
async function runCpuStep(step: string, spec: CommandSpec, options: CaseOptions): Promise<{ measured: Measurement; cpuSeconds?: number }> {
  if (!options.useGnuTime) return { measured: await runStep(step, spec, options) };
  const dir = await mkdtemp(join(tmpdir(), "bulwark-bench-cpu-"));
  try {
    const cpuFile = join(dir, "cpu");
    const measured = await runStep(step, { ...spec, command: "/usr/bin/time", args: ["-o", cpuFile, "-f", "%U %S", spec.command, ...spec.args] }, options);
    const [user, system] = ((await readFile(cpuFile, "utf8")).trim().split("\n").pop() ?? "").split(" ").map(Number);
    return { measured, cpuSeconds: Number.isFinite(user + system) ? user + system : undefined };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function cpuStep(run: { measured: Measurement; cpuSeconds?: number }, imageBytes: number | undefined, report?: Record<string, unknown>): CpuStep {
  return { ...stepResult(run.measured, imageBytes, report), cpuSeconds: run.cpuSeconds };
}

function lastJson<T>(stdout: string): T {
  const line = stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new StepFailed(`expected a JSON line from bulwark, got: ${line.slice(0, 200)}`);
  }
}

/** A command line of the mount, cp and umount steps, timed like the CLI's. */
function system(command: string, args: string[]): CommandSpec {
  return { command, args, env: process.env };
}

async function runCase(bulwark: Bulwark, image: ItemsImage, workDir: string, options: CaseOptions): Promise<ItemsCaseResult> {
  const { plan } = image;
  const log = options.log;
  const result: ItemsCaseResult = {};
  const ws: ToolWorkspace = {
    workDir,
    repoDir: join(workDir, "vault"),
    cacheDir: join(workDir, "cache"),
    sourcePath: image.path,
    passphrase: randomBytes(24).toString("base64url"),
  };
  await mkdir(ws.cacheDir, { recursive: true });
  // The Bulwark tool builds init, backup and restore; ls and restore --path use the same node and frozen CLI.
  const init = bulwark.init(ws);
  const cli = (args: string[]): CommandSpec => ({ ...init, args: [init.args[0], ...args, "--vault", ws.repoDir, "--json"] });
  const filePath = `/part1/${plan.targetFile.path}`;
  const folderPath = `/part1/${plan.folder.path}`;
  const mountPoint = join(workDir, "mnt");
  let mounted = false;
  try {
    await runStep("bulwark init", init, options);
    log(`items: bulwark backup of the ${formatBytes(plan.sizeBytes)} image (setup, not a target) ...`);
    const backup = await runStep("bulwark backup", bulwark.backup(ws), options);
    const backupReport = bulwark.parseBackupReport(backup.stdout);
    result.backup = { step: stepResult(backup, plan.sizeBytes, backupReport), report: backupReport, vaultBytes: await treeBytes(ws.repoDir) };
    log(`items:   ${backup.seconds.toFixed(1)} s; point stores ${formatBytes(Number(backupReport.bytesAdded ?? 0))}, vault ${formatBytes(result.backup.vaultBytes)}`);
    // Every measured step starts with the vault in the page cache, the full restore included.
    await readTreeThrough(ws.repoDir);

    log(`items: bulwark restore --path ${filePath} (${RESTORE_REPEATS} runs)`);
    const restores: CpuStep[] = [];
    let restoreReport = { files: 0, bytesWritten: 0, bytesRead: 0 };
    let identical = true;
    for (let i = 0; i < RESTORE_REPEATS; i++) {
      const to = join(workDir, `file-restore-${i}`);
      const restored = await runCpuStep("bulwark restore --path", cli(["restore", "latest", "--path", filePath, "--to", to]), options);
      restoreReport = lastJson(restored.measured.stdout);
      restores.push(cpuStep(restored, undefined, restoreReport));
      identical = identical && (await sha256File(join(to, filePath))) === image.targetSha256;
      await rm(to, { recursive: true, force: true });
    }
    result.fileRestore = { ...combined(restores), ...restoreReport, identical };

    log(`items: bulwark ls ${folderPath} and bulwark ls / (${LIST_REPEATS} runs each, alternating)`);
    const folderRuns: CpuStep[] = [];
    const rootRuns: CpuStep[] = [];
    let folderEntries = 0;
    let rootEntries = 0;
    for (let i = 0; i < LIST_REPEATS; i++) {
      const folder = await runCpuStep("bulwark ls folder", cli(["ls", "latest", folderPath]), options);
      folderEntries = lastJson<unknown[]>(folder.measured.stdout).length;
      folderRuns.push(cpuStep(folder, undefined));
      const root = await runCpuStep("bulwark ls /", cli(["ls", "latest"]), options);
      rootEntries = lastJson<unknown[]>(root.measured.stdout).length;
      rootRuns.push(cpuStep(root, undefined));
    }
    result.listFolder = { ...combined(folderRuns), entries: folderEntries };
    result.listRoot = { ...combined(rootRuns), entries: rootEntries };
    if (folderEntries !== plan.folder.entries) throw new StepFailed(`bulwark ls ${folderPath} listed ${folderEntries} entries, the folder holds ${plan.folder.entries}`);

    log("items: the alternative: full restore of the disk, loop mount, cp, umount");
    const fullImage = join(workDir, "full-restore", "disk.img");
    await mkdir(dirname(fullImage), { recursive: true });
    const restore = await runCpuStep("bulwark restore (whole disk)", bulwark.restore(ws, "latest", dirname(fullImage)), options);
    await mkdir(mountPoint, { recursive: true });
    const mount = await runStep(
      "mount -o loop",
      system("mount", ["-t", "ext4", "-o", `loop,ro,offset=${plan.partitionStart},sizelimit=${plan.partitionBytes}`, fullImage, mountPoint]),
      options,
    );
    mounted = true;
    const copyTo = join(workDir, "copied.bin");
    const copy = await runStep("cp", system("cp", [join(mountPoint, plan.targetFile.path), copyTo]), options);
    const copiedIdentical = (await sha256File(copyTo)) === image.targetSha256;
    const umount = await runStep("umount", system("umount", [mountPoint]), options);
    mounted = false;
    result.alternative = {
      restore: cpuStep(restore, plan.sizeBytes),
      restoredAllocatedBytes: (await stat(fullImage)).blocks * SECTOR,
      mountSeconds: mount.seconds,
      copy: stepResult(copy, undefined),
      umountSeconds: umount.seconds,
      totalSeconds: restore.measured.seconds + mount.seconds + copy.seconds + umount.seconds,
      identical: copiedIdentical,
    };
  } catch (error) {
    if (!(error instanceof StepFailed)) throw error;
    result.error = error.message;
    log(`items: FAILED ${error.message}`);
  } finally {
    if (mounted) spawnSync("umount", [mountPoint]);
    await rm(join(workDir, "full-restore"), { recursive: true, force: true });
  }
  return result;
}

/** The two speed targets, from a run's figures. */
export function itemsTargets(result: ItemsCaseResult, sizeBytes: number): TargetResult[] {
  const restore = result.fileRestore;
  const readTarget = `restoring the ${TARGET_FILE_BYTES / MiB} MiB file reads < ${READ_TARGET_FRACTION * 100}% of the ${formatBytes(sizeBytes)} disk`;
  const listTarget = `listing a folder of ${FOLDER_ENTRIES} entries takes < ${LIST_TARGET_SECONDS} s`;
  const targets: TargetResult[] = [
    restore === undefined
      ? { target: readTarget, passed: undefined, detail: "not checked: the restore did not run" }
      : {
          target: readTarget,
          passed: restore.bytesRead / sizeBytes < READ_TARGET_FRACTION && restore.identical,
          detail: `${((100 * restore.bytesRead) / sizeBytes).toFixed(3)}% (${formatBytes(restore.bytesRead)} read)${restore.identical ? "" : "; the restored file DIFFERS"}`,
        },
  ];
  const folder = result.listFolder;
  const root = result.listRoot;
  if (folder === undefined || root === undefined) {
    targets.push({ target: listTarget, passed: undefined, detail: "not checked: the listings did not run" });
  } else {
    const listing = folder.seconds - root.seconds;
    targets.push(
      { target: `${listTarget}, whole command`, passed: folder.seconds < LIST_TARGET_SECONDS, detail: `${folder.seconds.toFixed(2)} s (median of ${folder.runs.length})` },
      {
        target: `${listTarget}, the listing (folder ls - root ls)`,
        passed: listing < LIST_TARGET_SECONDS,
        detail:
          `${listing.toFixed(2)} s (${folder.seconds.toFixed(2)} s - ${root.seconds.toFixed(2)} s for process start, key derivation and opening the point)` +
          (folder.cpuSeconds === undefined || root.cpuSeconds === undefined
            ? ""
            : `; CPU ${(folder.cpuSeconds - root.cpuSeconds).toFixed(2)} s (${folder.cpuSeconds.toFixed(2)} s - ${root.cpuSeconds.toFixed(2)} s)`),
      },
    );
  }
  return targets;
}

function fixed(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? "-" : value.toFixed(digits);
}

export function renderItemsTable(result: ItemsCaseResult, sizeBytes: number): string {
  const stored = Number(result.backup?.report.bytesAdded ?? NaN);
  const mib = (bytes: number | undefined) => fixed(bytes === undefined ? undefined : bytes / MiB, 1);
  const pct = (part: number | undefined, whole: number) => (part === undefined ? "-" : `${((100 * part) / whole).toFixed(3)}%`);
  const r = result.fileRestore;
  const a = result.alternative;
  const rows: string[][] = [
    ["restore --path of the 20 MiB file", fixed(r?.seconds, 2), fixed(r?.cpuSeconds, 2), mib(r?.bytesRead), pct(r?.bytesRead, sizeBytes), pct(r?.bytesRead, stored), mib(r?.bytesWritten), mib(r?.peakRssBytes), r === undefined ? "-" : r.identical ? "yes" : "NO"],
    ["ls of the 10,000-entry folder", fixed(result.listFolder?.seconds, 2), fixed(result.listFolder?.cpuSeconds, 2), "-", "-", "-", "-", mib(result.listFolder?.peakRssBytes), result.listFolder === undefined ? "-" : `${result.listFolder.entries} entries`],
    ["ls of the root (start + open)", fixed(result.listRoot?.seconds, 2), fixed(result.listRoot?.cpuSeconds, 2), "-", "-", "-", "-", mib(result.listRoot?.peakRssBytes), result.listRoot === undefined ? "-" : `${result.listRoot.entries} volume`],
    ["full restore + loop mount + cp", fixed(a?.totalSeconds, 2), fixed(a?.restore.cpuSeconds, 2), mib(result.backup?.vaultBytes), pct(result.backup?.vaultBytes, sizeBytes), "100%", mib(a === undefined ? undefined : a.restoredAllocatedBytes + TARGET_FILE_BYTES), mib(a?.restore.peakRssBytes), a === undefined ? "-" : a.identical ? "yes" : "NO"],
  ];
  return markdownTable(["what", "wall s", "CPU s", "read MiB", "of disk", "of point", "written MiB", "peak RSS MiB", "check"], rows);
}

/** Runs the case at one size: makes or reuses the disk, prints the table and targets, writes the JSON; false if it failed. */
export async function runItemsBench(bulwark: Bulwark, settings: ItemsBenchSettings): Promise<boolean> {
  const { sizeBytes, log } = settings;
  const detection = bulwark.detect();
  if (!detection.available) {
    log(`bulwark: SKIPPED, ${detection.reason}. ${detection.howToInstall}`);
    return false;
  }
  log(`bulwark: ${detection.version}`);
  const useGnuTime = hasGnuTime();
  const workDir = resolve(dirname(settings.outPath), "work", "items");
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg()[0];
  log(`1-minute load average at the start: ${loadAtStart.toFixed(2)} on ${cpus().length} CPUs`);
  const image = await ensureItemsImage(settings.imagesDir, sizeBytes, settings.seed, log);
  const { plan } = image;
  log(
    `items: disk ${formatBytes(sizeBytes)}${image.fromCache ? " (cached)" : ""}, ${formatBytes(image.allocatedBytes)} allocated; GPT, part1 ext4 from ` +
      `${formatBytes(plan.partitionStart)}, ${formatBytes(plan.partitionBytes)}: /${plan.targetFile.path} (${formatBytes(plan.targetFile.bytes)}), ` +
      `/${plan.folder.path}/ (${plan.folder.entries} files of ${SMALL_FILE_BYTES.min}-${SMALL_FILE_BYTES.max} bytes), ${plan.otherFiles.length} files of ` +
      `${formatBytes(OTHER_FILE_BYTES)} under /data (${formatBytes(plan.otherBytes)}, half pseudo-random, half text)`,
  );
  await rm(workDir, { recursive: true, force: true });
  await mkdir(workDir, { recursive: true });
  let result: ItemsCaseResult;
  try {
    result = await runCase(bulwark, image, workDir, { workRoot: workDir, useGnuTime, keep: settings.keep, log });
  } finally {
    if (!settings.keep) await rm(workDir, { recursive: true, force: true });
  }
  const targets = itemsTargets(result, sizeBytes);
  const steps = [result.backup?.step, ...(result.fileRestore?.runs ?? []), ...(result.listFolder?.runs ?? []), ...(result.listRoot?.runs ?? []), result.alternative?.restore];
  const loads = steps.filter((s) => s !== undefined).map((s) => s.loadAverageAtStart);
  const document = {
    benchmark: "bulwark-bench",
    runId: randomUUID(),
    case: "items",
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: { nproc: cpus().length, cpuModel: cpus()[0]?.model, totalMemoryBytes: totalmem(), os: `${platform()} ${release()}`, node: process.versions.node },
    loadAverageAtStart: loadAtStart,
    method: {
      disk: "sparse image, GPT by sgdisk, one ext4 partition made in place by mke2fs -E offset= -d from a generated folder",
      cpu: "user + system seconds of the CLI process (GNU time %U + %S), median; the full restore's only for the alternative",
      time: `wall seconds of each whole CLI process (node start, key derivation, vault and point open, the work); median of ${RESTORE_REPEATS} runs for restore --path, ${LIST_REPEATS} for ls`,
      bytesRead: "restore --path: bytesRead of its --json report (bytes fetched from the vault); the alternative: the vault's size (a full restore reads every pack)",
      stored: "the point's stored size is bytesStored of the backup's --json report",
      alternative: "bulwark restore latest --to disk.img (sparse), mount -t ext4 -o loop,ro,offset=,sizelimit=, cp of the file, umount",
      pageCache: "the vault is read once after the backup, so every measured step starts with it cached; the image is not dropped from the cache either",
      restic: "not run: restic sees a disk image as one file, so it has no item-level restore from it (restic dump / restore --include address its files only)",
    },
    image: { path: image.path, seed: settings.seed, allocatedBytes: image.allocatedBytes, targetSha256: image.targetSha256, ...plan, otherFiles: plan.otherFiles.length },
    tools: { bulwark: { detection, settings: bulwark.settings() } },
    result,
    targets,
  };
  await mkdir(dirname(settings.outPath), { recursive: true });
  await writeFile(settings.outPath, `${JSON.stringify(document, null, 2)}\n`);

  log("");
  log(`items results at ${formatBytes(sizeBytes)} (${cpus().length} CPUs, ${formatBytes(totalmem())} RAM):`);
  if (result.backup !== undefined) {
    log(
      `setup: bulwark backup ${result.backup.step.seconds.toFixed(1)} s; the point stores ${formatBytes(Number(result.backup.report.bytesAdded ?? 0))} ` +
        `(vault ${formatBytes(result.backup.vaultBytes)})`,
    );
  }
  log(renderItemsTable(result, sizeBytes));
  if (result.alternative !== undefined) {
    const a = result.alternative;
    log(`alternative in steps: full restore ${a.restore.seconds.toFixed(2)} s, mount ${a.mountSeconds.toFixed(2)} s, cp ${a.copy.seconds.toFixed(2)} s, umount ${a.umountSeconds.toFixed(2)} s`);
  }
  if (loads.length > 0) {
    log(`1-minute load average at step starts: ${Math.min(...loads).toFixed(2)} to ${Math.max(...loads).toFixed(2)} on ${cpus().length} CPUs (above ${cpus().length}, timings are noisy)`);
  }
  if (result.error !== undefined) log(`FAILED: ${result.error}`);
  log("");
  log("targets (Bulwark):");
  log(renderTargets(targets));
  log("");
  log(`results written to ${settings.outPath}`);
  return result.error === undefined && result.fileRestore?.identical === true && result.alternative?.identical === true;
}
