/**
 * The incremental Azure disk case (issue 3): a managed disk in the local Azure emulator holding the
 * image case's version 1, backed up by `bulwark backup <disk id>`, then 1% of its blocks rewritten
 * and backed up again incrementally (snapshot, page-range diff, only the changed blocks read),
 * against `restic backup` of the whole image file, which re-reads everything.
 *
 * Two variants of "1% of the blocks", one after the other on the same disk:
 *   - 64k-blocks: 1% of the 64 KiB blocks (Bulwark's block size) rewritten whole;
 *   - 4k-blocks: 1% of the 4 KiB blocks rewritten, scattered: Bulwark reads the changed pages and
 *     patches the rest of each block from the previous point (runtime/engine/backup-blocks.ts).
 * From SPARSE_DISK_FROM on (the 64 GiB case) the disk is sparse: every SPARSE_STRIDE-th 1 MiB region
 * of the image case's layout holds its version-1 content, the rest is never written (so the emulator
 * and the local image file hold only that), and restic's image file is a sparse file of the same bytes.
 * Each step's CPU seconds are measured apart: Bulwark's own process (GNU time), the benchmark's
 * process (the emulator, serving Bulwark), restic's process.
 * Each incremental point is restored to a local file and compared with the disk's content.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Vault } from "../runtime/engine/vault.ts";
import { PassphraseProvider } from "../runtime/keys/passphrase.ts";
import { openStore } from "../runtime/store/open.ts";
import { startAzureEmulator } from "../test/emulator/server.ts";
import type { RunningAzureEmulator } from "../test/emulator/server.ts";
import { Keystream, REGION_SIZE, SmallRng, ensureImages, fillText, planLayout } from "./image.ts";
import type { ImageLayout } from "./image.ts";
import { StepFailed, runStep, stepResult } from "./image-case.ts";
import type { CaseOptions, StepResult } from "./image-case.ts";
import { readThrough } from "./measure.ts";
import type { CommandSpec, Measurement } from "./measure.ts";
import type { TargetResult } from "./report.ts";
import type { Tool, ToolWorkspace } from "./tools/tool.ts";

const KiB = 1024;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** Bulwark's block size for disks (runtime/engine/vault.ts DEFAULT_CONFIG), also the fill granularity. */
export const BULWARK_BLOCK = 64 * KiB;
export const CHANGE_FRACTION = 0.01;
export const SPEED_TARGET = 20;
export const READ_TARGET = 2;
/** Issue 13: at 64 GiB with 1% changed, at least 50x less work than restic (CPU seconds and bytes read). */
export const WORK_TARGET = 50;
/**
 * From this size the disk is sparse: the emulator holds its pages in memory and restic's image file
 * is a local file, so a fully written 64 GiB disk fits neither the machine's RAM nor its free disk.
 */
export const SPARSE_DISK_FROM = 16 * GiB;
/** A sparse disk holds every SPARSE_STRIDE-th 1 MiB region of the layout (1/16: 4 GiB of 64, less its zero regions). */
export const SPARSE_STRIDE = 16;
const GNU_TIME = "/usr/bin/time";

/** What the disk holds: the image case's version 1, or (sparse sizes) every SPARSE_STRIDE-th region of its layout. */
export interface DiskCaseImages {
  sizeBytes: number;
  seed: string;
  /** The image case's version 1 file; undefined for a sparse disk, which the case writes itself. */
  version1Path?: string;
  version1Sha256?: string;
  /** 1 MiB regions written with each kind of content (zero: not written). */
  regions: { zero: number; text: number; random: number };
  content: string;
}

/** The disk's content at `sizeBytes`: the image case's cached version 1, or a sparse plan. */
export async function diskCaseImages(cacheDir: string, sizeBytes: number, seed: string, log: (line: string) => void): Promise<DiskCaseImages> {
  if (sizeBytes < SPARSE_DISK_FROM) {
    const images = await ensureImages(cacheDir, sizeBytes, seed, log);
    return {
      sizeBytes,
      seed,
      version1Path: images.version1Path,
      version1Sha256: images.version1Sha256,
      regions: images.description.regions,
      content: "the image case's version 1 (its non-zero 64 KiB pieces written)",
    };
  }
  const layout = planLayout(sizeBytes, seed);
  const regions = { zero: 0, text: 0, random: 0 };
  layout.regionKinds.forEach((kind, index) => regions[sparseRegion(index) ? kind : "zero"]++);
  return {
    sizeBytes,
    seed,
    regions,
    content:
      `sparse: every ${SPARSE_STRIDE}th 1 MiB region of the image case's layout holds its version-1 content ` +
      `(text-like or random; its zero regions and the ${SPARSE_STRIDE - 1} regions between are never written)`,
  };
}

