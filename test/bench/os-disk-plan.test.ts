/**
 * The OS-disk benchmark's plan (bench/os-disk-case.ts): which real files make version 1, and which
 * are deleted, rewritten and added for version 2, are decided by the seed and the paths alone, never
 * overlap, and a rewrite keeps the file's bytes around 1 KiB of new ones.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { planChanges, rewrittenContent, selectFiles, type SystemFile } from "../../bench/os-disk-case.ts";

const files: SystemFile[] = Array.from({ length: 2000 }, (_, i) => ({ path: `/usr/lib/pkg${i % 37}/file-${i}.so`, size: 1000 + ((i * 7919) % 50_000) }));

describe("the OS-disk benchmark's plan", () => {
  test("the same files in another listing order give the same version 1 up to the budget, mixed across folders", () => {
    const budget = 10_000_000;
    const first = selectFiles(files, budget, "seed-a");
    const second = selectFiles([...files].reverse(), budget, "seed-a");
    expect(second.selected).toEqual(first.selected);
    const bytes = first.selected.reduce((sum, file) => sum + file.size, 0);
    expect(bytes).toBeLessThanOrEqual(budget);
    expect(budget - bytes).toBeLessThan(1000);
    expect(first.selected.length + first.pool.length).toBe(files.length);
    expect(new Set(first.selected.map((file) => file.path.split("/")[3])).size).toBe(37);
    expect(selectFiles(files, budget, "seed-b").selected).not.toEqual(first.selected);
  });

  test("5% of the files are deleted, another 5% rewritten and as many added from the rest: disjoint and repeatable", () => {
    const { selected, pool } = selectFiles(files, 10_000_000, "seed-a");
    const plan = planChanges(selected, pool, 0.05, "seed-a");
    const count = Math.round(selected.length * 0.05);
    expect([plan.deleted.length, plan.rewritten.length, plan.added.length]).toEqual([count, count, count]);
    const deleted = new Set(plan.deleted.map((file) => file.path));
    expect(plan.rewritten.some((file) => deleted.has(file.path))).toBe(false);
    const inVersion1 = new Set(selected.map((file) => file.path));
    expect(plan.added.some((file) => inVersion1.has(file.path))).toBe(false);
    expect(planChanges(selected, pool, 0.05, "seed-a")).toEqual(plan);
  });

  test("a rewritten file is its old bytes with 1 KiB of new bytes inserted at one offset, the same for the same path", () => {
    const original = randomBytes(10_000);
    const rewritten = rewrittenContent(original, "/usr/bin/tool", "seed-a");
    expect(rewritten.length).toBe(original.length + 1024);
    let at = 0;
    while (at < original.length && rewritten[at] === original[at]) at++;
    expect(Buffer.concat([rewritten.subarray(0, at), rewritten.subarray(at + 1024)]).equals(original)).toBe(true);
    expect(rewrittenContent(original, "/usr/bin/tool", "seed-a").equals(rewritten)).toBe(true);
  });
});
