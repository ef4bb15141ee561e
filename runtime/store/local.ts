/**
 * A vault in a local folder. Create-only writes go to a temporary file first, are flushed to
 * disk, then linked into place (link(2) fails if the name exists, which makes the write
 * conditional), so a crash never leaves a half-written object under its final name.
 */
import { randomBytes } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { link, mkdir, open, readdir, readFile, stat, unlink, type FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ObjectExistsError, ObjectNotFoundError, ServiceError } from "../errors.ts";
import { processAlive, throwIfInterrupted, trackLeftover } from "../interruption.ts";
import type { ObjectInfo, ObjectStore, ObjectWriter } from "./store.ts";

const TEMP_FOLDER = ".tmp";
/** Temporary files are named HOST~PID~RANDOM, so a later run can tell a dead writer's leftovers. */
const TEMP_NAME = /^(.+)~(\d+)~[0-9a-f]+$/;
/** Temporary files of another host (or of the old unnamed form) go once this old: no write lasts a day. */
const FOREIGN_TEMP_AFTER_MS = 24 * 60 * 60 * 1000;

export class LocalFolderStore implements ObjectStore {
  readonly location: string;
  private readonly root: string;
  private swept: Promise<void> | undefined;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.location = this.root;
  }

  async get(key: string): Promise<Buffer> {
    throwIfInterrupted();
    try {
      return await readFile(this.pathOf(key));
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    let handle: FileHandle | undefined;
    throwIfInterrupted();
    try {
      handle = await open(this.pathOf(key), "r");
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === length ? buffer : buffer.subarray(0, done);
    } catch (error) {
      throw this.translate(error, key);
    } finally {
      await handle?.close();
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(this.pathOf(key));
      return { key, size: info.size, lastModified: info.mtime };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw this.translate(error, key);
    }
  }

  async create(key: string, data: Uint8Array): Promise<void> {
    const writer = this.createWriter(key);
    try {
      await writer.write(data);
      await writer.commit();
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  createWriter(key: string): ObjectWriter {
    const finalPath = this.pathOf(key);
    const tempPath = path.join(this.root, TEMP_FOLDER, `${os.hostname()}~${process.pid}~${randomBytes(12).toString("hex")}`);
    let handle: Promise<FileHandle> | undefined;
    let position = 0;
    // Removed at exit if the process is interrupted before this writer commits or aborts.
    let untrack = () => {};
    const opened = () => {
      handle ??= this.sweepTemporaryFiles()
        .then(() => mkdir(path.dirname(tempPath), { recursive: true }))
        .then(() => {
          untrack = trackLeftover(tempPath);
          return open(tempPath, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
        });
      return handle;
    };
    const store = this;
    return {
      async write(data: Uint8Array) {
        throwIfInterrupted();
        try {
          const file = await opened();
          let done = 0;
          while (done < data.length) {
            const { bytesWritten } = await file.write(data, done, data.length - done, position);
            done += bytesWritten;
            position += bytesWritten;
          }
        } catch (error) {
          throw store.translate(error, key);
        }
      },
      async commit() {
        try {
          const file = await opened();
          await file.sync();
          await file.close();
          handle = undefined;
          await mkdir(path.dirname(finalPath), { recursive: true });
          await link(tempPath, finalPath);
          await unlink(tempPath);
          untrack();
          await syncFolder(path.dirname(finalPath));
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "EEXIST") {
            await unlink(tempPath).catch(() => {});
            untrack();
            throw new ObjectExistsError(key, store.location);
          }
          throw store.translate(error, key);
        }
      },
      async abort() {
        const file = handle;
        handle = undefined;
        if (file) await (await file.catch(() => undefined))?.close().catch(() => {});
        await unlink(tempPath).catch(() => {});
        untrack();
      },
    };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const slash = prefix.lastIndexOf("/");
    const folder = slash >= 0 ? prefix.slice(0, slash) : "";
    yield* this.walk(folder, prefix);
  }

  async delete(key: string): Promise<void> {
    try {
      await unlink(this.pathOf(key));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw this.translate(error, key);
    }
  }

  /**
   * Once per store: removes temporary files that no running writer owns, i.e. those of a process of
   * this host that is gone (killed mid-write), and any older than a day (another host's, or unnamed).
   */
  private sweepTemporaryFiles(): Promise<void> {
    this.swept ??= (async () => {
      const folder = path.join(this.root, TEMP_FOLDER);
      const names = await readdir(folder).catch(() => [] as string[]);
      const host = os.hostname();
      for (const name of names) {
        const match = TEMP_NAME.exec(name);
        const file = path.join(folder, name);
        let abandoned: boolean;
        if (match && match[1] === host) abandoned = Number(match[2]) !== process.pid && !processAlive(Number(match[2]));
        else abandoned = Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? Date.now()) > FOREIGN_TEMP_AFTER_MS;
        if (abandoned) await unlink(file).catch(() => {});
      }
    })();
    return this.swept;
  }

  private async *walk(folder: string, prefix: string): AsyncIterable<ObjectInfo> {
    let entries: string[];
    try {
      entries = await readdir(path.join(this.root, folder));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      throw this.translate(error, folder);
    }
    for (const name of entries) {
      if (folder === "" && name === TEMP_FOLDER) continue;
      const key = folder === "" ? name : `${folder}/${name}`;
      let info: Stats;
      try {
        info = await stat(path.join(this.root, key));
      } catch {
        continue; // deleted while listing
      }
      if (info.isDirectory()) {
        if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix)) yield* this.walk(key, prefix);
      } else if (key.startsWith(prefix)) {
        yield { key, size: info.size, lastModified: info.mtime };
      }
    }
  }

  private pathOf(key: string): string {
    if (key.split("/").some((part) => part === "" || part === "." || part === "..")) {
      throw new Error(`invalid object key ${JSON.stringify(key)}`);
    }
    return path.join(this.root, key);
  }

  private translate(error: unknown, key: string): Error {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return new ObjectNotFoundError(key, this.location);
    if (code === "ENOSPC" || code === "EDQUOT") {
      return new ServiceError(
        `the disk holding ${this.location} is full while writing ${key}; free space (or run \`bulwark forget --prune\`) and retry: nothing was committed`,
        { cause: error },
      );
    }
    if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
      return new ServiceError(`no permission to access ${key} in ${this.location}: check the folder's owner and mode`, {
        cause: error,
      });
    }
    return error instanceof Error ? error : new Error(String(error));
  }
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
