/**
 * Per-resource exclusivity across the fleet: a lock entity per resource (an item, or a disk of a VM)
 * names the job that holds it. Unlike region slots, an item lock does not expire with a heartbeat:
 * it is held until its job is finished (succeeded or failed), so a backup paused between workers
 * (crash, SIGTERM) still excludes a restore of the same item. A lock whose job record is finished
 * or gone is free; a job always gets back its own locks after a takeover.
 *
 * Resources are ARM ids. Resource and resource group names are case-insensitive, APIs may return
 * a name in another case than it was created with, and Microsoft says to "always perform a
 * case-insensitive comparison of names" (https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules,
 * the note at its top). A VM's storage profile and a disk listing can spell one disk differently,
 * so a lock's key is the id in lower case.
 */
import type { TableClient } from "@azure/data-tables";
import { isTerminal, type JobStore } from "./records.ts";
import { encodeKey, isConflict, isNotFound } from "./storage.ts";

const PARTITION = "itemlock";

/** The one spelling of a resource that locks compare: ARM ids (case-insensitive) in lower case. */
export function lockKey(resource: string): string {
  return /^\/subscriptions\//i.test(resource) ? resource.toLowerCase() : resource;
}

interface LockEntity {
  partitionKey: string;
  rowKey: string;
  resource: string;
  jobId: string;
}

export class ItemLocks {
  private readonly table: TableClient;
  private readonly jobs: JobStore;

  constructor(table: TableClient, jobs: JobStore) {
    this.table = table;
    this.jobs = jobs;
  }

  private async holderIsLive(holder: string, jobId: string): Promise<boolean> {
    if (!holder || holder === jobId) return false;
    const job = await this.jobs.get(holder);
    return job !== undefined && !isTerminal(job.value.status);
  }

  private async take(resource: string, jobId: string): Promise<"taken" | "held" | "busy"> {
    const rowKey = encodeKey(resource); // already lockKey()ed by acquireAll
    for (let attempt = 0; attempt < 5; attempt++) {
      let current: (LockEntity & { etag: string }) | undefined;
      try {
        current = await this.table.getEntity<LockEntity>(PARTITION, rowKey);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      if (current?.jobId === jobId) return "held";
      if (current && (await this.holderIsLive(current.jobId, jobId))) return "busy";
      const entity: LockEntity = { partitionKey: PARTITION, rowKey, resource, jobId };
      try {
        if (current) await this.table.updateEntity(entity, "Replace", { etag: current.etag });
        else await this.table.createEntity(entity);
        return "taken";
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
    return "busy";
  }

  /**
   * Takes every lock for the job or none (in sorted order, so two jobs never wait on each other in
   * a cycle). Returns the resource that is busy, or undefined when all are held by the job.
   */
  async acquireAll(resources: string[], jobId: string): Promise<string | undefined> {
    const taken: string[] = [];
    for (const resource of [...new Set(resources.map(lockKey))].sort()) {
      const result = await this.take(resource, jobId);
      if (result === "busy") {
        for (const r of taken) await this.release(r, jobId);
        return resource;
      }
      if (result === "taken") taken.push(resource);
    }
    return undefined;
  }

  /** Frees a lock if the job holds it. */
  async release(resource: string, jobId: string): Promise<void> {
    const rowKey = encodeKey(lockKey(resource));
    try {
      const current = await this.table.getEntity<LockEntity>(PARTITION, rowKey);
      if (current.jobId !== jobId) return;
      await this.table.deleteEntity(PARTITION, rowKey, { etag: current.etag });
    } catch (error) {
      if (!isConflict(error) && !isNotFound(error)) throw error;
    }
  }

  async releaseAll(resources: string[], jobId: string): Promise<void> {
    for (const resource of new Set(resources.map(lockKey))) await this.release(resource, jobId);
  }

  /** The job holding a resource, if any (for tests and status). */
  async holder(resource: string): Promise<string | undefined> {
    try {
      return (await this.table.getEntity<LockEntity>(PARTITION, encodeKey(lockKey(resource)))).jobId || undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }
}
