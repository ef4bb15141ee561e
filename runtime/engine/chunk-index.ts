/**
 * The in-memory chunk index: chunk id -> (pack, offset, length, raw length, type). An
 * open-addressing table over flat typed arrays, about 50 bytes per chunk and no object per
 * entry, so a vault of millions of chunks fits in a bounded, predictable amount of memory.
 * Ids are keyed hashes, uniformly distributed, so their first bytes are the table hash.
 */
import { ID_BYTES } from "./crypto.ts";

export interface ChunkLocation {
  pack: string;
  offset: number;
  length: number;
  rawLength: number;
  type: number;
}

const EMPTY = -1;
/** A chunk that this process is writing into a pack that is not committed yet. */
export const PENDING = -2;

export class ChunkIndex {
  private capacity = 0;
  private count = 0;
  private ids = new Uint8Array(0);
  private packNo = new Int32Array(0);
  private offsets = new Float64Array(0);
  private lengths = new Uint32Array(0);
  private rawLengths = new Uint32Array(0);
  private types = new Uint8Array(0);
  private readonly packs: string[] = [];
  private readonly packNumbers = new Map<string, number>();

  constructor(initialCapacity = 1 << 14) {
    this.resize(highestPowerOfTwo(initialCapacity));
  }

  get size(): number {
    return this.count;
  }

  has(id: Uint8Array): boolean {
    return this.slotOf(id) >= 0;
  }

  /** True when the id is known, whether committed or still pending in this process. */
  lookup(id: Uint8Array): ChunkLocation | "pending" | undefined {
    const slot = this.slotOf(id);
    if (slot < 0) return undefined;
    const pack = this.packNo[slot];
    if (pack === PENDING) return "pending";
    return {
      pack: this.packs[pack],
      offset: this.offsets[slot],
      length: this.lengths[slot],
      rawLength: this.rawLengths[slot],
      type: this.types[slot],
    };
  }

  markPending(id: Uint8Array): void {
    this.put(id, PENDING, 0, 0, 0, 0);
  }

  add(id: Uint8Array, location: ChunkLocation): void {
    this.put(id, this.numberOf(location.pack), location.offset, location.length, location.rawLength, location.type);
  }

  /** add() without a location object (loading a whole index makes millions of them). */
  addEntry(id: Uint8Array, pack: string, offset: number, length: number, rawLength: number, type: number): void {
    this.put(id, this.numberOf(pack), offset, length, rawLength, type);
  }

  /** Forgets a pending id whose pack was never committed, so a later write stores it again. */
  dropPending(id: Uint8Array): void {
    const slot = this.slotOf(id);
    if (slot >= 0 && this.packNo[slot] === PENDING) this.removeSlot(slot);
  }

  /** Forgets every chunk located in these packs (packs found missing: their chunks must be stored again). */
  dropPacks(packIds: ReadonlySet<string>): number {
    const numbers = new Set([...packIds].map((p) => this.packNumbers.get(p)).filter((n): n is number => n !== undefined));
    if (numbers.size === 0) return 0;
    const doomed: Uint8Array[] = [];
    for (let slot = 0; slot < this.capacity; slot++) {
      if (numbers.has(this.packNo[slot])) doomed.push(this.ids.slice(slot * ID_BYTES, (slot + 1) * ID_BYTES));
    }
    for (const id of doomed) this.removeSlot(this.slotOf(id));
    return doomed.length;
  }

  *entries(): Iterable<[Buffer, ChunkLocation]> {
    for (let slot = 0; slot < this.capacity; slot++) {
      const pack = this.packNo[slot];
      if (pack < 0) continue;
      yield [
        Buffer.from(this.ids.subarray(slot * ID_BYTES, (slot + 1) * ID_BYTES)),
        {
          pack: this.packs[pack],
          offset: this.offsets[slot],
          length: this.lengths[slot],
          rawLength: this.rawLengths[slot],
          type: this.types[slot],
        },
      ];
    }
  }

  private numberOf(pack: string): number {
    let number = this.packNumbers.get(pack);
    if (number === undefined) {
      number = this.packs.length;
      this.packs.push(pack);
      this.packNumbers.set(pack, number);
    }
    return number;
  }

