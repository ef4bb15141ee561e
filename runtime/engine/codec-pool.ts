/**
 * Compression and encryption are where a backup spends its CPU, so they run on worker threads,
 * one per core; the main thread reads, hashes, deduplicates and packs. Work goes in batches over
 * one buffer that is transferred, not copied (a read slab of many blocks; a range of a pack).
 * Callers bound how much work is in flight.
 *
 * A worker thread that dies (out of its small heap, a crash, terminated) is replaced at once: the
 * batches it held fail with an error that says so (their callers fail or retry that piece of
 * work), and the pool goes on with a fresh thread, so a long-lived process never routes work to a
 * dead thread and waits forever.
 */
import { KeyObject } from "node:crypto";
import { getCompileCacheDir } from "node:module";
import os from "node:os";
import { Worker } from "node:worker_threads";
import { IntegrityError } from "../errors.ts";
import { blockIds } from "./block-ids.ts";
import { secretKey } from "./crypto.ts";
import { decodeChunk, decodeChunkInto, encodeChunk, type ChunkKeys, type EncodedChunk } from "./chunk-codec.ts";
import type { CodecRequest, CodecResponse, DecodeItem, EncodeItem, WorkerKeys } from "./codec-worker.ts";
import { ZstdInto } from "./zstd-into.ts";

export type { DecodeItem, EncodeItem };

interface Pending {
  resolve: (value: CodecResponse) => void;
  reject: (error: Error) => void;
}

type RequestBody =
  | { op: "encode"; type: number; buffer: Uint8Array; items: EncodeItem[] }
  | { op: "decode"; buffer: Uint8Array; items: DecodeItem[]; where: string; checkId: boolean }
  | { op: "decodeInto"; buffer: Uint8Array; items: DecodeItem[]; where: string; output: ArrayBuffer }
  | { op: "hashBlocks"; buffer: Uint8Array; blockSize: number };

export interface DecodedBatch {
  raws: (Buffer | null)[];
  errors: (Error | null)[];
}

export interface DecodedInto {
  /** The output buffer lent, handed back: item i's raw bytes follow item i - 1's. */
  output: ArrayBuffer;
  errors: (Error | null)[];
}

/** The buffer itself if it owns its whole ArrayBuffer (so it can be transferred), else a copy that does. */
function owned(view: Uint8Array): Uint8Array {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength ? view : new Uint8Array(view);
}

function asBuffer(view: Uint8Array): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function defaultThreads(): number {
  return Math.min(os.availableParallelism(), 8);
}

function startWorker(keys: WorkerKeys | undefined): Worker {
  // Node's module compile cache (cli/main.ts turns it on) reaches a worker thread only through
  // this variable: without it each thread strips its modules' TypeScript types anew, about half
  // of its start-up (0.47 against 0.22-0.26 CPU s for two threads, measured here).
  const compileCache = getCompileCacheDir();
  const worker = new Worker(new URL("./codec-worker.ts", import.meta.url), {
    env: compileCache ? { ...process.env, NODE_COMPILE_CACHE: compileCache } : process.env,
    workerData: keys,
    // The workers hold little on their heaps (their buffers are external and handed back):
    // small heaps keep a long run's memory flat instead of growing with GC slack.
    resourceLimits: { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 8 },
  });
  worker.unref();
  return worker;
}

/**
 * Threads waiting for a pool: started before their pool's keys were known (prestartCodecThreads),
 * or handed back by a closed pool with nothing in flight, holding no keys. A process that runs
 * many job steps (an agent's worker, the tests) thus starts its threads once: a start costs
 * ~0.2-0.3 CPU s, more than a small step's own codec work.
 */
const startedAhead: Worker[] = [];

/** Keeps a thread for the next pool (listeners of its old pool removed, its keys forgotten). */
function park(worker: Worker): void {
  // Only the old pool's own listeners: Node's Worker keeps listeners of its own (on "newListener")
  // that deliver messages, and removing those leaves the next pool waiting for answers forever.
  for (const event of ["message", "error", "exit"]) worker.removeAllListeners(event);
  worker.on("error", () => {});
  worker.on("exit", () => {
    const at = startedAhead.indexOf(worker);
    if (at >= 0) startedAhead.splice(at, 1);
  });
  worker.postMessage({ seq: -1, op: "forget" } satisfies CodecRequest);
  startedAhead.push(worker);
}

/**
 * Starts the codec threads a pool will take, before the keys are known: a command calls this
 * before it derives the vault's keys (scrypt, 0.4 s or more), and a thread's start-up (about
 * 0.2 s here, on the restore's critical path) happens meanwhile. A thread that dies before a pool
 * takes it is forgotten; one never taken ends with the process.
 */
export function prestartCodecThreads(threads = defaultThreads()): void {
  for (let i = startedAhead.length; i < threads; i++) {
    const worker = startWorker(undefined);
    // A thread that fails to start reports it here, then exits (below), before any pool has it.
    worker.on("error", () => {});
    worker.on("exit", () => {
      const at = startedAhead.indexOf(worker);
      if (at >= 0) startedAhead.splice(at, 1);
    });
    startedAhead.push(worker);
  }
}

