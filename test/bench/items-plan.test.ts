/**
 * The items benchmark's disk plan (bench/items-case.ts): the partition sgdisk and mke2fs are given
 * fits the disk with room for both GPTs, and the data scales down for small trial disks but stays
 * at the scale (a 20 MiB file, 10,000 entries, 2 GiB of other data) on the 64 GiB default.
 */
import { describe, expect, test } from "vitest";
import { ITEMS_DEFAULT_SIZE, planItemsImage } from "../../bench/items-case.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The GPT header and a 128-entry table: 34 sectors at the start, 33 at the end. */
const GPT_END_BYTES = 33 * 512;

describe("the items benchmark's disk plan", () => {
  test("the default 64 GiB disk holds one 1 MiB-aligned partition up to the backup GPT, with the issue's data", () => {
    const plan = planItemsImage(ITEMS_DEFAULT_SIZE);
    expect(plan.partitionStart).toBe(MiB);
    expect(plan.partitionStart + plan.partitionBytes).toBeLessThanOrEqual(ITEMS_DEFAULT_SIZE - GPT_END_BYTES);
    expect(plan.partitionBytes % 4096).toBe(0);
    expect(plan.targetFile.bytes).toBe(20 * MiB);
    expect(plan.folder.entries).toBe(10_000);
    expect(plan.otherBytes).toBe(2 * GiB);
    expect(plan.otherFiles.reduce((sum, f) => sum + f.bytes, 0)).toBe(plan.otherBytes);
    expect(new Set(plan.otherFiles.map((f) => f.content))).toEqual(new Set(["random", "text"]));
  });

  test("a 1 GiB trial disk gets a quarter of its size as other data; a disk under 512 MiB is refused", () => {
    expect(planItemsImage(GiB).otherBytes).toBe(256 * MiB);
    expect(() => planItemsImage(256 * MiB)).toThrow(/at least 512 MiB/);
  });
});
