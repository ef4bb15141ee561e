/**
 * The persisted records of the fleet: one table entity per job and one per protected item, each
 * changed only by ETag-conditional writes, so two workers (or two schedulers) never both win.
 */
import { randomBytes } from "node:crypto";
import type { TableClient } from "@azure/data-tables";
import { ServiceError } from "../errors.ts";
import type { ItemKind } from "../policy/items.ts";
import type { JobData } from "./machine.ts";
import { decodeKey, encodeKey, isConflict, isNotFound } from "./storage.ts";

export type JobStatus = "queued" | "running" | "compensating" | "succeeded" | "failed";

export function isTerminal(status: JobStatus): boolean {
  return status === "succeeded" || status === "failed";
}

export interface JobRecord {
  jobId: string;
  machine: string;
  itemId: string;
  itemKind: ItemKind;
  /** The region whose queue carries the job. */
  region: string;
  policy: string;
  input: JobData;
  status: JobStatus;
  /** The next state to run ("" before the first claim: the machine's initial state). */
  state: string;
  data: JobData;
  /** States that completed and have a compensation, oldest first. */
  compensable: string[];
  /** While compensating: the compensations still to run, next first. */
  pendingCompensations: string[];
  owner: string;
  leaseUntil: number;
  createdAt: number;
  startedAt: number;
  endedAt: number;
  /** How many times a worker took the job (claims, including takeovers after a crash). */
  runs: number;
  /** How many runs ended in a step failure. */
  failures: number;
  error: string;
}

const PARTITION = "job";
const CHUNK = 30_000; // a string property holds 64 KiB (32 K UTF-16 characters)
const MAX_CHUNKS = 28; // an entity holds 1 MiB in all

/** Job ids sort newest first in a table: the inverted creation time, then randomness. */
export function newJobId(now: number): string {
  const inverted = (9_999_999_999_999 - now).toString().padStart(13, "0");
  return `${inverted}-${randomBytes(6).toString("hex")}`;
}

export function jobCreatedAt(jobId: string): number {
  return 9_999_999_999_999 - Number(jobId.slice(0, 13));
}

type Entity = Record<string, unknown> & { partitionKey: string; rowKey: string };

function toEntity(job: JobRecord): Entity {
  const { data, input, compensable, pendingCompensations, ...plain } = job;
  const dataText = JSON.stringify(data);
  const parts = Math.max(1, Math.ceil(dataText.length / CHUNK));
  if (parts > MAX_CHUNKS) {
    throw new ServiceError(
      `job ${job.jobId}: its state data is ${dataText.length} characters, more than a table entity holds; ` +
        `a machine must keep large data in blobs and only their names in its state`,
    );
  }
  const entity: Entity = {
    partitionKey: PARTITION,
    rowKey: job.jobId,
    ...plain,
    input: JSON.stringify(input),
    compensable: JSON.stringify(compensable),
    pendingCompensations: JSON.stringify(pendingCompensations),
    dataParts: parts,
  };
  for (let i = 0; i < parts; i++) entity[`data${i}`] = dataText.slice(i * CHUNK, (i + 1) * CHUNK);
  return entity;
}

function fromEntity(entity: Record<string, unknown>): JobRecord {
  const parts = Number(entity.dataParts ?? 0);
  let dataText = "";
  for (let i = 0; i < parts; i++) dataText += String(entity[`data${i}`] ?? "");
  const num = (v: unknown) => (typeof v === "number" ? v : Number(v ?? 0));
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  return {
    jobId: str(entity.rowKey),
    machine: str(entity.machine),
    itemId: str(entity.itemId),
    itemKind: str(entity.itemKind) as ItemKind,
    region: str(entity.region),
    policy: str(entity.policy),
    input: JSON.parse(str(entity.input) || "{}"),
    status: str(entity.status) as JobStatus,
    state: str(entity.state),
    data: dataText ? JSON.parse(dataText) : {},
    compensable: JSON.parse(str(entity.compensable) || "[]"),
    pendingCompensations: JSON.parse(str(entity.pendingCompensations) || "[]"),
    owner: str(entity.owner),
    leaseUntil: num(entity.leaseUntil),
    createdAt: num(entity.createdAt),
    startedAt: num(entity.startedAt),
    endedAt: num(entity.endedAt),
    runs: num(entity.runs),
    failures: num(entity.failures),
    error: str(entity.error),
  };
}

export interface Versioned<T> {
  value: T;
  etag: string;
}

export class JobStore {
  readonly table: TableClient;

  constructor(table: TableClient) {
    this.table = table;
  }

  async create(job: JobRecord): Promise<Versioned<JobRecord>> {
    const created = await this.table.createEntity(toEntity(job));
    return { value: job, etag: created.etag ?? "" };
  }