export class CodecPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  /** The requests each worker holds, by worker slot. */
  private readonly held: Set<number>[] = [];
  private readonly load: number[] = [];
  private seq = 0;
  private closed = false;
  /** Worker threads that died and were replaced (for logs and tests). */
  replaced = 0;
  private readonly keys: ChunkKeys;
  private readonly zstdLevel: number;
  /** The id key imported once, for hashing on the caller's thread. */
  private idKeyHere: KeyObject | undefined;
  /** Encode requests in flight (hashBlocks leaves the threads to them when they have enough). */
  private readonly encodes = new Set<number>();
  /** Decompression context of decodeInto when there are no worker threads. */
  private zstd: ZstdInto | undefined;

  constructor(keys: ChunkKeys, options: { threads?: number; zstdLevel?: number } = {}) {
    this.keys = keys;
    this.zstdLevel = options.zstdLevel ?? 3;
    const threads = options.threads ?? defaultThreads();
    for (let i = 0; i < threads; i++) {
      this.workers.push(this.spawn(i));
      this.held.push(new Set());
      this.load.push(0);
    }
  }

  /**
   * Gives slot `slot` a worker thread (one started ahead if there is one, told the keys first);
   * when it dies, its batches fail and a new one takes the slot.
   */
  private spawn(slot: number): Worker {
    const workerKeys: WorkerKeys = { dataKey: this.keys.dataKey, idKey: this.keys.idKey, format: this.keys.format, zstdLevel: this.zstdLevel };
    const ahead = startedAhead.shift();
    const worker = ahead ?? startWorker(workerKeys);
    if (ahead) worker.postMessage({ seq: -1, op: "keys", keys: workerKeys } satisfies CodecRequest);
    let failure: Error | undefined;
    worker.on("message", (response: CodecResponse) => this.settle(slot, response));
    // An uncaught error (or running out of heap) ends the thread: "exit" follows and says it.
    worker.on("error", (error) => (failure = error));
    worker.on("exit", (code) => {
      if (this.closed || this.workers[slot] !== worker) return;
      const cause = failure ? failure.message : `it exited with code ${code}`;
      const error = new Error(`a compression/encryption worker thread died (${cause}); the batch it held was not processed, and the thread was replaced`, { cause: failure });
      for (const seq of this.held[slot]!) {
        this.pending.get(seq)?.reject(error);
        this.encodes.delete(seq);
        this.pending.delete(seq);
      }
      this.held[slot]!.clear();
      this.load[slot] = 0;
      this.workers[slot] = this.spawn(slot);
      this.replaced++;
    });
    return worker;
  }

  get threads(): number {
    return this.workers.length;
  }

  /**
   * Compresses and seals chunks that lie in one buffer. The buffer is handed to a worker (the
   * caller must not use it afterwards unless it was a view, which is copied).
   */
  async encodeBatch(type: number, buffer: Uint8Array, items: EncodeItem[]): Promise<EncodedChunk[]> {
    if (items.length === 0) return [];
    if (this.workers.length === 0) {
      return items.map((item) => encodeChunk(this.keys, type, item.id, buffer.subarray(item.offset, item.offset + item.length), this.zstdLevel));
    }
    const response = await this.submit({ op: "encode", type, buffer: owned(buffer), items });
    if (!response.ok || response.op !== "encode") throw new Error("codec worker answered an encode with something else");
    return response.sealed.map((sealed, i) => ({ sealed: asBuffer(sealed), compressed: response.compressed[i] }));
  }

  /** Opens and checks chunks that lie in one buffer (a range of a pack); failures are per chunk. */
  async decodeBatch(buffer: Uint8Array, items: DecodeItem[], where: string, options: { checkId?: boolean } = {}): Promise<DecodedBatch> {
    const checkId = options.checkId !== false;
    if (items.length === 0) return { raws: [], errors: [] };
    if (this.workers.length === 0) {
      const raws: (Buffer | null)[] = [];
      const errors: (Error | null)[] = [];
      for (const item of items) {
        try {
          raws.push(decodeChunk(this.keys, item.type, item.id, buffer.subarray(item.offset, item.offset + item.length), item.rawLength, where, { checkId }));
          errors.push(null);
        } catch (error) {
          raws.push(null);
          errors.push(error as Error);
        }
      }
      return { raws, errors };
    }
    const response = await this.submit({ op: "decode", buffer: owned(buffer), items, where, checkId });
    if (!response.ok || response.op !== "decode") throw new Error("codec worker answered a decode with something else");
    return {
      raws: response.raws.map((r) => (r ? asBuffer(r) : null)),
      errors: response.errors.map((e, i) => (e === null ? null : response.integrity[i] ? new IntegrityError(e) : new Error(e))),
    };
  }

  /**
   * Opens chunks that lie in one buffer (a range of a pack) into `output`, back to back in the
   * items' order, without the id re-hash (for a restore). Both buffers are handed to a worker;
   * `output` comes back in the answer, so one set of output buffers serves a whole restore
   * instead of a new buffer per chunk. Failures are per chunk.
   */
  async decodeInto(buffer: Uint8Array, items: DecodeItem[], where: string, output: ArrayBuffer): Promise<DecodedInto> {
    const rawBytes = items.reduce((sum, item) => sum + item.rawLength, 0);
    if (rawBytes > output.byteLength) throw new RangeError(`${rawBytes} bytes of chunks do not fit an output buffer of ${output.byteLength}`);
    if (this.workers.length === 0) return this.decodeIntoHere(buffer, items, where, output);
    const response = await this.submit({ op: "decodeInto", buffer: owned(buffer), items, where, output }, [output]);
    if (!response.ok || response.op !== "decodeInto") throw new Error("codec worker answered a decode with something else");
    return { output: response.output, errors: response.errors.map((e, i) => (e === null ? null : response.integrity[i] ? new IntegrityError(e) : new Error(e))) };
  }

  private decodeIntoHere(buffer: Uint8Array, items: DecodeItem[], where: string, output: ArrayBuffer): DecodedInto {
    this.zstd ??= new ZstdInto();
    const bytes = new Uint8Array(output);
    const errors: (Error | null)[] = [];
    let at = 0;
    for (const item of items) {
      try {
        decodeChunkInto(this.keys, item.type, item.id, buffer.subarray(item.offset, item.offset + item.length), item.rawLength, where, bytes, at, this.zstd);
        errors.push(null);
      } catch (error) {
        errors.push(error as Error);
      }
      at += item.rawLength;
    }
    return { output, errors };
  }

  /**
   * The ids of a read's blocks (block-ids.ts). On a worker while the workers have room: a second
   * backup, mostly known blocks, hashes on every core instead of the one that reads and packs.
   * When every worker already has compression work queued (a first backup), on the caller's
   * thread, which would otherwise wait for them. The buffer is handed over and comes back as
   * `buffer`: use that one afterwards (a view given is copied first).
   */
  async hashBlocks(buffer: Uint8Array, blockSize: number): Promise<{ buffer: Buffer; ids: Buffer }> {
    if (this.workers.length === 0 || this.encodes.size >= this.workers.length) {
      this.idKeyHere ??= this.keys.idKey instanceof KeyObject ? this.keys.idKey : secretKey(this.keys.idKey);
      return { buffer: asBuffer(buffer), ids: asBuffer(blockIds(this.idKeyHere, buffer, blockSize)) };
    }
    const response = await this.submit({ op: "hashBlocks", buffer: owned(buffer), blockSize });
    if (!response.ok || response.op !== "hashBlocks") throw new Error("codec worker answered a hash with something else");
    return { buffer: asBuffer(response.buffer), ids: asBuffer(response.ids) };
  }

  async decode(type: number, id: Uint8Array, sealed: Uint8Array, rawLength: number, where: string): Promise<Buffer> {
    const { raws, errors } = await this.decodeBatch(new Uint8Array(sealed), [{ type, id: new Uint8Array(id), offset: 0, length: sealed.length, rawLength }], where);
    if (errors[0]) throw errors[0];
    return raws[0]!;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.zstd?.close();
    // Threads with nothing in flight wait for the next pool; one holding work is ended (its
    // answer would reach no one, and its buffers would outlive the pool).
    const idle = this.workers.filter((_, slot) => this.held[slot]!.size === 0);
    const room = Math.max(0, defaultThreads() - startedAhead.length);
    const kept = idle.slice(0, room);
    for (const worker of kept) park(worker);
    await Promise.all(this.workers.filter((w) => !kept.includes(w)).map((w) => w.terminate()));
    this.workers.length = 0;
    const error = new Error("the codec pool was closed with work in flight");
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }

  private submit(body: RequestBody, alsoTransfer: ArrayBuffer[] = []): Promise<CodecResponse> {
    if (this.closed) return Promise.reject(new Error("the codec pool is closed"));
    let target = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[target]!) target = i;
    const seq = this.seq++;
    if (body.op === "encode") this.encodes.add(seq);
    this.load[target]!++;
    this.held[target]!.add(seq);
    return new Promise<CodecResponse>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[target]!.postMessage({ seq, ...body } as CodecRequest, [body.buffer.buffer as ArrayBuffer, ...alsoTransfer]);
    }).then((response) => {
      if (!response.ok) throw response.integrity ? new IntegrityError(response.error) : new Error(response.error);
      return response;
    });
  }

  private settle(slot: number, response: CodecResponse): void {
    if (!this.held[slot]!.delete(response.seq)) return;
    this.encodes.delete(response.seq);
    this.load[slot]!--;
    const pending = this.pending.get(response.seq);
    if (!pending) return;
    this.pending.delete(response.seq);
    pending.resolve(response);
  }
}
