/**
 * What the item-level tests share: a local vault made and filled by the real CLI, opened again in
 * this process through a store that counts what is read from it, so a test can say how much of the
 * vault a read of a point cost.
 */
import { open, stat } from "node:fs/promises";
import type { RandomAccess } from "../../runtime/items/block-reader.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { PASSPHRASE, type CliResult } from "../support/cli.ts";
import { cli, cliJson, LocalVaults, type BackupSummary } from "../cli/vaults.ts";

export interface StoreReads {
  /** Ranged reads of pack objects (chunks), and their bytes. */
  ranges: number;
  bytes: number;
}

/** A vault folder with the real CLI's points in it. */
export class PointVault {
  private readonly vaults: LocalVaults;
  readonly location: string;

  private constructor(vaults: LocalVaults, location: string) {
    this.vaults = vaults;
    this.location = location;
  }

  static async create(label: string): Promise<PointVault> {
    const vaults = await LocalVaults.create();
    const location = vaults.newLocation(label);
    const init = await cli(vaults, location, ["init"]);
    if (init.code !== 0) throw new Error(`bulwark init exited ${init.code}: ${init.stderr}`);
    return new PointVault(vaults, location);
  }

  /** Backs the source up with `bulwark backup` (an image as a disk point unless `as` says otherwise). */
  backup(source: string, as: "disk" | "file" = "disk"): Promise<BackupSummary> {
    return cliJson<BackupSummary>(this.vaults, this.location, ["backup", source, "--as", as]);
  }

  /** Runs `bulwark ARGS --vault <this vault>`. */
  run(args: string[]): Promise<CliResult> {
    return cli(this.vaults, this.location, args);
  }

  /** Runs `bulwark ARGS --vault <this vault> --json` and parses its output (throws with stderr if it failed). */
  json<T>(args: string[]): Promise<T> {
    return cliJson<T>(this.vaults, this.location, args);
  }

  readObject(key: string): Promise<Buffer> {
    return this.vaults.read(this.location, key);
  }

  /** Replaces a stored object's bytes (damage, or putting the original back). */
  replaceObject(key: string, bytes: Buffer): Promise<void> {
    return this.vaults.replace(this.location, key, bytes);
  }

  /** The vault opened in this process, with a count of the ranged reads made through it. */
  async open(): Promise<{ vault: Vault; reads: StoreReads }> {
    const reads: StoreReads = { ranges: 0, bytes: 0 };
    const vault = await Vault.open(countingRanges(new LocalFolderStore(this.location), reads), new PassphraseProvider(PASSPHRASE));
    return { vault, reads };
  }

  close(): Promise<void> {
    return this.vaults.close();
  }
}

function countingRanges(store: ObjectStore, reads: StoreReads): ObjectStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property !== "getRange") {
        const value = Reflect.get(target, property, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      }
      return async (key: string, offset: number, length: number) => {
        const bytes = await target.getRange(key, offset, length);
        reads.ranges++;
        reads.bytes += bytes.length;
        return bytes;
      };
    },
  });
}

/** Bytes of a file at an offset, as the source of truth a point's reads are compared with. */
export async function fileBytes(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(file, "r");
  try {
    const out = Buffer.alloc(length);
    const { bytesRead } = await handle.read(out, 0, length, offset);
    return out.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * An image file as a RandomAccess, counting its reads: how a filesystem reader is tested on a
 * volume made by the real tools without a vault in between (the vault's reads are block-reader.ts's
 * own tests). Reads past the end fail as a point's reads do.
 */
export async function imageAccess(file: string): Promise<RandomAccess & { reads: number; bytes: number }> {
  const { size } = await stat(file);
  const access = {
    size,
    reads: 0,
    bytes: 0,
    async read(offset: number, length: number): Promise<Buffer> {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
        throw new RangeError(`read of ${length} bytes at ${offset} is outside the ${size}-byte image`);
      }
      access.reads++;
      access.bytes += length;
      const bytes = await fileBytes(file, offset, length);
      return bytes;
    },
  };
  return access;
}
