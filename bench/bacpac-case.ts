/**
 * The BACPAC dedup case (issue 3): how much of a second, slightly changed export is new to the
 * vault, when Bulwark backs up the zip as it is (content-defined chunking of the file: what it
 * does today), and when the zip's entries are inflated and chunked instead.
 *
 * Measured three ways:
 *   - Bulwark's CLI on the zip files (`bulwark backup export-N.bacpac`): bytesNew and bytesStored
 *     of the second backup, averaged over three vaults (each key chunks differently);
 *   - Bulwark's CLI on the inflated entries concatenated in zip order (`export-N.entries`): the
 *     same figures if a BACPAC were ingested entry by entry, uncompressed (stored with zstd);
 *   - in process with the engine's Chunker: each inflated entry chunked on its own (chunk
 *     boundaries reset at entry boundaries), at Bulwark's chunk sizes and at a smaller average,
 *     counting the bytes of chunks not seen in export 1 (and their zstd size), averaged over
 *     several random chunker keys (boundaries depend on the key; 1 MiB chunks of a 31 MiB zip are few).
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { cpus, totalmem, platform, release } from "node:os";
import { dirname, join, resolve } from "node:path";
import zlib from "node:zlib";
import { Chunker } from "../runtime/engine/chunker.ts";
import type { ChunkerParams } from "../runtime/engine/chunker.ts";
import { DEFAULT_CONFIG } from "../runtime/engine/vault.ts";
import { CHANGES, TABLES, makeExport } from "./bacpac.ts";
import type { BacpacExport } from "./bacpac.ts";
import { markdownTable } from "./disk-case.ts";
import { formatBytes } from "./image.ts";
import { StepFailed, runStep, stepResult } from "./image-case.ts";
import type { CaseOptions, StepResult } from "./image-case.ts";
import { hasGnuTime, treeBytes } from "./measure.ts";
import type { Bulwark } from "./tools/bulwark.ts";
import type { ToolWorkspace } from "./tools/tool.ts";

const MiB = 2 ** 20;
const SEED = "bulwark-1";
/** Chunker keys per in-process method. */
const KEYS = 8;
/** Vaults (keys) per CLI method. */
const CLI_VAULTS = 3;

export interface MethodResult {
  method: string;
  how: string;
  /** Size of what the second backup reads (the zip, or the inflated entries). */
  export2Bytes: number;
  /** Bytes of chunks the second backup found new. */
  newBytes: number;
  newFraction: number;
  /** Lowest and highest new fraction over the chunker keys tried (in-process methods). */
  newFractionRange?: [number, number];
  /** What the second backup added to the vault (compressed, encrypted), or the zstd size of the new chunks. */
  storedBytes?: number;
  /** Stored bytes of the second backup as a fraction of the second zip's size. */
  storedOverZip?: number;
  firstBackupStoredBytes?: number;
  vaultBytes?: number;
  /** Each vault's steps (CLI methods). */
  cliRuns?: Array<{ steps: Record<string, StepResult>; vaultBytes: number }>;
}

interface ChunkCount {
  newBytes: number;
  totalBytes: number;
  newStoredBytes: number;
  perEntry: Array<{ entry: string; bytes: number; newBytes: number }>;
}

/** Chunks each entry on its own; counts the bytes of export 2's chunks that export 1 did not have. */
function chunkEntries(exports: BacpacExport[], params: ChunkerParams, zstdLevel: number, separately: "entries" | "zip"): ChunkCount {
  const chunker = new Chunker(randomBytes(32), params);
  const seen = new Set<string>();
  const result: ChunkCount = { newBytes: 0, totalBytes: 0, newStoredBytes: 0, perEntry: [] };
  for (const [index, exported] of exports.entries()) {
    const streams = separately === "entries" ? exported.entries.map((e) => ({ name: e.name, data: e.data })) : [{ name: "(zip)", data: exported.zip }];
    for (const stream of streams) {
      let newBytes = 0;
      for (let at = 0; at < stream.data.length; ) {
        const length = chunker.next(stream.data.subarray(at), true);
        const chunk = stream.data.subarray(at, at + length);
        const id = createHash("sha256").update(chunk).digest("hex");
        if (!seen.has(id)) {
          seen.add(id);
          if (index === 1) {
            newBytes += length;
            result.newStoredBytes += zlib.zstdCompressSync(chunk, { params: { [zlib.constants.ZSTD_c_compressionLevel]: zstdLevel } }).length;
          }
        }
        at += length;
      }
      if (index === 1) {
        result.newBytes += newBytes;
        result.totalBytes += stream.data.length;
        result.perEntry.push({ entry: stream.name, bytes: stream.data.length, newBytes });
      }
    }
  }
  return result;
}

