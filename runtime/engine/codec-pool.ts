/**
 * Compression and encryption are where a backup spends its CPU, so they run on worker threads,
 * one per core; the main thread reads, hashes, deduplicates and packs. Callers bound how much
 * work is in flight (each pending request holds its chunk's bytes).
 */
import os from "node:os";
import { Worker } from "node:worker_threads";
import { IntegrityError } from "../errors.ts";
import { decodeChunk, encodeChunk, type ChunkKeys, type EncodedChunk } from "./chunk-codec.ts";
import type { CodecRequest, CodecResponse } from "./codec-worker.ts";

interface Pending {
  resolve: (value: CodecResponse & { ok: true }) => void;
  reject: (error: Error) => void;
}

type CodecRequestBody =
  | { op: "encode"; type: number; id: Uint8Array; raw: Uint8Array }
  | { op: "decode"; type: number; id: Uint8Array; sealed: Uint8Array; rawLength: number; where: string };

export class CodecPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly load: number[] = [];
  private seq = 0;
  private readonly keys: ChunkKeys;
  private readonly zstdLevel: number;

  constructor(keys: ChunkKeys, options: { threads?: number; zstdLevel?: number } = {}) {
    this.keys = keys;
    this.zstdLevel = options.zstdLevel ?? 3;
    const threads = options.threads ?? Math.min(os.availableParallelism(), 8);
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL("./codec-worker.ts", import.meta.url), {
        workerData: { dataKey: keys.dataKey, idKey: keys.idKey, zstdLevel: this.zstdLevel },
      });
      worker.unref();
      worker.on("message", (response: CodecResponse) => this.settle(i, response));
      worker.on("error", (error) => this.failAll(error));
      this.workers.push(worker);
      this.load.push(0);
    }
  }

  get threads(): number {
    return this.workers.length;
  }

  async encode(type: number, id: Uint8Array, raw: Uint8Array): Promise<EncodedChunk> {
    if (this.workers.length === 0) return encodeChunk(this.keys, type, id, raw, this.zstdLevel);
    const response = await this.submit({ op: "encode", type, id, raw });
    return { sealed: Buffer.from(response.sealed!.buffer, response.sealed!.byteOffset, response.sealed!.byteLength), compressed: response.compressed! };
  }

  async decode(type: number, id: Uint8Array, sealed: Uint8Array, rawLength: number, where: string): Promise<Buffer> {
    if (this.workers.length === 0) return decodeChunk(this.keys, type, id, sealed, rawLength, where);
    const response = await this.submit({ op: "decode", type, id, sealed, rawLength, where });
    return Buffer.from(response.raw!.buffer, response.raw!.byteOffset, response.raw!.byteLength);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }

  private submit(body: CodecRequestBody): Promise<CodecResponse & { ok: true }> {
    let target = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i] < this.load[target]) target = i;
    const seq = this.seq++;
    this.load[target]++;
    // Structured cloning a view copies its whole underlying buffer, so give each message its own
    // exactly-sized buffers and transfer them instead.
    const transfer: ArrayBuffer[] = [];
    const own = (view: Uint8Array) => {
      const copy = new Uint8Array(view);
      transfer.push(copy.buffer);
      return copy;
    };
    const message =
      body.op === "encode"
        ? { seq, ...body, id: own(body.id), raw: own(body.raw) }
        : { seq, ...body, id: own(body.id), sealed: own(body.sealed) };
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[target].postMessage(message as CodecRequest, transfer);
    });
  }

  private settle(worker: number, response: CodecResponse): void {
    this.load[worker]--;
    const pending = this.pending.get(response.seq);
    if (!pending) return;
    this.pending.delete(response.seq);
    if (response.ok) pending.resolve(response);
    else pending.reject(response.integrity ? new IntegrityError(response.error) : new Error(response.error));
  }

  private failAll(error: Error): void {
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }
}
