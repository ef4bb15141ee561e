/**
 * The order test files start in: the longest first, from the seconds each took in a recorded run
 * (test-durations.json), so that with two workers no long file starts last and runs on alone
 * while the other worker idles (on a clean clone vitest has no results cache and orders by file
 * size, which put heavy files near the end: a run of 750 s whose files summed to 2 x 685 s).
 * Files not in the record (new ones) start first, largest first, since nothing says they are short.
 * Refresh the record from a run's JSON report: `node test/support/record-durations.ts REPORT.json`.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

const RECORD = path.join(path.dirname(new URL(import.meta.url).pathname), "test-durations.json");

export class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const seconds = JSON.parse(readFileSync(RECORD, "utf8")) as Record<string, number>;
    const recorded = (spec: TestSpecification) => seconds[path.relative(this.ctx.config.root, spec.moduleId)];
    // The base order first (results cache, else size): ties and unrecorded files keep it.
    const base = await super.sort(files);
    const unrecorded = base.filter((spec) => recorded(spec) === undefined);
    const known = base.filter((spec) => recorded(spec) !== undefined).sort((a, b) => recorded(b)! - recorded(a)!);
    return [...unrecorded, ...known];
  }
}
