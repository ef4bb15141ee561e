/**
 * What a killed `bulwark` run on this host left in a vault, removed by the next run: its lock
 * objects, once its process is gone. Without this a SIGKILLed backup blocks prune until the lock
 * goes stale (30 minutes). Only locks whose body names this host and a process that no longer runs
 * here are removed; an unreadable lock, another host's, or a live process's stays (locks fail closed).
 */
import os from "node:os";
import { processAlive } from "../interruption.ts";
import type { ObjectStore } from "../store/store.ts";

export async function removeDeadLocksOfThisHost(store: ObjectStore): Promise<string[]> {
  const removed: string[] = [];
  const host = os.hostname();
  for await (const info of store.list("locks/")) {
    let body: { host?: unknown; pid?: unknown };
    try {
      body = JSON.parse((await store.get(info.key)).toString("utf8"));
    } catch {
      continue;
    }
    const pid = Number(body.pid);
    if (body.host !== host || pid === process.pid || processAlive(pid)) continue;
    await store.delete(info.key);
    removed.push(info.key);
  }
  return removed;
}
