/** The in-memory chunk index: an open-addressing table checked against a plain Map. */
import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { ChunkIndex, type ChunkLocation } from "../../runtime/engine/chunk-index.ts";

const COUNT = 200_000;

function locationOf(i: number): ChunkLocation {
  return { pack: `pack-${i % 97}`, offset: i * 1000 + 2 ** 33, length: (i % 5000) + 1, rawLength: (i % 7000) + 2, type: i % 2 };
}

describe("ChunkIndex", () => {
  test("200k random ids: every one is found with its location through growth, absent ids are not", () => {
    const index = new ChunkIndex(16);
    const ids = Array.from({ length: COUNT }, () => randomBytes(32));
    ids.forEach((id, i) => index.add(id, locationOf(i)));
    expect(index.size).toBe(COUNT);
    const wrong = ids.filter((id, i) => JSON.stringify(index.lookup(id)) !== JSON.stringify(locationOf(i)));
    expect(wrong).toHaveLength(0);
    for (let i = 0; i < 1000; i++) {
      const absent = randomBytes(32);
      expect(index.has(absent)).toBe(false);
      expect(index.lookup(absent)).toBeUndefined();
    }
    // Ids sharing their first four bytes (the table hash) still collide correctly.
    const twin = Buffer.from(ids[0]);
    twin[31] ^= 1;
    expect(index.has(twin)).toBe(false);
    index.add(twin, locationOf(1));
    expect(index.lookup(twin)).toEqual(locationOf(1));
    expect(index.lookup(ids[0])).toEqual(locationOf(0));
    expect([...index.entries()]).toHaveLength(COUNT + 1);
  });

  test("pending ids: a committed location wins, and dropPending removes only pending ones", () => {
    const index = new ChunkIndex();
    const id = randomBytes(32);
    index.markPending(id);
    expect(index.lookup(id)).toBe("pending");
    expect(index.has(id)).toBe(true);
    index.add(id, locationOf(3));
    index.markPending(id); // already committed: stays committed
    expect(index.lookup(id)).toEqual(locationOf(3));
    index.dropPending(id);
    expect(index.lookup(id)).toEqual(locationOf(3));
    // Pending ids are not listed as entries.
    const other = randomBytes(32);
    index.markPending(other);
    expect([...index.entries()].map(([k]) => k.toString("hex"))).toEqual([id.toString("hex")]);
  });

  test("dropPending with backward-shift deletion keeps every probe chain intact", () => {
    const index = new ChunkIndex(1 << 12);
    // Many ids with the same home slot force long probe chains that wrap around.
    const clustered = (home: number) => {
      const id = randomBytes(32);
      id.writeUInt32BE(home, 0);
      return id;
    };
    const homes = [0xfffffff0, 0xfffffff8, 0xffffffff, 0, 1, 5];
    const committed: Buffer[] = [];
    const pending: Buffer[] = [];
    for (let i = 0; i < 600; i++) {
      const id = clustered((homes[i % homes.length] + ((i * 31) % 3)) >>> 0);
      if (i % 3 === 0) {
        index.markPending(id);
        pending.push(id);
      } else {
        index.add(id, locationOf(i));
        committed.push(id);
      }
    }
    for (let i = 0; i < 20_000; i++) index.add(randomBytes(32), locationOf(i)); // and a full table
    const before = index.size;
    // Drop pending ids in a scrambled order, checking everything after each batch.
    const order = pending.map((id, i) => [id, (i * 7919) % pending.length] as const).sort((a, b) => a[1] - b[1]);
    order.forEach(([id], n) => {
      index.dropPending(id);
      if (n % 25 === 0) for (const c of committed) expect(index.has(c)).toBe(true);
    });
    expect(index.size).toBe(before - pending.length);
    for (const id of pending) expect(index.has(id)).toBe(false);
    committed.forEach((id) => expect(index.lookup(id)).not.toBeUndefined());
    // The freed slots are usable again.
    for (const id of pending) index.add(id, locationOf(9));
    for (const id of pending) expect(index.lookup(id)).toEqual(locationOf(9));
  });

  test("entries moved by deletions and by growth keep their own pack, offset, lengths and type", () => {
    // Every committed id gets a location no other id has, so a slot moved without one of its
    // fields (offset, length, raw length, type, pack) is caught, not just a slot that vanished.
    const index = new ChunkIndex(1 << 10);
    const clustered = (home: number) => {
      const id = randomBytes(32);
      id.writeUInt32BE(home, 0);
      return id;
    };
    const unique = (i: number): ChunkLocation => ({ pack: `pack-${i}`, offset: 2 ** 34 + i * 4099, length: 1 + i, rawLength: 3 + i * 2, type: i % 251 });
    const homes = [0xfffffffe, 0xffffffff, 0, 2, 7];
    const committed: [Buffer, ChunkLocation][] = [];
    const pending: Buffer[] = [];
    for (let i = 0; i < 500; i++) {
      const id = clustered((homes[i % homes.length] + (i % 4)) >>> 0);
      if (i % 2 === 0) {
        index.markPending(id);
        pending.push(id);
      } else {
        const where = unique(i);
        index.add(id, where);
        committed.push([id, where]);
      }
    }
    const wrong = () => committed.filter(([id, where]) => JSON.stringify(index.lookup(id)) !== JSON.stringify(where)).length;
    expect(wrong()).toBe(0);
    // Deletions shift the entries behind them back along their probe chains.
    pending.forEach((id, n) => {
      index.dropPending(id);
      if (n % 50 === 0) expect(wrong(), `after ${n + 1} deletions`).toBe(0);
    });
    expect(wrong()).toBe(0);
    // Growth (several doublings) rehashes every moved entry into a new table.
    for (let i = 0; i < 5000; i++) {
      const where = unique(10_000 + i);
      const id = randomBytes(32);
      index.add(id, where);
      committed.push([id, where]);
    }
    expect(wrong()).toBe(0);
    // And deletions in the grown table still move entries whole.
    for (let i = 0; i < 300; i++) {
      const id = clustered((homes[i % homes.length] + (i % 3)) >>> 0);
      index.markPending(id);
      pending.push(id);
    }
    for (const id of pending.slice(-300).reverse()) index.dropPending(id);
    expect(wrong()).toBe(0);
    const listed = new Map([...index.entries()].map(([id, where]) => [id.toString("hex"), JSON.stringify(where)]));
    expect(listed.size).toBe(committed.length);
    for (const [id, where] of committed) expect(listed.get(id.toString("hex"))).toBe(JSON.stringify(where));
  });
});
