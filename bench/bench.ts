/**
 * `npm run bench [-- options]`: Bulwark against restic and borg on the same synthetic disk image,
 * in one run on one machine. See bench/README.md.
 */
import { randomUUID } from "node:crypto";
import { readFile, readdir, mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem, release, platform } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ensureImages, formatBytes } from "./image.ts";
import { combineRounds, runImageCase } from "./image-case.ts";
import type { ToolRun } from "./image-case.ts";
import { hasGnuTime } from "./measure.ts";
import { CHANGE_FRACTION, diskCaseImages, renderDiskTable, runDiskCase } from "./disk-case.ts";
import { runBacpacBench } from "./bacpac-case.ts";
import { ITEMS_DEFAULT_SIZE, runItemsBench } from "./items-case.ts";
import { COPY_DEFAULT_SIZE, runCopyBench } from "./copy-case.ts";
import { parseChunkCount, parseScaleDesigns, runScaleBench } from "./scale-case.ts";
import { runOsDiskBench } from "./os-disk-case.ts";
import { runHttpBench } from "./http-case.ts";
import { checkTargets, ratiosTo, renderTable, renderTargets } from "./report.ts";
import type { OtherSizeRun, Ratios } from "./report.ts";
import { Borg } from "./tools/borg.ts";
import { Bulwark } from "./tools/bulwark.ts";
import { Restic } from "./tools/restic.ts";
import { TOOL_NAMES } from "./tools/tool.ts";
import type { Detection, Tool, ToolName } from "./tools/tool.ts";

const PROJECT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BENCH_DIR = join(PROJECT_DIR, ".bench");
const DEFAULT_SEED = "bulwark-1";
const CASES = ["image", "azure-disk", "bacpac", "items", "copy", "scale", "os-disk", "http"] as const;

const USAGE = `usage: npm run bench -- [options]

  --size SIZES     image size: a number with M or G (binary units), multiple of 4 MiB; default 2G (items: 64G);
                   several, comma-separated (2G,8G), run one after the other with the same code
  --tools LIST     comma-separated, from ${TOOL_NAMES.join(",")}; default all
  --out FILE       results JSON; default .bench/results-<size>.json (image), .bench/azure-disk-<size>.json,
                   .bench/bacpac.json, .bench/items-<size>.json
  --seed SEED      image seed (letters, digits, . _ -); default ${DEFAULT_SEED}
  --case NAME      benchmark case: ${CASES.join(", ")} (default image)
                   azure-disk: incremental managed-disk backup through the local Azure emulator,
                   Bulwark against restic re-reading the image (uses --size, bulwark and restic)
                   bacpac: dedup of successive BACPAC-like exports, zip as is vs entries inflated
                   (Bulwark only; its own fixed scale, --size does not apply)
                   items: restore one 20 MiB file and list a 10,000-entry folder out of a sparse
                   GPT + ext4 disk point, against a full restore and a loop mount (Bulwark only, root)
                   copy: bulwark copy between two Azurite vaults, server-side against through the
                   process, and the bytes an incremental copy moves (Bulwark only; --size default 256M)
                   scale: an incremental backup of a small disk and a restore of its point in vaults of
                   1, 10 and 100 million chunks and 100,000 points (metadata synthesized under .bench/work/)
                   os-disk: an ext4 image (mke2fs -d) of real files from /usr/lib, /usr/share, /usr/bin and a
                   second version with 5% of the files deleted, rewritten and added; same steps as image
                   (--size does not apply; results in .bench/os-disk.json)
                   http: the storage SDK against an undici Pool on snapshot range reads, page writes,
                   pack uploads and pack range reads (emulator and Azurite; --size bytes per trial,
                   default 512M; --rounds default 3; results in .bench/http.json)
  --scale-max N    scale case: largest vault to synthesize, in chunks (10M, 100M; default 100M)
  --scale-designs  scale case: which index designs, comma-separated (before,catalog,sharded; default all)
  --rounds N       run every tool N times, tools taking turns; report medians (default 1; image case)
  --keep           keep the repositories under .bench/work/
  --help           this text

Images are cached under .bench/images/ keyed by size and seed. restic and borg come from Debian:
  apt-get install -y restic borgbackup`;

