/**
 * Content-defined chunking (FastCDC, with normalized chunking): a chunk boundary depends only on
 * the bytes around it, so inserting or deleting bytes in a file shifts only the chunks near the
 * edit. The gear table is derived from the vault's secret id key, so boundaries, like ids, reveal
 * nothing to someone without the key.
 */
import { createHmac } from "node:crypto";

export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
}

export class Chunker {
  private readonly gear: Uint32Array;
  private readonly params: ChunkerParams;
  private readonly maskSmall: number;
  private readonly maskLarge: number;

  constructor(idKey: Uint8Array, params: ChunkerParams) {
    if (!(params.min > 0 && params.min < params.avg && params.avg < params.max)) {
      throw new Error(`invalid chunker parameters ${JSON.stringify(params)}`);
    }
    this.params = params;
    const table = createHmac("sha256", idKey).update("bulwark/gear").digest();
    this.gear = new Uint32Array(256);
    // Expand 32 secret bytes into 256 words with HMAC in counter mode.
    for (let i = 0; i < 256; i += 8) {
      const block = createHmac("sha256", table).update(Buffer.from([i])).digest();
      for (let j = 0; j < 8; j++) this.gear[i + j] = block.readUInt32LE(j * 4);
    }
    const bits = Math.round(Math.log2(params.avg));
    // Harder to match before the average size, easier after (normalized chunking, level 2).
    this.maskSmall = highBits(bits + 2);
    this.maskLarge = highBits(bits - 2);
  }

  /**
   * The length of the next chunk at the start of data. When `final` is false and no boundary is
   * found within data, returns 0: give more data (at least `max` bytes buffered finds one).
   */
  next(data: Uint8Array, final: boolean): number {
    const { min, avg, max } = this.params;
    const n = data.length;
    if (n <= min) return final ? n : 0;
    const limit = Math.min(n, max);
    const normal = Math.min(avg, limit);
    const gear = this.gear;
    let hash = 0;
    let i = min;
    for (; i < normal; i++) {
      hash = ((hash << 1) + gear[data[i]]) >>> 0;
      if ((hash & this.maskSmall) === 0) return i + 1;
    }
    for (; i < limit; i++) {
      hash = ((hash << 1) + gear[data[i]]) >>> 0;
      if ((hash & this.maskLarge) === 0) return i + 1;
    }
    if (limit === max) return max;
    return final ? n : 0;
  }
}

function highBits(count: number): number {
  return count >= 32 ? 0xffffffff : ((0xffffffff << (32 - count)) >>> 0);
}
