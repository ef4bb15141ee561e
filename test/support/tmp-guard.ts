/**
 * Global setup (vitest.config.ts): the whole run writes its temporary files into one folder of
 * its own, /tmp/bulwark-run-XXXXXX (TMPDIR, inherited by the test workers and every process they
 * start), so what a run leaves behind is measured without counting other runs on the machine.
 * At the end a bulwark-* folder still in it fails the run (other leftovers, such as the Azure
 * SDK's own Microsoft-AzureMonitor-* cache, are only reported); the folder is removed either way.
 * Folders named /tmp/bulwark-* that appeared beside it during the run (a path that ignores
 * TMPDIR) are reported too.
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = os.tmpdir();

function bulwarkFolders(): Set<string> {
  try {
    return new Set(readdirSync(root).filter((n) => n.startsWith("bulwark-")));
  } catch {
    return new Set();
  }
}

/** Bytes under a path (allocated blocks, so sparse images count for what they hold). */
function usage(file: string): number {
  try {
    const info = statSync(file);
    if (!info.isDirectory()) return info.blocks * 512;
    return readdirSync(file).reduce((sum, name) => sum + usage(path.join(file, name)), 0);
  } catch {
    return 0;
  }
}

export default function setup(): () => void {
  const before = bulwarkFolders();
  const run = mkdtempSync(path.join(root, "bulwark-run-"));
  // Traversable like /tmp itself: a test runs the CLI as another user (nobody) on files in it.
  chmodSync(run, 0o755);
  const previous = process.env.TMPDIR;
  process.env.TMPDIR = run;
  return function teardown() {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    const names = readdirSync(run);
    const describe = (name: string) => `${name} (${Math.round(usage(path.join(run, name)) / 1024)} KiB)`;
    const left = names.filter((n) => n.startsWith("bulwark-")).map(describe);
    const other = names.filter((n) => !n.startsWith("bulwark-")).map(describe);
    rmSync(run, { recursive: true, force: true, maxRetries: 3 });
    if (other.length > 0) console.warn(`[tmp-guard] removed temporary files not made by the tests: ${other.join(", ")}`);
    const beside = [...bulwarkFolders()].filter((n) => !before.has(n) && path.join(root, n) !== run);
    if (beside.length > 0) console.warn(`[tmp-guard] new /tmp/bulwark-* folders beside this run (another run, or a path that ignores TMPDIR): ${beside.join(", ")}`);
    if (left.length > 0 && !process.env.BULWARK_TEST_ALLOW_LEFTOVERS) {
      throw new Error(`the tests left ${left.length} temporary folder(s) behind (removed now): ${left.join(", ")}; clean up in afterEach/afterAll`);
    }
  };
}