class UsageFailure extends Error {}

/** "512M" -> 536870912; binary units, so 2G is 2 GiB. */
export function parseSize(text: string): number {
  const match = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (match === null) throw new UsageFailure(`--size ${text}: expected a number with an optional K, M, G or T, like 512M or 2G`);
  const exponent = { "": 0, K: 1, M: 2, G: 3, T: 4 }[match[2].toUpperCase() as "" | "K" | "M" | "G" | "T"];
  const bytes = Number(match[1]) * 1024 ** exponent;
  if (bytes <= 0 || bytes % (4 << 20) !== 0) throw new UsageFailure(`--size ${text}: must be a positive multiple of 4 MiB`);
  return bytes;
}

/** 536870912 -> "512M", 2147483648 -> "2G". */
export function sizeLabel(bytes: number): string {
  return bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30}G` : `${bytes / 2 ** 20}M`;
}

function parseTools(text: string): ToolName[] {
  const names = text.split(",").map((name) => name.trim().toLowerCase()).filter((name) => name !== "");
  for (const name of names) {
    if (!(TOOL_NAMES as readonly string[]).includes(name)) {
      throw new UsageFailure(`--tools: unknown tool "${name}"; choose from ${TOOL_NAMES.join(", ")}`);
    }
  }
  if (names.length === 0) throw new UsageFailure("--tools: name at least one tool");
  // Always in the same order, so runs are comparable.
  return TOOL_NAMES.filter((name) => names.includes(name));
}

function makeTool(name: ToolName): Tool {
  switch (name) {
    case "bulwark":
      return new Bulwark(PROJECT_DIR, join(BENCH_DIR, "code"));
    case "restic":
      return new Restic();
    case "borg":
      return new Borg();
  }
}

/** Bulwark's peak memory from results of other sizes in .bench/, for the size-independence target. */
async function otherSizeRuns(currentSize: number, outPath: string): Promise<OtherSizeRun[]> {
  const found: OtherSizeRun[] = [];
  const names = await readdir(BENCH_DIR).catch(() => [] as string[]);
  for (const name of names) {
    if (!/^results-.*\.json$/.test(name)) continue;
    const file = join(BENCH_DIR, name);
    if (resolve(file) === resolve(outPath)) continue;
    try {
      const doc = JSON.parse(await readFile(file, "utf8")) as {
        image?: { sizeBytes?: number };
        tools?: { bulwark?: { run?: ToolRun; detection?: Detection } };
      };
      const sizeBytes = doc.image?.sizeBytes;
      const peak = doc.tools?.bulwark?.run?.peakRssBytes;
      const failed = doc.tools?.bulwark?.run?.error !== undefined;
      const detection = doc.tools?.bulwark?.detection;
      const version = detection?.available === true ? detection.version : "";
      if (sizeBytes !== undefined && sizeBytes !== currentSize && peak !== undefined && !failed) {
        found.push({ sizeLabel: sizeLabel(sizeBytes), sizeBytes, peakRssBytes: peak, file: join(".bench", name), version });
      }
    } catch {
      // not a results file of ours
    }
  }
  return found.sort((a, b) => a.sizeBytes - b.sizeBytes);
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: "string" },
      tools: { type: "string", default: TOOL_NAMES.join(",") },
      out: { type: "string" },
      seed: { type: "string", default: DEFAULT_SEED },
      case: { type: "string", default: "image" },
      rounds: { type: "string", default: "1" },
      keep: { type: "boolean", default: false },
      "scale-max": { type: "string", default: "100M" },
      "scale-designs": { type: "string", default: "before,catalog,sharded" },
      help: { type: "boolean", default: false },
    },
    allowPositionals: false,
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!(CASES as readonly string[]).includes(values.case)) {
    throw new UsageFailure(`--case ${values.case}: choose from ${CASES.join(", ")}`);
  }
  const sizes = (values.size ?? (values.case === "items" ? sizeLabel(ITEMS_DEFAULT_SIZE) : "2G")).split(",").map(parseSize);
  if (values.out !== undefined && sizes.length > 1) throw new UsageFailure("--out takes one --size; with several, results go to .bench/results-<size>.json");
  const toolNames = parseTools(values.tools);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new UsageFailure(`--rounds ${values.rounds}: expected 1 to 20`);
  const log = (line: string) => console.log(line);
  if (values.case !== "image" && values.case !== "http" && rounds !== 1) throw new UsageFailure(`--rounds applies to the image and http cases only`);
  if (values.case === "http") {
    const outPath = resolve(values.out ?? join(BENCH_DIR, "http.json"));
    const totalBytes = values.size === undefined ? 512 * 2 ** 20 : sizes[0];
    const roundsGiven = argv.some((arg) => arg === "--rounds" || arg.startsWith("--rounds="));
    return (await runHttpBench({ totalBytes, rounds: roundsGiven ? rounds : 3, outPath, log })) ? 0 : 1;
  }
  if (values.case === "bacpac") {
    const outPath = resolve(values.out ?? join(BENCH_DIR, "bacpac.json"));
    return (await runBacpacBench(makeTool("bulwark") as Bulwark, outPath, values.keep, log)) ? 0 : 1;
  }
  if (values.case === "copy") {
    const sizeBytes = values.size === undefined ? COPY_DEFAULT_SIZE : sizes[0];
    const outPath = resolve(values.out ?? join(BENCH_DIR, `copy-${sizeLabel(sizeBytes)}.json`));
    return (await runCopyBench({ sizeBytes, seed: values.seed, outPath, log })) ? 0 : 1;
  }
  if (values.case === "scale") {
    const outPath = resolve(values.out ?? join(BENCH_DIR, "scale.json"));
    const designs = parseScaleDesigns(values["scale-designs"]);
    const settings = { maxChunks: parseChunkCount(values["scale-max"]), designs, workRoot: join(BENCH_DIR, "work"), outPath, useGnuTime: hasGnuTime(), log };
    return (await runScaleBench(settings)) ? 0 : 1;
  }
  if (values.case === "items") {
    if (sizes.length > 1) throw new UsageFailure("--case items takes one --size");
    const outPath = resolve(values.out ?? join(BENCH_DIR, `items-${sizeLabel(sizes[0])}.json`));
    const settings = { sizeBytes: sizes[0], seed: values.seed, outPath, imagesDir: join(BENCH_DIR, "images"), keep: values.keep, log };
    return (await runItemsBench(makeTool("bulwark") as Bulwark, settings)) ? 0 : 1;
  }

  const useGnuTime = hasGnuTime();
  log(
    useGnuTime
      ? "memory: /proc tree polling every 50 ms and GNU time %M; the larger is reported"
      : "memory: /proc tree polling every 50 ms only (GNU time missing: apt-get install -y time for exact peaks)",
  );

  const detections = new Map<ToolName, Detection>();
  const tools: Tool[] = [];
  for (const name of toolNames) {
    const tool = makeTool(name);
    const detection = tool.detect();
    detections.set(name, detection);
    if (detection.available) {
      log(`${name}: ${detection.version}`);
      tools.push(tool);
    } else {
      log(`${name}: SKIPPED, ${detection.reason}. To include it: ${detection.howToInstall}`);
    }
  }
  if (tools.length === 0) {
    log("no tool to run");
    return 1;
  }

  if (values.case === "os-disk") {
    const outPath = resolve(values.out ?? join(BENCH_DIR, "os-disk.json"));
    const settings = { tools, detections, toolNames, imagesDir: join(BENCH_DIR, "images"), workRoot: join(BENCH_DIR, "work", "os-disk"), outPath, useGnuTime, keep: values.keep, log };
    return (await runOsDiskBench(settings)) ? 0 : 1;
  }

  if (values.case === "azure-disk") {
    const bulwark = tools.find((tool) => tool.name === "bulwark");
    if (bulwark === undefined) throw new UsageFailure("--case azure-disk needs bulwark among --tools (and restic for the ratio)");
    if (tools.some((tool) => tool.name === "borg")) log("borg: not part of the azure-disk case (the issue compares with restic)");
    let failed = false;
    for (const sizeBytes of sizes) {
      const outPath = resolve(values.out ?? join(BENCH_DIR, `azure-disk-${sizeLabel(sizeBytes)}.json`));
      if (sizes.length > 1) log(`\n=== ${sizeLabel(sizeBytes)} ===`);
      const settings: RunSettings = { sizeBytes, outPath, seed: values.seed, caseName: values.case, rounds, keep: values.keep, useGnuTime };
      failed = !(await runDiskSize(settings, bulwark, tools.find((tool) => tool.name === "restic"), detections, log)) || failed;
    }
    return failed ? 1 : 0;
  }

  let failed = false;
  for (const sizeBytes of sizes) {
    const outPath = resolve(values.out ?? join(BENCH_DIR, `results-${sizeLabel(sizeBytes)}.json`));
    const settings: RunSettings = { sizeBytes, outPath, seed: values.seed, caseName: values.case, rounds, keep: values.keep, useGnuTime };
    if (sizes.length > 1) log(`\n=== ${sizeLabel(sizeBytes)} ===`);
    failed = !(await runSize(settings, tools, detections, toolNames, log)) || failed;
  }
  return failed ? 1 : 0;
}

interface RunSettings {
  sizeBytes: number;
  outPath: string;
  seed: string;
  caseName: string;
  rounds: number;
  keep: boolean;
  useGnuTime: boolean;
}

/** Runs every tool at one size, prints the table and targets, writes the results; false if any failed. */
async function runSize(
  settings: RunSettings,
  tools: Tool[],
  detections: Map<ToolName, Detection>,
  toolNames: ToolName[],
  log: (line: string) => void,
): Promise<boolean> {
  const { sizeBytes, outPath, rounds, useGnuTime } = settings;
  const label = sizeLabel(sizeBytes);
  const images = await ensureImages(join(BENCH_DIR, "images"), sizeBytes, settings.seed, log);
  const d = images.description;
  log(
    `image: ${formatBytes(sizeBytes)}, seed ${settings.seed}${images.fromCache ? " (cached)" : ""}; ` +
      `1 MiB regions: ${d.regions.zero} zero, ${d.regions.text} text-like, ${d.regions.random} random`,
  );
  log(
    `version 2: ${d.blocksRewritten} of ${d.blocksTotal} 4 KiB blocks rewritten (${(100 * d.rewrittenFraction).toFixed(2)}%) ` +
      `in ${d.rewrittenRuns} runs of ${d.runLengthBlocks.min}-${d.runLengthBlocks.max} blocks (mean ${d.runLengthBlocks.mean.toFixed(1)}); ` +
      `${d.rewriteRule}`,
  );
  log("page cache: not dropped (needs root); the image (before a backup) or the vault (before a restore) is read once before each timed step, the same for every tool");

  const startedAt = new Date().toISOString();
  const roundRuns = new Map<ToolName, ToolRun[]>(tools.map((tool) => [tool.name, []]));
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so no tool always runs first (or right after another's load).
    const order = tools.map((_, i) => tools[(i + round) % tools.length]);
    if (rounds > 1) log(`round ${round + 1} of ${rounds}: ${order.map((tool) => tool.name).join(", ")}`);
    for (const tool of order) {
      const keep = settings.keep && round === rounds - 1;
      roundRuns.get(tool.name)!.push(await runImageCase(tool, images, { workRoot: join(BENCH_DIR, "work"), useGnuTime, keep, log }));
    }
  }
  const runs: Partial<Record<ToolName, ToolRun>> = {};
  for (const tool of tools) runs[tool.name] = combineRounds(roundRuns.get(tool.name)!);

  const ratios: Partial<Record<ToolName, Ratios>> = {};
  for (const name of Object.keys(runs) as ToolName[]) ratios[name] = ratiosTo(runs[name]!, runs.restic);
  const others = await otherSizeRuns(sizeBytes, outPath);
  const bulwarkDetection = detections.get("bulwark");
  const bulwarkVersion = bulwarkDetection?.available === true ? bulwarkDetection.version : undefined;
  const targets = checkTargets(runs.bulwark, bulwarkVersion, ratios.bulwark ?? {}, label, others);

  const results = {
    benchmark: "bulwark-bench",
    runId: randomUUID(),
    case: settings.caseName,
    rounds,
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: {
      nproc: cpus().length,
      cpuModel: cpus()[0]?.model,
      totalMemoryBytes: totalmem(),
      os: `${platform()} ${release()}`,
      node: process.versions.node,
    },
    method: {
      throughput: "image size / wall seconds of the tool's process, bytes per second (median over rounds)",
      memory: useGnuTime
        ? "peak RSS: max(sum over the process tree polled every 50 ms, GNU time %M of the largest process)"
        : "peak RSS: sum over the process tree polled every 50 ms",
      pageCache: "warm: the image (before a backup) or the vault folder (before a restore) read once before each timed step",
      vaultSize: "sum of the sizes of the regular files under the repository folder after both backups",
      source: "the same path for both versions (src/disk.img, hard-linked to the cached image)",
      restoreCheck: "sha256 of the restored image compared to version 2's",
    },
    image: {
      sizeBytes,
      seed: settings.seed,
      version1Sha256: images.version1Sha256,
      version2Sha256: images.version2Sha256,
      ...images.description,
    },
    tools: Object.fromEntries(
      toolNames.map((name) => {
        const detection = detections.get(name)!;
        const tool = tools.find((t) => t.name === name);
        return [
          name,
          {
            detection,
            settings: tool?.settings(),
            run: runs[name],
            rounds: rounds > 1 ? roundRuns.get(name) : undefined,
            ratiosToRestic: runs.restic === undefined ? undefined : ratios[name],
          },
        ];
      }),
    ),
    targets,
  };
  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(outPath, `${JSON.stringify(results, null, 2)}\n`);

  log("");
  log(
    `results at ${label} (${cpus().length} CPUs, ${formatBytes(totalmem())} RAM` +
      `${rounds > 1 ? `, median of ${rounds} rounds, peak memory the highest` : ""}); ratios are to restic:`,
  );
  log(renderTable(runs, ratios));
  log("");
  for (const [name, run] of Object.entries(runs) as Array<[ToolName, ToolRun]>) {
    if (run.error !== undefined) log(`${name} failed: ${run.error}`);
    else log(`${name}: restored image ${run.restoreIdentical ? "byte-identical to version 2 (sha256)" : "DIFFERS from version 2"}`);
  }
  const loads = Object.values(runs).flatMap((run) => Object.values(run.steps).map((step) => step.loadAverageAtStart));
  if (loads.length > 0) {
    log(
      `1-minute load average at step starts: ${Math.min(...loads).toFixed(2)} to ${Math.max(...loads).toFixed(2)} ` +
        `on ${cpus().length} CPUs (above ${cpus().length}, other work shared the CPUs and timings are noisy)`,
    );
  }
  log("");
  log("targets (Bulwark):");
  log(renderTargets(targets));
  log("");
  log(`results written to ${outPath}`);
  return !Object.values(runs).some((run) => run.error !== undefined || run.restoreIdentical === false);
}

function machine() {
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model,
    totalMemoryBytes: totalmem(),
    os: `${platform()} ${release()}`,
    node: process.versions.node,
  };
}

function loadLine(loads: number[]): string {
  return (
    `1-minute load average at step starts: ${Math.min(...loads).toFixed(2)} to ${Math.max(...loads).toFixed(2)} ` +
    `on ${cpus().length} CPUs (above ${cpus().length}, other work shared the CPUs and timings are noisy)`
  );
}

/** The azure-disk case at one size: prints its table and targets, writes its JSON; false if it failed. */
async function runDiskSize(
  settings: RunSettings,
  bulwark: Tool,
  restic: Tool | undefined,
  detections: Map<ToolName, Detection>,
  log: (line: string) => void,
): Promise<boolean> {
  const { sizeBytes, outPath } = settings;
  if (restic === undefined) log("restic: not run, so there is no time ratio; only Bulwark's figures");
  const images = await diskCaseImages(join(BENCH_DIR, "images"), sizeBytes, settings.seed, log);
  const d = images;
  log(
    `disk content: ${images.content}, ${formatBytes(sizeBytes)}, seed ${settings.seed}; ` +
      `1 MiB regions: ${d.regions.zero} zero or unwritten, ${d.regions.text} text-like, ${d.regions.random} random`,
  );
  const startedAt = new Date().toISOString();
  const result = await runDiskCase(images, bulwark, restic, { workRoot: join(BENCH_DIR, "work"), useGnuTime: settings.useGnuTime, keep: settings.keep, log });
  const targets = result.variants.flatMap((variant) => variant.targets);
  const document = {
    benchmark: "bulwark-bench",
    runId: randomUUID(),
    case: "azure-disk",
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: machine(),
    method: {
      source:
        "a managed disk in the local Azure emulator (test/emulator, in the benchmark's process, over HTTPS on loopback), " +
        `filled with ${images.content}`,
      bulwark:
        "`bulwark backup <disk resource id> --vault <local folder> --json`: incremental snapshot, page-range diff against the previous golden snapshot, " +
        "changed pages read over the SAS (a 64 KiB block more than half changed read whole; the rest of a partly changed block from the previous point's chunk)",
      cpu: "user + system CPU seconds of Bulwark's process and of restic's (GNU time %U %S); emulatorCpuSeconds: the benchmark's own process (the emulator serving Bulwark) during Bulwark's step",
      restic: "`restic backup` of a local image file holding the same bytes as the disk, at the same path each time, so the previous snapshot is the parent; it re-reads the whole file",
      change: `${CHANGE_FRACTION * 100}% of the blocks, two variants applied one after the other to the same disk (see each variant's definition)`,
      time: "wall seconds of the whole CLI process (node start, key derivation, ARM calls, reads, commit); engineSeconds is Bulwark's own point duration",
      bytesRead: "bytesFetched of Bulwark's --json report (bytes downloaded from the snapshot) plus baseBytesRead from the point's details (base chunks read from the vault); restic: bytes processed",
      restoreCheck: "the incremental point restored to a local file (bulwark restore latest --to), compared 16 MiB at a time with the emulator's disk content",
      pageCache: "the image file read once before each restic step; the disk lives in the emulator's memory",
    },
    disk: { sizeBytes, seed: settings.seed, allocatedBytes: result.allocatedBytes, diskId: result.diskId, content: images.content, version1Sha256: images.version1Sha256, regions: d.regions },
    tools: {
      bulwark: { detection: detections.get("bulwark"), settings: bulwark.settings() },
      restic: { detection: detections.get("restic"), settings: restic?.settings() },
    },
    firstBackup: result.firstBackup,
    variants: result.variants,
    targets,
    error: result.error,
  };
  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(outPath, `${JSON.stringify(document, null, 2)}\n`);

  log("");
  log(`azure-disk results at ${sizeLabel(sizeBytes)} (${cpus().length} CPUs, ${formatBytes(totalmem())} RAM):`);
  const first = result.firstBackup;
  if (first.bulwark !== undefined) {
    log(
      `first backups: Bulwark ${first.bulwark.step.seconds.toFixed(1)} s (${((first.bulwark.bytesFetched ?? 0) / 2 ** 20).toFixed(0)} MiB read, allocated ranges only)` +
        (first.restic === undefined ? "" : `, restic ${first.restic.step.seconds.toFixed(1)} s`),
    );
  }
  log(renderDiskTable(result));
  for (const variant of result.variants) log(`${variant.name}: ${variant.definition}`);
  const loads = [first.bulwark, first.restic, ...result.variants.flatMap((v) => [v.bulwark, v.restic])]
    .filter((x) => x !== undefined)
    .map((x) => x.step.loadAverageAtStart);
  if (loads.length > 0) log(loadLine(loads));
  if (result.error !== undefined) log(`FAILED: ${result.error}`);
  log("");
  log("targets (Bulwark):");
  log(renderTargets(targets));
  log("");
  log(`results written to ${outPath}`);
  return result.error === undefined && result.variants.every((variant) => variant.restoreIdentical === true);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageFailure || (error instanceof Error && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS"))) {
      console.error(`bench: ${error.message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else {
      console.error(error);
      process.exitCode = 1;
    }
  },
);