function sparseRegion(index: number): boolean {
  return index % SPARSE_STRIDE === 0;
}

export type VariantName = "64k-blocks" | "4k-blocks";

export interface BlockRewrites {
  blockSize: number;
  blocksTotal: number;
  /** Sorted, distinct block indexes. */
  blocks: number[];
}

/**
 * `fraction` of the disk's `blockSize` blocks at deterministic pseudo-random positions, uniformly
 * spread (no clustering), distinct. Derived from (size, seed, purpose) only.
 */
export function planBlockRewrites(sizeBytes: number, seed: string, blockSize: number, fraction: number, purpose: string): BlockRewrites {
  const blocksTotal = sizeBytes / blockSize;
  const target = Math.round(blocksTotal * fraction);
  const rng = new SmallRng(seed, `azure-disk/${purpose}`);
  const marked = new Uint8Array(blocksTotal);
  let count = 0;
  while (count < target) {
    const block = rng.int(0, blocksTotal - 1);
    if (marked[block] === 0) {
      marked[block] = 1;
      count++;
    }
  }
  const blocks: number[] = [];
  for (let b = 0; b < blocksTotal; b++) if (marked[b] === 1) blocks.push(b);
  return { blockSize, blocksTotal, blocks };
}

/** How many distinct 64 KiB blocks the rewrites touch: what Bulwark has to read. */
export function bulwarkBlocksTouched(rewrites: BlockRewrites): number {
  const touched = new Set<number>();
  for (const block of rewrites.blocks) {
    const first = Math.floor((block * rewrites.blockSize) / BULWARK_BLOCK);
    const last = Math.floor(((block + 1) * rewrites.blockSize - 1) / BULWARK_BLOCK);
    for (let b = first; b <= last; b++) touched.add(b);
  }
  return touched.size;
}

/**
 * Writes the rewrites into the emulator's disk (as the VM would) and into the local image file
 * (restic's source), the same bytes in both: new random bytes in random regions, new text in text
 * and zero regions (as the image case's version 2 does).
 */
async function applyRewrites(
  emulator: RunningAzureEmulator,
  diskId: string,
  imagePath: string,
  layout: ImageLayout,
  rewrites: BlockRewrites,
  purpose: string,
): Promise<void> {
  const keystream = new Keystream(layout.seed, `azure-disk/${purpose}`);
  const bytes = Buffer.alloc(rewrites.blockSize);
  const randomness = Buffer.alloc(rewrites.blockSize);
  const file = await open(imagePath, "r+");
  try {
    for (const block of rewrites.blocks) {
      const offset = block * rewrites.blockSize;
      const kind = layout.regionKinds[Math.floor(offset / REGION_SIZE)];
      if (kind === "random") keystream.fill(bytes, block);
      else fillText(bytes, keystream.fill(randomness, block));
      emulator.control.writeDisk(diskId, offset, bytes);
      await file.write(bytes, 0, bytes.length, offset);
    }
  } finally {
    await file.close();
  }
}

/** Fills the disk with the image file's non-zero 64 KiB pieces (zero pieces stay unallocated). */
async function fillDisk(emulator: RunningAzureEmulator, diskId: string, imagePath: string, sizeBytes: number): Promise<number> {
  const piece = Buffer.alloc(4 * MiB);
  const file = await open(imagePath, "r");
  let written = 0;
  try {
    for (let offset = 0; offset < sizeBytes; offset += piece.length) {
      const { bytesRead } = await file.read(piece, 0, piece.length, offset);
      for (let at = 0; at < bytesRead; at += BULWARK_BLOCK) {
        const part = piece.subarray(at, at + BULWARK_BLOCK);
        if (part.some((b) => b !== 0)) {
          emulator.control.writeDisk(diskId, offset + at, part);
          written += part.length;
        }
      }
    }
  } finally {
    await file.close();
  }
  return written;
}

/**
 * Writes a sparse disk's regions (version 1 of the image case: same keystream, region by region) into
 * the emulator's disk and into a sparse local image file of the disk's size (restic's source).
 */
