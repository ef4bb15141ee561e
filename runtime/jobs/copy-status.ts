/**
 * Where each item's copies stand: one entity per item and copy vault in the items table (its own
 * partition, so the item records and their ETag-guarded updates are untouched), written by each
 * copy job that succeeds. `bulwark status` turns them into each item's copy lag (reports.ts).
 */
import type { TableClient } from "@azure/data-tables";
import { vaultKey } from "../policy/policy.ts";
import { encodeKey, isConflict, isNotFound } from "./storage.ts";

const PARTITION = "copy";

export interface CopyRecord {
  itemId: string;
  /** The copy vault, as the policy names it. */
  vault: string;
  /** The newest point of the item in the copy vault, and its time (when its snapshot was taken). */
  pointId: string;
  pointTime: string;
  /** When the copy job that found it there ended, and which job that was. */
  copiedAt: number;
  jobId: string;
}

function rowKey(itemId: string, vault: string): string {
  return encodeKey(`${itemId.toLowerCase()}|${vaultKey(vault)}`);
}

function fromEntity(entity: Record<string, unknown>): CopyRecord {
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  return {
    itemId: str(entity.itemId),
    vault: str(entity.vault),
    pointId: str(entity.pointId),
    pointTime: str(entity.pointTime),
    copiedAt: typeof entity.copiedAt === "number" ? entity.copiedAt : Number(entity.copiedAt ?? 0),
    jobId: str(entity.jobId),
  };
}

export class CopyRecords {
  readonly table: TableClient;

  constructor(table: TableClient) {
    this.table = table;
  }

  /**
   * Records what a copy job found, unless a record of a newer point is there already (copy jobs of
   * one item may finish out of order). ETag-conditional, retried on conflicts; idempotent.
   */
  async record(copy: CopyRecord): Promise<void> {
    const key = rowKey(copy.itemId, copy.vault);
    for (let attempt = 0; attempt < 10; attempt++) {
      let current: { record: CopyRecord; etag: string } | undefined;
      try {
        const entity = await this.table.getEntity(PARTITION, key);
        current = { record: fromEntity(entity), etag: entity.etag };
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      if (current && current.record.pointTime > copy.pointTime) return;
      const entity = { partitionKey: PARTITION, rowKey: key, ...copy };
      try {
        if (current) await this.table.updateEntity(entity, "Replace", { etag: current.etag });
        else await this.table.createEntity(entity);
        return;
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
  }

  async list(): Promise<CopyRecord[]> {
    const out: CopyRecord[] = [];
    for await (const entity of this.table.listEntities({ queryOptions: { filter: `PartitionKey eq '${PARTITION}'` } })) out.push(fromEntity(entity));
    return out;
  }
}
