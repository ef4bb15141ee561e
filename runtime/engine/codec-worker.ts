/**
 * A worker thread that compresses and seals (or opens and decompresses) chunks for the pool, and
 * computes the ids of a backup's blocks. Work
 * comes in batches over one transferred buffer (a read slab, or a range of a pack), so a batch of
 * dozens of chunks costs one message each way and no copy of its input.
 */
import { KeyObject } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { blockIds } from "./block-ids.ts";
import { decodeChunk, decodeChunkInto, encodeChunk } from "./chunk-codec.ts";
import { importDataKey, secretKey, type DataKey, type SealFormat, type SecretKey } from "./crypto.ts";
import { ZstdInto } from "./zstd-into.ts";

/** What a thread needs to work: in its workerData, or (a thread started ahead, see prestartCodecThreads) in its first message. */
export interface WorkerKeys {
  dataKey: DataKey;
  idKey: SecretKey;
  format: SealFormat | undefined;
  zstdLevel: number;
}

// Imported once: passing raw key bytes to every cipher and HMAC costs a key import each time.
function importKeys(given: WorkerKeys) {
  const idKey = given.idKey instanceof KeyObject ? given.idKey : secretKey(given.idKey);
  return { dataKey: importDataKey(given.dataKey), idKey, format: given.format, zstdLevel: given.zstdLevel };
}

let imported = workerData ? importKeys(workerData as WorkerKeys) : undefined;

function keys(): ReturnType<typeof importKeys> {
  if (!imported) throw new Error("a codec worker thread was given work before its keys");
  return imported;
}

export interface EncodeItem {
  id: Uint8Array;
  offset: number;
  length: number;
}

export interface DecodeItem {
  type: number;
  id: Uint8Array;
  offset: number;
  length: number;
  rawLength: number;
}

export type CodecRequest =
  | { seq: number; op: "encode"; type: number; buffer: Uint8Array; items: EncodeItem[] }
  | { seq: number; op: "decode"; buffer: Uint8Array; items: DecodeItem[]; where: string; checkId: boolean }
  | { seq: number; op: "decodeInto"; buffer: Uint8Array; items: DecodeItem[]; where: string; output: ArrayBuffer }
  | { seq: number; op: "hashBlocks"; buffer: Uint8Array; blockSize: number }
  | { seq: number; op: "keys"; keys: WorkerKeys }
  /** Parked by a closed pool until the next one: it holds no keys meanwhile. */
  | { seq: number; op: "forget" };

export type CodecResponse =
  | { seq: number; ok: true; op: "encode"; sealed: Uint8Array[]; compressed: boolean[] }
  | { seq: number; ok: true; op: "decode"; raws: (Uint8Array | null)[]; errors: (string | null)[]; integrity: boolean[] }
  | { seq: number; ok: true; op: "decodeInto"; output: ArrayBuffer; errors: (string | null)[]; integrity: boolean[] }
  | { seq: number; ok: true; op: "hashBlocks"; buffer: Uint8Array; ids: Uint8Array }
  | { seq: number; ok: false; error: string; integrity: boolean };

/**
 * A result's buffer can be transferred (a view keeps its offset) unless it may be Node's shared
 * pool slab (Buffer.poolSize bytes, holding allocations under half that): those results are small
 * and copied by the clone instead. Every other result owns its buffer alone.
 */
function transferable(results: (Uint8Array | null)[]): ArrayBuffer[] {
  const list = new Set<ArrayBuffer>();
  for (const r of results) if (r && r.buffer.byteLength > Buffer.poolSize) list.add(r.buffer as ArrayBuffer);
  return [...list];
}

/** One zstd context for every chunk this thread decodes into an output buffer. */
const zstd = new ZstdInto();

/** A batch's chunks decoded back to back into the output buffer the pool lent (handed back with the answer). */
function decodeInto(request: Extract<CodecRequest, { op: "decodeInto" }>): CodecResponse {
  const output = new Uint8Array(request.output);
  const errors: (string | null)[] = [];
  const integrity: boolean[] = [];
  let at = 0;
  for (const item of request.items) {
    try {
      const sealed = request.buffer.subarray(item.offset, item.offset + item.length);
      decodeChunkInto(keys(), item.type, item.id, sealed, item.rawLength, request.where, output, at, zstd);
      errors.push(null);
      integrity.push(false);
    } catch (error) {
      errors.push(error instanceof Error ? error.message : String(error));
      integrity.push(error instanceof Error && error.name === "IntegrityError");
    }
    at += item.rawLength;
  }
  return { seq: request.seq, ok: true, op: "decodeInto", output: request.output, errors, integrity };
}

parentPort!.on("message", (request: CodecRequest) => {
  try {
    if (request.op === "keys") {
      imported = importKeys(request.keys);
    } else if (request.op === "forget") {
      imported = undefined;
    } else if (request.op === "hashBlocks") {
      const ids = blockIds(keys().idKey, request.buffer, request.blockSize);
      const response: CodecResponse = { seq: request.seq, ok: true, op: "hashBlocks", buffer: request.buffer, ids };
      parentPort!.postMessage(response, [request.buffer.buffer as ArrayBuffer, ids.buffer as ArrayBuffer]);
    } else if (request.op === "decodeInto") {
      const response = decodeInto(request);
      parentPort!.postMessage(response, [request.output]);
    } else if (request.op === "encode") {
      const sealed: Uint8Array[] = [];
      const compressed: boolean[] = [];
      for (const item of request.items) {
        const raw = request.buffer.subarray(item.offset, item.offset + item.length);
        const encoded = encodeChunk(keys(), request.type, item.id, raw, keys().zstdLevel);
        sealed.push(encoded.sealed);
        compressed.push(encoded.compressed);
      }
      parentPort!.postMessage({ seq: request.seq, ok: true, op: "encode", sealed, compressed } satisfies CodecResponse, transferable(sealed));
    } else {
      const raws: (Uint8Array | null)[] = [];
      const errors: (string | null)[] = [];
      const integrity: boolean[] = [];
      for (const item of request.items) {
        try {
          const sealed = request.buffer.subarray(item.offset, item.offset + item.length);
          raws.push(decodeChunk(keys(), item.type, item.id, sealed, item.rawLength, request.where, { checkId: request.checkId }));
          errors.push(null);
          integrity.push(false);
        } catch (error) {
          raws.push(null);
          errors.push(error instanceof Error ? error.message : String(error));
          integrity.push(error instanceof Error && error.name === "IntegrityError");
        }
      }
      parentPort!.postMessage({ seq: request.seq, ok: true, op: "decode", raws, errors, integrity } satisfies CodecResponse, transferable(raws));
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const integrity = error instanceof Error && error.name === "IntegrityError";
    parentPort!.postMessage({ seq: request.seq, ok: false, error: message, integrity } satisfies CodecResponse);
  }
});
