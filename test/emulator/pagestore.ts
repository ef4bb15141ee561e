/**
 * A sparse page image: the bytes of a managed disk or snapshot, kept as 512-byte pages. A page that
 * was never written reads as zeros and is not a valid range. A write stores fresh page buffers
 * (never mutating old ones), so a frozen copy is a real point-in-time image and the diff between two
 * images of the same disk is exactly the pages written (or cleared) in between, as Azure tracks it.
 * Sources: 512-byte pages (MicrosoftDocs/azure-docs articles/storage/blobs/
 * storage-blob-pageblob-overview.md); the diff's written and cleared ranges, PageRange and
 * ClearRange with inclusive Start/End (Azure/azure-rest-api-specs specification/storage/data-plane/
 * Microsoft.BlobStorage/stable/2021-12-02/blob.json, PageBlob_GetPageRangesDiff and its PageList).
 */
export const PAGE_SIZE = 512;

export interface ByteRange {
  /** First byte. */
  start: number;
  /** Last byte, inclusive (as Azure's PageRange End). */
  end: number;
}

/**
 * Pages are kept in extents of EXTENT_PAGES (64 KiB), so a 64 GiB disk is at most a million extents
 * and a page-range request over a window looks only at the extents in it. Each page is a slice of the
 * buffer its write copied (a reference and an offset, no object per page). A frozen copy shares the
 * extents; whichever image writes to a shared extent copies it first (copy on write).
 */
const EXTENT_PAGES = 128;

interface Extent {
  /** The write buffer holding each page, or undefined for a page never written (or cleared). */
  buffers: (Buffer | undefined)[];
  /** Where in its buffer each page starts. */
  offsets: Int32Array;
  valid: number;
  /** The image that may change this extent in place; any other copies it first. */
  owner: object;
}

export class PageImage {
  readonly size: number;
  private readonly extents: Map<number, Extent>;
  /** Identity of this image as an extent owner; replaced when the image is frozen. */
  private token: object = {};

  constructor(size: number, extents?: Map<number, Extent>) {
    if (size % PAGE_SIZE !== 0) throw new Error(`a page image's size must be a multiple of ${PAGE_SIZE} bytes`);
    this.size = size;
    this.extents = extents ?? new Map();
  }

  /** The same image without its last `bytes` (an uploaded disk loses its VHD footer this way). */
  truncated(bytes: number): PageImage {
    const size = this.size - bytes;
    const image = new PageImage(size, new Map([...this.extents].filter(([index]) => index * EXTENT_PAGES * PAGE_SIZE < size)));
    // The images share extents now; the pages past the new end go from the new one's copy.
    this.token = {};
    image.clearPages(size / PAGE_SIZE, (Math.ceil(size / (EXTENT_PAGES * PAGE_SIZE)) * EXTENT_PAGES * PAGE_SIZE - size) / PAGE_SIZE);
    return image;
  }

  /** A point-in-time copy that later writes to this image do not change. */
  freeze(): PageImage {
    // Neither image owns the shared extents any more: the first write to one copies it.
    this.token = {};
    return new PageImage(this.size, new Map(this.extents));
  }

  /** Written bytes (pages), for accounting. */
  get storedBytes(): number {
    let pages = 0;
    for (const extent of this.extents.values()) pages += extent.valid;
    return pages * PAGE_SIZE;
  }

  write(offset: number, data: Uint8Array): void {
    this.checkAligned(offset, data.length);
    const copy = Buffer.from(data);
    const first = offset / PAGE_SIZE;
    for (let i = 0; i < copy.length / PAGE_SIZE; i++) {
      const page = first + i;
      const extent = this.writable(Math.floor(page / EXTENT_PAGES), true)!;
      const slot = page % EXTENT_PAGES;
      if (!extent.buffers[slot]) extent.valid++;
      extent.buffers[slot] = copy;
      extent.offsets[slot] = i * PAGE_SIZE;
    }
  }

  clear(offset: number, length: number): void {
    this.checkAligned(offset, length);
    this.clearPages(offset / PAGE_SIZE, length / PAGE_SIZE);
  }

