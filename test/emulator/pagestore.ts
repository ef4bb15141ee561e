/**
 * A sparse page image: the bytes of a managed disk or snapshot, kept as 512-byte pages. A page that
 * was never written reads as zeros and is not a valid range. A write stores fresh page buffers
 * (never mutating old ones), so a frozen copy is a real point-in-time image and the diff between two
 * images of the same disk is exactly the pages written (or cleared) in between, as Azure tracks it.
 */
export const PAGE_SIZE = 512;

export interface ByteRange {
  /** First byte. */
  start: number;
  /** Last byte, inclusive (as Azure's PageRange End). */
  end: number;
}

export class PageImage {
  readonly size: number;
  private readonly pages: Map<number, Buffer>;

  constructor(size: number, pages?: Map<number, Buffer>) {
    if (size % PAGE_SIZE !== 0) throw new Error(`a page image's size must be a multiple of ${PAGE_SIZE} bytes`);
    this.size = size;
    this.pages = pages ?? new Map();
  }

  /** A point-in-time copy that later writes to this image do not change. */
  /** The same image without its last `bytes` (an uploaded disk loses its VHD footer this way). */
  truncated(bytes: number): PageImage {
    const size = this.size - bytes;
    return new PageImage(size, new Map([...this.pages].filter(([index]) => index * PAGE_SIZE < size)));
  }

  freeze(): PageImage {
    return new PageImage(this.size, new Map(this.pages));
  }

  /** Written bytes (pages), for accounting. */
  get storedBytes(): number {
    return this.pages.size * PAGE_SIZE;
  }

  write(offset: number, data: Uint8Array): void {
    this.checkAligned(offset, data.length);
    const copy = Buffer.from(data);
    const first = offset / PAGE_SIZE;
    for (let i = 0; i < copy.length / PAGE_SIZE; i++) {
      this.pages.set(first + i, copy.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
    }
  }

  clear(offset: number, length: number): void {
    this.checkAligned(offset, length);
    const first = offset / PAGE_SIZE;
    for (let i = 0; i < length / PAGE_SIZE; i++) this.pages.delete(first + i);
  }

  read(offset: number, length: number): Buffer {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`read of ${length} bytes at ${offset} is outside the ${this.size}-byte image`);
    }
    const out = Buffer.alloc(length);
    let position = offset;
    while (position < offset + length) {
      const index = Math.floor(position / PAGE_SIZE);
      const within = position % PAGE_SIZE;
      const take = Math.min(PAGE_SIZE - within, offset + length - position);
      const page = this.pages.get(index);
      if (page) page.copy(out, position - offset, within, within + take);
      position += take;
    }
    return out;
  }

  /** Written page ranges within [start, end] (inclusive), merged. */
  validRanges(start = 0, end = this.size - 1): ByteRange[] {
    const indexes = [...this.pages.keys()].filter((i) => inWindow(i, start, end)).sort((a, b) => a - b);
    return mergeRuns(indexes);
  }

  /**
   * Pages that differ between this image and an earlier image of the same disk, within [start, end]:
   * `changed` were written since (PageRange), `cleared` were valid then and are not now (ClearRange).
   */
  diff(previous: PageImage, start = 0, end = this.size - 1): { changed: ByteRange[]; cleared: ByteRange[] } {
    const changed: number[] = [];
    const cleared: number[] = [];
    for (const [index, page] of this.pages) {
      if (inWindow(index, start, end) && previous.pages.get(index) !== page) changed.push(index);
    }
    for (const index of previous.pages.keys()) {
      if (inWindow(index, start, end) && !this.pages.has(index)) cleared.push(index);
    }
    return { changed: mergeRuns(changed.sort((a, b) => a - b)), cleared: mergeRuns(cleared.sort((a, b) => a - b)) };
  }

  private checkAligned(offset: number, length: number): void {
    if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) {
      throw new RangeError(`page writes must be ${PAGE_SIZE}-byte aligned (offset ${offset}, length ${length})`);
    }
    if (offset < 0 || offset + length > this.size) {
      throw new RangeError(`write of ${length} bytes at ${offset} is outside the ${this.size}-byte image`);
    }
  }
}

function inWindow(pageIndex: number, start: number, end: number): boolean {
  const first = pageIndex * PAGE_SIZE;
  return first + PAGE_SIZE - 1 >= start && first <= end;
}

function mergeRuns(sortedIndexes: number[]): ByteRange[] {
  const ranges: ByteRange[] = [];
  for (const index of sortedIndexes) {
    const last = ranges[ranges.length - 1];
    if (last && last.end + 1 === index * PAGE_SIZE) last.end += PAGE_SIZE;
    else ranges.push({ start: index * PAGE_SIZE, end: index * PAGE_SIZE + PAGE_SIZE - 1 });
  }
  return ranges;
}
