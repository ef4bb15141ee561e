/**
 * A reader's metadata blocks by number (inode tables, directory and B-tree blocks it comes back to
 * again and again), least recently used evicted past a count; concurrent reads of one block share
 * one read, and a failed read is not kept.
 */
export class BlockCache {
  private readonly entries = new Map<number, Promise<Buffer>>();
  private readonly maxEntries: number;

  constructor(maxEntries: number) {
    this.maxEntries = maxEntries;
  }

  get(block: number, load: () => Promise<Buffer>): Promise<Buffer> {
    const cached = this.entries.get(block);
    if (cached) {
      // Map order is insertion order: re-inserting makes this the most recently used.
      this.entries.delete(block);
      this.entries.set(block, cached);
      return cached;
    }
    const loading = load();
    this.entries.set(block, loading);
    loading.catch(() => {
      if (this.entries.get(block) === loading) this.entries.delete(block);
    });
    for (const key of this.entries.keys()) {
      if (this.entries.size <= this.maxEntries) break;
      this.entries.delete(key);
    }
    return loading;
  }

  clear(): void {
    this.entries.clear();
  }
}
