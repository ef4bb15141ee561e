/**
 * One trial of the http case (bench/http-case.ts), run in a process of its own so that its CPU
 * time is the client's alone (the servers run elsewhere): one data path, one client, a fixed
 * number of bytes, the product's concurrency. Prints one JSON line: bytes, wall and CPU seconds.
 *
 * The requests, as Azure's REST reference defines them (Azure/azure-rest-api-specs,
 * specification/storage/data-plane/Microsoft.BlobStorage/stable/2026-10-06/blob.json, x-ms-paths
 * and parameters):
 * - Get Blob, `GET /{containerName}/{blob}` with `x-ms-range: bytes=start-end` (inclusive), answered
 *   206 with exactly those bytes;
 * - Put Page, `/{containerName}/{blob}?comp=page&update`: `PUT ?comp=page` with
 *   `x-ms-page-write: update`, a 512-byte aligned `x-ms-range` and the pages as the body, answered 201;
 * - Put Block, `?comp=block` with `blockid` ("a valid Base64 string ... the same size for each
 *   block" of a blob), answered 201; Put Block List, `?comp=blocklist` with
 *   `<BlockList><Latest>id</Latest>...</BlockList>`, `If-None-Match: *` (create-only) and
 *   `x-ms-blob-content-md5` (stored, "not validated, as the hashes for the individual blocks were
 *   validated when each was uploaded"), answered 201.
 * Every request carries `x-ms-version` (required on every operation, ApiVersionParameter);
 * authorization is the SAS in the URL's query string (a service SAS for Azurite, the managed
 * disk's access SAS for the emulator).
 */
import { createHash, randomBytes } from "node:crypto";
import { AnonymousCredential, BlobServiceClient, type ContainerClient, PageBlobClient, newPipeline } from "@azure/storage-blob";
import { Pool } from "undici";
import { STORAGE_PIPELINE } from "../runtime/store/azure-blob.ts";

export type HttpPath = "range-read" | "page-write" | "pack-upload" | "pack-read";
export type HttpClientName = "sdk" | "undici";

export interface TrialSpec {
  path: HttpPath;
  client: HttpClientName;
  /** range-read / page-write: the page blob's SAS URL; pack-*: the container's URL (no query). */
  url: string;
  /** pack-*: a service SAS query for the container (undici) and the connection string (SDK). */
  containerSas?: string;
  connectionString?: string;
  /** pack-read: the packs to read ranges of, each `packBytes` long. */
  packKeys?: string[];
  /** The blob's size for range-read and page-write: requests cycle over it. */
  blobBytes: number;
  totalBytes: number;
}

export interface TrialResult {
  path: HttpPath;
  client: HttpClientName;
  bytes: number;
  requests: number;
  seconds: number;
  cpuSeconds: number;
}

export const STORAGE_VERSION = "2026-10-06";
const MiB = 1024 * 1024;
/** runtime/sources/azure-disk.ts: 4 MiB reads, PARALLEL_READS of them at once. */
export const SNAPSHOT_READ_BYTES = 4 * MiB;
export const SNAPSHOT_READS_IN_FLIGHT = 8;
/** runtime/sources/azure-restore.ts: Put Page of at most 4 MiB; runtime/engine/restore.ts: RANGES_IN_FLIGHT ranges, each written in turn. */
export const PAGE_WRITE_BYTES = 4 * MiB;
export const PAGE_WRITES_IN_FLIGHT = 6;
/** runtime/engine/vault.ts packSize; vault-writer.ts WRITE_BYTES pieces, three packs committing at once. */
export const PACK_BYTES = 32 * MiB;
export const PACK_WRITE_BYTES = 4 * MiB;
export const PACKS_IN_FLIGHT = 3;
/** runtime/store/azure-blob.ts: 8 MiB blocks, four staged at once per pack. */
export const BLOCK_BYTES = 8 * MiB;
export const BLOCKS_IN_FLIGHT = 4;
/** runtime/engine/restore.ts: MAX_RANGE_RAW (8 MiB) ranges of a pack, RANGES_IN_FLIGHT at once. */
export const PACK_READ_BYTES = 8 * MiB;
export const PACK_READS_IN_FLIGHT = 6;

