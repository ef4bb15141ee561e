/**
 * Restoring files and folders out of a point: `bulwark restore POINT --path P… --to DIR` writes
 * each path under DIR at its path in the point (`/part2/etc/hosts` → DIR/part2/etc/hosts); the
 * agents' files restore writes the same tree into a tar archive (see tar.ts and
 * workloads/restore-files-machine.ts). Sizes, modes, owners (when run as root), times and symlink
 * targets are kept, a file with holes is written sparse, and hard links stay links among what is
 * restored.
 *
 * Nothing existing is replaced without `overwrite`: every target is checked before the first byte
 * is written, so a refused restore writes nothing. Each file is written under a temporary name and
 * only renamed into place (or appended to the archive) once it is complete and its content checked,
 * so a failure or an interruption leaves no half-written file under a real name. A file whose
 * content this reader cannot read (an NTFS compressed file, say) or whose blocks are damaged is
 * listed with why; the others are restored.
 *
 * Nothing is written outside the target folder: names were checked in browse.ts, no symlink under
 * it is followed (see FolderSink), a folder listing one name twice (a hostile filesystem's symlink
 * and folder of one name) restores the first only, and overlapping paths restore each item once.
 * A process racing the restore inside the target folder (swapping a folder for a symlink between
 * the lstat and the write) is not defended against: restore into a folder only you can write.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { lchown, link, lstat, lutimes, mkdir, open, rename, rm, stat, symlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { describeError, IntegrityError, UsageError } from "../errors.ts";
import { throwIfInterrupted, trackLeftover } from "../interruption.ts";
import { folderKey, folderSeenTwice, MAX_DEPTH, splitPath, type Located, type PointBrowser } from "./browse.ts";
import { MAX_RUN_BYTES, UnreadableItemError, type FileRun, type FsNode } from "./fs/types.ts";
import type { TarWriter } from "./tar.ts";

export interface FileRestoreReport {
  files: number;
  directories: number;
  symlinks: number;
  hardLinks: number;
  /** Bytes of file content written (holes not counted). */
  bytesWritten: number;
  /** Bytes fetched from the vault (as stored) for listings and content. */
  bytesRead: number;
  /** Items not restored, with why: content this reader does not read, special files. */
  skipped: Array<{ path: string; reason: string }>;
  /** Items not restored because what the point holds for them is damaged. */
  damaged: Array<{ path: string; error: string }>;
}

export interface FileRestoreOptions {
  overwrite?: boolean;
  onProgress?: (bytesWritten: number) => void;
}

type NodeAt = Extract<Located, { kind: "node" }>;

/** Where restored items go: a folder on this machine, or an archive. */
interface RestoreSink {
  /** Before anything is written: throws (a UsageError) if the item may not be restored there. */
  check(pointPath: string, type: FsNode["type"]): Promise<void>;
  folder(pointPath: string): Promise<void>;
  /** After a folder's children: its own mode and times (the children's writes would change them). */
  folderDone(pointPath: string, node: FsNode | undefined): Promise<void>;
  /** Writes a file from its checked runs; nothing stays under its name if this throws. */
  file(pointPath: string, node: FsNode, runs: AsyncIterable<FileRun>): Promise<void>;
  symlink(pointPath: string, node: FsNode, target: string): Promise<void>;
  hardLink(pointPath: string, node: FsNode, firstPointPath: string): Promise<void>;
}

/** Restores the paths into a folder on this machine. */
export async function restorePaths(browser: PointBrowser, paths: string[], to: string, options: FileRestoreOptions = {}): Promise<FileRestoreReport> {
  // The target itself may be a symlink (the user's choice); it must lead to a folder, or to nothing yet.
  const existing = await stat(to).catch((error: unknown) => {
    if (isErrorCode(error, "ENOENT")) return undefined;
    throw error;
  });
  if (existing && !existing.isDirectory()) throw new UsageError(`${to} is not a folder: give --to a folder (it is made if missing)`);
  return restoreWith(browser, paths, new FolderSink(path.resolve(to), options.overwrite === true), options);
}

/** Restores the paths into a tar archive (the caller finishes it). */
export async function restorePathsToTar(browser: PointBrowser, paths: string[], tar: TarWriter, spool: string, options: FileRestoreOptions = {}): Promise<FileRestoreReport> {
  return restoreWith(browser, paths, new TarSink(tar, spool), options);
}

