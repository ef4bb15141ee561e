/**
 * Local sources and targets: files, raw disk images and block devices. A block device's size is
 * read from sysfs (Node has no ioctl); files named like disk images (.img, .raw, .vhd, .iso) and
 * block devices are backed up as block maps, everything else as a stream of content-defined chunks.
 */
import { createReadStream, constants } from "node:fs";
import { mkdir, open, readdir, readFile, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { BulwarkError, SourceError, UsageError } from "../errors.ts";
import { processAlive, throwIfInterrupted, trackLeftover } from "../interruption.ts";
import type { BlockSource } from "../engine/backup-blocks.ts";
import type { RestoreTarget } from "../engine/restore.ts";

/** "tree": a folder (sources/folder.ts, engine/backup-tree.ts). */
export type LocalKind = "disk" | "file" | "tree";

const DISK_IMAGE = /\.(img|raw|vhd|iso|bin|dd)$/i;

export interface LocalSource {
  path: string;
  kind: LocalKind;
  size: number;
  blockDevice: boolean;
}

export async function inspectLocalSource(sourcePath: string, forced?: LocalKind): Promise<LocalSource> {
  const absolute = path.resolve(sourcePath);
  let info;
  try {
    info = await stat(absolute);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new SourceError(
      code === "ENOENT"
        ? `cannot back up ${sourcePath}: it does not exist. Check the path.`
        : `cannot back up ${sourcePath}: ${code === "EACCES" ? "permission denied; run as a user who can read it" : (cause as Error).message}`,
      { cause },
    );
  }
  if (info.isDirectory()) {
    if (forced !== undefined) throw new UsageError(`--as ${forced}: ${sourcePath} is a folder, backed up as a folder tree`);
    return { path: absolute, kind: "tree", size: 0, blockDevice: false };
  }
  const blockDevice = info.isBlockDevice();
  if (!blockDevice && !info.isFile()) throw new SourceError(`cannot back up ${sourcePath}: not a regular file or block device`);
  const size = blockDevice ? await blockDeviceSize(info.rdev, sourcePath) : info.size;
  // Opening proves we may read it before anything is written to the vault.
  try {
    await (await open(absolute, constants.O_RDONLY)).close();
  } catch (cause) {
    throw new SourceError(`cannot read ${sourcePath}: ${(cause as NodeJS.ErrnoException).code === "EACCES" ? "permission denied" : (cause as Error).message}`, {
      cause,
    });
  }
  const kind = forced ?? (blockDevice || DISK_IMAGE.test(absolute) ? "disk" : "file");
  return { path: absolute, kind, size, blockDevice };
}

/** The kind of point a local restore target naturally takes: a folder a folder tree, a device or an image-named file a disk, else a file. */
export async function localTargetKind(destination: string): Promise<LocalKind> {
  const existing = await stat(path.resolve(destination)).catch(() => undefined);
  if (existing?.isDirectory()) return "tree";
  return existing?.isBlockDevice() || DISK_IMAGE.test(destination) ? "disk" : "file";
}

async function blockDeviceSize(rdev: number, shown: string): Promise<number> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  try {
    const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8")).trim());
    return sectors * 512;
  } catch (cause) {
    throw new SourceError(`cannot find the size of block device ${shown} in /sys/dev/block`, { cause });
  }
}

export async function openBlockSource(source: LocalSource): Promise<BlockSource & { close(): Promise<void> }> {
  let handle: FileHandle;
  try {
    handle = await open(source.path, "r");
  } catch (cause) {
    throw new SourceError(`cannot read ${source.path}: ${(cause as Error).message}`, { cause });
  }
  return {
    size: source.size,
    async read(offset, length) {
      throwIfInterrupted();
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      try {
        while (done < length) {
          const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
          if (bytesRead === 0) throw new SourceError(`${source.path} ended at ${offset + done} bytes while reading; did it shrink during the backup?`);
          done += bytesRead;
        }
      } catch (cause) {
        if (cause instanceof SourceError) throw cause;
        throw new SourceError(`reading ${source.path} failed at offset ${offset + done}: ${(cause as Error).message}`, { cause });
      }
      return buffer;
    },
    close: () => handle.close(),
  };
}

export function openStreamSource(source: LocalSource): AsyncIterable<Uint8Array> {
  const stream = createReadStream(source.path, { highWaterMark: 1024 * 1024 });
  return (async function* () {
    try {
      for await (const piece of stream) {
        throwIfInterrupted();
        yield piece as Buffer;
      }
    } catch (cause) {
      if (cause instanceof BulwarkError) throw cause;
      throw new SourceError(`reading ${source.path} failed: ${(cause as Error).message}`, { cause });
    }
  })();
}

/**
 * A restore into a local path. Regular files are written beside the destination and renamed into
 * place once complete and flushed, so a failed restore never leaves a half-written file under the
 * destination's name; holes stay holes. Block devices are written in place, zeros included.
 */
