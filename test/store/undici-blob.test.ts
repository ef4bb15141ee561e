/**
 * A Blob vault's ranged reads go over undici (runtime/store/undici-blob.ts); uploads stay on the
 * SDK. Against a real Azurite: packs round-trip byte for byte with their Content-MD5, missing
 * objects and containers keep their errors, and a SAS connection string works without an account
 * key. Against scripted endpoints: throttling and a connection dropped mid-body are retried until
 * the range arrives whole, a refused credential is not retried, and an Entra token goes over https
 * only, fetched once for the storage scope.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, ContainerClient, StorageSharedKeyCredential, generateAccountSASQueryParameters } from "@azure/storage-blob";
import type { AccessToken, TokenCredential } from "@azure/identity";
import { NotFoundError, ObjectNotFoundError, UsageError } from "../../runtime/errors.ts";
import { AzureBlobStore } from "../../runtime/store/azure-blob.ts";
import { RetryingStore } from "../../runtime/store/retry.ts";
import { AZURITE_ACCOUNT, AZURITE_KEY, Azurite } from "../support/azurite.ts";
import { makeCertificates, trustEmulatorCA } from "../emulator/tls.ts";

const MiB = 1024 * 1024;
const FAST_RETRY = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

let azurite: Azurite;
/** One pack for the file: 12 MiB + 123 bytes, so a block of 8 MiB and a short last one. */
const pack = randomBytes(12 * MiB + 123);

beforeAll(async () => {
  azurite = await Azurite.start();
});
afterAll(async () => {
  await azurite?.stop();
});

async function storeAt(container: string, connectionString = azurite.connectionString): Promise<AzureBlobStore> {
  const store = AzureBlobStore.fromUrl(`${azurite.blobEndpoint}/${container}`, { connectionString });
  await store.ensureContainer();
  return store;
}

async function writePack(store: AzureBlobStore, key: string): Promise<void> {
  const writer = store.createWriter(key);
  for (let at = 0; at < pack.length; at += 3 * MiB) await writer.write(pack.subarray(at, at + 3 * MiB));
  await writer.commit();
}

describe("packs through undici against Azurite", () => {
  test("a pack uploaded through the SDK reads back over undici range by range, byte for byte, and keeps its Content-MD5", async () => {
    const store = await storeAt("undici-roundtrip");
    await writePack(store, "packs/ab/pack-1");

    const ranges: [number, number][] = [[0, MiB], [8 * MiB - 100, 200], [4 * MiB, 6 * MiB], [pack.length - 10, 10]];
    for (const [offset, length] of ranges) expect((await store.getRange("packs/ab/pack-1", offset, length)).equals(pack.subarray(offset, offset + length))).toBe(true);
    // A range running past the end gives the bytes there are, as a folder vault does.
    expect((await store.getRange("packs/ab/pack-1", pack.length - 5, 64)).equals(pack.subarray(pack.length - 5))).toBe(true);
    expect((await store.get("packs/ab/pack-1")).equals(pack)).toBe(true);
    const properties = await store.container.getBlockBlobClient("packs/ab/pack-1").getProperties();
    expect(Buffer.from(properties.contentMD5!).equals(createHash("md5").update(pack).digest())).toBe(true);
  });

  test("a range of a missing pack is ObjectNotFoundError, and of a vault whose container is gone, NotFoundError saying to run bulwark init", async () => {
    const store = await storeAt("undici-missing");
    await expect(store.getRange("packs/00/none", 0, 100)).rejects.toBeInstanceOf(ObjectNotFoundError);
    const gone = AzureBlobStore.fromUrl(`${azurite.blobEndpoint}/undici-never-made`, { connectionString: azurite.connectionString });
    const error = await gone.getRange("packs/00/none", 0, 100).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NotFoundError);
    expect((error as Error).message).toContain("bulwark init");
  });

  test("a vault reached with a SAS connection string (no account key) reads its packs with that SAS alone", async () => {
    await storeAt("undici-sas");
    const sas = generateAccountSASQueryParameters(
      {
        expiresOn: new Date(Date.now() + 3600_000),
        permissions: AccountSASPermissions.parse("rwdlc"),
        resourceTypes: AccountSASResourceTypes.parse("sco").toString(),
        services: AccountSASServices.parse("b").toString(),
      },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    ).toString();
    const store = await storeAt("undici-sas", `BlobEndpoint=${azurite.blobEndpoint};SharedAccessSignature=${sas}`);
    await writePack(store, "packs/cd/pack-2");
    expect((await store.getRange("packs/cd/pack-2", 8 * MiB - 7, 14)).equals(pack.subarray(8 * MiB - 7, 8 * MiB + 7))).toBe(true);
  });
});

/** A storage endpoint that answers each request with the next scripted reply, recording what it was asked. */
interface Asked {
  method: string;
  url: URL;
  headers: IncomingMessage["headers"];
}
type Reply = (request: IncomingMessage, response: ServerResponse) => void;