  private put(id: Uint8Array, pack: number, offset: number, length: number, rawLength: number, type: number): void {
    let slot = this.slotOf(id);
    if (slot < 0) {
      if ((this.count + 1) * 10 > this.capacity * 7) this.resize(this.capacity * 2);
      slot = this.freeSlotFor(id);
      this.ids.set(id.subarray(0, ID_BYTES), slot * ID_BYTES);
      this.count++;
    } else if (this.packNo[slot] >= 0 && pack === PENDING) {
      return; // already committed: nothing to wait for
    }
    this.packNo[slot] = pack;
    this.offsets[slot] = offset;
    this.lengths[slot] = length;
    this.rawLengths[slot] = rawLength;
    this.types[slot] = type;
  }

  private home(id: Uint8Array): number {
    return (((id[0] << 24) | (id[1] << 16) | (id[2] << 8) | id[3]) >>> 0) & (this.capacity - 1);
  }

  private slotOf(id: Uint8Array): number {
    const mask = this.capacity - 1;
    for (let slot = this.home(id); ; slot = (slot + 1) & mask) {
      if (this.packNo[slot] === EMPTY) return -1;
      if (this.idAt(slot, id)) return slot;
    }
  }

  private freeSlotFor(id: Uint8Array): number {
    const mask = this.capacity - 1;
    let slot = this.home(id);
    while (this.packNo[slot] !== EMPTY) slot = (slot + 1) & mask;
    return slot;
  }

  private idAt(slot: number, id: Uint8Array): boolean {
    const base = slot * ID_BYTES;
    for (let i = 0; i < ID_BYTES; i++) if (this.ids[base + i] !== id[i]) return false;
    return true;
  }

  private removeSlot(slot: number): void {
    // Backward-shift deletion keeps probe chains intact without tombstones.
    const mask = this.capacity - 1;
    this.packNo[slot] = EMPTY;
    this.count--;
    let hole = slot;
    for (let next = (slot + 1) & mask; this.packNo[next] !== EMPTY; next = (next + 1) & mask) {
      const home = this.home(this.ids.subarray(next * ID_BYTES, (next + 1) * ID_BYTES));
      const between = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (between) continue;
      this.moveSlot(next, hole);
      hole = next;
    }
  }

  private moveSlot(from: number, to: number): void {
    this.ids.copyWithin(to * ID_BYTES, from * ID_BYTES, (from + 1) * ID_BYTES);
    this.packNo[to] = this.packNo[from];
    this.offsets[to] = this.offsets[from];
    this.lengths[to] = this.lengths[from];
    this.rawLengths[to] = this.rawLengths[from];
    this.types[to] = this.types[from];
    this.packNo[from] = EMPTY;
  }

  private resize(capacity: number): void {
    const old = {
      capacity: this.capacity,
      ids: this.ids,
      packNo: this.packNo,
      offsets: this.offsets,
      lengths: this.lengths,
      rawLengths: this.rawLengths,
      types: this.types,
    };
    this.capacity = capacity;
    this.ids = new Uint8Array(capacity * ID_BYTES);
    this.packNo = new Int32Array(capacity).fill(EMPTY);
    this.offsets = new Float64Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.rawLengths = new Uint32Array(capacity);
    this.types = new Uint8Array(capacity);
    this.count = 0;
    for (let slot = 0; slot < old.capacity; slot++) {
      if (old.packNo[slot] === EMPTY) continue;
      const id = old.ids.subarray(slot * ID_BYTES, (slot + 1) * ID_BYTES);
      const target = this.freeSlotFor(id);
      this.ids.set(id, target * ID_BYTES);
      this.packNo[target] = old.packNo[slot];
      this.offsets[target] = old.offsets[slot];
      this.lengths[target] = old.lengths[slot];
      this.rawLengths[target] = old.rawLengths[slot];
      this.types[target] = old.types[slot];
      this.count++;
    }
  }
}

function highestPowerOfTwo(n: number): number {
  let capacity = 16;
  while (capacity < n) capacity *= 2;
  return capacity;
}
