/**
 * Writes test-durations.json (what sequencer.ts orders files by) from a vitest JSON report:
 * `npx vitest run --reporter=json --outputFile=REPORT.json`, then `node test/support/record-durations.ts REPORT.json`.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const [reportFile] = process.argv.slice(2);
if (!reportFile) throw new Error("give the vitest JSON report: node test/support/record-durations.ts REPORT.json");
const report = JSON.parse(readFileSync(reportFile, "utf8")) as { testResults: Array<{ name: string; assertionResults: Array<{ duration?: number }> }> };
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const seconds: Record<string, number> = {};
for (const file of report.testResults) {
  // A file's tests' own durations: what the file costs a worker, setup aside.
  const ms = file.assertionResults.reduce((sum, test) => sum + (test.duration ?? 0), 0);
  seconds[path.relative(root, file.name)] = Math.round(ms / 100) / 10;
}
const sorted = Object.fromEntries(Object.entries(seconds).sort((a, b) => b[1] - a[1]));
writeFileSync(path.join(root, "test/support/test-durations.json"), `${JSON.stringify(sorted, null, 1)}\n`);