/** Runs `count` tasks with at most `width` at once. */
async function inParallel(count: number, width: number, task: (n: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

function splitUrl(url: string): { origin: string; path: string; query: string } {
  const parsed = new URL(url);
  return { origin: parsed.origin, path: parsed.pathname, query: parsed.search.slice(1) };
}

async function expectStatus(what: string, response: { statusCode: number; body: { text(): Promise<string> } }, status: number): Promise<void> {
  if (response.statusCode === status) return;
  throw new Error(`${what}: HTTP ${response.statusCode} (expected ${status}): ${(await response.body.text()).slice(0, 300)}`);
}

/** GET with x-ms-range into a buffer of exactly `length` bytes. */
async function undiciRange(pool: Pool, path: string, offset: number, length: number): Promise<Buffer> {
  const response = await pool.request({ path, method: "GET", headers: { "x-ms-version": STORAGE_VERSION, "x-ms-range": `bytes=${offset}-${offset + length - 1}` } });
  await expectStatus(`GET ${offset}+${length}`, response, 206);
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  for await (const chunk of response.body) {
    const piece = chunk as Buffer;
    if (at + piece.length > length) throw new Error(`GET ${offset}+${length}: more bytes than asked for`);
    piece.copy(out, at);
    at += piece.length;
  }
  if (at !== length) throw new Error(`GET ${offset}+${length}: ${at} bytes`);
  return out;
}

function sdkPageBlob(sasUrl: string): PageBlobClient {
  // As runtime/sources/azure-disk.ts and azure-restore.ts make theirs.
  return new PageBlobClient(sasUrl, newPipeline(new AnonymousCredential(), { retryOptions: { maxTries: 6, retryDelayInMs: 500, maxRetryDelayInMs: 30_000 } }));
}

interface Workload {
  requestsPerOp: number;
  bytesPerOp: number;
  width: number;
  op(n: number): Promise<void>;
  close(): Promise<void>;
}

function rangeRead(spec: TrialSpec): Workload {
  const slots = spec.blobBytes / SNAPSHOT_READ_BYTES;
  const offset = (n: number) => (n % slots) * SNAPSHOT_READ_BYTES;
  const base = { requestsPerOp: 1, bytesPerOp: SNAPSHOT_READ_BYTES, width: SNAPSHOT_READS_IN_FLIGHT };
  if (spec.client === "sdk") {
    const client = sdkPageBlob(spec.url);
    return { ...base, op: async (n) => void (await client.downloadToBuffer(offset(n), SNAPSHOT_READ_BYTES, { blockSize: SNAPSHOT_READ_BYTES, concurrency: 4 })), close: async () => {} };
  }
  const { origin, path, query } = splitUrl(spec.url);
  const pool = new Pool(origin, { connections: SNAPSHOT_READS_IN_FLIGHT });
  return { ...base, op: async (n) => void (await undiciRange(pool, `${path}?${query}`, offset(n), SNAPSHOT_READ_BYTES)), close: () => pool.close() };
}

function pageWrite(spec: TrialSpec): Workload {
  const slots = spec.blobBytes / PAGE_WRITE_BYTES;
  const offset = (n: number) => (n % slots) * PAGE_WRITE_BYTES;
  const pages = randomBytes(PAGE_WRITE_BYTES);
  const base = { requestsPerOp: 1, bytesPerOp: PAGE_WRITE_BYTES, width: PAGE_WRITES_IN_FLIGHT };
  if (spec.client === "sdk") {
    const client = sdkPageBlob(spec.url);
    return { ...base, op: async (n) => void (await client.uploadPages(pages, offset(n), PAGE_WRITE_BYTES)), close: async () => {} };
  }
  const { origin, path, query } = splitUrl(spec.url);
  const pool = new Pool(origin, { connections: PAGE_WRITES_IN_FLIGHT });
  return {
    ...base,
    op: async (n) => {
      const response = await pool.request({
        path: `${path}?${query}&comp=page`,
        method: "PUT",
        headers: { "x-ms-version": STORAGE_VERSION, "x-ms-page-write": "update", "x-ms-range": `bytes=${offset(n)}-${offset(n) + PAGE_WRITE_BYTES - 1}`, "content-length": String(PAGE_WRITE_BYTES) },
        body: pages,
      });
      await expectStatus(`Put Page ${offset(n)}`, response, 201);
      await response.body.dump();
    },
    close: () => pool.close(),
  };
}

function blockId(n: number): string {
  return Buffer.from(String(n).padStart(8, "0")).toString("base64");
}

/** The container of the pack paths through the SDK, as azure-blob.ts builds it from a connection string. */
function sdkContainer(spec: TrialSpec): ContainerClient {
  const name = new URL(spec.url).pathname.split("/").filter(Boolean).at(-1)!;
  return BlobServiceClient.fromConnectionString(spec.connectionString!, STORAGE_PIPELINE).getContainerClient(name);
}

/**
 * A 32 MiB pack as 8 MiB blocks, 4 staged at once, then committed create-only with its MD5 (as
 * AzureBlobStore.createWriter does). Both clients get the same buffers and the same MD5 work:
 * only the requests differ.
 */
function packUpload(spec: TrialSpec): Workload {
  const pack = randomBytes(PACK_BYTES);
  const base = { requestsPerOp: PACK_BYTES / BLOCK_BYTES + 1, bytesPerOp: PACK_BYTES, width: PACKS_IN_FLIGHT };
  const key = (n: number) => `packs/${process.pid}-${n}-${randomBytes(4).toString("hex")}`;
  const blocks = Array.from({ length: PACK_BYTES / BLOCK_BYTES }, (_, i) => ({ id: blockId(i), body: pack.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES) }));
  const upload = async (stage: (block: { id: string; body: Buffer }) => Promise<void>, commit: (ids: string[], md5: Buffer) => Promise<void>) => {
    const md5 = createHash("md5").update(pack).digest();
    await inParallel(blocks.length, BLOCKS_IN_FLIGHT, (i) => stage(blocks[i]));
    await commit(blocks.map((block) => block.id), md5);
  };
  if (spec.client === "sdk") {
    const container = sdkContainer(spec);
    return {
      ...base,
      op: async (n) => {
        const blob = container.getBlockBlobClient(key(n));
        await upload(
          async (block) => void (await blob.stageBlock(block.id, block.body, block.body.length)),
          async (ids, md5) => void (await blob.commitBlockList(ids, { conditions: { ifNoneMatch: "*" }, blobHTTPHeaders: { blobContentMD5: md5 } })),
        );
      },
      close: async () => {},
    };
  }
  const { origin, path } = splitUrl(spec.url);
  const pool = new Pool(origin, { connections: PACKS_IN_FLIGHT * BLOCKS_IN_FLIGHT });
  const put = async (what: string, blobPath: string, query: string, headers: Record<string, string>, body: Buffer | string) => {
    const response = await pool.request({ path: `${blobPath}?${spec.containerSas}&${query}`, method: "PUT", headers: { "x-ms-version": STORAGE_VERSION, ...headers }, body });
    await expectStatus(what, response, 201);
    await response.body.dump();
  };
  return {
    ...base,
    op: async (n) => {
      const blobPath = `${path}/${key(n)}`;
      await upload(
        (block) => put("Put Block", blobPath, `comp=block&blockid=${encodeURIComponent(block.id)}`, { "content-length": String(block.body.length) }, block.body),
        (ids, md5) =>
          put(
            "Put Block List",
            blobPath,
            "comp=blocklist",
            { "if-none-match": "*", "x-ms-blob-content-md5": md5.toString("base64"), "content-type": "application/xml" },
            `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`,
          ),
      );
    },
    close: () => pool.close(),
  };
}

/** 8 MiB ranges of packs; the SDK as AzureBlobStore.getRange used it before undici (downloadToBuffer, 4 MiB pieces). */
function packRead(spec: TrialSpec): Workload {
  const keys = spec.packKeys ?? [];
  const perPack = PACK_BYTES / PACK_READ_BYTES;
  const at = (n: number) => ({ key: keys[Math.floor(n / perPack) % keys.length], offset: (n % perPack) * PACK_READ_BYTES });
  const base = { requestsPerOp: 1, bytesPerOp: PACK_READ_BYTES, width: PACK_READS_IN_FLIGHT };
  if (spec.client === "sdk") {
    const container = sdkContainer(spec);
    return {
      ...base,
      // downloadToBuffer splits a range into blockSize requests: two 4 MiB GETs per 8 MiB range.
      requestsPerOp: PACK_READ_BYTES / (4 * MiB),
      op: async (n) => void (await container.getBlockBlobClient(at(n).key).downloadToBuffer(at(n).offset, PACK_READ_BYTES, { concurrency: 4, blockSize: 4 * MiB })),
      close: async () => {},
    };
  }
  const { origin, path } = splitUrl(spec.url);
  const pool = new Pool(origin, { connections: PACK_READS_IN_FLIGHT });
  return { ...base, op: async (n) => void (await undiciRange(pool, `${path}/${at(n).key}?${spec.containerSas}`, at(n).offset, PACK_READ_BYTES)), close: () => pool.close() };
}

const WORKLOADS: Record<HttpPath, (spec: TrialSpec) => Workload> = { "range-read": rangeRead, "page-write": pageWrite, "pack-upload": packUpload, "pack-read": packRead };

export async function runTrial(spec: TrialSpec): Promise<TrialResult> {
  const workload = WORKLOADS[spec.path](spec);
  try {
    // One operation first: connections, TLS and lazily loaded code are not what is measured.
    await workload.op(0);
    const ops = Math.max(1, Math.round(spec.totalBytes / workload.bytesPerOp));
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    await inParallel(ops, workload.width, (n) => workload.op(n + 1));
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    return { path: spec.path, client: spec.client, bytes: ops * workload.bytesPerOp, requests: ops * workload.requestsPerOp, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
  } finally {
    await workload.close();
  }
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? "{}") as TrialSpec;
  runTrial(spec).then(
    (result) => console.log(JSON.stringify(result)),
    (error: unknown) => {
      console.error(error instanceof Error ? error.stack : String(error));
      process.exitCode = 1;
    },
  );
}
