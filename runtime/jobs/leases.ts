/**
 * Leases as table entities with a "held until" time, taken and renewed by ETag-conditional writes.
 *
 * Why not blob leases: Azure blob leases last 15-60 s (or forever), so a dead worker's job could
 * only be taken over after at least 15 s, which makes crash tests slow, and an infinite lease is
 * never lost. A table entity `{ owner, leaseUntil }` updated with If-Match gives the same mutual
 * exclusion (only one writer wins each ETag) with any duration, and one mechanism serves job
 * ownership, item locks and region slots. The price: holders compare `leaseUntil` with their own
 * clock, so clocks must agree to well within a lease (Azure hosts are NTP-synchronized; leases are
 * tens of seconds in production).
 */
import type { TableClient } from "@azure/data-tables";
import type { Clock } from "./clock.ts";
import { lockKey } from "./item-locks.ts";
import { encodeKey, isConflict, isNotFound } from "./storage.ts";

/**
 * The row key of a lease: an ARM id (case-insensitive, see item-locks.ts) in lower case and
 * base64url-encoded (table keys cannot hold "/"); other keys (slot numbers) as they are.
 */
export function leaseKey(key: string): string {
  return /^\/subscriptions\//i.test(key) ? encodeKey(lockKey(key)) : key;
}

interface LeaseEntity {
  partitionKey: string;
  rowKey: string;
  owner: string;
  leaseUntil: number;
}

export interface HeldLease {
  readonly partitionKey: string;
  readonly rowKey: string;
  readonly owner: string;
  etag: string;
}

/** Leases in one table; `scope` is the partition (e.g. "item" or "slots-westeurope"). */
export class LeaseTable {
  private readonly table: TableClient;
  private readonly clock: Clock;

  constructor(table: TableClient, clock: Clock) {
    this.table = table;
    this.clock = clock;
  }

  /** Takes the lease if it is free, expired or already ours; undefined if someone else holds it. */
  async acquire(scope: string, resource: string, owner: string, durationMs: number): Promise<HeldLease | undefined> {
    const key = leaseKey(resource);
    for (let attempt = 0; attempt < 3; attempt++) {
      let current: (LeaseEntity & { etag: string }) | undefined;
      try {
        current = await this.table.getEntity<LeaseEntity>(scope, key);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      const entity: LeaseEntity = { partitionKey: scope, rowKey: key, owner, leaseUntil: this.clock.now() + durationMs };
      try {
        if (!current) {
          const created = await this.table.createEntity(entity);
          return { partitionKey: scope, rowKey: key, owner, etag: created.etag ?? "" };
        }
        const free = !current.owner || current.owner === owner || current.leaseUntil <= this.clock.now();
        if (!free) return undefined;
        const updated = await this.table.updateEntity(entity, "Replace", { etag: current.etag });
        return { partitionKey: scope, rowKey: key, owner, etag: updated.etag ?? "" };
      } catch (error) {
        if (!isConflict(error)) throw error;
        // Someone wrote between our read and write: read again and decide again.
      }
    }
    return undefined;
  }

  /** Extends a held lease; false if it was lost (someone took it over after it expired). */
  async renew(lease: HeldLease, durationMs: number): Promise<boolean> {
    try {
      const entity: LeaseEntity = {
        partitionKey: lease.partitionKey,
        rowKey: lease.rowKey,
        owner: lease.owner,
        leaseUntil: this.clock.now() + durationMs,
      };
      const updated = await this.table.updateEntity(entity, "Replace", { etag: lease.etag });
      lease.etag = updated.etag ?? "";
      return true;
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return false;
      throw error;
    }
  }

  /** Frees a held lease; a lease already lost is not an error. */
  async release(lease: HeldLease): Promise<void> {
    try {
      const entity: LeaseEntity = { partitionKey: lease.partitionKey, rowKey: lease.rowKey, owner: "", leaseUntil: 0 };
      const updated = await this.table.updateEntity(entity, "Replace", { etag: lease.etag });
      lease.etag = updated.etag ?? "";
    } catch (error) {
      if (!isConflict(error) && !isNotFound(error)) throw error;
    }
  }

  /**
   * Takes every lease or none (in sorted key order, so two takers never wait on each other in a
   * cycle). Returns the held leases, or undefined if any is held elsewhere.
   */
  async acquireAll(scope: string, keys: string[], owner: string, durationMs: number): Promise<HeldLease[] | undefined> {
    const held: HeldLease[] = [];
    for (const key of [...new Set(keys.map(leaseKey))].sort()) {
      const lease = await this.acquire(scope, key, owner, durationMs);
      if (!lease) {
        for (const h of held) await this.release(h);
        return undefined;
      }
      held.push(lease);
    }
    return held;
  }

  /** The first free slot among `count` slots of a scope (a counting semaphore in storage). */
  async acquireSlot(scope: string, count: number, owner: string, durationMs: number): Promise<HeldLease | undefined> {
    // Start at a random slot so workers do not all contend for slot 0.
    const start = Math.floor(Math.random() * count);
    for (let i = 0; i < count; i++) {
      const key = String((start + i) % count).padStart(4, "0");
      const lease = await this.acquire(scope, key, owner, durationMs);
      if (lease) return lease;
    }
    return undefined;
  }

  /** How many leases of a scope are held right now (for status and tests). */
  async countHeld(scope: string): Promise<number> {
    let held = 0;
    const now = this.clock.now();
    const filter = `PartitionKey eq '${scope.replace(/'/g, "''")}'`;
    for await (const entity of this.table.listEntities<LeaseEntity>({ queryOptions: { filter } })) {
      if (entity.owner && entity.leaseUntil > now) held++;
    }
    return held;
  }
}
