/**
 * zstd decompression into a buffer the caller gives, with one decompression context reused for
 * every chunk. node:zlib's zstdDecompressSync makes a new context and a new output buffer per
 * call: for a 64 KiB chunk that is about a third of its CPU, plus a fresh allocation (page faults,
 * then garbage collection) per chunk. A restore decodes every chunk of a point, so it decompresses
 * through this instead.
 *
 * It drives the native handle of a node:zlib ZstdDecompress stream synchronously, as node:zlib's
 * own zstdDecompressSync does (lib/zlib.js, processChunkSync: handle.writeSync, then the two
 * counters it leaves in _writeState), but keeps the handle and resets it between frames. Those
 * are Node's internals (package.json pins Node 24): if they are not there, every call falls back
 * to zstdDecompressSync and a copy, same results.
 */
import { constants, ZstdDecompress, zstdDecompressSync } from "node:zlib";

/** The native handle's synchronous call, as node:zlib uses it. */
interface NativeZstdHandle {
  writeSync(flush: number, input: Uint8Array, inOffset: number, inLength: number, output: Uint8Array, outOffset: number, outLength: number): void;
  reset(): void;
}

interface ZstdStreamInternals {
  _handle: NativeZstdHandle | null;
  /** [output bytes left free, input bytes left unread] after each writeSync. */
  _writeState: Uint32Array;
}

function internalsOf(stream: ZstdDecompress): ZstdStreamInternals | undefined {
  const inner = stream as unknown as Partial<ZstdStreamInternals>;
  const handle = inner._handle;
  return handle && typeof handle.writeSync === "function" && typeof handle.reset === "function" && inner._writeState instanceof Uint32Array
    ? (inner as ZstdStreamInternals)
    : undefined;
}

export class ZstdInto {
  private stream: ZstdDecompress | undefined;
  private internals: ZstdStreamInternals | undefined;
  private readonly probe = new Uint8Array(1);

  /** Whether Node's internals were found (false: each call decompresses with zstdDecompressSync and copies). */
  get reusesContext(): boolean {
    return this.context() !== undefined;
  }

  /**
   * Decompresses one zstd frame into output[at, at + rawLength). Returns false, having written
   * anything or nothing there, when the frame is damaged or does not decompress to exactly
   * rawLength bytes.
   */
  decompress(frame: Uint8Array, output: Uint8Array, at: number, rawLength: number): boolean {
    // The native call aborts the process on a range outside its buffer, so none is passed on.
    if (!Number.isInteger(at) || !Number.isInteger(rawLength) || at < 0 || rawLength < 0 || at + rawLength > output.length) return false;
    const context = this.context();
    if (!context) return this.decompressOnce(frame, output, at, rawLength);
    const handle = context._handle!;
    const state = context._writeState;
    handle.writeSync(constants.ZSTD_e_end, frame, 0, frame.length, output, at, rawLength);
    let whole = context._handle !== null && state[0] === 0 && state[1] === 0;
    // Exactly rawLength came out and all the input went in; nothing more may be pending.
    if (whole) {
      handle.writeSync(constants.ZSTD_e_end, frame, frame.length, 0, this.probe, 0, 1);
      whole = context._handle !== null && state[0] === 1;
    }
    if (context._handle === null) {
      // The stream closed itself on the error; the next call starts a fresh one.
      this.stream = undefined;
      this.internals = undefined;
      return false;
    }
    handle.reset();
    return whole;
  }

  close(): void {
    this.stream?.close();
    this.stream = undefined;
    this.internals = undefined;
  }

  private context(): ZstdStreamInternals | undefined {
    if (!this.stream) {
      this.stream = new ZstdDecompress();
      // node:zlib reports a bad frame by destroying the stream: it is seen as _handle === null.
      this.stream.on("error", () => {});
      this.internals = internalsOf(this.stream);
    }
    return this.internals;
  }

  private decompressOnce(frame: Uint8Array, output: Uint8Array, at: number, rawLength: number): boolean {
    let raw: Buffer;
    try {
      raw = zstdDecompressSync(frame, { maxOutputLength: Math.max(rawLength, 1) });
    } catch {
      return false;
    }
    if (raw.length !== rawLength) return false;
    output.set(raw, at);
    return true;
  }
}