async function restoreWith(browser: PointBrowser, paths: string[], sink: RestoreSink, options: FileRestoreOptions): Promise<FileRestoreReport> {
  if (paths.length === 0) throw new UsageError("give at least one --path to restore (list a point's paths with `bulwark ls`)");
  const targets: Located[] = [];
  for (const p of paths) targets.push(await browser.locate(p));
  const walk = new RestoreWalk(browser, sink, options);
  const outermost = outermostOnly(targets);
  // Everything is checked first: a restore that would replace an existing file writes nothing.
  for (const at of outermost) await walk.visit(at, 0, "check");
  for (const at of outermost) await walk.visit(at, 0, "write");
  walk.report.bytesRead = browser.bytesRead;
  return walk.report;
}

class RestoreWalk {
  readonly report: FileRestoreReport = { files: 0, directories: 0, symlinks: 0, hardLinks: 0, bytesWritten: 0, bytesRead: 0, skipped: [], damaged: [] };
  private readonly browser: PointBrowser;
  private readonly sink: RestoreSink;
  private readonly options: FileRestoreOptions;
  /** Hard links: the first path restored for a node (per volume), which its other names link to. */
  private readonly firstPaths = new Map<string, string>();
  /** Folders each pass has been into. */
  private readonly checked = new Set<string>();
  private readonly written = new Set<string>();

  constructor(browser: PointBrowser, sink: RestoreSink, options: FileRestoreOptions) {
    this.browser = browser;
    this.sink = sink;
    this.options = options;
  }

  async visit(at: Located, depth: number, pass: "check" | "write"): Promise<void> {
    throwIfInterrupted();
    if (depth > MAX_DEPTH) throw new IntegrityError(`${at.path} is more than ${MAX_DEPTH} folders deep: the filesystem's folders loop (it is damaged)`);
    if (at.kind === "node" && at.node.type !== "dir") {
      if (pass === "check") await this.sink.check(at.path, at.node.type);
      else await this.leaf(at);
      return;
    }
    if (at.kind === "volume" && !at.volume.fs) {
      const why = at.volume.unreadable ?? "no filesystem Bulwark reads is on it";
      if (pass === "write" && at.volume.damaged) this.report.damaged.push({ path: at.path, error: why });
      else if (pass === "write") this.report.skipped.push({ path: at.path, reason: why });
      return;
    }
    const key = folderKey(at);
    if (key !== undefined) {
      // Each pass walks each folder once (see folderKey).
      const walked = pass === "check" ? this.checked : this.written;
      if (walked.has(key)) {
        if (pass === "write") this.report.damaged.push({ path: at.path, error: describeError(folderSeenTwice(at)) });
        return;
      }
      walked.add(key);
    }
    let children: Located[];
    try {
      children = await this.browser.children(at);
    } catch (error) {
      if (!(error instanceof IntegrityError)) throw error;
      if (pass === "write") this.report.damaged.push({ path: at.path, error: describeError(error) });
      return;
    }
    if (pass === "check") {
      await this.sink.check(at.path, "dir");
    } else {
      try {
        await this.sink.folder(at.path);
      } catch (error) {
        const tooLong = nameTooLong(at, error);
        if (!tooLong) throw error;
        this.report.skipped.push({ path: at.path, reason: tooLong });
        return;
      }
      this.report.directories++;
    }
    for (const child of onePerName(children, (twice) => pass === "write" && this.report.damaged.push({ path: twice.path, error: describeError(nameSeenTwice(twice)) }))) {
      await this.visit(child, depth + 1, pass);
    }
    if (pass === "write") await this.sink.folderDone(at.path, at.kind === "node" ? at.node : undefined);
  }

