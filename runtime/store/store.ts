/**
 * The one storage interface the engine sees. Objects are written once (create-only) and deleted,
 * never overwritten, so a vault works under WORM immutability. Cross-cutting behaviour (retries,
 * concurrency limits, fault injection in tests) wraps this interface instead of living inside
 * each implementation.
 */
export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

/** A create-only object written in pieces; it becomes visible only on commit. */
export interface ObjectWriter {
  write(data: Uint8Array): Promise<void>;
  /** Makes the object visible; throws ObjectExistsError if another writer created it first. */
  commit(): Promise<void>;
  /** Drops whatever was written; safe to call after a failed write or commit. */
  abort(): Promise<void>;
}

export interface ObjectStore {
  /** Where this store lives, for messages (a folder path or a container URL; never a secret). */
  readonly location: string;
  /** Throws ObjectNotFoundError when the key does not exist. */
  get(key: string): Promise<Buffer>;
  getRange(key: string, offset: number, length: number): Promise<Buffer>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Create-only write; throws ObjectExistsError if the key exists. */
  create(key: string, data: Uint8Array): Promise<void>;
  createWriter(key: string): ObjectWriter;
  /** Every object whose key starts with prefix, in no particular order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Deleting a missing object is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Until when the object's current version cannot be deleted, as the storage reports it (its own
   * time-based immutability policy, or its container's default one); undefined when none applies.
   * Absent where the storage has no immutability at all (a folder). Bulwark never sets a policy
   * itself: WORM is the storage's configuration (README, "Immutability").
   */
  immutableUntil?(key: string): Promise<Date | undefined>;
}
