/**
 * What the CLI suites share: deterministic test data (disk images with zero, text and random
 * regions; plain files), the two kinds of vault (a local folder, an Azure Blob container in a real
 * Azurite) behind one small interface for listing, reading and damaging stored objects, helpers
 * that run the real CLI against them, and one that makes a vault in this process with what `bulwark
 * init` does not offer (small packs, an older format).
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { lockContainerName } from "../../runtime/store/azure-blob.ts";
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import { Azurite } from "../support/azurite.ts";
import { trackFolder } from "../support/cleanup.ts";
import { PASSPHRASE, runCli, runJson, type CliResult } from "../support/cli.ts";

export const MIB = 1024 * 1024;

/** Deterministic pseudo-random bytes (AES-CTR keystream of a seed). */
export function pseudoRandom(seed: string, length: number): Buffer {
  const key = createHash("sha256").update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(length));
}

/** Compressible text: numbered lines, distinct per seed. */
export function text(seed: string, length: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < length; i++) {
    const line = `${seed} line ${i}: the quick brown fox jumps over the lazy dog, ${(i * 7919) % 104729}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, length);
}

/**
 * A disk image of `mib` MiB in 1 MiB regions cycling through zeros, text and random data, so
 * roughly a third of it is zero (and must come back as holes).
 */
export function diskImage(seed: string, mib: number): Buffer {
  const image = Buffer.alloc(mib * MIB);
  for (let region = 0; region < mib; region++) {
    const kind = region % 3;
    if (kind === 1) text(`${seed}/${region}`, MIB).copy(image, region * MIB);
    if (kind === 2) pseudoRandom(`${seed}/${region}`, MIB).copy(image, region * MIB);
  }
  return image;
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export async function sha256File(file: string): Promise<string> {
  return sha256(await readFile(file));
}

/** A scratch folder, removed after the test file (test/support/cleanup-hooks.ts) even when a test fails. */
export async function tempFolder(label: string): Promise<string> {
  return trackFolder(await mkdtemp(path.join(os.tmpdir(), `bulwark-${label}-`)));
}

/** One place vaults live: a local folder or an Azurite container. */
export interface VaultKind {
  readonly name: "local" | "azurite";
  /** Environment the CLI needs for this kind of vault. */
  readonly env: NodeJS.ProcessEnv;
  /** A location for a new (not yet initialised) vault. */
  newLocation(label: string): string;
  /** Every stored object: key -> size. */
  objects(location: string): Promise<Map<string, number>>;
  read(location: string, key: string): Promise<Buffer>;
  /** Replaces an object's bytes (as damage would: download, change, delete, upload). */
  replace(location: string, key: string, bytes: Buffer): Promise<void>;
  /**
   * Objects being written and not committed yet, with the bytes they hold so far (local: files in
   * the store's .tmp/ scratch folder; Azure: blobs that have staged blocks and no committed block list).
   */
  inFlight?(location: string): Promise<number[]>;
  close(): Promise<void>;
}

export class LocalVaults implements VaultKind {
  readonly name = "local" as const;
  readonly env: NodeJS.ProcessEnv = {};
  private readonly root: string;
  private count = 0;

  private constructor(root: string) {
    this.root = root;
  }

  static async create(): Promise<LocalVaults> {
    return new LocalVaults(await tempFolder("vaults"));
  }

  newLocation(label: string): string {
    return path.join(this.root, `${label}-${this.count++}`);
  }

  async objects(location: string): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    const walk = async (folder: string, prefix: string) => {
      let names: string[];
      try {
        names = await readdir(folder);
      } catch {
        return;
      }
      for (const name of names) {
        if (prefix === "" && name === ".tmp") continue; // the store's scratch space, never an object
        const full = path.join(folder, name);
        const info = await stat(full);
        if (info.isDirectory()) await walk(full, `${prefix}${name}/`);
        else found.set(`${prefix}${name}`, info.size);
      }
    };
    await walk(location, "");
    return found;
  }

  read(location: string, key: string): Promise<Buffer> {
    return readFile(path.join(location, key));
  }

  async replace(location: string, key: string, bytes: Buffer): Promise<void> {
    await writeFile(path.join(location, key), bytes);
  }

  async inFlight(location: string): Promise<number[]> {
    const scratch = path.join(location, ".tmp");
    let names: string[];
    try {
      names = await readdir(scratch);
    } catch {
      return [];
    }
    const sizes: number[] = [];
    for (const name of names) {
      try {
        sizes.push((await stat(path.join(scratch, name))).size);
      } catch {
        // committed (renamed) or removed while listing
      }
    }
    return sizes;
  }

  async close(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}

export class AzuriteVaults implements VaultKind {
  readonly name = "azurite" as const;
  readonly azurite: Azurite;
  readonly env: NodeJS.ProcessEnv;
  private readonly service: BlobServiceClient;
  private count = 0;

  private constructor(azurite: Azurite) {
    this.azurite = azurite;
    this.env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    this.service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  }

  static async create(): Promise<AzuriteVaults> {
    return new AzuriteVaults(await Azurite.start());
  }

  newLocation(label: string): string {
    // Half the vaults live under a prefix inside a container, as a customer's may.
    const n = this.count++;
    const container = `${label.toLowerCase().replace(/[^a-z0-9]/g, "")}${n}-${randomBytes(3).toString("hex")}`;
    return `${this.azurite.blobEndpoint}/${container}${n % 2 === 1 ? "/some/prefix" : ""}`;
  }

  /** The vault's container and prefix; `key` under `locks/` lives in the sibling locks container (runtime/store/azure-blob.ts). */
  private where(location: string, key = ""): { container: ContainerClient; prefix: string } {
    const parts = new URL(location).pathname.split("/").filter(Boolean);
    const name = key.startsWith("locks/") ? lockContainerName(parts[1]) : parts[1];
    return { container: this.service.getContainerClient(name), prefix: parts.slice(2).map((p) => `${p}/`).join("") };
  }

  /** The vault's objects, its lock objects included (they live in the locks container). */
  async objects(location: string): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for (const place of [this.where(location), this.where(location, "locks/")]) {
      if (!(await place.container.exists())) continue;
      for await (const blob of place.container.listBlobsFlat({ prefix: place.prefix })) found.set(blob.name.slice(place.prefix.length), blob.properties.contentLength ?? 0);
    }
    return found;
  }

  read(location: string, key: string): Promise<Buffer> {
    const { container, prefix } = this.where(location, key);
    return container.getBlockBlobClient(prefix + key).downloadToBuffer();
  }

  async replace(location: string, key: string, bytes: Buffer): Promise<void> {
    const { container, prefix } = this.where(location, key);
    const blob = container.getBlockBlobClient(prefix + key);
    await blob.delete();
    await blob.upload(bytes, bytes.length);
  }

  async inFlight(location: string): Promise<number[]> {
    const { container, prefix } = this.where(location);
    if (!(await container.exists())) return [];
    // List Blobs with include=uncommittedblobs also lists blobs that have only staged blocks
    // (https://learn.microsoft.com/rest/api/storageservices/list-blobs, "include" parameter); the
    // committed ones are known from objects(), so a name listed here and not there is in flight.
    const committed = await this.objects(location);
    const sizes: number[] = [];
    for await (const blob of container.listBlobsFlat({ prefix, includeUncommitedBlobs: true })) {
      if (!committed.has(blob.name.slice(prefix.length))) sizes.push(blob.properties.contentLength ?? 0);
    }
    return sizes;
  }

  async close(): Promise<void> {
    await this.azurite.stop();
  }
}

/**
 * A vault made in this process as `bulwark init` makes it (its container or folder, config, key
 * object for the suite's passphrase, master keys), with what the CLI does not offer: a smaller pack
 * size (a few MiB then make several packs, so a test has moments between them at a fraction of the
 * bytes) or an older format version. No process start, and the options land in the vault's config.
 */
export async function initVaultInProcess(kind: Pick<VaultKind, "env">, location: string, config: Parameters<typeof Vault.init>[2] = {}): Promise<Vault> {
  const opened = await openStore(location, kind.env);
  await opened.prepare();
  return Vault.init(opened.store, new PassphraseProvider(PASSPHRASE), config);
}

/** Runs a command against a vault of the given kind (adds --vault and the kind's environment). */
export function cli(kind: VaultKind, location: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runCli([...args, "--vault", location], { ...kind.env, ...env });
}

export function cliJson<T = Record<string, unknown>>(kind: VaultKind, location: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> {
  return runJson<T>([...args, "--vault", location], { ...kind.env, ...env });
}

export interface BackupSummary {
  id: string;
  time: string;
  kind: string;
  source: string;
  size: number;
  tags: Record<string, string>;
  bytesRead: number;
  bytesNew: number;
  bytesStored: number;
  chunksNew: number;
}

export interface VerifySummary {
  ok: boolean;
  points: number;
  packs: number;
  packsRead: number;
  chunksChecked: number;
  unindexedPacks: number;
  problems: string[];
}

/** Restores a point to a fresh path and returns the restored file's sha256. */
export async function restoredHash(kind: VaultKind, location: string, point: string, scratch: string): Promise<string> {
  const to = path.join(scratch, `restored-${point.slice(0, 8)}-${randomBytes(4).toString("hex")}`);
  const result = await cli(kind, location, ["restore", point, "--to", to]);
  if (result.code !== 0) throw new Error(`restore ${point} exited ${result.code}: ${result.stderr}`);
  const hash = await sha256File(to);
  await rm(to, { force: true });
  return hash;
}

/** Asserts-by-throwing that `verify --read-data` passes; returns its report. */
export async function verifyClean(kind: VaultKind, location: string): Promise<VerifySummary> {
  const result = await cli(kind, location, ["verify", "--read-data", "--json"]);
  const report = JSON.parse(result.stdout || "{}") as VerifySummary;
  if (result.code !== 0 || !report.ok) {
    throw new Error(`verify --read-data exited ${result.code}: ${result.stdout} ${result.stderr}`);
  }
  return report;
}

/** Keys under a prefix ("data/", "points/", ...) of an object listing. */
export function keysUnder(objects: Map<string, number>, prefix: string): string[] {
  return [...objects.keys()].filter((k) => k.startsWith(prefix)).sort();
}

/** A listing without lock objects (commands hold and release them; they are not content). */
export function contentObjects(objects: Map<string, number>): [string, number][] {
  return [...objects.entries()].filter(([k]) => !k.startsWith("locks/")).sort(([a], [b]) => a.localeCompare(b));
}

export { waitFor } from "../support/wait.ts";
