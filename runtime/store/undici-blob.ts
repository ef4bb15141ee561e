/**
 * Ranged reads of a Blob vault's objects (packs on restore, verify, prune and copy) over undici
 * instead of the storage SDK's pipeline. Measured by `npm run bench -- --case http`: the same 8 MiB
 * ranges at the same concurrency cost about a quarter less CPU in this process (bench/README.md,
 * "Case http"). Pack uploads measured the same CPU either way, so they, and everything else
 * (commits with their conditions, listings, properties, deletes, copies), stay on the SDK, whose
 * errors the store already maps.
 *
 * Requests as Azure's REST reference defines them (Azure/azure-rest-api-specs,
 * specification/storage/data-plane/Microsoft.BlobStorage/stable/2026-10-06/blob.json):
 * Get Blob `GET /{containerName}/{blob}` with `x-ms-range: bytes=start-end` (inclusive), answered
 * 206 with those bytes (fewer where the blob ends); `x-ms-version` on every request
 * (ApiVersionParameter, required). The version is the one the SDK in use sends, so both clients
 * speak to the service alike.
 *
 * Authorization follows the store's credential, as the SDK would use it:
 * - a token credential (Entra ID): `Authorization: Bearer` for https://storage.azure.com/.default
 *   (learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory);
 * - a shared key (connection string with AccountKey): a read-only service SAS for the container,
 *   signed here with the key (no request), without a start time so a host clock a little
 *   ahead of the service's cannot make it "not yet valid" (MicrosoftDocs/azure-docs
 *   articles/storage/common/storage-sas-overview.md, best practices: "Be careful with SAS start
 *   time ... clock skew ... Or, don't set it at all"); renewed well before it expires;
 * - a SAS connection string: the SAS already in the blob's URL.
 * Proxies are honoured from HTTP_PROXY / HTTPS_PROXY / NO_PROXY, as the SDK honours them.
 *
 * Failures become errors the store's retry layer and its error mapping understand: an HTTP error
 * carries `statusCode`, the service's `code` (x-ms-error-code) and the response headers (Retry-After);
 * a dropped connection or a timeout carries a network `code` that retry.ts retries.
 */
import { ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters, type BlockBlobClient } from "@azure/storage-blob";
import type { TokenCredential } from "@azure/identity";
import type { Dispatcher } from "undici";
import { UsageError } from "../errors.ts";

/** The x-ms-version sent: @azure/storage-blob 12.x's own (its SERVICE_VERSION), so behaviour matches the SDK's requests. */
export const STORAGE_VERSION = "2026-10-06";
const STORAGE_SCOPE = "https://storage.azure.com/.default";
/** Per origin: a restore's 6 ranges in flight (runtime/engine/restore.ts), a copy's and a verify's, without queueing. */
const CONNECTIONS = 16;
/** As the SDK pipeline's per-try timeout (STORAGE_PIPELINE in azure-blob.ts). */
const REQUEST_TIMEOUT_MS = 120_000;
const SAS_LIFETIME_MS = 60 * 60_000;
const RENEW_BEFORE_MS = 15 * 60_000;
/** undici's transport failures, mapped to the network codes retry.ts retries. */
const TRANSPORT_CODES: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: "ETIMEDOUT",
  UND_ERR_HEADERS_TIMEOUT: "ETIMEDOUT",
  UND_ERR_BODY_TIMEOUT: "ETIMEDOUT",
  UND_ERR_SOCKET: "ECONNRESET",
  UND_ERR_CLOSED: "ECONNRESET",
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: "ECONNRESET",
};

/** An HTTP error from the storage service, shaped as the SDK's RestError for the store's mapping. */
export class BlobRequestError extends Error {
  readonly statusCode: number;
  /** The service's error code (x-ms-error-code), e.g. BlobNotFound, ContainerNotFound. */
  readonly code: string | undefined;
  readonly response: { headers: { get(name: string): string | undefined } };