  private clearPages(first: number, count: number): void {
    for (let i = 0; i < count; i++) {
      const page = first + i;
      const index = Math.floor(page / EXTENT_PAGES);
      if (!this.extents.get(index)?.buffers[page % EXTENT_PAGES]) continue;
      const extent = this.writable(index, false)!;
      extent.buffers[page % EXTENT_PAGES] = undefined;
      if (--extent.valid === 0) this.extents.delete(index);
    }
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
      const extent = this.extents.get(Math.floor(index / EXTENT_PAGES));
      if (!extent) {
        // A whole extent never written reads as zeros: skip to its end.
        position = Math.min(offset + length, (Math.floor(index / EXTENT_PAGES) + 1) * EXTENT_PAGES * PAGE_SIZE);
        continue;
      }
      const slot = index % EXTENT_PAGES;
      const buffer = extent.buffers[slot];
      if (buffer) buffer.copy(out, position - offset, extent.offsets[slot] + within, extent.offsets[slot] + within + take);
      position += take;
    }
    return out;
  }

  /** Written page ranges within [start, end] (inclusive), merged. */
  validRanges(start = 0, end = this.size - 1): ByteRange[] {
    const indexes: number[] = [];
    this.eachExtentIn(start, end, (index, extent) => {
      for (let slot = 0; slot < EXTENT_PAGES; slot++) {
        const page = index * EXTENT_PAGES + slot;
        if (extent.buffers[slot] && inWindow(page, start, end)) indexes.push(page);
      }
    });
    return mergeRuns(indexes);
  }

  /**
   * Pages that differ between this image and an earlier image of the same disk, within [start, end]:
   * `changed` were written since (PageRange), `cleared` were valid then and are not now (ClearRange).
   */
  diff(previous: PageImage, start = 0, end = this.size - 1): { changed: ByteRange[]; cleared: ByteRange[] } {
    const changed: number[] = [];
    const cleared: number[] = [];
    const firstExtent = Math.floor(Math.max(0, start) / (EXTENT_PAGES * PAGE_SIZE));
    const lastExtent = Math.floor(Math.min(end, Math.max(this.size, previous.size) - 1) / (EXTENT_PAGES * PAGE_SIZE));
    for (let index = firstExtent; index <= lastExtent; index++) {
      const now = this.extents.get(index);
      const then = previous.extents.get(index);
      if (now === then) continue; // shared since the earlier image was frozen: nothing written
      for (let slot = 0; slot < EXTENT_PAGES; slot++) {
        const page = index * EXTENT_PAGES + slot;
        if (!inWindow(page, start, end)) continue;
        const nowBuffer = now?.buffers[slot];
        const thenBuffer = then?.buffers[slot];
        if (nowBuffer && (nowBuffer !== thenBuffer || now!.offsets[slot] !== then!.offsets[slot])) changed.push(page);
        else if (!nowBuffer && thenBuffer) cleared.push(page);
      }
    }
    return { changed: mergeRuns(changed), cleared: mergeRuns(cleared) };
  }

  /** Calls `visit` for each extent holding pages within [start, end], in order. */
  private eachExtentIn(start: number, end: number, visit: (index: number, extent: Extent) => void): void {
    const firstExtent = Math.floor(Math.max(0, start) / (EXTENT_PAGES * PAGE_SIZE));
    const lastExtent = Math.floor(Math.min(end, this.size - 1) / (EXTENT_PAGES * PAGE_SIZE));
    if (lastExtent - firstExtent + 1 > this.extents.size) {
      // A window wider than the extents held: walk those, in order.
      for (const index of [...this.extents.keys()].filter((i) => i >= firstExtent && i <= lastExtent).sort((a, b) => a - b)) {
        visit(index, this.extents.get(index)!);
      }
      return;
    }
    for (let index = firstExtent; index <= lastExtent; index++) {
      const extent = this.extents.get(index);
      if (extent) visit(index, extent);
    }
  }

  /** The extent at `index`, this image's own (copied first if shared); created if `create`. */
  private writable(index: number, create: boolean): Extent | undefined {
    const extent = this.extents.get(index);
    if (extent && extent.owner === this.token) return extent;
    if (!extent && !create) return undefined;
    const own: Extent = extent
      ? { buffers: [...extent.buffers], offsets: Int32Array.from(extent.offsets), valid: extent.valid, owner: this.token }
      : { buffers: new Array(EXTENT_PAGES).fill(undefined), offsets: new Int32Array(EXTENT_PAGES), valid: 0, owner: this.token };
    this.extents.set(index, own);
    return own;
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