/** How many entries a different deflate level would not reproduce byte for byte. */
function deflateReproduction(exported: BacpacExport): Record<string, string> {
  const original = exported.entries.map((e) => zlib.deflateRawSync(e.data));
  const differing = (level: number) =>
    exported.entries.filter((e, i) => !zlib.deflateRawSync(e.data, { level }).equals(original[i])).length;
  const total = exported.entries.length;
  return {
    written: "zlib deflate, default level (6), Node's zlib",
    sameZlibSameLevel: `${total - exported.entries.filter((e, i) => !zlib.deflateRawSync(e.data).equals(original[i])).length} of ${total} entries reproduced`,
    level9: `${differing(9)} of ${total} entries differ`,
    level1: `${differing(1)} of ${total} entries differ`,
  };
}

function num(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}

export async function runBacpacBench(bulwark: Bulwark, outPath: string, keep: boolean, log: (line: string) => void): Promise<boolean> {
  const detection = bulwark.detect();
  if (!detection.available) {
    log(`bulwark: SKIPPED, ${detection.reason}. ${detection.howToInstall}`);
    return false;
  }
  log(`bulwark: ${detection.version}`);
  const useGnuTime = hasGnuTime();
  const workDir = resolve(join(dirname(outPath), "work", "bacpac"));
  const options: CaseOptions = { workRoot: workDir, useGnuTime, keep, log };
  const startedAt = new Date().toISOString();

  log("bacpac: generating exports 1 and 2 (deterministic)");
  const started = performance.now();
  const exports = [makeExport(1, SEED), makeExport(2, SEED)];
  const rawBytes = exports.map((e) => e.entries.reduce((sum, entry) => sum + entry.data.length, 0));
  log(`bacpac: generated in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  log(
    `bacpac: ${TABLES.length} tables; export 1: zip ${(exports[0].zip.length / MiB).toFixed(1)} MiB (${(rawBytes[0] / MiB).toFixed(1)} MiB inflated); ` +
      `export 2: zip ${(exports[1].zip.length / MiB).toFixed(1)} MiB (${(rawBytes[1] / MiB).toFixed(1)} MiB inflated)`,
  );
  const changed = exports[1].tables.filter((t) => t.rowsUpdated > 0 || t.rowsAppended > 0);
  log(
    `bacpac: export 2 = export 1 with ${changed.map((t) => `${t.table} ${t.rowsUpdated > 0 ? `${t.rowsUpdated} of ${t.rows} rows updated` : `${t.rowsAppended} rows appended`}`).join(", ")}; new Origin.xml`,
  );

  await rm(workDir, { recursive: true, force: true });
  await mkdir(workDir, { recursive: true });
  const methods: MethodResult[] = [];
  let error: string | undefined;
  try {
    for (const form of ["zip", "entries"] as const) {
      // Each vault has its own secret key, so its own chunk boundaries: several vaults, as in process.
      const runs: Array<{ reports: Array<Record<string, unknown>>; steps: Record<string, StepResult>; vaultBytes: number }> = [];
      for (let v = 0; v < CLI_VAULTS; v++) {
        const ws: ToolWorkspace = {
          workDir: join(workDir, `${form}-${v + 1}`),
          repoDir: join(workDir, `${form}-${v + 1}`, "vault"),
          cacheDir: join(workDir, `${form}-${v + 1}`, "cache"),
          sourcePath: "",
          passphrase: randomBytes(24).toString("base64url"),
        };
        await mkdir(ws.cacheDir, { recursive: true });
        const steps: Record<string, StepResult> = {};
        steps.init = stepResult(await runStep(`${form}: init`, bulwark.init(ws), options), undefined);
        const reports: Array<Record<string, unknown>> = [];
        for (const exported of exports) {
          // Not .bin: the CLI takes .img/.raw/.vhd/.iso/.bin/.dd for disk images.
          ws.sourcePath = join(ws.workDir, form === "zip" ? `export-${exported.version}.bacpac` : `export-${exported.version}.entries`);
          await writeFile(ws.sourcePath, form === "zip" ? exported.zip : Buffer.concat(exported.entries.map((e) => e.data)));
          log(`bacpac: bulwark backup of ${ws.sourcePath.slice(workDir.length + 1)} (vault ${v + 1} of ${CLI_VAULTS})`);
          const measured = await runStep(`${form}: backup ${exported.version}`, bulwark.backup(ws), options);
          const report = bulwark.parseBackupReport(measured.stdout);
          steps[`backup${exported.version}`] = stepResult(measured, undefined, report);
          reports.push(report);
        }
        runs.push({ reports, steps, vaultBytes: await treeBytes(ws.repoDir) });
        await rm(ws.workDir, { recursive: true, force: true });
      }
      const export2Bytes = form === "zip" ? exports[1].zip.length : rawBytes[1];
      const average = (pick: (run: (typeof runs)[number]) => number | undefined) => {
        const values = runs.map(pick).filter((value) => value !== undefined);
        return values.length === 0 ? undefined : values.reduce((a, b) => a + b, 0) / values.length;
      };
      const fractions = runs.map((run) => (num(run.reports[1].bytesNew) ?? NaN) / export2Bytes);
      const newBytes = average((run) => num(run.reports[1].bytesNew)) ?? NaN;
      const storedBytes = average((run) => num(run.reports[1].bytesAdded));
      methods.push({
        method: form === "zip" ? "zip as is (Bulwark today)" : "entries inflated, concatenated",
        how:
          (form === "zip"
            ? "bulwark backup of the .bacpac file: content-defined chunking of the zip, avg 1 MiB"
            : "bulwark backup of the inflated entries concatenated in zip order: content-defined chunking, avg 1 MiB, zstd") +
          `; mean over ${CLI_VAULTS} vaults (keys)`,
        export2Bytes,
        newBytes,
        newFraction: newBytes / export2Bytes,
        newFractionRange: [Math.min(...fractions), Math.max(...fractions)],
        storedBytes,
        storedOverZip: storedBytes === undefined ? undefined : storedBytes / exports[1].zip.length,
        firstBackupStoredBytes: average((run) => num(run.reports[0].bytesAdded)),
        vaultBytes: average((run) => run.vaultBytes),
        cliRuns: runs.map((run) => ({ steps: run.steps, vaultBytes: run.vaultBytes })),
      });
    }
  } catch (failure) {
    if (!(failure instanceof StepFailed)) throw failure;
    error = failure.message;
    log(`bacpac: FAILED ${failure.message}`);
  } finally {
    if (!keep) await rm(workDir, { recursive: true, force: true });
  }

  log(`bacpac: chunking in process (engine Chunker, ${KEYS} random id keys)`);
  const bulwarkParams = DEFAULT_CONFIG.chunker;
  const smallParams = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
  const level = DEFAULT_CONFIG.zstdLevel;
  // Chunk boundaries depend on the vault's secret key, and with 1 MiB chunks a 31 MiB zip is only
  // ~30 chunks: one key's figure is luck. Every in-process method is run with KEYS keys; means are reported.
  const runs = (params: ChunkerParams, form: "zip" | "entries") => Array.from({ length: KEYS }, () => chunkEntries(exports, params, level, form));
  const inProcess: Array<{ method: string; how: string; counts: ChunkCount[] }> = [
    { method: "zip as is, in process", how: "the zip chunked with the engine's Chunker, avg 1 MiB", counts: runs(bulwarkParams, "zip") },
    { method: "entries chunked separately", how: "each inflated entry chunked on its own, avg 1 MiB (Bulwark's)", counts: runs(bulwarkParams, "entries") },
    {
      method: "entries chunked separately, small chunks",
      how: "each inflated entry chunked on its own, 16-64-256 KiB (not Bulwark's setting)",
      counts: runs(smallParams, "entries"),
    },
  ];
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  for (const item of inProcess) {
    const total = item.counts[0].totalBytes;
    const fractions = item.counts.map((count) => count.newBytes / total);
    const stored = mean(item.counts.map((count) => count.newStoredBytes));
    methods.push({
      method: item.method,
      how: `${item.how}; mean over ${KEYS} random chunker keys; stored = zstd level ${level} of the new chunks (no encryption overhead)`,
      export2Bytes: total,
      newBytes: mean(item.counts.map((count) => count.newBytes)),
      newFraction: mean(fractions),
      newFractionRange: [Math.min(...fractions), Math.max(...fractions)],
      storedBytes: stored,
      storedOverZip: stored / exports[1].zip.length,
    });
  }
  const deflate = deflateReproduction(exports[1]);

  const document = {
    benchmark: "bulwark-bench",
    case: "bacpac",
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: { nproc: cpus().length, cpuModel: cpus()[0]?.model, totalMemoryBytes: totalmem(), os: `${platform()} ${release()}`, node: process.versions.node },
    bulwark: { detection, settings: bulwark.settings(), chunker: bulwarkParams, zstdLevel: level },
    exports: exports.map((e, i) => ({ version: e.version, zipBytes: e.zip.length, inflatedBytes: rawBytes[i], entries: e.entries.length, tables: e.tables })),
    changes: CHANGES,
    method: {
      newFraction: "bytes of chunks export 1 did not have / bytes the second backup read (the zip, or the inflated entries)",
      storedOverZip: "bytes the second backup adds to the vault / size of the second zip (the cost of keeping export 2)",
      restoreCaveat:
        "ingesting inflated entries means a restore must re-deflate them to the exact original zip bytes; deflate output depends on the " +
        "encoder, its version and settings (DacFx writes with .NET's compressor, not zlib), so byte-exact reconstruction is not guaranteed " +
        "without storing reconstruction data (as preflate/precomp do) or restoring a different but equivalent zip",
    },
    deflateReproduction: deflate,
    methods,
    perEntryNewBytes: inProcess[1].counts[0].perEntry.filter((e) => e.newBytes > 0),
    error,
  };
  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(outPath, `${JSON.stringify(document, null, 2)}\n`);

  log("");
  log(`bacpac results (${cpus().length} CPUs, ${formatBytes(totalmem())} RAM); second export against the first:`);
  log(renderBacpacTable(methods));
  log("");
  log(`changed entries (each chunked separately, avg 1 MiB, one key): ${document.perEntryNewBytes.map((e) => `${e.entry.replace(/^Data\/dbo\.|\/TableData-000-00000\.BCP$/g, "")} ${(e.newBytes / MiB).toFixed(2)} of ${(e.bytes / MiB).toFixed(2)} MiB`).join(", ")}`);
  log(`deflate: export 2's entries re-deflated: same zlib and level ${deflate.sameZlibSameLevel}; level 9: ${deflate.level9}; level 1: ${deflate.level1}`);
  log(`restore caveat: ${document.method.restoreCaveat}`);
  log("");
  log(`results written to ${outPath}`);
  return error === undefined;
}

export function renderBacpacTable(methods: MethodResult[]): string {
  const f = (value: number | undefined, digits: number) => (value === undefined || !Number.isFinite(value) ? "-" : value.toFixed(digits));
  return markdownTable(
    ["method", "export 2 MiB", "new MiB", "new / export 2", "range over keys", "stored MiB", "stored / zip 2"],
    methods.map((m) => [
      m.method,
      f(m.export2Bytes / MiB, 1),
      f(m.newBytes / MiB, 2),
      `${f(100 * m.newFraction, 1)}%`,
      m.newFractionRange === undefined ? "(one key)" : `${f(100 * m.newFractionRange[0], 0)}-${f(100 * m.newFractionRange[1], 0)}%`,
      f(m.storedBytes === undefined ? undefined : m.storedBytes / MiB, 2),
      m.storedOverZip === undefined ? "-" : `${f(100 * m.storedOverZip, 1)}%`,
    ]),
  );
}
