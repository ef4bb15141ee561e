/**
 * BorgBackup (Debian package `borgbackup`): repokey-blake2 encryption (AES-256-CTR + BLAKE2b MAC)
 * and zstd level 3, the fast zstd level closest to restic's "auto" and to Bulwark's default.
 */
import { findFiles } from "../measure.ts";
import type { CommandSpec } from "../measure.ts";
import { baseName, onlyFile, probe } from "./tool.ts";
import type { Detection, Tool, ToolWorkspace } from "./tool.ts";

const COMPRESSION = "zstd,3";
const ENCRYPTION = "repokey-blake2";

export class Borg implements Tool {
  readonly name = "borg" as const;

  detect(): Detection {
    const out = probe("borg", ["--version"]);
    if (out === undefined) {
      return { available: false, reason: "`borg --version` failed", howToInstall: "apt-get install -y borgbackup" };
    }
    return { available: true, version: out.split("\n")[0] };
  }

  settings(): Record<string, string> {
    return {
      encryption: `${ENCRYPTION} (AES-256-CTR + BLAKE2b-256 MAC)`,
      compression: COMPRESSION,
      chunking: "buzhash, borg's default (512 KiB - 8 MiB, avg 2 MiB)",
      filesCache: "default (ctime,size,inode); the source changes anyway, so both backups read it all",
    };
  }

  #env(ws: ToolWorkspace): NodeJS.ProcessEnv {
    return {
      ...process.env,
      BORG_PASSPHRASE: ws.passphrase,
      // Cache, config and security dirs under the workspace, not in $HOME.
      BORG_BASE_DIR: ws.cacheDir,
      BORG_RELOCATED_REPO_ACCESS_IS_OK: "yes",
    };
  }

  init(ws: ToolWorkspace): CommandSpec {
    return { command: "borg", args: ["init", `--encryption=${ENCRYPTION}`, ws.repoDir], env: this.#env(ws), cwd: ws.workDir };
  }

  backup(ws: ToolWorkspace, label: string): CommandSpec {
    // Given as a path relative to the workspace so the archive holds "src/<name>", and both
    // versions are the same path for the files cache.
    const relative = ws.sourcePath.startsWith(`${ws.workDir}/`) ? ws.sourcePath.slice(ws.workDir.length + 1) : ws.sourcePath;
    return {
      command: "borg",
      args: ["create", "--json", "--compression", COMPRESSION, `${ws.repoDir}::${label}`, relative],
      env: this.#env(ws),
      cwd: ws.workDir,
    };
  }

  parseBackupReport(stdout: string): Record<string, unknown> {
    try {
      const report = JSON.parse(stdout) as { archive?: { stats?: Record<string, unknown>; duration?: number } };
      const stats = report.archive?.stats ?? {};
      return {
        bytesProcessed: stats.original_size,
        bytesCompressed: stats.compressed_size,
        bytesAdded: stats.deduplicated_size,
        toolSeconds: report.archive?.duration,
      };
    } catch {
      return {};
    }
  }

  restore(ws: ToolWorkspace, label: string, restoreDir: string): CommandSpec {
    return { command: "borg", args: ["extract", `${ws.repoDir}::${label}`], env: this.#env(ws), cwd: restoreDir };
  }

  async restoredPath(ws: ToolWorkspace, restoreDir: string): Promise<string> {
    return onlyFile(await findFiles(restoreDir, baseName(ws.sourcePath)), restoreDir);
  }
}