  private async leaf(at: NodeAt): Promise<void> {
    const { node } = at;
    const linkKey = `${at.scope}:${node.id}`;
    const first = node.nlink > 1 ? this.firstPaths.get(linkKey) : undefined;
    if (first) {
      await this.sink.hardLink(at.path, node, first);
      this.report.hardLinks++;
      return;
    }
    const writtenBefore = this.report.bytesWritten;
    try {
      if (node.type === "symlink") {
        if (node.target === undefined || node.target === "") throw new IntegrityError(`${at.path}: the symlink has no target (the filesystem is damaged)`);
        if (node.target.includes("\0")) throw new IntegrityError(`${at.path}: the symlink's target holds a NUL character, which no symlink can (the filesystem is damaged)`);
        await this.sink.symlink(at.path, node, node.target);
        this.report.symlinks++;
      } else if (node.type === "file") {
        if (node.unreadable) throw new UnreadableItemError(node.unreadable);
        await this.sink.file(at.path, node, this.checkedRuns(at));
        this.report.files++;
      } else {
        this.report.skipped.push({ path: at.path, reason: "special files (devices, sockets, pipes) are not restored" });
        return;
      }
    } catch (error) {
      this.report.bytesWritten = writtenBefore;
      const tooLong = nameTooLong(at, error);
      if (tooLong) this.report.skipped.push({ path: at.path, reason: tooLong });
      else if (error instanceof UnreadableItemError) this.report.skipped.push({ path: at.path, reason: error.message });
      else if (error instanceof IntegrityError) this.report.damaged.push({ path: at.path, error: describeError(error) });
      else throw error;
      return;
    }
    if (node.nlink > 1) this.firstPaths.set(linkKey, at.path);
  }

  /** A file's runs as its reader gives them, checked: in order, bounded, covering exactly its size. */
  private async *checkedRuns(at: NodeAt): AsyncIterable<FileRun> {
    let expected = 0;
    for await (const run of at.fs.read(at.node)) {
      throwIfInterrupted();
      if (run.offset !== expected || run.length < 0 || (!run.hole && (run.data.length !== run.length || run.length > MAX_RUN_BYTES))) {
        throw new IntegrityError(`${at.path}: its content does not follow on at byte ${expected} (a run of ${run.length} bytes at ${run.offset}): the filesystem is damaged`);
      }
      expected += run.length;
      if (expected > at.node.size) break;
      yield run;
      if (!run.hole) {
        this.report.bytesWritten += run.length;
        this.options.onProgress?.(this.report.bytesWritten);
      }
    }
    if (expected !== at.node.size) throw new IntegrityError(`${at.path}: its content ends at byte ${expected}, not at its size ${at.node.size}: the filesystem is damaged`);
  }
}

const RUNNING_AS_ROOT = process.getuid?.() === 0;

/**
 * Items written under a folder on this machine, each made under a temporary name and linked (or,
 * with `overwrite`, renamed) into place. Nothing is written through a symlink: each folder on the
 * way down from the root is looked at with lstat and must be a real folder (a symlink there, put by
 * someone or restored from a hostile point, is refused), and attributes are set through a handle
 * opened with O_NOFOLLOW. The root itself is the user's choice and may be a symlink.
 */
class FolderSink implements RestoreSink {
  private readonly root: string;
  private readonly overwrite: boolean;
  /** Folders under the root seen to be real folders, per pass (the restore never replaces a folder). */
  private readonly checkedFolders = new Set<string>();
  private readonly madeFolders = new Set<string>();

  constructor(root: string, overwrite: boolean) {
    this.root = root;
    this.overwrite = overwrite;
  }

  /** Always under the target folder: the point's names were checked in browse.ts. */
  private target(pointPath: string): string {
    return path.join(this.root, ...splitPath(pointPath));
  }

  async check(pointPath: string, type: FsNode["type"]): Promise<void> {
    const parts = splitPath(pointPath);
    if (!(await this.realFolders(parts.slice(0, -1), "check"))) return;
    const target = this.target(pointPath);
    const existing = await lstatIfAny(target);
    if (!existing) return;
    if (type === "dir") {
      if (!existing.isDirectory()) throw new UsageError(`${target} exists and is not a folder, so ${pointPath} cannot be restored there: move it, or restore to another --to`);
      this.checkedFolders.add(target);
      return;
    }
    if (existing.isDirectory()) throw new UsageError(`${target} is a folder, so ${pointPath} (a ${type}) cannot be restored there: move it, or restore to another --to`);
    if (!this.overwrite) throw new UsageError(`${target} exists: nothing was restored; pass --overwrite to replace existing files, or restore to another --to`);
  }

  async folder(pointPath: string): Promise<void> {
    await this.realFolders(splitPath(pointPath), "make");
  }

  async folderDone(pointPath: string, node: FsNode | undefined): Promise<void> {
    if (!node) return;
    const handle = await open(this.target(pointPath), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      await setAttributes(handle, node);
    } finally {
      await handle.close();
    }
  }

  async file(pointPath: string, node: FsNode, runs: AsyncIterable<FileRun>): Promise<void> {
    await this.replaceWith(pointPath, (temp) => writeRuns(temp, node.size, runs, node));
  }