async function fillSparseDisk(emulator: RunningAzureEmulator, diskId: string, imagePath: string, layout: ImageLayout): Promise<number> {
  const keystream = new Keystream(layout.seed, "v1");
  const region = Buffer.alloc(REGION_SIZE);
  const randomness = Buffer.alloc(REGION_SIZE);
  const file = await open(imagePath, "w");
  let written = 0;
  try {
    await file.truncate(layout.sizeBytes);
    for (let index = 0; index < layout.regionKinds.length; index++) {
      const kind = layout.regionKinds[index];
      if (!sparseRegion(index) || kind === "zero") continue;
      if (kind === "random") keystream.fill(region, index);
      else fillText(region, keystream.fill(randomness, index));
      emulator.control.writeDisk(diskId, index * REGION_SIZE, region);
      await file.write(region, 0, REGION_SIZE, index * REGION_SIZE);
      written += REGION_SIZE;
    }
  } finally {
    await file.close();
  }
  return written;
}

/** Whether a file holds exactly the disk's bytes, compared piece by piece (a 64 GiB disk never in memory at once). */
async function sameAsDisk(emulator: RunningAzureEmulator, diskId: string, path: string): Promise<boolean> {
  const disk = [...emulator.compute.disks.values()].find((d) => d.id.toLowerCase() === diskId.toLowerCase());
  if (!disk) throw new Error(`no disk ${diskId} in the emulator`);
  const piece = Buffer.alloc(16 * MiB);
  const file = await open(path, "r");
  try {
    if ((await file.stat()).size !== disk.image.size) return false;
    for (let at = 0; at < disk.image.size; at += piece.length) {
      const length = Math.min(piece.length, disk.image.size - at);
      const { bytesRead } = await file.read(piece, 0, length, at);
      if (bytesRead !== length || !piece.subarray(0, length).equals(disk.image.read(at, length))) return false;
    }
    return true;
  } finally {
    await file.close();
  }
}

/** A command run under GNU time writing its own user and system CPU seconds to a file. */
async function withCpuTime(spec: CommandSpec): Promise<{ spec: CommandSpec; cpuSeconds(): Promise<number | undefined> }> {
  if (!existsSync(GNU_TIME)) return { spec, cpuSeconds: async () => undefined };
  const dir = await mkdtemp(join(tmpdir(), "bulwark-bench-cpu-"));
  const file = join(dir, "cpu");
  return {
    spec: { ...spec, command: GNU_TIME, args: ["-o", file, "-f", "%U %S", spec.command, ...spec.args] },
    async cpuSeconds() {
      const text = await readFile(file, "utf8").catch(() => "");
      await rm(dir, { recursive: true, force: true });
      const figures = (text.trim().split("\n").pop() ?? "").split(" ").map(Number);
      return figures.length === 2 && figures.every(Number.isFinite) ? figures[0] + figures[1] : undefined;
    },
  };
}

/** One measured step: the command's own CPU seconds, and this process's (the emulator serving it). */
async function runCpuStep(step: string, spec: CommandSpec, options: CaseOptions): Promise<{ measured: Measurement; cpuSeconds?: number; benchCpuSeconds: number }> {
  const timed = await withCpuTime(spec);
  const before = process.cpuUsage();
  const measured = await runStep(step, timed.spec, options);
  const used = process.cpuUsage(before);
  return { measured, cpuSeconds: await timed.cpuSeconds(), benchCpuSeconds: (used.user + used.system) / 1e6 };
}

/** What a Bulwark point's details say its sub-block reads cost (runtime/sources/azure-disk.ts). */
async function subBlockStats(repoDir: string, passphrase: string, pointId: string): Promise<Record<string, number | undefined>> {
  const { store } = await openStore(repoDir);
  const vault = await Vault.open(store, new PassphraseProvider(passphrase), { loadIndex: false });
  const details = (await vault.readPoint(pointId)).details ?? {};
  return Object.fromEntries(["blocksPatched", "baseChunksRead", "baseBytesRead", "baseReadsFailed"].map((key) => [key, num(details[key])]));
}

/** The emulator's requests during one step, with times: where a CLI run's wall time went. */
export interface RequestTimeline {
  requests: number;
  /** Control-plane calls (ARM, token), of which long-running-operation polls. */
  controlPlane: number;
  operationPolls: number;
  /** Managed-disk SAS data-plane calls (page ranges, reads). */
  dataPlane: number;
  /** Seconds from the process start to its first request (node start, vault open, key derivation). */
  firstRequestSeconds?: number;
  /** Seconds from the first to the last request. */
  requestSpanSeconds?: number;
  /** Seconds between consecutive requests summed over gaps longer than 0.5 s (mostly waiting before an LRO poll). */
  idleGapSeconds: number;
  /** The longest waits for a response (time since the previous one), longest first: which calls the time went to. */
  slowest: Array<{ seconds: number; method: string; path: string }>;
  log: Array<{ t: number; method: string; path: string; status: number }>;
}