  constructor(what: string, statusCode: number, code: string | undefined, serviceMessage: string, headers: Record<string, string | string[] | undefined>) {
    super(`${what}: HTTP ${statusCode}${code ? ` ${code}` : ""}${serviceMessage ? `: ${serviceMessage}` : ""}`);
    this.name = "BlobRequestError";
    this.statusCode = statusCode;
    this.code = code;
    this.response = { headers: { get: (name) => single(headers[name.toLowerCase()]) } };
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A transport failure with the network code retry.ts knows, the original as its cause. */
function transportFailure(what: string, error: unknown): Error {
  const code = (error as { code?: string }).code;
  const mapped = code === undefined ? undefined : (TRANSPORT_CODES[code] ?? code);
  return Object.assign(new Error(`${what}: ${(error as Error).message}`, { cause: error }), { code: mapped });
}

/** The first line of the service's <Message> in an error body, if there is one. */
function serviceMessage(body: string): string {
  const match = /<Message>([^<]*)<\/Message>/.exec(body);
  return match ? match[1].split("\n")[0].trim() : "";
}

interface Signed {
  query: string;
  expiresAt: number;
}

export class UndiciBlobRequests {
  /** Made on the first read: undici loads only in a command that reads ranges (start-up cost otherwise). */
  private dispatcher: Promise<Dispatcher> | undefined;
  private readonly sasByContainer = new Map<string, Signed>();
  private token: { value: string; expiresAt: number } | undefined;

  private agent(): Promise<Dispatcher> {
    this.dispatcher ??= import("undici").then(({ EnvHttpProxyAgent }) => new EnvHttpProxyAgent({ connections: CONNECTIONS, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS }));
    return this.dispatcher;
  }

  /** Exactly the bytes [offset, offset + length) of the blob, or fewer where the blob ends. */
  async getRange(blob: BlockBlobClient, offset: number, length: number): Promise<Buffer> {
    const what = `reading ${blob.name} at ${offset}+${length}`;
    const response = await this.send(what, blob, { "x-ms-range": `bytes=${offset}-${offset + length - 1}` });
    if (response.statusCode !== 206 && response.statusCode !== 200) throw await this.failure(what, response);
    const out = Buffer.allocUnsafe(length);
    let at = 0;
    try {
      for await (const chunk of response.body) {
        const piece = chunk as Buffer;
        if (at + piece.length > length) throw Object.assign(new Error(`${what}: the service sent more than the range asked for`), { code: "ERANGE" });
        piece.copy(out, at);
        at += piece.length;
      }
    } catch (error) {
      if ((error as { code?: string }).code === "ERANGE") throw error;
      throw transportFailure(what, error);
    }
    return at === length ? out : out.subarray(0, at);
  }

  private async send(
    what: string,
    blob: BlockBlobClient,
    headers: Record<string, string>,
  ): Promise<Dispatcher.ResponseData> {
    const url = new URL(blob.url);
    const auth = await this.authorization(blob, url);
    const query = [url.search.slice(1), auth.query].filter(Boolean).join("&");
    try {
      return await (await this.agent()).request({
        origin: url.origin,
        path: `${url.pathname}${query ? `?${query}` : ""}`,
        method: "GET",
        headers: { "x-ms-version": STORAGE_VERSION, ...auth.headers, ...headers },
      });
    } catch (error) {
      throw transportFailure(what, error);
    }
  }

  private async failure(what: string, response: Dispatcher.ResponseData): Promise<BlobRequestError> {
    const text = await response.body.text().catch(() => "");
    return new BlobRequestError(what, response.statusCode, single(response.headers["x-ms-error-code"]), serviceMessage(text), response.headers);
  }

  /** The query parameters or headers that authorize a request on `blob`, from its client's credential. */
  private async authorization(blob: BlockBlobClient, url: URL): Promise<{ query: string; headers: Record<string, string> }> {
    const credential = blob.credential;
    if (credential instanceof StorageSharedKeyCredential) return { query: this.containerSas(blob.containerName, credential), headers: {} };
    if ("getToken" in credential) {
      // As the SDK's bearer policy: a token never travels unencrypted (blobContainerAt already insists on https).
      if (url.protocol !== "https:") throw new UsageError(`${url.origin} is not https: Azure credentials are sent over https only`);
      return { query: "", headers: { authorization: `Bearer ${await this.bearer(credential as TokenCredential)}` } };
    }
    // Anonymous: a SAS connection string, whose signature is already in the blob's URL.
    return { query: "", headers: {} };
  }

  private containerSas(container: string, key: StorageSharedKeyCredential): string {
    const cached = this.sasByContainer.get(container);
    if (cached && cached.expiresAt - Date.now() > RENEW_BEFORE_MS) return cached.query;
    const expiresAt = Date.now() + SAS_LIFETIME_MS;
    // Read only (Get Blob); sr=c covers every blob of the container.
    const permissions = ContainerSASPermissions.parse("r");
    const query = generateBlobSASQueryParameters({ containerName: container, permissions, expiresOn: new Date(expiresAt) }, key).toString();
    this.sasByContainer.set(container, { query, expiresAt });
    return query;
  }

  private async bearer(credential: TokenCredential): Promise<string> {
    if (this.token && this.token.expiresAt - Date.now() > 5 * 60_000) return this.token.value;
    const token = await credential.getToken(STORAGE_SCOPE);
    if (!token) throw Object.assign(new Error(`no token for ${STORAGE_SCOPE}: sign in again`), { statusCode: 401 });
    this.token = { value: token.token, expiresAt: token.expiresOnTimestamp };
    return token.token;
  }
}