  async symlink(pointPath: string, node: FsNode, target: string): Promise<void> {
    await this.replaceWith(pointPath, async (temp) => {
      await symlink(target, temp);
      if (RUNNING_AS_ROOT) await lchown(temp, node.uid, node.gid);
      await lutimes(temp, node.atime / 1000, node.mtime / 1000);
    });
  }

  async hardLink(pointPath: string, _node: FsNode, firstPointPath: string): Promise<void> {
    // link(2) does not follow a symlink at its first path; the folders above it were walked when it was written.
    await this.replaceWith(pointPath, (temp) => link(this.target(firstPointPath), temp));
  }

  /**
   * Walks the folders `parts` name from the root, each of which must be a real folder: "check"
   * stops (false) at the first that is not there yet, "make" makes it.
   */
  private async realFolders(parts: string[], pass: "check" | "make"): Promise<boolean> {
    const seen = pass === "check" ? this.checkedFolders : this.madeFolders;
    if (pass === "make" && !seen.has(this.root)) {
      await mkdir(this.root, { recursive: true });
      seen.add(this.root);
    }
    let at = this.root;
    for (const part of parts) {
      at = path.join(at, part);
      if (seen.has(at)) continue;
      let existing = await lstatIfAny(at);
      if (!existing) {
        if (pass === "check") return false;
        await mkdir(at).catch((error: unknown) => {
          if (!isErrorCode(error, "EEXIST")) throw error;
        });
        existing = await lstat(at);
      }
      if (existing.isSymbolicLink()) throw new UsageError(`${at} is a symlink: a restore never writes through one (it could lead out of ${this.root}); move it, or restore to another --to`);
      if (!existing.isDirectory()) throw new UsageError(`${at} exists and is not a folder, so nothing can be restored under it: move it, or restore to another --to`);
      seen.add(at);
    }
    return true;
  }

  private async replaceWith(pointPath: string, make: (temp: string) => Promise<void>): Promise<void> {
    const parts = splitPath(pointPath);
    await this.realFolders(parts.slice(0, -1), "make");
    const target = this.target(pointPath);
    // Not named after the item: a name near the 255-byte limit would leave no room for a suffix.
    const temp = path.join(path.dirname(target), `.bulwark-restore-${randomBytes(8).toString("hex")}`);
    const untrack = trackLeftover(temp);
    try {
      await make(temp);
      await this.place(temp, target);
    } finally {
      await rm(temp, { force: true });
      untrack();
    }
  }

  /** Moves a finished item to its name; without `overwrite`, atomically refuses a name taken since the check. */
  private async place(temp: string, target: string): Promise<void> {
    if (this.overwrite) return rename(temp, target);
    try {
      await link(temp, target);
      return;
    } catch (error) {
      if (isErrorCode(error, "EEXIST")) throw new UsageError(`${target} appeared while restoring and was left as it is; pass --overwrite to replace it`);
      // A target filesystem without hard links (FAT, say): look, then rename.
      if (!isErrorCode(error, "EPERM") && !isErrorCode(error, "ENOTSUP") && !isErrorCode(error, "EOPNOTSUPP")) throw error;
    }
    if (await lstatIfAny(target)) throw new UsageError(`${target} appeared while restoring and was left as it is; pass --overwrite to replace it`);
    await rename(temp, target);
  }
}

/** Why an item's write failed with ENAMETOOLONG, said for a person; undefined for any other failure. */
function nameTooLong(at: Located, error: unknown): string | undefined {
  if (!isErrorCode(error, "ENAMETOOLONG")) return undefined;
  const bytes = Buffer.byteLength(path.posix.basename(at.path));
  // NAME_MAX of Linux's filesystems; NTFS holds 255 UTF-16 units, which can be 765 bytes of UTF-8.
  return bytes > 255 ? `its name is ${bytes} bytes long, and names here hold at most 255` : "its path under the target folder is longer than this system allows";
}

/** The item at a path, or undefined when there is none (nor could be: a name too long for this system). */
function lstatIfAny(file: string) {
  return lstat(file).catch((error: unknown) => {
    if (isErrorCode(error, "ENOENT") || isErrorCode(error, "ENAMETOOLONG")) return undefined;
    throw error;
  });
}

