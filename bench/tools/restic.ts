/**
 * restic (Debian package `restic`). Repository format 2, whose default compression is zstd
 * "auto" (restic 0.14+); encryption is always on (AES-256-CTR + Poly1305).
 */
import { findFiles } from "../measure.ts";
import type { CommandSpec } from "../measure.ts";
import { baseName, lastJsonLine, onlyFile, probe } from "./tool.ts";
import type { Detection, Tool, ToolWorkspace } from "./tool.ts";

export class Restic implements Tool {
  readonly name = "restic" as const;

  detect(): Detection {
    const out = probe("restic", ["version"]);
    if (out === undefined) {
      return { available: false, reason: "`restic version` failed", howToInstall: "apt-get install -y restic" };
    }
    return { available: true, version: out.split("\n")[0] };
  }

  settings(): Record<string, string> {
    return {
      repositoryVersion: "2 (restic init default 'stable')",
      compression: "auto (zstd, restic's default)",
      encryption: "AES-256-CTR + Poly1305-AES (always on)",
      chunking: "content-defined (Rabin), 512 KiB - 8 MiB, avg 1 MiB",
      parent: "automatic (same host and path)",
    };
  }

  #env(ws: ToolWorkspace): NodeJS.ProcessEnv {
    return { ...process.env, RESTIC_PASSWORD: ws.passphrase, RESTIC_CACHE_DIR: ws.cacheDir };
  }

  init(ws: ToolWorkspace): CommandSpec {
    return { command: "restic", args: ["init", "--repo", ws.repoDir], env: this.#env(ws), cwd: ws.workDir };
  }

  backup(ws: ToolWorkspace): CommandSpec {
    return {
      command: "restic",
      args: ["backup", "--repo", ws.repoDir, "--json", ws.sourcePath],
      env: this.#env(ws),
      cwd: ws.workDir,
    };
  }

  parseBackupReport(stdout: string): Record<string, unknown> {
    const summary = lastJsonLine(stdout, (value) => value.message_type === "summary");
    if (summary === undefined) return {};
    return {
      snapshotId: summary.snapshot_id,
      // files_changed 1 / files_new 0 on the second backup shows the first was used as parent.
      filesNew: summary.files_new,
      filesChanged: summary.files_changed,
      bytesProcessed: summary.total_bytes_processed,
      bytesAdded: summary.data_added,
      toolSeconds: summary.total_duration,
    };
  }

  restore(ws: ToolWorkspace, _label: string, restoreDir: string): CommandSpec {
    return {
      command: "restic",
      args: ["restore", "latest", "--repo", ws.repoDir, "--target", restoreDir],
      env: this.#env(ws),
      cwd: ws.workDir,
    };
  }

  async restoredPath(ws: ToolWorkspace, restoreDir: string): Promise<string> {
    // restic recreates the source's absolute path under the target.
    return onlyFile(await findFiles(restoreDir, baseName(ws.sourcePath)), restoreDir);
  }
}
