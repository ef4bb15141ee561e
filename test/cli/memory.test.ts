/**
 * Peak memory flat with image size (README: "peak memory does not grow with the image"): the real
 * CLI backs up and restores a 1 GiB and a 4 GiB sparse image (one 4 MiB data region in each
 * 256 MiB tree node, zeros elsewhere), while the child's peak resident set (VmHWM in
 * /proc/PID/status, which the kernel keeps as a high-water mark) is sampled. The 4 GiB runs may
 * not need materially more memory than the 1 GiB ones.
 */
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { finished, startCli } from "../support/cli.ts";
import { GiB, ImageLayout, TREE_NODE_BYTES, compareWithLayout, writeSparseImage } from "../support/sparse.ts";
import { LocalVaults, MIB, cli, pseudoRandom, tempFolder, type BackupSummary } from "./vaults.ts";

// The product's key derivation (scrypt, 128 MiB), not the suite's cheap one (vitest.config.ts): a
// user's peak includes it, and README's memory figures are measured with it. Without it the restore
// peak at 1 GiB is about 170 MiB and grows about 45 MiB to 4 GiB (README, known limits).
delete process.env.BULWARK_TEST_SCRYPT_N;

/** Runs the CLI to its end, sampling its VmHWM; returns the last (highest) value in bytes. */
async function peakMemory(args: string[], env: NodeJS.ProcessEnv): Promise<{ peak: number; code: number | null; stdout: string; stderr: string }> {
  const child = startCli(args, env);
  const result = finished(child);
  let peak = 0;
  let running = true;
  void result.finally(() => (running = false));
  const sample = async () => {
    try {
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      const kib = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      peak = Math.max(peak, kib * 1024);
    } catch {
      // exited between two samples
    }
  };
  // The high-water mark only rises, so sampling often enough to see it before the exit is all
  // that is needed: what the process does after the last sample is writing its summary.
  while (running) {
    await sample();
    await new Promise((r) => setTimeout(r, 20));
  }
  const { code, stdout, stderr } = await result;
  return { peak, code, stdout, stderr };
}

function layoutOf(size: number, seed: string): ImageLayout {
  const layout = new ImageLayout(size);
  for (let node = 0; node * TREE_NODE_BYTES < size; node++) layout.set(node * TREE_NODE_BYTES + 9 * MIB, pseudoRandom(`${seed}/${node}`, 4 * MIB));
  return layout;
}

describe.runIf(process.platform === "linux")("bounded memory, local vault", () => {
  let vaults: LocalVaults;
  let scratch: string;

  beforeAll(async () => {
    vaults = await LocalVaults.create();
    scratch = await tempFolder("memory");
  });

  afterAll(async () => {
    await vaults?.close();
  });

  test("peak memory of backup and restore stays flat from a 1 GiB to a 4 GiB sparse image", async () => {
    const peaks: Record<string, { backup: number; restore: number }> = {};
    for (const gib of [1, 4]) {
      const layout = layoutOf(gib * GiB, `memory-${gib}`);
      const image = path.join(scratch, `image-${gib}.img`);
      await writeSparseImage(image, layout.size, layout.all);
      const vault = vaults.newLocation(`memory-${gib}`);
      expect((await cli(vaults, vault, ["init"])).code).toBe(0);

      const backup = await peakMemory(["backup", image, "--vault", vault, "--json"], vaults.env);
      expect(backup.code, backup.stderr).toBe(0);
      const point = JSON.parse(backup.stdout) as BackupSummary;
      expect(point.size).toBe(layout.size);

      const restored = path.join(scratch, `restored-${gib}.img`);
      const restore = await peakMemory(["restore", point.id, "--to", restored, "--vault", vault, "--json"], vaults.env);
      expect(restore.code, restore.stderr).toBe(0);
      expect(await compareWithLayout(restored, layout)).toBeUndefined();
      await rm(restored, { force: true });
      await rm(image, { force: true });
      peaks[`${gib} GiB`] = { backup: backup.peak, restore: restore.peak };
    }
    const mib = (n: number) => Math.round(n / MIB);
    const report = JSON.stringify(Object.fromEntries(Object.entries(peaks).map(([k, v]) => [k, { backup: mib(v.backup), restore: mib(v.restore) }])));
    // In the CI log: the measurement README's memory claim rests on (peak RSS in MiB).
    console.log(`[memory] peak RSS in MiB: ${report}`);
    // The margin: on machines busy with other work (two CPU-bound processes beside the suite) the
    // peaks measured 258-265 MiB (backup) and 241-246 MiB (restore) at 1 GiB, 272-274 and
    // 245-269 MiB at 4 GiB: V8 heaps and the codec workers' buffers move by 10-30 MiB with GC
    // timing. Allowed: 15% of the 1 GiB peak plus 16 MiB (about 52 MiB). Anything that grows with
    // the image is caught: keeping 2 KiB per 64 KiB block adds 96 MiB for the 3 GiB more, holding
    // the image's bytes adds GiBs, holding the data regions twice adds 96 MiB.
    // (The CLI runs here use the product's scrypt cost, as users' do: see the top of this file.)
    for (const phase of ["backup", "restore"] as const) {
      const small = peaks["1 GiB"]![phase];
      const large = peaks["4 GiB"]![phase];
      expect(small, report).toBeGreaterThan(0);
      expect(large, `${phase}: ${report}`).toBeLessThanOrEqual(small * 1.15 + 16 * MIB);
    }
  }, 600_000);
});
