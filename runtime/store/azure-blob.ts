/**
 * A vault in an Azure Blob container (or under a prefix in one). Create-only writes carry
 * If-None-Match: * so two writers can never overwrite each other; large objects are uploaded as
 * blocks staged in parallel and committed in one conditional call. Every object carries its
 * Content-MD5, so a retried create that finds "already exists" can tell its own earlier,
 * successful attempt from someone else's object.
 *
 * Lock objects (`locks/…`) live in a sibling container, `<container>-locks`, under the same prefix:
 * the vault container carries a WORM default policy, and a blob inherits its container's default
 * policy on upload (MicrosoftDocs/azure-docs articles/storage/blobs/immutable-version-level-worm-policies.md,
 * "Configure a policy on the current version"), so locks there could not be deleted or refreshed
 * until their immutability expired. Locks written before this change, under `locks/` in the vault
 * container, are still read, listed and deleted there: a lock someone holds is never ignored.
 */
import { createHash } from "node:crypto";
import {
  BlobSASPermissions,
  BlobServiceClient,
  type BlockBlobClient,
  ContainerClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type StoragePipelineOptions,
} from "@azure/storage-blob";
import type { TokenCredential } from "@azure/identity";
import { BulwarkError, NotFoundError, ObjectExistsError, ObjectNotFoundError, ServiceError, UsageError } from "../errors.ts";
import { DEFAULT_RETRY, isRetryable, withRetry } from "./retry.ts";
import { throwIfInterrupted } from "../interruption.ts";
import type { ObjectInfo, ObjectStore, ObjectWriter } from "./store.ts";
import { UndiciBlobRequests } from "./undici-blob.ts";

const BLOCK_BYTES = 8 * 1024 * 1024;
const PARALLEL_BLOCKS = 4;
/** Copy Blob From URL copies sources up to 256 MiB synchronously (learn.microsoft.com/rest/api/storageservices/copy-blob-from-url). */
export const SYNC_COPY_LIMIT = 256 * 1024 * 1024;
/** Put Block From URL ranges for larger sources (a block may hold up to 4000 MiB since version 2019-12-12; put-block-from-url). */
export const BLOCK_FROM_URL_BYTES = 64 * 1024 * 1024;

export const STORAGE_PIPELINE: StoragePipelineOptions = {
  retryOptions: { maxTries: 5, retryDelayInMs: 200, maxRetryDelayInMs: 8000, tryTimeoutInMs: 120_000 },
};

export interface BlobLocation {
  /** The container URL, without prefix. */
  containerUrl: string;
  container: string;
  /** "" or a prefix ending in "/". */
  prefix: string;
}

/** https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX], or path-style http://host:port/ACCOUNT/CONTAINER[/PREFIX] (Azurite). */
export function parseBlobUrl(raw: string): BlobLocation {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`"${raw}" is not a URL; give https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or a folder path`);
  }
  const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const pathStyle = !url.hostname.includes(".blob.");
  const containerIndex = pathStyle ? 1 : 0;
  const container = parts[containerIndex];
  if (!container) throw new UsageError(`the vault URL ${raw} names no container; add /CONTAINER to it`);
  if (url.search) throw new UsageError("do not put a SAS or query in the vault URL; credentials come from the environment");
  const prefixParts = parts.slice(containerIndex + 1);
  const base = `${url.protocol}//${url.host}${pathStyle ? `/${parts[0]}` : ""}`;
  return { containerUrl: `${base}/${container}`, container, prefix: prefixParts.length ? `${prefixParts.join("/")}/` : "" };
}

/**
 * The hosts Bulwark sends its Azure credentials to: Azure Storage's blob endpoints in the public
 * cloud and the sovereign clouds, nothing else (the storage SDK would send a bearer token to any
 * https host it is given). From Microsoft's docs (MicrosoftDocs/azure-docs):
 * - public: `*.blob.core.windows.net`, and Azure DNS zone endpoints `*.z[00-99].blob.storage.azure.net`
 *   (articles/storage/common/storage-account-overview.md, "Standard endpoints" / "Azure DNS zone endpoints");
 * - Azure Government: `*.blob.core.usgovcloudapi.net`
 *   (articles/azure-government/compare-azure-government-global-azure.md, "Storage | Blob");
 * - Azure operated by 21Vianet (China): `*.blob.core.chinacloudapi.cn`
 *   (articles/china/china-get-started-developer-guide.md, "Check endpoints in Azure").
 * A local emulator (Azurite) is reached only through AZURE_STORAGE_CONNECTION_STRING, whose endpoint
 * the URL must then name exactly (see blobContainerAt).
 */