export async function openFileTarget(
  destination: string,
  size: number,
  options: { overwrite?: boolean } = {},
): Promise<RestoreTarget & { commit(): Promise<void>; abort(): Promise<void> }> {
  const absolute = path.resolve(destination);
  const existing = await stat(absolute).catch(() => undefined);
  if (existing?.isDirectory()) throw new UsageError(`cannot restore to ${destination}: it is a folder; give a file path`);
  if (existing?.isBlockDevice()) {
    // A device is overwritten from its first byte: only when asked to, and only if the point fits.
    if (!options.overwrite) {
      throw new UsageError(`${destination} is a block device: a restore overwrites it from its first byte; pass --overwrite if that is what you want`);
    }
    const capacity = await blockDeviceSize(existing.rdev, destination);
    if (capacity < size) {
      throw new UsageError(
        `${destination} holds ${formatSize(capacity)} but the point is ${formatSize(size)}: restore to a device at least that large (nothing was written)`,
      );
    }
    const handle = await open(absolute, "r+");
    return {
      needsZeros: true,
      write: (offset, data) => {
        throwIfInterrupted();
        return writeAll(handle, data, offset);
      },
      commit: async () => {
        await handle.sync();
        await handle.close();
      },
      abort: () => handle.close(),
    };
  }
  if (existing && !options.overwrite) {
    throw new UsageError(`${destination} already exists; choose another path, or pass --overwrite to replace it`);
  }
  const partial = `${absolute}${PARTIAL_MARK}${os.hostname()}~${process.pid}`;
  let handle: FileHandle;
  let untrack = () => {};
  try {
    await mkdir(path.dirname(absolute), { recursive: true });
    await removeAbandonedPartials(absolute);
    untrack = trackLeftover(partial);
    handle = await open(partial, "wx", 0o600);
  } catch (cause) {
    untrack();
    throw new UsageError(`cannot write ${destination}: ${(cause as Error).message}`, { cause });
  }
  await handle.truncate(size);
  const flusher = backgroundFlusher(handle);
  return {
    needsZeros: false,
    write: async (offset, data) => {
      throwIfInterrupted();
      await writeAll(handle, data, offset);
      flusher.wrote(data.length);
    },
    writev: async (offset, data) => {
      throwIfInterrupted();
      flusher.wrote(await writevAll(handle, data, offset));
    },
    commit: async () => {
      await flusher.settle();
      await handle.sync();
      await handle.close();
      await rename(partial, absolute);
      untrack();
    },
    abort: async () => {
      await flusher.settle().catch(() => {});
      await handle.close().catch(() => {});
      await unlink(partial).catch(() => {});
      untrack();
    },
  };
}

const PARTIAL_MARK = ".bulwark-partial-";

/** Bytes written between two background flushes of a restored file. */
const FLUSH_EVERY = 64 * 1024 * 1024;

/**
 * Flushes a file being restored to the disk while the restore goes on: a datasync each
 * FLUSH_EVERY bytes written, one at a time, not awaited by the writes. The final sync before the
 * rename then has only the tail left to write, instead of the whole file at the end (0.8 s of a
 * 512 MiB restore's 3 s here, with the decoders idle). A failed flush fails the commit.
 */
function backgroundFlusher(handle: FileHandle): { wrote(bytes: number): void; settle(): Promise<void> } {
  let unflushed = 0;
  let inFlight: Promise<void> | undefined;
  let failure: unknown;
  return {
    wrote(bytes) {
      unflushed += bytes;
      if (unflushed < FLUSH_EVERY || inFlight) return;
      unflushed = 0;
      inFlight = handle
        .datasync()
        .catch((error: unknown) => {
          failure ??= error;
        })
        .finally(() => (inFlight = undefined));
    },
    async settle() {
      await inFlight;
      if (failure) throw failure;
    },
  };
}

/**
 * The partial files a killed restore to this destination left: `DEST.bulwark-partial-HOST~PID`
 * (or the older `DEST.bulwark-partial-PID`) whose process is gone from this host. Another host's,
 * or a live process's, stay.
 */
async function removeAbandonedPartials(destination: string): Promise<void> {
  const folder = path.dirname(destination);
  const prefix = `${path.basename(destination)}${PARTIAL_MARK}`;
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const match = /^(?:(.+)~)?(\d+)$/.exec(name.slice(prefix.length));
    if (!match || (match[1] !== undefined && match[1] !== os.hostname())) continue;
    if (!processAlive(Number(match[2]))) await unlink(path.join(folder, name)).catch(() => {});
  }
}

function formatSize(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB (${bytes} bytes)` : `${bytes} bytes`;
}

/** Writes all the buffers at position (one pwritev, finished piece by piece if short); returns the bytes written. */
async function writevAll(handle: FileHandle, buffers: Buffer[], position: number): Promise<number> {
  const total = buffers.reduce((sum, b) => sum + b.length, 0);
  const { bytesWritten } = await handle.writev(buffers, position);
  if (bytesWritten === total) return total;
  // A short write: finish piece by piece from where it stopped.
  let skip = bytesWritten;
  let at = position;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      at += buffer.length;
      continue;
    }
    await writeAll(handle, buffer.subarray(skip), at + skip);
    at += buffer.length;
    skip = 0;
  }
  return total;
}

async function writeAll(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}
