/**
 * A decorator that counts what a job reads from a store: requests as Azure would bill them (a
 * listing costs one request per 5,000 names, List Blobs' page size) and bytes downloaded. The
 * scale benchmark (bench/scale-case.ts) measures a job's cost in a big vault through it. Writes
 * pass through uncounted.
 */
import type { ObjectInfo, ObjectStore, ObjectWriter } from "./store.ts";

/**
 * Azure's List Blobs returns at most 5,000 names a request ("If the maximum number of results is not
 * specified in the request or if it's greater than 5,000, the server returns up to the maximum of
 * 5,000 items": learn.microsoft.com/rest/api/storageservices/enumerating-blob-resources).
 */
const LIST_PAGE = 5000;

export interface StoreReads {
  requests: number;
  /** Bytes of objects and ranges read. */
  bytes: number;
  gets: number;
  ranges: number;
  stats: number;
  lists: number;
  /** Names the listings returned. */
  listed: number;
}

export class ReadCountingStore implements ObjectStore {
  readonly reads: StoreReads = { requests: 0, bytes: 0, gets: 0, ranges: 0, stats: 0, lists: 0, listed: 0 };
  readonly immutableUntil?: (key: string) => Promise<Date | undefined>;
  private readonly inner: ObjectStore;

  constructor(inner: ObjectStore) {
    this.inner = inner;
    if (inner.immutableUntil) this.immutableUntil = (key) => inner.immutableUntil!(key);
  }

  get location(): string {
    return this.inner.location;
  }

  async get(key: string): Promise<Buffer> {
    const data = await this.inner.get(key);
    this.count("gets", data.length);
    return data;
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const data = await this.inner.getRange(key, offset, length);
    this.count("ranges", data.length);
    return data;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    this.count("stats", 0);
    return this.inner.stat(key);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let listed = 0;
    try {
      for await (const info of this.inner.list(prefix)) {
        listed++;
        yield info;
      }
    } finally {
      this.reads.lists++;
      this.reads.listed += listed;
      this.reads.requests += Math.max(1, Math.ceil(listed / LIST_PAGE));
    }
  }

  create(key: string, data: Uint8Array): Promise<void> {
    return this.inner.create(key, data);
  }

  createWriter(key: string): ObjectWriter {
    return this.inner.createWriter(key);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  private count(kind: "gets" | "ranges" | "stats", bytes: number): void {
    this.reads[kind]++;
    this.reads.requests++;
    this.reads.bytes += bytes;
  }
}