export const AZURE_BLOB_HOST_SUFFIXES = [".blob.core.windows.net", ".blob.storage.azure.net", ".blob.core.usgovcloudapi.net", ".blob.core.chinacloudapi.cn"];

export function isAzureBlobHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return AZURE_BLOB_HOST_SUFFIXES.some((suffix) => host.endsWith(suffix) && host.length > suffix.length);
}

/** The lock objects' key prefix in a vault (runtime/engine/locks.ts). */
const LOCKS_PREFIX = "locks/";
const LOCKS_CONTAINER_SUFFIX = "-locks";
/** Container names: 3-63 characters (articles/azure-resource-manager/management/resource-name-rules.md, Microsoft.Storage "storageAccounts / blobServices / containers"). */
const MAX_CONTAINER_NAME = 63;

/** The container that holds the lock objects of a vault in `vaultContainer` (infra creates the same one). */
export function lockContainerName(vaultContainer: string): string {
  const name = `${vaultContainer}${LOCKS_CONTAINER_SUFFIX}`;
  if (name.length > MAX_CONTAINER_NAME) {
    throw new UsageError(
      `the vault container name "${vaultContainer}" is too long: its lock objects go to the container "${name}", and container names have at most ${MAX_CONTAINER_NAME} characters; ` +
        `use a vault container name of at most ${MAX_CONTAINER_NAME - LOCKS_CONTAINER_SUFFIX.length} characters`,
    );
  }
  return name;
}

export interface BlobCredentials {
  /** AZURE_STORAGE_CONNECTION_STRING: when set, the only endpoint a blob URL may name. */
  connectionString?: string;
  /** The Azure credential chain, used only for Azure Storage hosts over https. */
  credential?: () => TokenCredential;
}

/** The service endpoint a URL names, without the container: `https://host` or `http://host:port/account`. */
function serviceBaseOf(location: BlobLocation): string {
  return location.containerUrl.slice(0, location.containerUrl.lastIndexOf("/"));
}

function normalizedBase(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.host}${parsed.pathname.replace(/\/+$/, "")}`.toLowerCase();
}

/**
 * Every blob URL (vault, transient storage, restore target) becomes a client here, so that it is
 * exactly where the URL says and credentials go nowhere else. With a connection string the URL must
 * name the connection string's own blob endpoint (its host and, path-style, its account), or the data
 * would silently go to another account; without one, only https Azure Storage hosts get the token.
 * `what` names the URL in the message ("the vault", "BULWARK_TRANSIENT", ...).
 */
export function blobContainerAt(raw: string, what: string, options: BlobCredentials): { location: BlobLocation; service: BlobServiceClient; container: ContainerClient } {
  const location = parseBlobUrl(raw);
  const base = serviceBaseOf(location);
  if (options.connectionString) {
    let service: BlobServiceClient;
    try {
      service = BlobServiceClient.fromConnectionString(options.connectionString, STORAGE_PIPELINE);
    } catch (cause) {
      throw new UsageError(`AZURE_STORAGE_CONNECTION_STRING is not a storage connection string (${(cause as Error).message}); fix it, or unset it to use the Azure credential chain`, { cause });
    }
    // Never the query: a SAS connection string's endpoint URL carries its signature.
    const endpointUrl = new URL(service.url);
    const endpoint = `${endpointUrl.protocol}//${endpointUrl.host}${endpointUrl.pathname}`.replace(/\/+$/, "");
    if (normalizedBase(base) !== normalizedBase(endpoint)) {
      throw new UsageError(
        `${what} ${raw} is at ${base}, but AZURE_STORAGE_CONNECTION_STRING is for account ${service.accountName} at ${endpoint}: ` +
          `give a URL under ${endpoint}/ (Azurite's are http://127.0.0.1:PORT/devstoreaccount1/CONTAINER), or unset AZURE_STORAGE_CONNECTION_STRING to reach ${base} with your Azure credentials`,
      );
    }
    return { location, service, container: service.getContainerClient(location.container) };
  }
  const url = new URL(raw);
  if (!isAzureBlobHost(url.hostname)) {
    throw new UsageError(
      `${what} ${raw}: ${url.host} is not an Azure Storage blob endpoint (*${AZURE_BLOB_HOST_SUFFIXES.join(", *")}), and Bulwark sends its Azure credentials to no other host; ` +
        "give the account's blob URL, or for a local emulator set AZURE_STORAGE_CONNECTION_STRING to its connection string",
    );
  }
  if (url.protocol !== "https:") {
    throw new UsageError(`${what} ${raw} is not https: Azure credentials are sent over https only; write https://${url.host}${url.pathname}`);
  }
  if (!options.credential) throw new UsageError(`${what} ${raw} needs Azure credentials: sign in (the Azure credential chain) or set AZURE_STORAGE_CONNECTION_STRING`);
  const service = new BlobServiceClient(base, options.credential(), STORAGE_PIPELINE);
  return { location, service, container: service.getContainerClient(location.container) };
}