function isErrorCode(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

/** Items appended to a tar archive; each file is spooled to a local file first, so a damaged one never enters the archive. */
class TarSink implements RestoreSink {
  private readonly tar: TarWriter;
  private readonly spool: string;

  constructor(tar: TarWriter, spool: string) {
    this.tar = tar;
    this.spool = spool;
  }

  async check(): Promise<void> {
    // An archive replaces nothing.
  }

  async folder(): Promise<void> {
    // Written in folderDone, with its attributes.
  }

  async folderDone(pointPath: string, node: FsNode | undefined): Promise<void> {
    // The point's root is the archive's own top: a member named "/" would be an absolute path.
    if (archivePath(pointPath) === "") return;
    await this.tar.begin({ path: archivePath(pointPath), type: "dir", mode: node?.mode ?? 0o755, uid: node?.uid ?? 0, gid: node?.gid ?? 0, mtime: node?.mtime ?? Date.now() });
  }

  async file(pointPath: string, node: FsNode, runs: AsyncIterable<FileRun>): Promise<void> {
    const temp = path.join(this.spool, `file-${randomBytes(6).toString("hex")}`);
    const untrack = trackLeftover(temp);
    try {
      await writeRuns(temp, node.size, runs);
      await this.tar.begin({ path: archivePath(pointPath), type: "file", mode: node.mode, uid: node.uid, gid: node.gid, mtime: node.mtime, size: node.size });
      const handle = await open(temp, "r");
      try {
        for await (const chunk of handle.createReadStream({ highWaterMark: MAX_RUN_BYTES })) await this.tar.write(chunk as Buffer);
      } finally {
        await handle.close();
      }
      await this.tar.end();
    } finally {
      await rm(temp, { force: true });
      untrack();
    }
  }

  async symlink(pointPath: string, node: FsNode, target: string): Promise<void> {
    await this.tar.begin({ path: archivePath(pointPath), type: "symlink", mode: 0o777, uid: node.uid, gid: node.gid, mtime: node.mtime, linkTo: target });
  }

  async hardLink(pointPath: string, node: FsNode, firstPointPath: string): Promise<void> {
    await this.tar.begin({ path: archivePath(pointPath), type: "hardlink", mode: node.mode, uid: node.uid, gid: node.gid, mtime: node.mtime, linkTo: archivePath(firstPointPath) });
  }
}

/** The targets not inside another (nor repeating one), so overlapping --path arguments restore each item once. */
function outermostOnly(targets: Located[]): Located[] {
  const inside = (p: string, folder: string) => (folder === "/" ? p !== "/" : p.startsWith(`${folder}/`));
  return targets.filter((t, i) => !targets.some((o, j) => inside(t.path, o.path) || (o.path === t.path && j < i)));
}

/**
 * A folder's children, the first of each name only: a damaged or hostile filesystem can list two
 * entries of one name (a symlink and a folder, say), and writing both would put the second through
 * or over the first.
 */
function* onePerName(children: Located[], onSecond: (at: Located) => void): Generator<Located> {
  const names = new Set<string>();
  for (const child of children) {
    if (names.has(child.path)) {
      onSecond(child);
      continue;
    }
    names.add(child.path);
    yield child;
  }
}

function nameSeenTwice(at: Located): IntegrityError {
  return new IntegrityError(`${at.path}: its folder holds two entries named ${path.posix.basename(at.path)} (the filesystem is damaged or hostile); only the first was restored`);
}

/** A point's path as an archive member: relative, so extracting writes under the current folder. */
function archivePath(pointPath: string): string {
  return splitPath(pointPath).join("/");
}

/** A new file of `size` bytes from checked runs: data written, holes left unwritten (sparse); then the node's attributes, if given. */
async function writeRuns(file: string, size: number, runs: AsyncIterable<FileRun>, attributes?: FsNode): Promise<void> {
  const handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    for await (const run of runs) if (!run.hole) await handle.write(run.data, 0, run.data.length, run.offset);
    // Holes at the end: the size is set without writing them.
    await handle.truncate(size);
    if (attributes) await setAttributes(handle, attributes);
  } finally {
    await handle.close();
  }
}

/** Owner (as root), then mode (chown clears set-id bits), then times; through a handle, so no symlink is followed. */
async function setAttributes(handle: FileHandle, node: FsNode): Promise<void> {
  if (RUNNING_AS_ROOT) await handle.chown(node.uid, node.gid);
  await handle.chmod(node.mode & 0o7777);
  await handle.utimes(node.atime / 1000, node.mtime / 1000);
}