async function scriptedEndpoint(replies: Reply[]): Promise<{ server: Server; asked: Asked[]; connectionString: string; vaultUrl: string }> {
  const asked: Asked[] = [];
  const server = createServer((request, response) => {
    asked.push({ method: request.method ?? "", url: new URL(request.url ?? "/", "http://x"), headers: request.headers });
    request.resume();
    request.once("end", () => (replies.shift() ?? serviceError(500, "InternalError"))(request, response));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/${AZURITE_ACCOUNT}`;
  return { server, asked, connectionString: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};`, vaultUrl: `${endpoint}/vault` };
}

function serviceError(status: number, code: string, headers: Record<string, string> = {}): Reply {
  return (_request, response) => {
    response.writeHead(status, { "content-type": "application/xml", "x-ms-error-code": code, ...headers });
    response.end(`<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>scripted ${code}\nRequestId:0</Message></Error>`);
  };
}

function rangeReply(bytes: Buffer, options: { dropAfter?: number } = {}): Reply {
  return (request, response) => {
    const [start, end] = /bytes=(\d+)-(\d+)/.exec(String(request.headers["x-ms-range"]))!.slice(1).map(Number);
    const body = bytes.subarray(start, end + 1);
    response.writeHead(206, { "content-length": String(body.length), "content-range": `bytes ${start}-${end}/${bytes.length}` });
    if (options.dropAfter === undefined) return void response.end(body);
    response.write(body.subarray(0, options.dropAfter), () => response.socket?.destroy());
  };
}

describe("packs through undici against a failing service", () => {
  test("a range refused with 503 ServerBusy, then cut off mid-body, is retried until it arrives whole; each try is a signed Get Blob with x-ms-range", async () => {
    const bytes = randomBytes(2 * MiB);
    const endpoint = await scriptedEndpoint([serviceError(503, "ServerBusy", { "retry-after": "0" }), rangeReply(bytes, { dropAfter: 64 * 1024 }), rangeReply(bytes)]);
    try {
      const store = new RetryingStore(AzureBlobStore.fromUrl(endpoint.vaultUrl, { connectionString: endpoint.connectionString }), FAST_RETRY);
      const got = await store.getRange("packs/ef/pack-3", 100, MiB);
      expect(got.equals(bytes.subarray(100, 100 + MiB))).toBe(true);
      expect(endpoint.asked).toHaveLength(3);
      for (const request of endpoint.asked) {
        expect(request.method).toBe("GET");
        expect(request.url.pathname).toBe(`/${AZURITE_ACCOUNT}/vault/packs/ef/pack-3`);
        expect(request.headers["x-ms-range"]).toBe(`bytes=100-${100 + MiB - 1}`);
        expect(request.headers["x-ms-version"]).toBeTruthy();
        // A container SAS signed with the account key, readable, with no start time to fall foul of clock skew.
        expect(request.url.searchParams.get("sr")).toBe("c");
        expect(request.url.searchParams.get("sp")).toContain("r");
        expect(request.url.searchParams.get("sig")).toBeTruthy();
        expect(request.url.searchParams.has("st")).toBe(false);
      }
    } finally {
      endpoint.server.close();
    }
  });

  test("a credential the service refuses (403 AuthenticationFailed) is not retried: one request, and the service's code is in the error", async () => {
    const endpoint = await scriptedEndpoint([serviceError(403, "AuthenticationFailed")]);
    try {
      const store = new RetryingStore(AzureBlobStore.fromUrl(endpoint.vaultUrl, { connectionString: endpoint.connectionString }), FAST_RETRY);
      const error = await store.getRange("packs/ef/pack-4", 0, 1024).catch((e: unknown) => e);
      expect((error as { statusCode?: number }).statusCode).toBe(403);
      expect((error as Error).message).toContain("AuthenticationFailed");
      expect(endpoint.asked).toHaveLength(1);
    } finally {
      endpoint.server.close();
    }
  });
});

describe("packs through undici with an Entra token", () => {
  /** A token credential that counts the scopes it is asked for. */
  function countingCredential(): TokenCredential & { scopes: string[] } {
    const scopes: string[] = [];
    return {
      scopes,
      async getToken(scope: string | string[]): Promise<AccessToken> {
        scopes.push(String(scope));
        return { token: `token-${scopes.length}`, expiresOnTimestamp: Date.now() + 3600_000 };
      },
    };
  }

  test("the bearer token goes over https only, asked once for the storage scope and reused across requests", async () => {
    const bytes = randomBytes(64 * 1024);
    const certificates = await makeCertificates();
    trustEmulatorCA(certificates.caPem);
    const asked: IncomingMessage["headers"][] = [];
    const server = createHttpsServer({ key: certificates.keyPem, cert: certificates.certPem }, (request, response) => {
      asked.push(request.headers);
      rangeReply(bytes)(request, response);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const credential = countingCredential();
      const port = (server.address() as AddressInfo).port;
      const store = new AzureBlobStore(new ContainerClient(`https://127.0.0.1:${port}/${AZURITE_ACCOUNT}/vault`, credential), "", "vault");
      expect((await store.getRange("packs/ab/pack-6", 10, 100)).equals(bytes.subarray(10, 110))).toBe(true);
      expect((await store.getRange("packs/ab/pack-6", 1000, 100)).equals(bytes.subarray(1000, 1100))).toBe(true);
      expect(asked.map((headers) => headers.authorization)).toEqual(["Bearer token-1", "Bearer token-1"]);
      expect(credential.scopes).toEqual(["https://storage.azure.com/.default"]);

      // The same credential on a plain-http endpoint: refused before anything is sent.
      const plain = await scriptedEndpoint([]);
      try {
        const insecure = new AzureBlobStore(new ContainerClient(plain.vaultUrl, credential), "", "vault");
        await expect(insecure.getRange("packs/ab/pack-6", 0, 10)).rejects.toBeInstanceOf(UsageError);
        expect(plain.asked).toHaveLength(0);
      } finally {
        plain.server.close();
      }
    } finally {
      server.close();
    }
  });
});