/** Records when each request the emulator logs was served. */
function stampRequests(emulator: RunningAzureEmulator): number[] {
  const stamps: number[] = [];
  const log = emulator.requestLog;
  const push = log.push.bind(log);
  log.push = (...items) => {
    for (let i = 0; i < items.length; i++) stamps.push(performance.now());
    return push(...items);
  };
  return stamps;
}

function timeline(emulator: RunningAzureEmulator, stamps: number[], from: number, startedAt: number): RequestTimeline {
  const entries = emulator.requestLog.slice(from).map((entry, i) => ({ ...entry, at: stamps[from + i] }));
  const shorten = (path: string) => path.replace(/^\/subscriptions\/[^/]+/, "").replace(/\/resourceGroups\/[^/]+\/providers\//, "/");
  let idle = 0;
  const gaps: RequestTimeline["slowest"] = [];
  for (let i = 0; i < entries.length; i++) {
    const gap = (entries[i].at - (i === 0 ? startedAt : entries[i - 1].at)) / 1000;
    if (i > 0 && gap > 0.5) idle += gap;
    gaps.push({ seconds: Number(gap.toFixed(3)), method: entries[i].method, path: shorten(entries[i].path) });
  }
  const slowest = gaps.sort((a, b) => b.seconds - a.seconds).slice(0, 4);
  const isData = (path: string) => !path.startsWith("/subscriptions") && !/oauth2|openid|discovery/i.test(path);
  return {
    requests: entries.length,
    controlPlane: entries.filter((e) => !isData(e.path)).length,
    operationPolls: entries.filter((e) => /\/operations\//i.test(e.path)).length,
    dataPlane: entries.filter((e) => isData(e.path)).length,
    firstRequestSeconds: entries.length > 0 ? (entries[0].at - startedAt) / 1000 : undefined,
    requestSpanSeconds: entries.length > 0 ? (entries[entries.length - 1].at - entries[0].at) / 1000 : undefined,
    idleGapSeconds: idle,
    slowest,
    log: entries.map((e) => ({ t: Number(((e.at - startedAt) / 1000).toFixed(3)), method: e.method, path: shorten(e.path), status: e.status })),
  };
}

export interface BulwarkIncremental {
  step: StepResult;
  mode?: string;
  /** What the page-range diff said changed (bytes). */
  changedBytes?: number;
  /** Bytes read from the snapshot. */
  bytesFetched?: number;
  bytesNew?: number;
  bytesStored?: number;
  /** The engine's own duration (point stats), without process start, key derivation and ARM calls. */
  engineSeconds?: number;
  /** User + system CPU seconds of Bulwark's own process (GNU time), start-up and key derivation included. */
  cpuSeconds?: number;
  /** CPU seconds of the benchmark's process meanwhile: the emulator serving Bulwark (not Bulwark's work). */
  emulatorCpuSeconds?: number;
  /** Partly changed blocks patched from the previous point, and the base chunks read from the vault for them. */
  blocksPatched?: number;
  baseChunksRead?: number;
  baseBytesRead?: number;
  baseReadsFailed?: number;
  requests?: RequestTimeline;
}

export interface ResticRun {
  step: StepResult;
  bytesProcessed?: number;
  filesChanged?: number;
  bytesAdded?: number;
  cpuSeconds?: number;
}

export interface VariantResult {
  name: VariantName;
  definition: string;
  blockSize: number;
  blocksTotal: number;
  blocksChanged: number;
  bytesChanged: number;
  fractionChanged: number;
  bulwarkBlocksTouched: number;
  bulwark?: BulwarkIncremental;
  restic?: ResticRun;
  ratios: {
    resticOverBulwarkSeconds?: number;
    /** Snapshot bytes read per byte changed. */
    fetchedOverChanged?: number;
    /** Snapshot and vault (base chunk) bytes read per byte changed. */
    readOverChanged?: number;
    /** What reading every changed 64 KiB block whole (before sub-block reads) costs per byte changed. */
    wholeBlocksOverChanged: number;
    resticOverBulwarkCpu?: number;
    resticOverBulwarkBytes?: number;
  };
  restoreIdentical?: boolean;
  /** restic's source file holds the disk's bytes. */
  imageFileIdentical?: boolean;
  targets: TargetResult[];
}

export interface DiskCaseResult {
  sizeBytes: number;
  allocatedBytes: number;
  diskId: string;
  /** How the disk was filled (see DiskCaseImages.content). */
  content: string;
  firstBackup: { bulwark?: BulwarkIncremental; restic?: ResticRun };
  variants: VariantResult[];
  error?: string;
}

const VARIANTS: Array<{ name: VariantName; blockSize: number; definition: string }> = [
  {
    name: "64k-blocks",
    blockSize: 64 * KiB,
    definition: "block = 64 KiB (Bulwark's block size), aligned; 1% of them rewritten whole at uniformly pseudo-random positions",
  },
  {
    name: "4k-blocks",
    blockSize: 4 * KiB,
    definition:
      "block = 4 KiB (a file system block), aligned; 1% of them rewritten at uniformly pseudo-random (scattered) positions; " +
      "Bulwark reads the changed pages and patches the rest of each 64 KiB block from the previous point",
  },
];

function num(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}

function bulwarkFigures(step: StepResult): BulwarkIncremental {
  const report = step.report ?? {};
  return {
    step,
    mode: typeof report.mode === "string" ? report.mode : undefined,
    changedBytes: num(report.changedBytes),
    bytesFetched: num(report.bytesFetched),
    bytesNew: num(report.bytesNew),
    bytesStored: num(report.bytesAdded),
    engineSeconds: num(report.durationMs) === undefined ? undefined : num(report.durationMs)! / 1000,
  };
}

/** Bytes Bulwark read: from the snapshot, and base chunks from the vault to patch blocks. */
function bulwarkBytesRead(bulwark: BulwarkIncremental): number {
  return (bulwark.bytesFetched ?? 0) + (bulwark.baseBytesRead ?? 0);
}

function withEnv(spec: CommandSpec, env: Record<string, string>): CommandSpec {
  return { ...spec, env: { ...spec.env, ...env } };
}

export function variantTargets(variant: VariantResult): TargetResult[] {
  const speed = variant.ratios.resticOverBulwarkSeconds;
  const read = variant.ratios.readOverChanged ?? variant.ratios.fetchedOverChanged;
  const work = (what: string, ratio: number | undefined, detail: string): TargetResult =>
    ratio === undefined
      ? { target: `${variant.name}: >= ${WORK_TARGET}x less ${what} than restic`, passed: undefined, detail: "not checked: a figure is missing" }
      : { target: `${variant.name}: >= ${WORK_TARGET}x less ${what} than restic`, passed: ratio >= WORK_TARGET, detail: `${ratio.toFixed(1)}x (${detail})` };
  const cpu = variant.ratios.resticOverBulwarkCpu;
  const bytes = variant.ratios.resticOverBulwarkBytes;
  return [
    work("CPU", cpu, cpu === undefined ? "" : `restic ${variant.restic!.cpuSeconds!.toFixed(1)} s / Bulwark ${variant.bulwark!.cpuSeconds!.toFixed(1)} s`),
    work("bytes read", bytes, bytes === undefined ? "" : `restic ${((variant.restic!.bytesProcessed ?? 0) / MiB).toFixed(0)} MiB / Bulwark ${(bulwarkBytesRead(variant.bulwark!) / MiB).toFixed(1)} MiB`),
    speed === undefined
      ? { target: `${variant.name}: incremental >= ${SPEED_TARGET}x faster than restic`, passed: undefined, detail: "not checked: a time is missing" }
      : {
          target: `${variant.name}: incremental >= ${SPEED_TARGET}x faster than restic`,
          passed: speed >= SPEED_TARGET,
          detail: `${speed.toFixed(1)}x (restic ${variant.restic!.step.seconds.toFixed(2)} s / Bulwark ${variant.bulwark!.step.seconds.toFixed(2)} s)`,
        },
    read === undefined
      ? { target: `${variant.name}: bytes read <= ${READ_TARGET}x bytes changed`, passed: undefined, detail: "not checked: Bulwark's report is missing" }
      : {
          target: `${variant.name}: bytes read <= ${READ_TARGET}x bytes changed`,
          passed: read <= READ_TARGET,
          detail:
            `${read.toFixed(2)}x (${(variant.bulwark!.bytesFetched! / MiB).toFixed(1)} MiB from the snapshot and ` +
            `${((variant.bulwark!.baseBytesRead ?? 0) / MiB).toFixed(1)} MiB of base chunks from the vault for ${(variant.bytesChanged / MiB).toFixed(1)} MiB changed; ` +
            `whole blocks would be ${variant.ratios.wholeBlocksOverChanged.toFixed(2)}x)`,
        },
  ];
}

/**
 * Runs the case. `bulwark` must have been detected (its runtime/ frozen); `restic` is optional
 * (without it there is no ratio, only Bulwark's figures).
 */
export async function runDiskCase(
  images: DiskCaseImages,
  bulwark: Tool,
  restic: Tool | undefined,
  options: CaseOptions,
): Promise<DiskCaseResult> {
  const log = options.log;
  const size = images.sizeBytes;
  const layout = planLayout(size, images.seed);
  const workDir = resolve(options.workRoot, "azure-disk");
  const restoreDir = join(workDir, "restore");
  const mib = (bytes: number) => (bytes / MiB).toFixed(1);
  await rm(workDir, { recursive: true, force: true });
  await mkdir(restoreDir, { recursive: true });

  log("azure-disk: starting the local Azure emulator (with Azurite)");
  const emulator = await startAzureEmulator({ azurite: true });
  const stamps = stampRequests(emulator);
  const result: DiskCaseResult = { sizeBytes: size, allocatedBytes: 0, diskId: "", content: images.content, firstBackup: {}, variants: [] };
  try {
    emulator.world.addResourceGroup("bench", "westeurope");
    const disk = emulator.compute.createDisk("bench", "bench-disk", size);
    result.diskId = disk.id;

    const bws: ToolWorkspace = {
      workDir: join(workDir, "bulwark"),
      repoDir: join(workDir, "bulwark", "repo"),
      cacheDir: join(workDir, "bulwark", "cache"),
      sourcePath: disk.id,
      passphrase: randomBytes(24).toString("base64url"),
    };
    const rws: ToolWorkspace = {
      workDir: join(workDir, "restic"),
      repoDir: join(workDir, "restic", "repo"),
      cacheDir: join(workDir, "restic", "cache"),
      sourcePath: join(workDir, "restic", "src", "disk.img"),
      passphrase: randomBytes(24).toString("base64url"),
    };
    for (const dir of [bws.cacheDir, rws.cacheDir, join(workDir, "restic", "src")]) await mkdir(dir, { recursive: true });
    if (images.version1Path !== undefined) {
      result.allocatedBytes = await fillDisk(emulator, disk.id, images.version1Path, size);
      // The local image file (restic's source) holds the same bytes.
      await copyFile(images.version1Path, rws.sourcePath);
    } else {
      result.allocatedBytes = await fillSparseDisk(emulator, disk.id, rws.sourcePath, layout);
    }
    log(`azure-disk: managed disk ${disk.id}, ${mib(size)} MiB, ${mib(result.allocatedBytes)} MiB written: ${images.content}`);
    const env = emulator.env;

    await runStep("bulwark init", bulwark.init(bws), options);
    log("azure-disk: bulwark first backup of the disk");
    let from = emulator.requestLog.length;
    let startedAt = performance.now();
    let run = await runCpuStep("bulwark first backup", withEnv(bulwark.backup(bws, "v1"), env), options);
    let measured = run.measured;
    result.firstBackup.bulwark = { ...bulwarkFigures(stepResult(measured, size, bulwark.parseBackupReport(measured.stdout))), cpuSeconds: run.cpuSeconds, emulatorCpuSeconds: run.benchCpuSeconds };
    result.firstBackup.bulwark.requests = timeline(emulator, stamps, from, startedAt);
    log(`azure-disk:   ${measured.seconds.toFixed(1)} s, mode ${result.firstBackup.bulwark.mode}, ${mib(result.firstBackup.bulwark.bytesFetched ?? 0)} MiB read`);
    log(`azure-disk:   ${describeTimeline(result.firstBackup.bulwark.requests)}`);

    if (restic !== undefined) {
      await runStep("restic init", restic.init(rws), options);
      // A sparse file's holes are not cached pages: warming only the image case's full files.
      if (images.version1Path !== undefined) await readThrough(rws.sourcePath);
      log("azure-disk: restic first backup of the image file");
      run = await runCpuStep("restic first backup", restic.backup(rws, "v1"), options);
      measured = run.measured;
      const report = restic.parseBackupReport(measured.stdout);
      result.firstBackup.restic = { step: stepResult(measured, size, report), bytesProcessed: num(report.bytesProcessed), bytesAdded: num(report.bytesAdded), cpuSeconds: run.cpuSeconds };
      log(`azure-disk:   ${measured.seconds.toFixed(1)} s, ${fixed(run.cpuSeconds, 1)} CPU s`);
    }

    for (const spec of VARIANTS) {
      const rewrites = planBlockRewrites(size, images.seed, spec.blockSize, CHANGE_FRACTION, spec.name);
      const variant: VariantResult = {
        name: spec.name,
        definition: spec.definition,
        blockSize: spec.blockSize,
        blocksTotal: rewrites.blocksTotal,
        blocksChanged: rewrites.blocks.length,
        bytesChanged: rewrites.blocks.length * spec.blockSize,
        fractionChanged: rewrites.blocks.length / rewrites.blocksTotal,
        bulwarkBlocksTouched: bulwarkBlocksTouched(rewrites),
        ratios: { wholeBlocksOverChanged: (bulwarkBlocksTouched(rewrites) * BULWARK_BLOCK) / (rewrites.blocks.length * spec.blockSize) },
        targets: [],
      };
      result.variants.push(variant);
      log(
        `azure-disk: ${spec.name}: rewriting ${variant.blocksChanged} of ${variant.blocksTotal} ${spec.blockSize / KiB} KiB blocks ` +
          `(${mib(variant.bytesChanged)} MiB, in ${variant.bulwarkBlocksTouched} distinct 64 KiB blocks)`,
      );
      // The local image file (restic's source) gets the same bytes as the disk.
      await applyRewrites(emulator, disk.id, rws.sourcePath, layout, rewrites, spec.name);

      log(`azure-disk: ${spec.name}: bulwark incremental backup of the disk`);
      from = emulator.requestLog.length;
      startedAt = performance.now();
      run = await runCpuStep(`bulwark incremental (${spec.name})`, withEnv(bulwark.backup(bws, spec.name), env), options);
      measured = run.measured;
      const report = bulwark.parseBackupReport(measured.stdout);
      variant.bulwark = { ...bulwarkFigures(stepResult(measured, size, report)), cpuSeconds: run.cpuSeconds, emulatorCpuSeconds: run.benchCpuSeconds };
      if (typeof report.pointId === "string") Object.assign(variant.bulwark, await subBlockStats(bws.repoDir, bws.passphrase, report.pointId));
      const requests = timeline(emulator, stamps, from, startedAt);
      variant.bulwark.requests = requests;
      log(
        `azure-disk:   ${measured.seconds.toFixed(2)} s (engine ${variant.bulwark.engineSeconds?.toFixed(2) ?? "?"} s), ` +
          `Bulwark ${fixed(variant.bulwark.cpuSeconds, 2)} CPU s, emulator ${fixed(variant.bulwark.emulatorCpuSeconds, 2)} CPU s, mode ${variant.bulwark.mode}, ` +
          `diff ${mib(variant.bulwark.changedBytes ?? 0)} MiB, read ${mib(variant.bulwark.bytesFetched ?? 0)} MiB from the snapshot, ` +
          `${variant.bulwark.blocksPatched ?? "?"} blocks patched with ${variant.bulwark.baseChunksRead ?? "?"} base chunks (${mib(variant.bulwark.baseBytesRead ?? 0)} MiB) from the vault`,
      );
      log(`azure-disk:   ${describeTimeline(requests)}`);

      if (restic !== undefined) {
        if (images.version1Path !== undefined) await readThrough(rws.sourcePath);
        log(`azure-disk: ${spec.name}: restic backup of the whole image file (previous snapshot as parent)`);
        run = await runCpuStep(`restic backup (${spec.name})`, restic.backup(rws, spec.name), options);
        measured = run.measured;
        const resticReport = restic.parseBackupReport(measured.stdout);
        variant.restic = {
          step: stepResult(measured, size, resticReport),
          bytesProcessed: num(resticReport.bytesProcessed),
          filesChanged: num(resticReport.filesChanged),
          bytesAdded: num(resticReport.bytesAdded),
          cpuSeconds: run.cpuSeconds,
        };
        log(`azure-disk:   ${measured.seconds.toFixed(2)} s, ${fixed(run.cpuSeconds, 1)} CPU s`);
        variant.ratios.resticOverBulwarkSeconds = variant.restic.step.seconds / variant.bulwark.step.seconds;
        if (variant.restic.cpuSeconds !== undefined && variant.bulwark.cpuSeconds !== undefined) {
          variant.ratios.resticOverBulwarkCpu = variant.restic.cpuSeconds / variant.bulwark.cpuSeconds;
        }
        if (variant.restic.bytesProcessed !== undefined) variant.ratios.resticOverBulwarkBytes = variant.restic.bytesProcessed / bulwarkBytesRead(variant.bulwark);
      }
      if (variant.bulwark.bytesFetched !== undefined) {
        variant.ratios.fetchedOverChanged = variant.bulwark.bytesFetched / variant.bytesChanged;
        variant.ratios.readOverChanged = bulwarkBytesRead(variant.bulwark) / variant.bytesChanged;
      }

      log(`azure-disk: ${spec.name}: restoring the incremental point to a local file`);
      await rm(join(restoreDir, "disk.img"), { force: true });
      await runStep(`bulwark restore (${spec.name})`, bulwark.restore(bws, "latest", restoreDir), options);
      variant.restoreIdentical = await sameAsDisk(emulator, disk.id, await bulwark.restoredPath(bws, restoreDir));
      // restic's sparse source file is written with the disk's bytes in the same loop; comparing it too
      // would read another whole disk's worth per variant.
      if (images.version1Path !== undefined) variant.imageFileIdentical = await sameAsDisk(emulator, disk.id, rws.sourcePath);
      const imageFile = variant.imageFileIdentical === undefined ? "not compared (written with the disk's bytes)" : variant.imageFileIdentical ? "equals the disk" : "DIFFERS from the disk";
      log(`azure-disk:   restored point ${variant.restoreIdentical ? "is byte-identical to" : "DIFFERS from"} the disk; the local image file (restic's source) ${imageFile}`);
      await rm(join(restoreDir, "disk.img"), { force: true });
      variant.targets = variantTargets(variant);
    }
  } catch (error) {
    if (!(error instanceof StepFailed)) throw error;
    result.error = error.message;
    log(`azure-disk: FAILED ${error.message}`);
  } finally {
    await emulator.stop();
    await rm(restoreDir, { recursive: true, force: true });
    if (!options.keep) await rm(workDir, { recursive: true, force: true });
  }
  return result;
}

export function describeTimeline(t: RequestTimeline): string {
  return (
    `${t.requests} requests to the emulator (${t.controlPlane} control plane, of which ${t.operationPolls} operation polls; ${t.dataPlane} disk data plane); ` +
    `first request ${fixed(t.firstRequestSeconds, 2)} s after the process started, requests spanned ${fixed(t.requestSpanSeconds, 2)} s, ` +
    `${t.idleGapSeconds.toFixed(2)} s of it in gaps over 0.5 s between requests; longest waits: ` +
    t.slowest.map((g) => `${g.seconds.toFixed(2)} s until ${g.method} ${g.path.length > 60 ? `${g.path.slice(0, 57)}...` : g.path}`).join(", ")
  );
}

function pad(text: string, width: number, right: boolean): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** A markdown table, numbers right-aligned. */
export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => pad(cell, widths[i], i > 0)).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i > 0 ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

function fixed(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? "-" : value.toFixed(digits);
}

export function renderDiskTable(result: DiskCaseResult): string {
  const mib = (bytes: number | undefined) => fixed(bytes === undefined ? undefined : bytes / MiB, 1);
  const rows = result.variants.map((v) => [
    v.name,
    `${v.blocksChanged} / ${v.blocksTotal}`,
    mib(v.bytesChanged),
    mib(v.bulwark?.bytesFetched),
    mib(v.bulwark?.baseBytesRead),
    `${fixed(v.ratios.wholeBlocksOverChanged, 2)} -> ${fixed(v.ratios.readOverChanged, 2)}`,
    fixed(v.bulwark?.cpuSeconds, 2),
    fixed(v.bulwark?.emulatorCpuSeconds, 2),
    v.bulwark?.requests === undefined ? "-" : String(v.bulwark.requests.dataPlane),
    fixed(v.restic?.cpuSeconds, 1),
    fixed(v.ratios.resticOverBulwarkCpu, 1),
    fixed(v.ratios.resticOverBulwarkBytes, 0),
    fixed(v.bulwark?.step.seconds, 2),
    fixed(v.restic?.step.seconds, 2),
    v.restoreIdentical === undefined ? "-" : v.restoreIdentical ? "yes" : "NO",
  ]);
  return markdownTable(
    [
      "variant",
      "blocks changed",
      "changed MiB",
      "snapshot read MiB",
      "vault read MiB",
      "read / changed (whole blocks -> now)",
      "Bulwark CPU s",
      "emulator CPU s",
      "disk requests",
      "restic CPU s",
      "restic / Bulwark CPU",
      "restic / Bulwark bytes",
      "Bulwark wall s",
      "restic wall s",
      "restore ok",
    ],
    rows,
  );
}