  async get(jobId: string): Promise<Versioned<JobRecord> | undefined> {
    try {
      const entity = await this.table.getEntity(PARTITION, jobId);
      return { value: fromEntity(entity), etag: entity.etag };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Replaces the record if nobody changed it since `etag`; undefined if someone did. */
  async replace(job: JobRecord, etag: string, options: { abortSignal?: AbortSignal } = {}): Promise<string | undefined> {
    try {
      // Replace drops data chunks the new data no longer needs.
      const updated = await this.table.updateEntity(toEntity(job), "Replace", { etag, abortSignal: options.abortSignal });
      return updated.etag ?? "";
    } catch (error) {
      if (isConflict(error)) return undefined;
      throw error;
    }
  }

  async delete(jobId: string, etag: string): Promise<void> {
    try {
      await this.table.deleteEntity(PARTITION, jobId, { etag });
    } catch (error) {
      if (!isConflict(error) && !isNotFound(error)) throw error;
    }
  }

  /** Jobs newest first (job ids sort that way). */
  async *list(options: { limit?: number } = {}): AsyncIterable<JobRecord> {
    let count = 0;
    for await (const entity of this.table.listEntities({ queryOptions: { filter: `PartitionKey eq '${PARTITION}'` } })) {
      if (options.limit !== undefined && count >= options.limit) return;
      count++;
      yield fromEntity(entity);
    }
  }
}

export type ItemState = "idle" | "queued" | "running";

export interface ItemRecord {
  itemId: string;
  kind: ItemKind;
  region: string;
  policy: string;
  state: ItemState;
  /** The job that holds the item while queued or running. */
  jobId: string;
  queuedAt: number;
  lastJobId: string;
  lastOutcome: string;
  lastEndedAt: number;
  lastError: string;
  /** When the last successful run was scheduled (its job created): what isDue and the RPO check use. */
  lastGoodAt: number;
  lastGoodPointId: string;
  lastGoodJobId: string;
  /** Why the scheduler cannot protect the item ("" when it can). */
  unprotected: string;
  lastSeenAt: number;
}

const ITEM_PARTITION = "item";

function itemFromEntity(entity: Record<string, unknown>): ItemRecord {
  const num = (v: unknown) => (typeof v === "number" ? v : Number(v ?? 0));
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  return {
    itemId: decodeKey(str(entity.rowKey)),
    kind: str(entity.kind) as ItemKind,
    region: str(entity.region),
    policy: str(entity.policy),
    state: (str(entity.state) || "idle") as ItemState,
    jobId: str(entity.jobId),
    queuedAt: num(entity.queuedAt),
    lastJobId: str(entity.lastJobId),
    lastOutcome: str(entity.lastOutcome),
    lastEndedAt: num(entity.lastEndedAt),
    lastError: str(entity.lastError),
    lastGoodAt: num(entity.lastGoodAt),
    lastGoodPointId: str(entity.lastGoodPointId),
    lastGoodJobId: str(entity.lastGoodJobId),
    unprotected: str(entity.unprotected),
    lastSeenAt: num(entity.lastSeenAt),
  };
}

export function emptyItem(itemId: string, kind: ItemKind, region: string, policy: string): ItemRecord {
  return {
    itemId,
    kind,
    region,
    policy,
    state: "idle",
    jobId: "",
    queuedAt: 0,
    lastJobId: "",
    lastOutcome: "",
    lastEndedAt: 0,
    lastError: "",
    lastGoodAt: 0,
    lastGoodPointId: "",
    lastGoodJobId: "",
    unprotected: "",
    lastSeenAt: 0,
  };
}

export class ItemStore {
  readonly table: TableClient;

  constructor(table: TableClient) {
    this.table = table;
  }

  async get(itemId: string): Promise<Versioned<ItemRecord> | undefined> {
    try {
      const entity = await this.table.getEntity(ITEM_PARTITION, encodeKey(itemId));
      return { value: itemFromEntity(entity), etag: entity.etag };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Writes the item if it is unchanged since etag (or, with no etag, if it does not exist yet). */
  async put(item: ItemRecord, etag: string | undefined): Promise<string | undefined> {
    const { itemId, ...fields } = item;
    const entity = { partitionKey: ITEM_PARTITION, rowKey: encodeKey(itemId), ...fields };
    try {
      const result = etag
        ? await this.table.updateEntity(entity, "Replace", { etag })
        : await this.table.createEntity(entity);
      return result.etag ?? "";
    } catch (error) {
      if (isConflict(error)) return undefined;
      throw error;
    }
  }

  /**
   * Reads, changes and writes an item with optimistic concurrency, retrying on conflicts. `change`
   * returns the new record, or undefined to leave it as it is.
   */
  async update(
    itemId: string,
    create: () => ItemRecord,
    change: (item: ItemRecord) => ItemRecord | undefined,
  ): Promise<ItemRecord | undefined> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.get(itemId);
      const next = change(current ? { ...current.value } : create());
      if (!next) return current?.value;
      if ((await this.put(next, current?.etag)) !== undefined) return next;
    }
    throw new ServiceError(`item ${itemId}: too many concurrent updates; try again`);
  }

  async *list(): AsyncIterable<ItemRecord> {
    const filter = `PartitionKey eq '${ITEM_PARTITION}'`;
    for await (const entity of this.table.listEntities({ queryOptions: { filter } })) yield itemFromEntity(entity);
  }
}
