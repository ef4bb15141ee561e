/** A worker thread that compresses and seals (or opens and decompresses) chunks for the pool. */
import { parentPort, workerData } from "node:worker_threads";
import { decodeChunk, encodeChunk, type ChunkKeys } from "./chunk-codec.ts";

const keys = workerData as ChunkKeys & { zstdLevel: number };

export type CodecRequest =
  | { seq: number; op: "encode"; type: number; id: Uint8Array; raw: Uint8Array }
  | { seq: number; op: "decode"; type: number; id: Uint8Array; sealed: Uint8Array; rawLength: number; where: string };

export type CodecResponse =
  | { seq: number; ok: true; sealed?: Uint8Array; compressed?: boolean; raw?: Uint8Array }
  | { seq: number; ok: false; error: string; integrity: boolean };

/** Transfers the result's buffer when the result owns it whole; otherwise it is copied. */
function reply(response: CodecResponse, result: Uint8Array | undefined): void {
  const whole = result && result.byteOffset === 0 && result.byteLength === result.buffer.byteLength;
  parentPort!.postMessage(response, whole ? [result.buffer as ArrayBuffer] : []);
}

parentPort!.on("message", (request: CodecRequest) => {
  try {
    if (request.op === "encode") {
      const { sealed, compressed } = encodeChunk(keys, request.type, request.id, request.raw, keys.zstdLevel);
      reply({ seq: request.seq, ok: true, sealed, compressed }, sealed);
    } else {
      const raw = decodeChunk(keys, request.type, request.id, request.sealed, request.rawLength, request.where);
      reply({ seq: request.seq, ok: true, raw }, raw);
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const integrity = error instanceof Error && error.name === "IntegrityError";
    parentPort!.postMessage({ seq: request.seq, ok: false, error: message, integrity } satisfies CodecResponse);
  }
});
