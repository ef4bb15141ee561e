/**
 * What the item-level tests share: a local vault made and filled by the real CLI, opened again in
 * this process through a store that counts what is read from it, so a test can say how much of the
 * vault a read of a point cost.
 */
import { open } from "node:fs/promises";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import type { ObjectStore } from "../../runtime/store/store.ts";
import { PASSPHRASE } from "../support/cli.ts";
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
