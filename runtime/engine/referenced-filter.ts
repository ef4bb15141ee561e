/**
 * The chunks the points reference, as prune holds them in bounded memory: a Bloom filter sized from
 * the number of chunks the index names (10 bits an entry, 7 probes: about 1% false positives when
 * every indexed chunk is referenced, fewer otherwise; 120 MiB at 100 million chunks). It can only
 * err towards "referenced": a false positive keeps one garbage chunk (or copies it when its pack is
 * repacked), never deletes a live one. Each prune draws new salts, so the garbage one prune keeps by
 * chance is judged afresh by the next.
 */
import { randomBytes } from "node:crypto";

const PROBES = 7;

/** Settable by tests: a tiny filter (many false positives) must still delete nothing live. */
export const referencedFilterTuning = { bitsPerEntry: 10 };

export class ReferencedFilter {
  private readonly bits: Uint8Array;
  private readonly bitCount: number;
  private readonly salts: Uint32Array;

  /** `expected`: how many distinct ids it will hold at most (the index's entry count serves). */
  constructor(expected: number) {
    this.bitCount = Math.max(64, Math.ceil(expected * referencedFilterTuning.bitsPerEntry));
    this.bits = new Uint8Array(Math.ceil(this.bitCount / 8));
    this.salts = new Uint32Array(randomBytes(8).buffer);
  }

  get bytes(): number {
    return this.bits.length;
  }

  add(id: Uint8Array): void {
    const [h1, h2] = this.hashes(id);
    for (let p = 0; p < PROBES; p++) {
      const bit = (h1 + p * h2) % this.bitCount;
      this.bits[bit >>> 3] |= 1 << (bit & 7);
    }
  }

  /** False only for an id never added; true for every id added (and for a few others). */
  mayHold(id: Uint8Array): boolean {
    const [h1, h2] = this.hashes(id);
    for (let p = 0; p < PROBES; p++) {
      const bit = (h1 + p * h2) % this.bitCount;
      if ((this.bits[bit >>> 3] & (1 << (bit & 7))) === 0) return false;
    }
    return true;
  }

  // Ids are keyed hashes, uniform already; the salted mix only makes each prune's collisions new.
  private hashes(id: Uint8Array): [number, number] {
    const a = ((id[0] << 24) | (id[1] << 16) | (id[2] << 8) | id[3]) ^ ((id[8] << 24) | (id[9] << 16) | (id[10] << 8) | id[11]);
    const b = ((id[4] << 24) | (id[5] << 16) | (id[6] << 8) | id[7]) ^ ((id[12] << 24) | (id[13] << 16) | (id[14] << 8) | id[15]);
    return [mix(a ^ this.salts[0]), (mix(b ^ this.salts[1]) | 1) >>> 0];
  }
}

/** murmur3's 32-bit finalizer: every input bit reaches every output bit. */
function mix(value: number): number {
  let h = value >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
