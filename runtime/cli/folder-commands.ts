/**
 * `bulwark backup DIR` (issue 12): a folder as a "tree" point (engine/backup-tree.ts). What could
 * not be read is named on stderr and in --json `problems`; the point is committed with the rest,
 * and the exit code is 6 (unreadable source) when anything was left out, 0 otherwise.
 */
import type { Vault } from "../engine/vault.ts";
import type { PointManifest } from "../engine/point.ts";
import { backupTree } from "../engine/backup-tree.ts";
import { createProgress, formatBytes } from "./progress.ts";

type Values = Record<string, unknown>;
type Print = (values: Values, json: unknown, text: string) => void;

export async function backupFolderCommand(
  vault: Vault,
  folder: string,
  values: Values,
  tags: Record<string, string>,
  print: Print,
  summarize: (point: PointManifest) => Record<string, unknown>,
): Promise<number> {
  const progress = createProgress("backup", undefined, !values.json && process.stderr.isTTY === true);
  const { point, report } = await backupTree(
    vault,
    folder,
    { kind: "tree", source: { type: "folder", path: folder }, tags },
    {
      exclude: (values.exclude as string[] | undefined) ?? [],
      onProgress: (n) => progress.update(n),
      onProblem: (p) => process.stderr.write(`bulwark backup: ${p.path} was not backed up: ${p.error}\n`),
    },
  );
  progress.done();
  const s = point.stats;
  const text = [
    point.id,
    `  ${report.files} files (${report.filesRead} read, ${report.filesUnchanged} unchanged since the previous point), ${report.folders} folders, ` +
      `${report.symlinks} symlinks, ${report.hardLinks} hard links, ${report.special} special files; ` +
      `read ${formatBytes(s.bytesRead)}, new ${formatBytes(s.bytesNew)}, stored ${formatBytes(s.bytesStored)} in ${(s.durationMs / 1000).toFixed(1)}s`,
    ...(report.problems.length ? [`  ${report.problems.length} items were not backed up (named above); the point holds the rest`] : []),
  ];
  print(values, { ...summarize(point), ...report }, values.json || !process.stdout.isTTY ? point.id : text.join("\n"));
  return report.problems.length > 0 ? 6 : 0;
}
