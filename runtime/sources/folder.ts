/**
 * A local folder as a backup source (issue 12, "Files and folders"): its items in the order a
 * tree point keeps them (engine/tree-entries.ts: each folder's children together, by name, folders
 * depth first), with their lstat in nanoseconds, and a regular file's bytes read in pieces.
 *
 * Symlinks are recorded, not followed; the walk does not leave the folder. An item that vanishes,
 * cannot be listed, or changes its kind between listing and reading is reported through
 * `onProblem` and left out; the walk goes on. Extended attributes are not read (Node has no API
 * for them).
 */
import { constants, type BigIntStats } from "node:fs";
import { lstat, open, opendir, readlink, stat } from "node:fs/promises";
import path from "node:path";
import { SourceError } from "../errors.ts";
import { throwIfInterrupted } from "../interruption.ts";
import { compareNames, entryPath } from "../engine/tree-entries.ts";

export interface FolderItem {
  /** The item's folder relative to the top ("" for the top's children, and for the top itself, whose name is ""). */
  dir: string;
  name: string;
  absolute: string;
  stats: BigIntStats;
  /** A symlink's target. */
  target?: string;
}

export interface WalkOptions {
  /** Globs on the path relative to the top (`path.matchesGlob`, `**` allowed); a matching folder is not entered. */
  exclude: readonly string[];
  onProblem(relativePath: string, error: unknown): void;
}

/** Bytes read from a file at a time. */
export const READ_PIECE = 1024 * 1024;

export async function* walkFolder(top: string, options: WalkOptions): AsyncGenerator<FolderItem> {
  // The top is followed if it is a symlink (what was named is the folder it leads to); nothing under it is.
  const root: FolderItem = { dir: "", name: "", absolute: top, stats: await stat(top, { bigint: true }) };
  yield root;
  // Folders still to list, deepest last-pushed first: each holds its relative path.
  const pending: string[] = [""];
  while (pending.length > 0) {
    throwIfInterrupted();
    const dir = pending.pop()!;
    const folders: string[] = [];
    for (const name of await sortedNames(top, dir, options)) {
      const relative = entryPath({ dir, name });
      if (options.exclude.some((pattern) => path.posix.matchesGlob(relative, pattern))) continue;
      const item = await inspect(top, dir, name, options);
      if (!item) continue;
      yield item;
      if (item.stats.isDirectory()) folders.push(relative);
    }
    for (let i = folders.length - 1; i >= 0; i--) pending.push(folders[i]);
  }
}

async function sortedNames(top: string, dir: string, options: WalkOptions): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of await opendir(path.join(top, dir))) names.push(entry.name);
  } catch (error) {
    options.onProblem(dir === "" ? "." : dir, new SourceError(`its folder could not be listed (${describeCode(error)}); what it holds is not in the point`, { cause: error }));
    return [];
  }
  return names.sort(compareNames);
}

async function inspect(top: string, dir: string, name: string, options: WalkOptions): Promise<FolderItem | undefined> {
  const absolute = path.join(top, dir, name);
  try {
    const stats = await lstat(absolute, { bigint: true });
    const target = stats.isSymbolicLink() ? await readlink(absolute) : undefined;
    return { dir, name, absolute, stats, ...(target !== undefined ? { target } : {}) };
  } catch (error) {
    options.onProblem(entryPath({ dir, name }), new SourceError(`${describeCode(error)} while listing it; it is not in the point`, { cause: error }));
    return undefined;
  }
}

/**
 * A regular file's bytes in pieces of at most READ_PIECE, to its end (a file that grew is read as
 * it is now). Opened without following a symlink and without blocking, and checked to be the
 * file that was listed: one replaced meanwhile (by a pipe, say) is a SourceError, never a hang.
 */
export async function* readFolderFile(item: FolderItem): AsyncGenerator<Buffer> {
  let handle;
  try {
    handle = await open(item.absolute, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    throw new SourceError(`it could not be opened (${describeCode(error)})`, { cause: error });
  }
  try {
    const now = await handle.stat({ bigint: true });
    if (!now.isFile() || now.ino !== item.stats.ino) throw new SourceError("it was replaced by another item between listing and reading");
    for (;;) {
      throwIfInterrupted();
      const buffer = Buffer.allocUnsafe(READ_PIECE);
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(buffer, 0, READ_PIECE, null));
      } catch (error) {
        throw new SourceError(`reading it failed (${describeCode(error)})`, { cause: error });
      }
      if (bytesRead === 0) return;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

function describeCode(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "it vanished";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  return code ?? (error as Error).message;
}
