/**
 * The incremental Azure disk case (issue 3): a managed disk in the local Azure emulator holding the
 * image case's version 1, backed up by `bulwark backup <disk id>`, then 1% of its blocks rewritten
 * and backed up again incrementally (snapshot, page-range diff, only the changed blocks read),
 * against `restic backup` of the whole image file, which re-reads everything.
 *
 * Two variants of "1% of the blocks", one after the other on the same disk:
 *   - 64k-blocks: 1% of the 64 KiB blocks (Bulwark's block size) rewritten whole;
 *   - 4k-blocks: 1% of the 4 KiB blocks rewritten, scattered, so Bulwark reads a whole 64 KiB
 *     block for each changed 4 KiB (up to 16x the bytes changed).
 * Each incremental point is restored to a local file and compared (sha256) with the disk's content.
 */
import { createHash, randomBytes } from "node:crypto";
import { copyFile, mkdir, open, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { startAzureEmulator } from "../test/emulator/server.ts";
import type { RunningAzureEmulator } from "../test/emulator/server.ts";
import { Keystream, REGION_SIZE, SmallRng, fillText, planLayout, sha256File } from "./image.ts";
import type { GeneratedImages, ImageLayout } from "./image.ts";
import { StepFailed, runStep, stepResult } from "./image-case.ts";
import type { CaseOptions, StepResult } from "./image-case.ts";
import { readThrough } from "./measure.ts";
import type { CommandSpec } from "./measure.ts";
import type { TargetResult } from "./report.ts";
import type { Tool, ToolWorkspace } from "./tools/tool.ts";

const KiB = 1024;
const MiB = 1024 * 1024;
/** Bulwark's block size for disks (runtime/engine/vault.ts DEFAULT_CONFIG), also the fill granularity. */
export const BULWARK_BLOCK = 64 * KiB;
export const CHANGE_FRACTION = 0.01;
export const SPEED_TARGET = 20;
export const READ_TARGET = 2;

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

function diskSha256(emulator: RunningAzureEmulator, diskId: string): string {
  const image = emulator.control.readImage(diskId);
  const hash = createHash("sha256");
  // Hash.update takes at most 2 GiB - 1 at once.
  for (let at = 0; at < image.length; at += 256 * MiB) hash.update(image.subarray(at, at + 256 * MiB));
  return hash.digest("hex");
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
  requests?: RequestTimeline;
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
  restic?: { step: StepResult; bytesProcessed?: number; filesChanged?: number; bytesAdded?: number };
  ratios: { resticOverBulwarkSeconds?: number; fetchedOverChanged?: number };
  diskSha256?: string;
  imageFileSha256?: string;
  restoredSha256?: string;
  restoreIdentical?: boolean;
  targets: TargetResult[];
}

export interface DiskCaseResult {
  sizeBytes: number;
  allocatedBytes: number;
  diskId: string;
  firstBackup: { bulwark?: BulwarkIncremental; restic?: { step: StepResult; bytesProcessed?: number; bytesAdded?: number } };
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
      "Bulwark reads the whole 64 KiB block around each",
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

function withEnv(spec: CommandSpec, env: Record<string, string>): CommandSpec {
  return { ...spec, env: { ...spec.env, ...env } };
}

export function variantTargets(variant: VariantResult): TargetResult[] {
  const speed = variant.ratios.resticOverBulwarkSeconds;
  const read = variant.ratios.fetchedOverChanged;
  return [
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
          detail: `${read.toFixed(2)}x (${(variant.bulwark!.bytesFetched! / MiB).toFixed(1)} MiB read for ${(variant.bytesChanged / MiB).toFixed(1)} MiB changed)`,
        },
  ];
}

/**
 * Runs the case. `bulwark` must have been detected (its runtime/ frozen); `restic` is optional
 * (without it there is no ratio, only Bulwark's figures).
 */
export async function runDiskCase(
  images: GeneratedImages,
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
  const result: DiskCaseResult = { sizeBytes: size, allocatedBytes: 0, diskId: "", firstBackup: {}, variants: [] };
  try {
    emulator.world.addResourceGroup("bench", "westeurope");
    const disk = emulator.compute.createDisk("bench", "bench-disk", size);
    result.diskId = disk.id;
    result.allocatedBytes = await fillDisk(emulator, disk.id, images.version1Path, size);
    log(`azure-disk: managed disk ${disk.id}, ${mib(size)} MiB, ${mib(result.allocatedBytes)} MiB written (non-zero 64 KiB pieces of the image's version 1)`);

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
    const env = emulator.env;

    await runStep("bulwark init", bulwark.init(bws), options);
    log("azure-disk: bulwark first backup of the disk");
    let from = emulator.requestLog.length;
    let startedAt = performance.now();
    let measured = await runStep("bulwark first backup", withEnv(bulwark.backup(bws, "v1"), env), options);
    result.firstBackup.bulwark = bulwarkFigures(stepResult(measured, size, bulwark.parseBackupReport(measured.stdout)));
    result.firstBackup.bulwark.requests = timeline(emulator, stamps, from, startedAt);
    log(`azure-disk:   ${measured.seconds.toFixed(1)} s, mode ${result.firstBackup.bulwark.mode}, ${mib(result.firstBackup.bulwark.bytesFetched ?? 0)} MiB read`);
    log(`azure-disk:   ${describeTimeline(result.firstBackup.bulwark.requests)}`);

    await copyFile(images.version1Path, rws.sourcePath);
    if (restic !== undefined) {
      await runStep("restic init", restic.init(rws), options);
      await readThrough(rws.sourcePath);
      log("azure-disk: restic first backup of the image file");
      measured = await runStep("restic first backup", restic.backup(rws, "v1"), options);
      const report = restic.parseBackupReport(measured.stdout);
      result.firstBackup.restic = { step: stepResult(measured, size, report), bytesProcessed: num(report.bytesProcessed), bytesAdded: num(report.bytesAdded) };
      log(`azure-disk:   ${measured.seconds.toFixed(1)} s`);
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
        ratios: {},
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
      measured = await runStep(`bulwark incremental (${spec.name})`, withEnv(bulwark.backup(bws, spec.name), env), options);
      variant.bulwark = bulwarkFigures(stepResult(measured, size, bulwark.parseBackupReport(measured.stdout)));
      const requests = timeline(emulator, stamps, from, startedAt);
      variant.bulwark.requests = requests;
      log(
        `azure-disk:   ${measured.seconds.toFixed(2)} s (engine ${variant.bulwark.engineSeconds?.toFixed(2) ?? "?"} s), mode ${variant.bulwark.mode}, ` +
          `diff ${mib(variant.bulwark.changedBytes ?? 0)} MiB, read ${mib(variant.bulwark.bytesFetched ?? 0)} MiB`,
      );
      log(`azure-disk:   ${describeTimeline(requests)}`);

      if (restic !== undefined) {
        await readThrough(rws.sourcePath);
        log(`azure-disk: ${spec.name}: restic backup of the whole image file (previous snapshot as parent)`);
        measured = await runStep(`restic backup (${spec.name})`, restic.backup(rws, spec.name), options);
        const report = restic.parseBackupReport(measured.stdout);
        variant.restic = {
          step: stepResult(measured, size, report),
          bytesProcessed: num(report.bytesProcessed),
          filesChanged: num(report.filesChanged),
          bytesAdded: num(report.bytesAdded),
        };
        log(`azure-disk:   ${measured.seconds.toFixed(2)} s`);
        variant.ratios.resticOverBulwarkSeconds = variant.restic.step.seconds / variant.bulwark.step.seconds;
      }
      if (variant.bulwark.bytesFetched !== undefined) variant.ratios.fetchedOverChanged = variant.bulwark.bytesFetched / variant.bytesChanged;

      log(`azure-disk: ${spec.name}: restoring the incremental point to a local file`);
      await rm(join(restoreDir, "disk.img"), { force: true });
      await runStep(`bulwark restore (${spec.name})`, bulwark.restore(bws, "latest", restoreDir), options);
      variant.restoredSha256 = await sha256File(await bulwark.restoredPath(bws, restoreDir));
      variant.diskSha256 = diskSha256(emulator, disk.id);
      variant.imageFileSha256 = await sha256File(rws.sourcePath);
      variant.restoreIdentical = variant.restoredSha256 === variant.diskSha256;
      log(
        `azure-disk:   restored point ${variant.restoreIdentical ? "is byte-identical to" : "DIFFERS from"} the disk (sha256)` +
          `; the local image file (restic's source) ${variant.imageFileSha256 === variant.diskSha256 ? "equals" : "DIFFERS from"} the disk`,
      );
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
  const rows = result.variants.map((v) => [
    v.name,
    `${v.blocksChanged} / ${v.blocksTotal}`,
    fixed(v.bytesChanged / MiB, 1),
    fixed(v.bulwark?.changedBytes === undefined ? undefined : v.bulwark.changedBytes / MiB, 1),
    fixed(v.bulwark?.bytesFetched === undefined ? undefined : v.bulwark.bytesFetched / MiB, 1),
    fixed(v.ratios.fetchedOverChanged, 2),
    fixed(v.bulwark?.step.seconds, 2),
    fixed(v.bulwark?.engineSeconds, 2),
    fixed(v.restic?.step.seconds, 2),
    fixed(v.ratios.resticOverBulwarkSeconds, 1),
    v.restoreIdentical === undefined ? "-" : v.restoreIdentical ? "yes" : "NO",
  ]);
  return markdownTable(
    ["variant", "blocks changed", "changed MiB", "diff MiB", "Bulwark read MiB", "read / changed", "Bulwark s", "engine s", "restic s", "restic / Bulwark", "restore ok"],
    rows,
  );
}
