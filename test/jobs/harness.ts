import { randomBytes } from "node:crypto";
import type { Clock } from "../../runtime/jobs/clock.ts";
import { systemClock } from "../../runtime/jobs/clock.ts";
import { FleetStorage } from "../../runtime/jobs/storage.ts";
import { openFleet, type Fleet } from "../../runtime/jobs/submit.ts";
import type { ItemKind, ProtectedItem } from "../../runtime/policy/items.ts";

/** Real time plus a shift that tests move forward: leases and timers stay real, days pass at once. */
export class ShiftedClock implements Clock {
  shift = 0;

  now(): number {
    return Date.now() + this.shift;
  }

  advance(ms: number): void {
    this.shift += ms;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(ms, signal);
  }
}

/** A fleet in its own tables and queues (a fresh prefix), so tests in one Azurite do not meet. */
export async function testFleet(connectionString: string, clock: Clock = systemClock, prefix?: string): Promise<Fleet> {
  const storage = new FleetStorage(
    { connectionString },
    { prefix: prefix ?? `t${randomBytes(4).toString("hex")}` },
  );
  return openFleet(storage, clock);
}

export function vm(sub: string, name: string, region: string): ProtectedItem & { tags?: Record<string, string> } {
  return { id: `/subscriptions/${sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/${name}`, kind: "vm", region };
}

export function disk(sub: string, name: string, region: string, tags?: Record<string, string>): ProtectedItem & { tags?: Record<string, string> } {
  return { id: `/subscriptions/${sub}/resourceGroups/rg/providers/Microsoft.Compute/disks/${name}`, kind: "disk" as ItemKind, region, tags };
}

export function sqlDb(sub: string, server: string, db: string, region: string): ProtectedItem {
  return { id: `/subscriptions/${sub}/resourceGroups/rg/providers/Microsoft.Sql/servers/${server}/databases/${db}`, kind: "sql", region };
}

export function collectLog(): { lines: Record<string, unknown>[]; sink: (line: Record<string, unknown>) => void } {
  const lines: Record<string, unknown>[] = [];
  return { lines, sink: (line) => lines.push(line) };
}

export async function queueLength(fleet: Fleet, region: string): Promise<number> {
  const queue = await fleet.storage.queue(region);
  const props = await queue.getProperties();
  return props.approximateMessagesCount ?? 0;
}

export async function poisonMessages(fleet: Fleet, region: string): Promise<Record<string, unknown>[]> {
  const queue = await fleet.storage.poisonQueue(region);
  const peeked = await queue.peekMessages({ numberOfMessages: 32 });
  return peeked.peekedMessageItems.map((m) => JSON.parse(m.messageText));
}
