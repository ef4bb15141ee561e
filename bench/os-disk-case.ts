/**
 * The OS-disk case (issue 13, "Engine speed"): an ext4 disk image of real system files from this
 * machine, made with `mke2fs -t ext4 -d <folder>`, then a second version in which 5% of the files
 * are deleted, 5% rewritten and as many new ones added; each tool backs up version 1, then version
 * 2 at the same path, then restores version 2, which must be byte-identical (sha256). The steps are
 * the image case's (image-case.ts), so the figures sit beside the synthetic image's.
 *
 * Version 2 is version 1 changed in place (debugfs on a copy of the image), as a running system
 * changes its disk: untouched files keep their blocks, new and rewritten files land in free space.
 * A second `mke2fs -d` of the changed folder would instead re-lay out every file after the first
 * change, which no disk in use does.
 *
 * Needs mke2fs, debugfs and e2fsck (e2fsprogs). Runs as any user that can read the chosen files.
 */
import { spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { access, copyFile, lstat, mkdir, open, readFile, readdir, rename, rm, utimes, writeFile } from "node:fs/promises";
import { cpus, loadavg, platform, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { SmallRng, formatBytes, sha256File } from "./image.ts";
import type { GeneratedImages, ImageDescription } from "./image.ts";
import { runImageCase } from "./image-case.ts";
import type { ToolRun } from "./image-case.ts";
import { checkTargets, ratiosTo, renderTable, renderTargets } from "./report.ts";
import type { Ratios } from "./report.ts";
import type { Detection, Tool, ToolName } from "./tools/tool.ts";

const MiB = 2 ** 20;
/** Bumped whenever the selection, the change plan or the image layout changes: invalidates the cache. */
const GENERATOR_VERSION = 1;
const SEED = "os-disk-1";
/** Where the files come from: programs, libraries and shared data, as on any Linux system disk. */
export const SOURCE_FOLDERS = ["/usr/lib", "/usr/share", "/usr/bin"];
/** Bytes of files in version 1: about three quarters of the disk, as a system disk in use. */
export const FILE_BUDGET = 1100 * MiB;
export const IMAGE_BYTES = 1536 * MiB;
export const CHANGE_FRACTION = 0.05;
const BLOCK = 4096;
/** Names debugfs's command line takes without quoting trouble; files with other names are skipped. */
const SAFE_NAME = /^[A-Za-z0-9._+@,=:~-]+$/;
/** Fixed times and ids, so rebuilding from the same files gives the same image. */
const FIXED_TIME = new Date("2026-01-01T00:00:00Z");
const FS_UUID = "6b756c77-6172-4b00-8000-6f732d646973";
const HASH_SEED = "6b756c77-6172-4b00-8000-686173686564";

export interface SystemFile {
  /** Absolute path on this machine, also the path inside the image. */
  path: string;
  size: number;
}

export interface ChangePlan {
  deleted: SystemFile[];
  rewritten: SystemFile[];
  added: SystemFile[];
}

export interface OsDiskDescription {
  generatorVersion: number;
  sources: string[];
  files: number;
  fileBytes: number;
  /** sha256 of the selected paths and sizes: two runs on the same files have the same one. */
  selectionSha256: string;
  deleted: { files: number; bytes: number };
  rewritten: { files: number; bytes: number };
  added: { files: number; bytes: number };
  rewriteRule: string;
  /** 4 KiB blocks of the image that differ between version 1 and version 2. */
  blocksChanged: number;
  blocksTotal: number;
}

export interface OsDiskImages extends GeneratedImages {
  osDisk: OsDiskDescription;
}

export interface OsDiskSettings {
  tools: Tool[];
  detections: Map<ToolName, Detection>;
  toolNames: ToolName[];
  imagesDir: string;
  workRoot: string;
  outPath: string;
  useGnuTime: boolean;
  keep: boolean;
  log: (line: string) => void;
}

/** Regular files under the folders (no links, devices or unreadable files), in path order. */
export async function listSystemFiles(folders: string[]): Promise<SystemFile[]> {
  const found: SystemFile[] = [];
  for (const folder of folders) {
    const entries = await readdir(folder, { withFileTypes: true, recursive: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isFile()) continue;
      const path = join(entry.parentPath, entry.name);
      if (!path.split("/").slice(1).every((part) => SAFE_NAME.test(part))) continue;
      const info = await lstat(path).catch(() => undefined);
      if (info === undefined || !info.isFile()) continue;
      if (!(await access(path, constants.R_OK).then(() => true, () => false))) continue;
      found.push({ path, size: info.size });
    }
  }
  return found.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * A pseudo-random but deterministic order of the files (sha256 of seed and path), so the selection
 * mixes all folders and does not depend on the order the file system lists them in; the first
 * files up to `budget` bytes are version 1, the rest the pool new files are taken from.
 */
export function selectFiles(all: SystemFile[], budget: number, seed: string): { selected: SystemFile[]; pool: SystemFile[] } {
  const keyed = all.map((file) => ({ file, key: createHash("sha256").update(`${seed}/${file.path}`).digest("hex") }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : 1));
  const selected: SystemFile[] = [];
  const pool: SystemFile[] = [];
  let bytes = 0;
  for (const { file } of keyed) {
    if (bytes + file.size <= budget) {
      selected.push(file);
      bytes += file.size;
    } else {
      pool.push(file);
    }
  }
  return { selected, pool };
}

/** `fraction` of the files deleted, another `fraction` rewritten, as many added from the pool; disjoint. */
export function planChanges(selected: SystemFile[], pool: SystemFile[], fraction: number, seed: string): ChangePlan {
  const rng = new SmallRng(seed, "os-disk/changes");
  const count = Math.round(selected.length * fraction);
  const order = selected.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const deleted = order.slice(0, count).map((i) => selected[i]);
  const rewritten = order.slice(count, 2 * count).map((i) => selected[i]);
  // Added files: the next ones in the selection order (so of typical sizes), none over 8 MiB so the changed disk has room.
  const added = pool.filter((file) => file.size <= 8 * MiB).slice(0, count);
  return { deleted, rewritten, added };
}

/** The new version of a rewritten file: its bytes with 1 KiB of new bytes inserted at a seeded offset (an update that shifts the rest). */
export function rewrittenContent(original: Buffer, path: string, seed: string): Buffer {
  const rng = new SmallRng(seed, `os-disk/rewrite/${path}`);
  const at = rng.int(0, original.length);
  const inserted = Buffer.alloc(1024);
  for (let i = 0; i < inserted.length; i += 4) inserted.writeUInt32LE(rng.nextU32(), i);
  return Buffer.concat([original.subarray(0, at), inserted, original.subarray(at)]);
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  const result = spawnSync(command, args, { encoding: "utf8", env: { ...process.env, E2FSPROGS_FAKE_TIME: String(FIXED_TIME.getTime() / 1000), ...env }, maxBuffer: 64 * MiB });
  if (result.error !== undefined) throw new Error(`${command}: ${result.error.message} (install e2fsprogs: apt-get install -y e2fsprogs)`);
  if (result.status !== 0) throw new Error(`\`${command} ${args.join(" ")}\` exited ${result.status}:\n${`${result.stderr}${result.stdout}`.trim().split("\n").slice(-8).join("\n")}`);
  return `${result.stdout}${result.stderr}`;
}

/** Copies the files under `tree` at their own paths, with fixed times (files, then folders deepest first). */
async function buildTree(tree: string, files: SystemFile[]): Promise<void> {
  const folders = new Set<string>();
  for (const file of files) {
    const target = join(tree, file.path);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(file.path, target);
    await utimes(target, FIXED_TIME, FIXED_TIME);
    for (let folder = dirname(file.path); folder !== "/"; folder = dirname(folder)) folders.add(folder);
  }
  for (const folder of [...folders].sort((a, b) => b.length - a.length)) await utimes(join(tree, folder), FIXED_TIME, FIXED_TIME);
}

/**
 * The debugfs commands that turn version 1 into version 2: deletions, rewrites (remove, write the
 * new content), additions (their missing folders first). Content comes from `staging`.
 */
async function changeScript(plan: ChangePlan, present: Set<string>, staging: string, seed: string): Promise<string> {
  const lines: string[] = [];
  for (const file of plan.deleted) lines.push(`rm ${file.path}`);
  for (const [n, file] of plan.rewritten.entries()) {
    const local = join(staging, `rewritten-${n}`);
    await writeFile(local, rewrittenContent(await readFile(file.path), file.path, seed));
    lines.push(`rm ${file.path}`, `write ${local} ${file.path}`);
  }
  for (const file of plan.added) {
    const missing: string[] = [];
    for (let folder = dirname(file.path); folder !== "/" && !present.has(folder); folder = dirname(folder)) missing.unshift(folder);
    for (const folder of missing) {
      lines.push(`mkdir ${folder}`);
      present.add(folder);
    }
    lines.push(`write ${file.path} ${file.path}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Counts the 4 KiB blocks that differ between two images of the same size. */
async function blocksChanged(pathA: string, pathB: string, size: number): Promise<number> {
  const [a, b] = await Promise.all([open(pathA, "r"), open(pathB, "r")]);
  const bufA = Buffer.alloc(4 * MiB);
  const bufB = Buffer.alloc(4 * MiB);
  let changed = 0;
  try {
    for (let offset = 0; offset < size; offset += bufA.length) {
      const [ra, rb] = await Promise.all([a.read(bufA, 0, bufA.length, offset), b.read(bufB, 0, bufB.length, offset)]);
      const length = Math.min(ra.bytesRead, rb.bytesRead);
      for (let at = 0; at < length; at += BLOCK) if (bufA.compare(bufB, at, at + BLOCK, at, at + BLOCK) !== 0) changed++;
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
  return changed;
}

function sum(files: SystemFile[]): { files: number; bytes: number } {
  return { files: files.length, bytes: files.reduce((total, file) => total + file.size, 0) };
}

/**
 * Versions 1 and 2 of the OS disk, from the cache under `imagesDir` when the same files were
 * selected before (the metadata file is written last, so an interrupted build is redone).
 */
export async function ensureOsDiskImages(imagesDir: string, log: (line: string) => void): Promise<OsDiskImages> {
  const all = await listSystemFiles(SOURCE_FOLDERS);
  const { selected, pool } = selectFiles(all, FILE_BUDGET, SEED);
  const plan = planChanges(selected, pool, CHANGE_FRACTION, SEED);
  const selectionSha256 = createHash("sha256").update(JSON.stringify([GENERATOR_VERSION, selected, plan])).digest("hex");
  const stem = join(imagesDir, `os-disk-${selectionSha256.slice(0, 16)}`);
  const version1Path = `${stem}-v1.img`;
  const version2Path = `${stem}-v2.img`;
  const metaPath = `${stem}.json`;
  const cached = await readFile(metaPath, "utf8").then((text) => JSON.parse(text) as Omit<OsDiskImages, "fromCache">, () => undefined);
  if (cached !== undefined) return { ...cached, fromCache: true };

  log(`building the OS disk: ${selected.length} files, ${formatBytes(sum(selected).bytes)} from ${SOURCE_FOLDERS.join(", ")} into a ${formatBytes(IMAGE_BYTES)} ext4 image ...`);
  const started = performance.now();
  const work = `${stem}.build`;
  await rm(work, { recursive: true, force: true });
  await mkdir(join(work, "staging"), { recursive: true });
  try {
    await buildTree(join(work, "tree"), selected);
    const blocks = String(IMAGE_BYTES / BLOCK);
    run("mke2fs", ["-q", "-F", "-t", "ext4", "-b", String(BLOCK), "-U", FS_UUID, "-E", `hash_seed=${HASH_SEED},root_owner=0:0`, "-d", join(work, "tree"), `${version1Path}.partial`, blocks]);
    await rename(`${version1Path}.partial`, version1Path);

    const present = new Set<string>();
    for (const file of selected) for (let folder = dirname(file.path); folder !== "/"; folder = dirname(folder)) present.add(folder);
    const script = join(work, "changes.debugfs");
    await writeFile(script, await changeScript(plan, present, join(work, "staging"), SEED));
    await copyFile(version1Path, `${version2Path}.partial`);
    const output = run("debugfs", ["-w", "-f", script, `${version2Path}.partial`]);
    // debugfs reports a failed command on its output but still exits 0.
    const failure = output.split("\n").find((line) => /^(rm|write|mkdir): /.test(line) || / while /.test(line));
    if (failure !== undefined) throw new Error(`changing the OS disk with debugfs failed: ${failure}`);
    run("e2fsck", ["-fn", `${version2Path}.partial`]);
    await rename(`${version2Path}.partial`, version2Path);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const [version1Sha256, version2Sha256] = [await sha256File(version1Path), await sha256File(version2Path)];
  const changed = await blocksChanged(version1Path, version2Path, IMAGE_BYTES);
  const osDisk: OsDiskDescription = {
    generatorVersion: GENERATOR_VERSION,
    sources: SOURCE_FOLDERS,
    files: selected.length,
    fileBytes: sum(selected).bytes,
    selectionSha256,
    deleted: sum(plan.deleted),
    rewritten: sum(plan.rewritten),
    added: sum(plan.added),
    rewriteRule: "1 KiB of new bytes inserted at a seeded offset of the file (the rest shifts), written as a new file in the image",
    blocksChanged: changed,
    blocksTotal: IMAGE_BYTES / BLOCK,
  };
  const images: Omit<OsDiskImages, "fromCache"> = {
    version1Path,
    version2Path,
    version1Sha256,
    version2Sha256,
    sizeBytes: IMAGE_BYTES,
    seed: SEED,
    description: imageDescription(osDisk),
    osDisk,
  };
  await writeFile(metaPath, JSON.stringify(images, null, 2));
  log(`built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { ...images, fromCache: false };
}

/** The image case's description fields that apply to a real disk: no synthetic regions, the changed blocks as counted. */
function imageDescription(osDisk: OsDiskDescription): ImageDescription {
  return {
    generatorVersion: osDisk.generatorVersion,
    regionSize: 0,
    regions: { zero: 0, text: 0, random: 0 },
    blockSize: BLOCK,
    blocksTotal: osDisk.blocksTotal,
    blocksRewritten: osDisk.blocksChanged,
    rewrittenRuns: 0,
    rewrittenFraction: osDisk.blocksChanged / osDisk.blocksTotal,
    runLengthBlocks: { min: 0, max: 0, mean: 0 },
    rewrittenByRegionKind: { zero: 0, text: 0, random: 0 },
    rewriteRule: `real files: ${osDisk.rewriteRule}`,
  };
}

/** Runs every tool on the OS disk, prints the table and targets, writes the results; false if any failed. */
export async function runOsDiskBench(settings: OsDiskSettings): Promise<boolean> {
  const { tools, log } = settings;
  const images = await ensureOsDiskImages(settings.imagesDir, log);
  const d = images.osDisk;
  log(
    `OS disk: ${formatBytes(IMAGE_BYTES)} ext4, ${d.files} files (${formatBytes(d.fileBytes)}) from ${d.sources.join(", ")}${images.fromCache ? " (cached)" : ""}; ` +
      `version 2: ${d.deleted.files} deleted, ${d.rewritten.files} rewritten, ${d.added.files} added (${formatBytes(d.added.bytes)}); ` +
      `${d.blocksChanged} of ${d.blocksTotal} 4 KiB blocks differ (${((100 * d.blocksChanged) / d.blocksTotal).toFixed(2)}%)`,
  );
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg()[0];
  const runs: Partial<Record<ToolName, ToolRun>> = {};
  for (const tool of tools) {
    runs[tool.name] = await runImageCase(tool, images, { workRoot: settings.workRoot, useGnuTime: settings.useGnuTime, keep: settings.keep, log });
  }
  const ratios: Partial<Record<ToolName, Ratios>> = {};
  for (const name of Object.keys(runs) as ToolName[]) ratios[name] = ratiosTo(runs[name]!, runs.restic);
  const bulwarkDetection = settings.detections.get("bulwark");
  const targets = checkTargets(runs.bulwark, bulwarkDetection?.available === true ? bulwarkDetection.version : undefined, ratios.bulwark ?? {}, "os-disk", []);
  const loads = Object.values(runs).flatMap((r) => Object.values(r.steps).map((step) => step.loadAverageAtStart));
  const document = {
    benchmark: "bulwark-bench",
    runId: randomUUID(),
    case: "os-disk",
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: { nproc: cpus().length, cpuModel: cpus()[0]?.model, totalMemoryBytes: totalmem(), os: `${platform()} ${release()}`, node: process.versions.node },
    load: { atStart: loadAtStart, stepStarts: loads },
    method: {
      image: `mke2fs -t ext4 -d of ${d.files} regular files chosen from ${d.sources.join(", ")} (sha256 order of seed and path, up to ${formatBytes(FILE_BUDGET)})`,
      version2: "version 1 changed in place with debugfs: files removed, rewritten (removed and written anew) and added, then checked with e2fsck -fn",
      steps: "the image case's (image-case.ts): init, backup v1, backup v2 at the same path, restore v2, sha256 of the restored image",
      throughput: "image size / wall seconds of the tool's process",
      pageCache: "warm: the image (before a backup) or the vault folder (before a restore) read once before each timed step",
    },
    image: { sizeBytes: IMAGE_BYTES, version1Sha256: images.version1Sha256, version2Sha256: images.version2Sha256, ...d },
    tools: Object.fromEntries(
      settings.toolNames.map((name) => [
        name,
        { detection: settings.detections.get(name), settings: tools.find((t) => t.name === name)?.settings(), run: runs[name], ratiosToRestic: runs.restic === undefined ? undefined : ratios[name] },
      ]),
    ),
    targets,
  };
  await mkdir(dirname(settings.outPath), { recursive: true });
  await writeFile(settings.outPath, `${JSON.stringify(document, null, 2)}\n`);

  log("");
  log(`os-disk results (${cpus().length} CPUs, ${formatBytes(totalmem())} RAM); ratios are to restic:`);
  log(renderTable(runs, ratios));
  log("");
  for (const [name, result] of Object.entries(runs) as Array<[ToolName, ToolRun]>) {
    if (result.error !== undefined) log(`${name} failed: ${result.error}`);
    else log(`${name}: restored image ${result.restoreIdentical ? "byte-identical to version 2 (sha256)" : "DIFFERS from version 2"}`);
  }
  if (loads.length > 0) {
    log(
      `1-minute load average at step starts: ${Math.min(...loads).toFixed(2)} to ${Math.max(...loads).toFixed(2)} on ${cpus().length} CPUs ` +
        `(above ${cpus().length}, other work shared the CPUs and timings are noisy)`,
    );
  }
  log("");
  log("targets (Bulwark):");
  log(renderTargets(targets));
  log("");
  log(`results written to ${settings.outPath}`);
  return !Object.values(runs).some((result) => result.error !== undefined || result.restoreIdentical === false);
}
