/**
 * Ratios to restic, the issue's targets, the printed table and the results document.
 */
import type { ToolRun } from "./image-case.ts";
import type { ToolName } from "./tools/tool.ts";

export interface Ratios {
  firstBackupThroughput?: number;
  secondBackupThroughput?: number;
  restoreThroughput?: number;
  vaultBytes?: number;
  peakRssBytes?: number;
}

export interface TargetResult {
  target: string;
  /** undefined: could not be checked (a figure is missing). */
  passed: boolean | undefined;
  detail: string;
}

/** Another run's Bulwark peak memory, to check that memory does not grow with the image size. */
export interface OtherSizeRun {
  sizeLabel: string;
  sizeBytes: number;
  peakRssBytes: number;
  file: string;
  /** Bulwark's version string (commit and runtime/ digest) in that run. */
  version: string;
}

const MIB = 2 ** 20;
export const MEMORY_LIMIT_BYTES = 512 * MIB;

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

export function ratiosTo(run: ToolRun, baseline: ToolRun | undefined): Ratios {
  if (baseline === undefined) return {};
  return {
    firstBackupThroughput: ratio(run.steps.firstBackup?.throughputBytesPerSecond, baseline.steps.firstBackup?.throughputBytesPerSecond),
    secondBackupThroughput: ratio(run.steps.secondBackup?.throughputBytesPerSecond, baseline.steps.secondBackup?.throughputBytesPerSecond),
    restoreThroughput: ratio(run.steps.restore?.throughputBytesPerSecond, baseline.steps.restore?.throughputBytesPerSecond),
    vaultBytes: ratio(run.vaultBytes, baseline.vaultBytes),
    peakRssBytes: ratio(run.peakRssBytes, baseline.peakRssBytes),
  };
}

function atLeast(name: string, value: number | undefined, bound: number, what: string): TargetResult {
  if (value === undefined) return { target: name, passed: undefined, detail: `not checked: ${what} missing` };
  return { target: name, passed: value >= bound, detail: `${value.toFixed(2)}x restic (need >= ${bound.toFixed(1)}x)` };
}

/** Memory counts as "the same" across sizes within 10% or 32 MiB, whichever is larger. */
function sameMemory(a: number, b: number): boolean {
  return Math.abs(a - b) <= Math.max(0.1 * Math.max(a, b), 32 * MIB);
}

export function checkTargets(
  bulwark: ToolRun | undefined,
  bulwarkVersion: string | undefined,
  ratios: Ratios,
  sizeLabel: string,
  allOtherSizes: OtherSizeRun[],
): TargetResult[] {
  // Memory of different code says nothing about how memory grows with size.
  const otherSizes = allOtherSizes.filter((other) => other.version === bulwarkVersion);
  const missing = "Bulwark or restic result";
  const results: TargetResult[] = [
    atLeast("first backup >= 1.5x restic's throughput", ratios.firstBackupThroughput, 1.5, missing),
    atLeast("second backup no slower than restic's", ratios.secondBackupThroughput, 1.0, missing),
    atLeast("restore >= 1.5x restic's throughput", ratios.restoreThroughput, 1.5, missing),
  ];
  results.push(
    ratios.vaultBytes === undefined
      ? { target: "vault no larger than restic's", passed: undefined, detail: `not checked: ${missing} missing` }
      : {
          target: "vault no larger than restic's",
          passed: ratios.vaultBytes <= 1.0,
          detail: `${ratios.vaultBytes.toFixed(3)}x restic's size`,
        },
  );
  const peak = bulwark?.peakRssBytes;
  results.push(
    peak === undefined
      ? { target: "peak memory < 512 MiB", passed: undefined, detail: "not checked: no Bulwark result" }
      : { target: "peak memory < 512 MiB", passed: peak < MEMORY_LIMIT_BYTES, detail: `${(peak / MIB).toFixed(0)} MiB at ${sizeLabel}` },
  );
  if (peak === undefined || otherSizes.length === 0) {
    results.push({
      target: "peak memory independent of image size",
      passed: undefined,
      detail:
        "not checked: needs results of the same Bulwark code at another size in .bench/results-*.json " +
        "(e.g. run --size 2G, then --size 8G --tools bulwark)" +
        (allOtherSizes.length > otherSizes.length ? `; ${allOtherSizes.length - otherSizes.length} found from other Bulwark code` : ""),
    });
  } else {
    const all = otherSizes.every((other) => sameMemory(peak, other.peakRssBytes));
    const detail = [`${(peak / MIB).toFixed(0)} MiB at ${sizeLabel}`]
      .concat(otherSizes.map((other) => `${(other.peakRssBytes / MIB).toFixed(0)} MiB at ${other.sizeLabel} (${other.file})`))
      .join(", ");
    results.push({ target: "peak memory independent of image size", passed: all, detail: `${detail}; same = within 10% or 32 MiB` });
  }
  return results;
}

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

function fixed(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? "-" : value.toFixed(digits);
}

export function renderTable(runs: Partial<Record<ToolName, ToolRun>>, ratios: Partial<Record<ToolName, Ratios>>): string {
  const header = [
    "tool",
    "1st backup MiB/s",
    "2nd backup MiB/s",
    "restore MiB/s",
    "vault MiB",
    "peak RSS MiB",
    "x restic: 1st",
    "2nd",
    "restore",
    "vault",
    "RSS",
    "restore ok",
  ];
  const rows: string[][] = [];
  for (const [name, run] of Object.entries(runs) as Array<[ToolName, ToolRun]>) {
    const r = ratios[name] ?? {};
    rows.push([
      name,
      fixed(mibPerSecond(run.steps.firstBackup?.throughputBytesPerSecond), 1),
      fixed(mibPerSecond(run.steps.secondBackup?.throughputBytesPerSecond), 1),
      fixed(mibPerSecond(run.steps.restore?.throughputBytesPerSecond), 1),
      fixed(run.vaultBytes === undefined ? undefined : run.vaultBytes / MIB, 1),
      fixed(run.peakRssBytes === undefined ? undefined : run.peakRssBytes / MIB, 0),
      fixed(r.firstBackupThroughput, 2),
      fixed(r.secondBackupThroughput, 2),
      fixed(r.restoreThroughput, 2),
      fixed(r.vaultBytes, 3),
      fixed(r.peakRssBytes, 2),
      run.error !== undefined ? "FAILED" : run.restoreIdentical === undefined ? "-" : run.restoreIdentical ? "yes" : "NO",
    ]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => pad(cell, widths[i], i > 0)).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i > 0 ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

function mibPerSecond(bytesPerSecond: number | undefined): number | undefined {
  return bytesPerSecond === undefined ? undefined : bytesPerSecond / MIB;
}

export function renderTargets(targets: TargetResult[]): string {
  return targets
    .map((t) => `${t.passed === undefined ? "n/a " : t.passed ? "PASS" : "FAIL"}  ${t.target}: ${t.detail}`)
    .join("\n");
}
