/**
 * A view of an object store for tests of parts that meet at the store: objects that look older
 * than they are (time passed at the storage, as a long promote or a paused process would see it),
 * and hooks around creates (another part acting at that exact moment).
 */
import type { ObjectInfo, ObjectStore, ObjectWriter } from "../../runtime/store/store.ts";

export interface StoreViewOptions {
  /** How much older an object looks, by key (0: as it is). */
  ageOf?: (key: string) => number;
  beforeCreate?: (key: string) => Promise<void>;
  afterCreate?: (key: string) => Promise<void>;
}

export class StoreView implements ObjectStore {
  readonly location: string;
  private readonly inner: ObjectStore;
  private readonly options: StoreViewOptions;

  constructor(inner: ObjectStore, options: StoreViewOptions) {
    this.inner = inner;
    this.location = inner.location;
    this.options = options;
  }

  private age(info: ObjectInfo): ObjectInfo {
    const ms = this.options.ageOf?.(info.key) ?? 0;
    return ms ? { ...info, lastModified: new Date(info.lastModified.getTime() - ms) } : info;
  }

  get(key: string) {
    return this.inner.get(key);
  }

  getRange(key: string, offset: number, length: number) {
    return this.inner.getRange(key, offset, length);
  }

  async stat(key: string) {
    const info = await this.inner.stat(key);
    return info && this.age(info);
  }

  async create(key: string, data: Uint8Array) {
    await this.options.beforeCreate?.(key);
    await this.inner.create(key, data);
    await this.options.afterCreate?.(key);
  }

  createWriter(key: string): ObjectWriter {
    return this.inner.createWriter(key);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const info of this.inner.list(prefix)) yield this.age(info);
  }

  delete(key: string) {
    return this.inner.delete(key);
  }
}

/** The objects under these prefixes now look `ageMs` older; objects written later do not. */
export async function agedView(store: ObjectStore, ageMs: number, ...prefixes: string[]): Promise<StoreView> {
  const existing = new Set<string>();
  for (const prefix of prefixes) for await (const info of store.list(prefix)) existing.add(info.key);
  return new StoreView(store, { ageOf: (key) => (existing.has(key) ? ageMs : 0) });
}