export class AzureBlobStore implements ObjectStore {
  readonly location: string;
  readonly container: ContainerClient;
  private readonly prefix: string;
  /** Where `locks/` keys are written; absent for stores that hold no vault (staging). */
  private readonly locks: ContainerClient | undefined;
  /** Ranged reads go over undici: the same requests for about a quarter less CPU (undici-blob.ts). */
  private readonly data = new UndiciBlobRequests();

  constructor(container: ContainerClient, prefix: string, shownAs: string, locks?: ContainerClient) {
    this.container = container;
    this.prefix = prefix;
    this.location = shownAs;
    this.locks = locks;
  }

  static fromUrl(raw: string, options: BlobCredentials): AzureBlobStore {
    const { location, service, container } = blobContainerAt(raw, "the vault", options);
    const locks = service.getContainerClient(lockContainerName(location.container));
    return new AzureBlobStore(container, location.prefix, `${location.containerUrl}/${location.prefix}`, locks);
  }

  async ensureContainer(): Promise<void> {
    await this.container.createIfNotExists();
    await this.locks?.createIfNotExists();
  }

  async containerExists(): Promise<boolean> {
    return this.container.exists();
  }

  async get(key: string): Promise<Buffer> {
    throwIfInterrupted();
    return this.fromEither(key, (blob) => blob.downloadToBuffer(0, undefined, { concurrency: 4 }));
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    throwIfInterrupted();
    return this.fromEither(key, (blob) => this.data.getRange(blob, offset, length));
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const properties = await this.fromEither(key, (blob) => blob.getProperties());
      return { key, size: properties.contentLength ?? 0, lastModified: properties.lastModified ?? new Date(0) };
    } catch (error) {
      // A missing object, or a missing container (NotFoundError): nothing there, as before.
      if (error instanceof ObjectNotFoundError || error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  async create(key: string, data: Uint8Array): Promise<void> {
    if (data.length > BLOCK_BYTES) {
      const writer = this.createWriter(key);
      await writer.write(data);
      await writer.commit();
      return;
    }
    const md5 = createHash("md5").update(data).digest();
    const upload = () => this.blob(key).upload(data, data.length, { conditions: { ifNoneMatch: "*" }, blobHTTPHeaders: { blobContentMD5: md5 } });
    try {
      await upload().catch(async (error) => {
        if (!(await this.createdMissingLocksContainer(error, key))) throw error;
        return upload();
      });
    } catch (error) {
      await this.resolveConflict(error, key, md5);
    }
  }

  createWriter(key: string): ObjectWriter {
    const blob = this.blob(key);
    const md5 = createHash("md5");
    const blockIds: string[] = [];
    const staging = new Set<Promise<void>>();
    let failure: unknown;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const stage = async (data: Buffer) => {
      const blockId = Buffer.from(String(blockIds.length).padStart(8, "0")).toString("base64");
      blockIds.push(blockId);
      // Staging a block is idempotent (same id, same bytes): retried through outages and throttling.
      const upload = withRetry(`uploading ${key}`, DEFAULT_RETRY, () => blob.stageBlock(blockId, data, data.length)).then(
        () => {},
        (error) => {
          failure ??= this.translate(error, key);
        },
      );
      const tracked = upload.finally(() => staging.delete(tracked));
      staging.add(tracked);
      if (staging.size >= PARALLEL_BLOCKS) await Promise.race(staging);
      if (failure) throw failure;
    };
    const flush = async (all: boolean) => {
      while (pendingBytes >= BLOCK_BYTES || (all && pendingBytes > 0)) {
        const joined = Buffer.concat(pending);
        const take = Math.min(BLOCK_BYTES, joined.length);
        pending = take < joined.length ? [joined.subarray(take)] : [];
        pendingBytes = joined.length - take;
        await stage(joined.subarray(0, take));
      }
    };
    return {
      write: async (data: Uint8Array) => {
        throwIfInterrupted();
        if (failure) throw failure;
        md5.update(data);
        pending.push(Buffer.from(data));
        pendingBytes += data.length;
        if (pendingBytes >= BLOCK_BYTES) await flush(false);
      },
      commit: async () => {
        await flush(true);
        await Promise.all(staging);
        if (failure) throw failure;
        const digest = md5.digest();
        try {
          // A commit retried after it landed finds the object with our MD5: resolveConflict accepts it.
          await withRetry(`committing ${key}`, DEFAULT_RETRY, () =>
            blob.commitBlockList(blockIds, { conditions: { ifNoneMatch: "*" }, blobHTTPHeaders: { blobContentMD5: digest } }),
          );
        } catch (error) {
          await this.resolveConflict(error, key, digest);
        }
      },
      // Uncommitted blocks are discarded by the service (after a week at most); nothing to delete.
      abort: async () => {
        pending = [];
        await Promise.allSettled(staging);
      },
    };
  }

  /** Both containers' objects where the prefix can name locks: the locks container's, and any left in the vault container. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* this.listIn(this.container, prefix);
    if (this.locks && (LOCKS_PREFIX.startsWith(prefix) || prefix.startsWith(LOCKS_PREFIX))) {
      yield* this.listIn(this.locks, prefix.length > LOCKS_PREFIX.length ? prefix : LOCKS_PREFIX);
    }
  }

  /** A lock is deleted in both containers: it was written in one of them. */
  async delete(key: string): Promise<void> {
    try {
      if (this.holdsLock(key)) await this.locks!.getBlockBlobClient(this.prefix + key).deleteIfExists().catch(ignoreMissingContainer);
      await this.container.getBlockBlobClient(this.prefix + key).deleteIfExists();
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  /**
   * Get Blob Properties' `x-ms-immutability-policy-until-date` (the SDK's immutabilityPolicyExpiresOn):
   * the current version's retention date, also for a policy inherited from the container's default,
   * which a blob takes on upload (MicrosoftDocs/azure-docs
   * articles/storage/blobs/immutable-version-level-worm-policies.md, "Configure a policy on the
   * current version"). The Azure SDK for JavaScript's recorded traffic shows the header on a HEAD
   * after a plain PUT into such a container (Azure/azure-sdk-for-js
   * sdk/storage/storage-blob/recordings/node, immutable-storage recording of 2021-06-28).
   */
  async immutableUntil(key: string): Promise<Date | undefined> {
    try {
      return (await this.blob(key).getProperties()).immutabilityPolicyExpiresOn;
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  /**
   * A URL with a short-lived read SAS for one object (the source of a server-side copy). Its
   * validity is set on the storage service's clock (the Date header of a Get Blob Properties on
   * the object), not this host's, as locks judge staleness on the store's clock: a host clock
   * that runs ahead or behind would hand out a SAS not yet valid, or valid for longer than meant.
   * With a shared key (Azurite, connection strings) it is a service SAS; otherwise a user
   * delegation SAS, which needs the role's generateUserDelegationKey action and read on the blob
   * (learn.microsoft.com/rest/api/storageservices/create-user-delegation-sas).
   */
  async readUrl(key: string, minutes = 60): Promise<string> {
    const blob = this.blob(key);
    const properties = await blob.getProperties().catch((error: unknown) => {
      throw this.translate(error, key);
    });
    const serviceNow = properties.date?.getTime() ?? Date.now();
    const startsOn = new Date(serviceNow - 5 * 60 * 1000);
    const expiresOn = new Date(serviceNow + minutes * 60 * 1000);
    const values = { containerName: this.container.containerName, blobName: this.prefix + key, permissions: BlobSASPermissions.parse("r"), startsOn, expiresOn };
    const credential = this.container.credential;
    if (credential instanceof StorageSharedKeyCredential) return `${blob.url}?${generateBlobSASQueryParameters(values, credential).toString()}`;
    const service = new BlobServiceClient(this.container.url.slice(0, this.container.url.lastIndexOf("/")), credential, STORAGE_PIPELINE);
    const delegation = await service.getUserDelegationKey(startsOn, expiresOn);
    return `${blob.url}?${generateBlobSASQueryParameters(values, delegation, service.accountName).toString()}`;
  }

  /**
   * Server-side copy into `key` (create-only). Returns false when the object already exists with
   * the same size (and, when `md5` is given, the same Content-MD5): an earlier attempt of the copy.
   *
   * With `md5` (of bytes the caller read and authenticated), the service itself checks what it
   * copied: Copy Blob From URL and Put Block From URL compare the bytes read from the source with
   * x-ms-source-content-md5 and fail the request on a mismatch
   * (learn.microsoft.com/rest/api/storageservices/copy-blob-from-url and put-block-from-url,
   * "Request headers"), so a source changed after it was read cannot land. Copy Blob From URL is
   * synchronous for sources of at most 256 MiB (same page); larger objects go as Put Block From URL
   * ranges of BLOCK_FROM_URL_BYTES committed with Put Block List, each range with its own MD5.
   */
  async copyFromUrl(key: string, sourceUrl: string, expected: { size: number; md5?: Buffer; blockMd5s?: Buffer[] }): Promise<boolean> {
    const blob = this.blob(key);
    try {
      if (expected.size <= SYNC_COPY_LIMIT) {
        await blob.syncCopyFromURL(sourceUrl, { conditions: { ifNoneMatch: "*" }, sourceContentMD5: expected.md5 });
      } else {
        await this.copyInBlocks(blob, sourceUrl, expected.size, expected.blockMd5s);
      }
      return true;
    } catch (error) {
      const status = statusOf(error);
      if (status !== 409 && status !== 412) throw this.translate(error, key);
      const existing = await blob.getProperties().catch((e: unknown) => {
        throw this.translate(e, key);
      });
      const sameMd5 = !expected.md5 || !existing.contentMD5 || Buffer.from(existing.contentMD5).equals(expected.md5);
      if (existing.contentLength === expected.size && sameMd5) return false;
      throw new ObjectExistsError(key, this.location);
    }
  }

  /** Put Block From URL per range, then Put Block List with If-None-Match: * (create-only). */
  private async copyInBlocks(blob: BlockBlobClient, sourceUrl: string, size: number, blockMd5s: Buffer[] | undefined): Promise<void> {
    const blockIds: string[] = [];
    for (let offset = 0, n = 0; offset < size; offset += BLOCK_FROM_URL_BYTES, n++) {
      const count = Math.min(BLOCK_FROM_URL_BYTES, size - offset);
      const blockId = Buffer.from(`copy${String(n).padStart(8, "0")}`).toString("base64");
      blockIds.push(blockId);
      await withRetry(`copying ${blob.name}`, DEFAULT_RETRY, () =>
        blob.stageBlockFromURL(blockId, sourceUrl, offset, count, { sourceContentMD5: blockMd5s?.[n] }),
      );
    }
    await blob.commitBlockList(blockIds, { conditions: { ifNoneMatch: "*" } });
  }

  private holdsLock(key: string): boolean {
    return this.locks !== undefined && key.startsWith(LOCKS_PREFIX);
  }

  /** Where a key is written: the locks container for lock keys, else the vault container. */
  private blob(key: string) {
    return (this.holdsLock(key) ? this.locks! : this.container).getBlockBlobClient(this.prefix + key);
  }

  /** Reads a key where it is written; a lock key not there is looked for where older versions wrote it. */
  private async fromEither<T>(key: string, read: (blob: BlockBlobClient) => Promise<T>): Promise<T> {
    try {
      return await read(this.blob(key));
    } catch (error) {
      if (!this.holdsLock(key) || statusOf(error) !== 404) throw this.translate(error, key);
    }
    try {
      return await read(this.container.getBlockBlobClient(this.prefix + key));
    } catch (error) {
      throw this.translate(error, key);
    }
  }

  private async *listIn(container: ContainerClient, prefix: string): AsyncIterable<ObjectInfo> {
    try {
      for await (const item of container.listBlobsFlat({ prefix: this.prefix + prefix })) {
        if (container === this.locks && !item.name.startsWith(this.prefix + LOCKS_PREFIX)) continue;
        yield { key: item.name.slice(this.prefix.length), size: item.properties.contentLength ?? 0, lastModified: item.properties.lastModified };
      }
    } catch (error) {
      // No locks container yet (a vault made before it existed): no lock has been written there.
      if (container === this.locks && isMissingContainer(error)) return;
      throw this.translate(error, prefix);
    }
  }

  /**
   * A vault made before locks had their own container: the first lock creates it, where the
   * identity may (the CLI's owner); an identity that may not (the agents') gets told who creates it.
   */
  private async createdMissingLocksContainer(error: unknown, key: string): Promise<boolean> {
    if (!this.holdsLock(key) || !isMissingContainer(error)) return false;
    try {
      await this.locks!.createIfNotExists();
      return true;
    } catch (cause) {
      throw new UsageError(
        `the vault at ${this.location} keeps its lock objects in the container ${this.locks!.url}, which does not exist, and this identity may not create it ` +
          `(${(cause as Error).message?.split("\n")[0]}); create it (\`pulumi up\` on the region stack does, and so does \`bulwark init\`) and retry`,
        { cause },
      );
    }
  }

  /** A 409/412 on a create: ours if the stored object has our MD5 (an earlier try that landed). */
  private async resolveConflict(error: unknown, key: string, md5: Buffer): Promise<void> {
    const status = statusOf(error);
    if (status !== 409 && status !== 412) throw this.translate(error, key);
    const properties = await this.blob(key).getProperties().catch(() => undefined);
    const stored = properties?.contentMD5 ? Buffer.from(properties.contentMD5) : undefined;
    if (stored && stored.equals(md5)) return;
    throw new ObjectExistsError(key, this.location);
  }

  private translate(error: unknown, key: string): Error {
    if (error instanceof BulwarkError) return error;
    const status = statusOf(error);
    if (isRetryable(error)) {
      return new ServiceError(
        `the storage service at ${this.location} did not answer for ${key} (${(error as Error).message?.split("\n")[0]}); ` +
          "check that it is reachable and retry: nothing was committed for this operation",
        { cause: error },
      );
    }
    if (status === 404) {
      const code = (error as { code?: string }).code;
      if (code === "ContainerNotFound") return new NotFoundError(`no vault at ${this.location}: the container does not exist; create it with \`bulwark init\``);
      return new ObjectNotFoundError(key, this.location);
    }
    return error instanceof Error ? error : new Error(String(error));
  }
}

function isMissingContainer(error: unknown): boolean {
  return statusOf(error) === 404 && (error as { code?: string }).code === "ContainerNotFound";
}

function ignoreMissingContainer(error: unknown): void {
  if (!isMissingContainer(error)) throw error;
}

export function statusOf(error: unknown): number | undefined {
  return (error as { statusCode?: number })?.statusCode;
}
