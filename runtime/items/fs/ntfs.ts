/**
 * NTFS, read-only, from a volume's bytes (issue 11): the boot sector's geometry, the MFT (itself
 * found through its own runlist, so a fragmented MFT reads), MFT records with their update
 * sequence fixups checked, attributes in the base record and in extension records named by an
 * $ATTRIBUTE_LIST, directories as their $I30 B-tree ($INDEX_ROOT and INDX records of
 * $INDEX_ALLOCATION, every node walked in key order), file content from resident or non-resident
 * $DATA (fragmented runlists, sparse runs and the tail past the initialized size read as holes),
 * symbolic links and junctions (reparse points) and ntfs-3g's Interix symlinks (what `ln -s` makes
 * on an ntfs-3g mount by default), hard links (one MFT record named by several $FILE_NAMEs: one id),
 * and the volume label ($Volume's $VOLUME_NAME).
 *
 * Not read, and said so: compressed $DATA (LZNT1) and EFS-encrypted $DATA list with `unreadable`
 * and throw UnreadableItemError on read, as do files behind other reparse tags (deduplicated,
 * WOF-compressed, cloud placeholders: their bytes are not in $DATA). Named data streams (alternate
 * data streams), security descriptors, DOS attributes other than read-only, and extended attributes
 * are not restored. Modes and owners are synthesised (NTFS keeps ACLs, not modes): uid/gid 0, 0o755
 * folders, 0o644 files, 0o444 read-only files, 0o777 symlinks. A junction's or absolute symlink's
 * target is the Windows path as stored ("C:\Users"); a relative symlink's uses "/". ntfs-3g's
 * Interix FIFOs, sockets and devices list as "other". A file's nlink counts its Win32 and POSIX
 * names, not a DOS 8.3 twin of one of them.
 *
 * Sources (the on-disk format; public code was read to learn, none copied):
 * - The Linux-NTFS project's "NTFS Documentation" (Richard Russon, Yuval Fledel; flatcap.github.io/
 *   linux-ntfs/ntfs/): $Boot, concepts/file_record.html (the FILE header), concepts/fixup.html (the
 *   update sequence: the last two bytes of every 512-byte stride hold the update sequence number,
 *   their true value sits in the array), concepts/attribute_header.html, concepts/data_runs.html
 *   (the runlist: a header byte of length and offset sizes, a signed offset relative to the previous
 *   run, no offset for a sparse run), attributes/*.html ($STANDARD_INFORMATION, $ATTRIBUTE_LIST,
 *   $FILE_NAME and its namespaces, $VOLUME_NAME, $INDEX_ROOT, $INDEX_ALLOCATION, $REPARSE_POINT),
 *   concepts/index_record.html and concepts/index_entry.html (INDX records; an entry's sub-node
 *   VCN in its last 8 bytes).
 * - The Linux kernel's fs/ntfs3/ntfs.h (torvalds/linux): field offsets of NTFS_BOOT (bytes per
 *   sector 0x0B, sectors per cluster 0x0D, MFT cluster 0x30, the MFT record size at 0x40 as clusters
 *   or, when negative, 2^-n bytes; the index record size at 0x44 is only the default for new
 *   indexes: each index's own $INDEX_ROOT gives the size of its INDX records), MFT_REC, ATTRIB (resident and non-resident),
 *   ATTR_STD_INFO, ATTR_LIST_ENTRY, ATTR_FILE_NAME, NTFS_DE, INDEX_HDR, INDEX_BUFFER, INDEX_ROOT,
 *   the attribute flags (compressed 0x0001, encrypted 0x4000, sparse 0x8000) and the reparse tags
 *   (IO_REPARSE_TAG_SYMLINK 0xA000000C, IO_REPARSE_TAG_MOUNT_POINT 0xA0000003).
 * - Microsoft, [MS-FSCC] 2.1.2.4 "Symbolic Link Reparse Data Buffer" and 2.1.2.5 "Mount Point
 *   Reparse Data Buffer" (substitute and print names; SYMLINK_FLAG_RELATIVE), 2.4.7 "FILETIME"
 *   times (100 ns since 1601-01-01 UTC), and 2.6 "File Attributes" (READONLY 0x1, HIDDEN 0x2,
 *   SYSTEM 0x4).
 * - ntfs-3g (tuxera/ntfs-3g, include/ntfs-3g/layout.h INTX_FILE and src/ntfs-3g.c getattr): an
 *   Interix special file is a SYSTEM file whose $DATA starts with "IntxLNK\1" (a symlink, its target
 *   in UTF-16LE after the magic), "IntxBLK\0"/"IntxCHR\0" (devices); a non-hidden SYSTEM file of 0 or
 *   1 byte is a FIFO or a socket. Directory listings there leave out DOS-only (8.3) names and the
 *   metadata files (records 0-15) at the root.
 */
import { IntegrityError, UsageError } from "../../errors.ts";
import type { RandomAccess } from "../block-reader.ts";
import {
  MAX_RUN_BYTES,
  UnreadableItemError,
  type DirEntry,
  type FileRun,
  type FileSystem,
  type FileSystemFormat,
  type FsNode,
  type NodeType,
} from "./types.ts";

/** The update sequence protects every 512 bytes of a record, whatever the sector size. */
const FIXUP_STRIDE = 512;
const ROOT_RECORD = 5;
const VOLUME_RECORD = 3;
/** Records below this one are the volume's metadata ($MFT ... $Extend and reserved ones). */
const FIRST_USER_RECORD = 16;

const ATTR_STANDARD_INFORMATION = 0x10;
const ATTR_ATTRIBUTE_LIST = 0x20;
const ATTR_FILE_NAME = 0x30;
const ATTR_VOLUME_NAME = 0x60;
const ATTR_DATA = 0x80;
const ATTR_INDEX_ROOT = 0x90;
const ATTR_INDEX_ALLOCATION = 0xa0;
const ATTR_REPARSE_POINT = 0xc0;
const ATTR_END = 0xffffffff;

const RECORD_IN_USE = 0x0001;
const RECORD_IS_DIRECTORY = 0x0002;

const ATTRIBUTE_COMPRESSION_MASK = 0x00ff;
const ATTRIBUTE_ENCRYPTED = 0x4000;

const FILE_ATTRIBUTE_READONLY = 0x0001;
const FILE_ATTRIBUTE_HIDDEN = 0x0002;
const FILE_ATTRIBUTE_SYSTEM = 0x0004;
const FILE_NAME_DIRECTORY = 0x10000000;

const NAMESPACE_DOS = 2;

const INDEX_ENTRY_HAS_SUBNODE = 0x0001;
const INDEX_ENTRY_LAST = 0x0002;

const REPARSE_TAG_MOUNT_POINT = 0xa0000003;
const REPARSE_TAG_SYMLINK = 0xa000000c;
const SYMLINK_FLAG_RELATIVE = 0x1;

const INTERIX_SYMLINK = Buffer.from("IntxLNK\x01", "latin1");
const INTERIX_DEVICES = [Buffer.from("IntxBLK\x00", "latin1"), Buffer.from("IntxCHR\x00", "latin1")];

/** FILETIME of the Unix epoch (100 ns intervals since 1601-01-01). */
const FILETIME_UNIX_EPOCH = 116444736000000000n;

/** Bounds on what a damaged or hostile volume could make the reader hold or walk. */
const MAX_RECORD_BYTES = 64 * 1024;
const MAX_CLUSTER_BYTES = 2 * 1024 * 1024;
const MAX_ATTRIBUTE_LIST_BYTES = 4 * 1024 * 1024;
/** A reparse buffer is at most 16 KiB ([MS-FSCC] 2.1.2); an Interix target at most PATH_MAX UTF-16 units. */
const MAX_LINK_BYTES = 16 * 1024;
/** B-tree levels of a directory index: a balanced tree of millions of names is a handful deep. */
const MAX_INDEX_DEPTH = 32;
/** Bytes of MFT records (a file's base and extension records) kept parsed for the next lookups. */
const CACHED_RECORD_BYTES = 4 * 1024 * 1024;

export const ntfsFormat: FileSystemFormat = {
  name: "ntfs",
  probe(head: Buffer): boolean {
    return head.length >= 512 && head.toString("latin1", 3, 11) === "NTFS    " && head.readUInt16LE(510) === 0xaa55;
  },
  open(volume: RandomAccess): Promise<FileSystem> {
    return NtfsVolume.open(volume);
  },
};

function damaged(structure: string, problem: string): IntegrityError {
  return new IntegrityError(
    `NTFS ${structure} is damaged: ${problem}. What it describes cannot be read from this point: restore it from another point, or restore the whole disk and let chkdsk repair it`,
  );
}

interface Geometry {
  clusterSize: number;
  clusters: number;
  mftByteOffset: number;
  recordSize: number;
}

/** One run of a runlist: `clusters` clusters from `vcn`, at `lcn` on the volume or sparse. */
interface Run {
  readonly vcn: number;
  readonly clusters: number;
  readonly lcn: number | undefined;
}

interface NonResident {
  readonly firstVcn: number;
  readonly lastVcn: number;
  readonly runs: Run[];
  /** Sizes are meaningful in the segment that starts at VCN 0. */
  readonly dataSize: number;
  readonly initializedSize: number;
}

interface Attribute {
  readonly type: number;
  readonly name: string;
  readonly flags: number;
  readonly value?: Buffer;
  readonly nonResident?: NonResident;
}

interface MftRecord {
  readonly number: number;
  readonly sequence: number;
  readonly flags: number;
  /** The base record of an extension record; 0 for a base record. */
  readonly baseRecord: number;
  readonly attributes: Attribute[];
}

/** A file's attributes gathered from its base record and any extension records. */
interface MftFile {
  readonly number: number;
  /** The record's use count: a reference to an older use of the record is stale. */
  readonly sequence: number;
  readonly isDirectory: boolean;
  /** MFT records it was gathered from (what it weighs in the cache). */
  readonly records: number;
  readonly attributes: Attribute[];
}

/**
 * Parsed files by record number, least recently used dropped first once their records pass the
 * bound: a listing comes back to the same folders, a restore to the same files. Concurrent loads
 * of one record share one read; a failed load is not kept.
 */
class FileCache {
  private readonly entries = new Map<number, Promise<MftFile>>();
  private readonly weights = new Map<number, number>();
  private readonly maxRecords: number;
  private records = 0;

  constructor(maxRecords: number) {
    this.maxRecords = maxRecords;
  }

  get(number: number, load: () => Promise<MftFile>): Promise<MftFile> {
    const cached = this.entries.get(number);
    if (cached) {
      this.entries.delete(number);
      this.entries.set(number, cached);
      return cached;
    }
    const loading = load();
    this.entries.set(number, loading);
    loading.then(
      (file) => {
        if (this.entries.get(number) !== loading) return;
        this.weights.set(number, file.records);
        this.records += file.records;
        this.evict();
      },
      () => {
        if (this.entries.get(number) === loading) this.entries.delete(number);
      },
    );
    return loading;
  }

  private evict(): void {
    for (const number of this.entries.keys()) {
      if (this.records <= this.maxRecords) return;
      const weight = this.weights.get(number);
      if (weight === undefined) continue; // still loading
      this.entries.delete(number);
      this.weights.delete(number);
      this.records -= weight;
    }
  }
}

interface FileName {
  readonly parent: number;
  readonly namespace: number;
  readonly name: string;
}

interface IndexEntry {
  readonly record: number;
  readonly sequence: number;
  /** The $FILE_NAME value the entry is keyed by. */
  readonly key: Buffer;
}

class NtfsVolume implements FileSystem {
  readonly filesystem = "ntfs";
  label = "";
  private readonly volume: RandomAccess;
  private readonly geometry: Geometry;
  private mft: Stream;
  private readonly files: FileCache;

  private constructor(volume: RandomAccess, geometry: Geometry, mft: Stream) {
    this.volume = volume;
    this.geometry = geometry;
    this.mft = mft;
    this.files = new FileCache(Math.max(16, Math.floor(CACHED_RECORD_BYTES / geometry.recordSize)));
  }

  static async open(volume: RandomAccess): Promise<NtfsVolume> {
    const boot = await volume.read(0, Math.min(512, volume.size));
    if (!ntfsFormat.probe(boot)) throw damaged("boot sector", 'it does not carry the "NTFS" signature and 0xAA55');
    const geometry = readGeometry(boot, volume.size);
    if (geometry.mftByteOffset + geometry.recordSize > volume.size) {
      throw damaged("boot sector", `the MFT starts at byte ${geometry.mftByteOffset}, past the volume's ${volume.size} bytes`);
    }
    // Record 0 describes the MFT itself: read it where the boot sector says the MFT starts.
    const firstRecord = await volume.read(geometry.mftByteOffset, geometry.recordSize);
    const start = new Stream(volume, geometry, "$MFT", [{ vcn: 0, clusters: Math.ceil(geometry.recordSize / geometry.clusterSize), lcn: geometry.mftByteOffset / geometry.clusterSize }], geometry.recordSize, geometry.recordSize);
    const ntfs = new NtfsVolume(volume, geometry, start);
    const mftRecord = parseRecord(firstRecord, 0, geometry);
    ntfs.mft = await ntfs.mftStream(mftRecord);
    ntfs.label = await ntfs.volumeLabel();
    return ntfs;
  }

  async root(): Promise<FsNode> {
    const file = await this.file(ROOT_RECORD, 0);
    if (!file.isDirectory) throw damaged(`root folder (MFT record ${ROOT_RECORD})`, "the record is not a directory");
    return this.nodeOf(file);
  }

  async list(dir: FsNode): Promise<DirEntry[]> {
    if (dir.type !== "dir") throw new UsageError(`cannot list NTFS node ${dir.id}: it is a ${dir.type}, not a folder`);
    if (dir.unreadable) throw new IntegrityError(dir.unreadable);
    const number = recordNumberOf(dir);
    const file = await this.file(number, 0);
    if (!file.isDirectory) throw damaged(`MFT record ${number}`, "the folder's record is not a directory");
    const entries: DirEntry[] = [];
    for await (const entry of this.indexEntries(file)) {
      const name = parseFileName(entry.key, `index entry of folder ${number}`);
      if (name.namespace === NAMESPACE_DOS) continue; // the 8.3 twin of a Win32 name listed beside it
      if (entry.record === number) continue;
      if (number === ROOT_RECORD && entry.record < FIRST_USER_RECORD) continue;
      entries.push({ name: name.name, node: await this.childNode(number, entry) });
    }
    return entries;
  }

  async *read(node: FsNode): AsyncIterable<FileRun> {
    if (node.type !== "file") throw new UsageError(`cannot read NTFS node ${node.id} as a file: it is a ${node.type}`);
    const number = recordNumberOf(node);
    const file = await this.file(number, 0);
    const current = await this.nodeOf(file);
    const unreadable = current.unreadable ?? node.unreadable;
    if (unreadable) throw new UnreadableItemError(`NTFS file (MFT record ${number}) is not read: ${unreadable}`);
    const data = unnamed(file, ATTR_DATA);
    if (data.length === 0) return;
    if (data[0].value) {
      if (data[0].value.length > 0) yield { offset: 0, length: data[0].value.length, hole: false, data: Buffer.from(data[0].value) };
      return;
    }
    yield* this.stream(data, `$DATA of MFT record ${number}`).fileRuns();
  }

  /**
   * A node for an index entry; a record that cannot be read lists from the entry's own copy of its
   * name and times, marked unreadable (and not listable). A folder must name the folder it is
   * listed in as its parent: folders have no hard links, so a walk from the root never loops.
   */
  private async childNode(folder: number, entry: IndexEntry): Promise<FsNode> {
    try {
      const file = await this.file(entry.record, entry.sequence);
      if (file.isDirectory && !fileNames(file).some((n) => n.parent === folder)) {
        throw damaged(`MFT record ${file.number}`, `the folder is listed in folder ${folder}, but its names place it elsewhere`);
      }
      return await this.nodeOf(file);
    } catch (error) {
      if (!(error instanceof IntegrityError)) throw error;
      return nodeFromIndexKey(entry, error.message);
    }
  }

  private async nodeOf(file: MftFile): Promise<FsNode> {
    const info = standardInformation(file);
    const names = fileNames(file);
    const common = {
      id: String(file.number),
      mtime: info.mtime,
      atime: info.atime,
      uid: 0,
      gid: 0,
      nlink: Math.max(1, names.filter((n) => n.namespace !== NAMESPACE_DOS).length),
    };
    const reparse = unnamed(file, ATTR_REPARSE_POINT)[0];
    if (reparse) {
      const point = readReparsePoint(await this.attributeValue(file.number, file.attributes, reparse, MAX_LINK_BYTES), file.number);
      if (point.target !== undefined) return { ...common, type: "symlink", size: Buffer.byteLength(point.target), mode: 0o777, target: point.target };
      if (!file.isDirectory) return { ...common, ...this.fileShape(file, info.attributes), unreadable: `a reparse point (tag 0x${point.tag.toString(16)}) whose content is not kept in its $DATA` };
    }
    if (file.isDirectory) return { ...common, type: "dir", size: this.directorySize(file), mode: 0o755 };
    if (info.attributes & FILE_ATTRIBUTE_SYSTEM) {
      const special = await this.interixSpecial(file, info.attributes);
      if (special) return { ...common, ...special };
    }
    return { ...common, ...this.fileShape(file, info.attributes) };
  }

  private fileShape(file: MftFile, attributes: number): { type: NodeType; size: number; mode: number; unreadable?: string } {
    const data = unnamed(file, ATTR_DATA);
    const shape = { type: "file" as const, size: sizeOf(data), mode: attributes & FILE_ATTRIBUTE_READONLY ? 0o444 : 0o644 };
    const flags = data[0]?.flags ?? 0;
    if (flags & ATTRIBUTE_ENCRYPTED) return { ...shape, unreadable: "encrypted with EFS (its key is held in the owner's Windows profile, not on the volume)" };
    if (flags & ATTRIBUTE_COMPRESSION_MASK) return { ...shape, unreadable: "compressed with NTFS compression (LZNT1), which this reader does not decompress" };
    return shape;
  }

  /** What ntfs-3g shows as a folder's size: its index allocation's, 0 while every entry fits in the record. */
  private directorySize(file: MftFile): number {
    return sizeOf(file.attributes.filter((a) => a.type === ATTR_INDEX_ALLOCATION && a.name === "$I30"));
  }

  /** ntfs-3g's Interix special files (its default for `ln -s`, mknod, mkfifo): SYSTEM files recognised by their $DATA. */
  private async interixSpecial(file: MftFile, attributes: number): Promise<{ type: NodeType; size: number; mode: number; target?: string } | undefined> {
    const data = unnamed(file, ATTR_DATA);
    const size = sizeOf(data);
    if (data.length === 0 || data[0].flags & (ATTRIBUTE_ENCRYPTED | ATTRIBUTE_COMPRESSION_MASK)) return undefined;
    if (size <= 1) return attributes & FILE_ATTRIBUTE_HIDDEN ? undefined : { type: "other", size: 0, mode: 0o644 };
    if (size < INTERIX_SYMLINK.length) return undefined;
    const magic = (await this.dataValue(file, data, INTERIX_SYMLINK.length)).subarray(0, INTERIX_SYMLINK.length);
    if (INTERIX_DEVICES.some((m) => m.equals(magic))) return { type: "other", size: 0, mode: 0o644 };
    if (!magic.equals(INTERIX_SYMLINK)) return undefined;
    if (size > INTERIX_SYMLINK.length + MAX_LINK_BYTES || (size - INTERIX_SYMLINK.length) % 2 !== 0) {
      throw damaged(`Interix symlink in MFT record ${file.number}`, `its $DATA holds ${size} bytes, not a target of UTF-16 units up to ${MAX_LINK_BYTES} bytes`);
    }
    const target = (await this.dataValue(file, data, size)).toString("utf16le", INTERIX_SYMLINK.length);
    return { type: "symlink", size: Buffer.byteLength(target), mode: 0o777, target };
  }

  /** The first `length` bytes of a $DATA (resident or not). */
  private async dataValue(file: MftFile, data: Attribute[], length: number): Promise<Buffer> {
    if (data[0].value) return data[0].value.subarray(0, length);
    return this.stream(data, `$DATA of MFT record ${file.number}`).read(0, length);
  }

  /** A whole attribute value of bounded size, resident or not (its segments among `attributes`). */
  private async attributeValue(number: number, attributes: Attribute[], attribute: Attribute, maxBytes: number): Promise<Buffer> {
    if (attribute.value) return attribute.value;
    const what = `${attributeName(attribute.type)} of MFT record ${number}`;
    const stream = this.stream(attributes.filter((a) => a.type === attribute.type && a.name === attribute.name), what);
    if (stream.size > maxBytes) throw damaged(what, `it claims ${stream.size} bytes, more than the ${maxBytes} such an attribute can hold`);
    return stream.read(0, stream.size);
  }

  private stream(segments: Attribute[], what: string): Stream {
    return streamOf(this.volume, this.geometry, segments, what);
  }

  private async volumeLabel(): Promise<string> {
    const file = await this.file(VOLUME_RECORD, 0);
    const name = file.attributes.find((a) => a.type === ATTR_VOLUME_NAME);
    return name ? residentValue(name, VOLUME_RECORD).toString("utf16le") : "";
  }

  /** The directory's $I30 entries in key order: the root node's entries, each preceded by the sub-node it points to. */
  private async *indexEntries(dir: MftFile): AsyncGenerator<IndexEntry> {
    const where = `index of folder ${dir.number}`;
    const rootAttribute = dir.attributes.find((a) => a.type === ATTR_INDEX_ROOT && a.name === "$I30");
    if (!rootAttribute) throw damaged(where, "the folder has no $INDEX_ROOT named $I30");
    const root = residentValue(rootAttribute, dir.number);
    if (root.length < 0x20) throw damaged(where, `its $INDEX_ROOT holds ${root.length} bytes, fewer than its 32-byte header`);
    if (root.readUInt32LE(0) !== ATTR_FILE_NAME) throw damaged(where, `the $I30 index is keyed by attribute 0x${root.readUInt32LE(0).toString(16)}, not $FILE_NAME`);
    const recordSize = root.readUInt32LE(8);
    const allocationSegments = dir.attributes.filter((a) => a.type === ATTR_INDEX_ALLOCATION && a.name === "$I30");
    const allocation = allocationSegments.length > 0 ? this.stream(allocationSegments, `$INDEX_ALLOCATION of folder ${dir.number}`) : undefined;
    if (allocation && !isPowerOfTwoIn(recordSize, FIXUP_STRIDE, MAX_RECORD_BYTES)) throw damaged(where, `its index records would be ${recordSize} bytes`);
    const walk = new IndexWalk(this.geometry, allocation, recordSize, where);
    yield* walk.entries(indexNodeEntries(root, 0x10, root.length, `$INDEX_ROOT of folder ${dir.number}`), 0);
  }

  /** A file by record number (its base record and extension records), checked against the sequence number a reference holds (0: any). */
  private async file(number: number, sequence: number): Promise<MftFile> {
    const file = await this.files.get(number, () => this.loadFile(number));
    if (sequence !== 0 && file.sequence !== sequence) {
      throw damaged(`MFT record ${number}`, `a folder refers to its use number ${sequence}, the record is at use ${file.sequence} (a stale entry)`);
    }
    return file;
  }

  private async loadFile(number: number): Promise<MftFile> {
    const base = await this.record(number);
    if (!(base.flags & RECORD_IN_USE)) throw damaged(`MFT record ${number}`, "it is referenced but not in use");
    if (base.baseRecord !== 0) throw damaged(`MFT record ${number}`, `it is an extension of record ${base.baseRecord}, not a file's base record`);
    const attributes = [...base.attributes];
    const list = base.attributes.find((a) => a.type === ATTR_ATTRIBUTE_LIST);
    const extensions = new Set<number>();
    if (list) {
      const entries = parseAttributeList(await this.attributeValue(number, base.attributes, list, MAX_ATTRIBUTE_LIST_BYTES), number);
      for (const entry of entries) if (entry.record !== number) extensions.add(entry.record);
      for (const extension of extensions) {
        const record = await this.record(extension);
        if (record.baseRecord !== number || !(record.flags & RECORD_IN_USE)) {
          throw damaged(`$ATTRIBUTE_LIST of MFT record ${number}`, `it names record ${extension}, which is not an extension of this file`);
        }
        attributes.push(...record.attributes);
      }
    }
    return { number, sequence: base.sequence, isDirectory: (base.flags & RECORD_IS_DIRECTORY) !== 0, records: 1 + extensions.size, attributes };
  }

  private async record(number: number): Promise<MftRecord> {
    const { recordSize } = this.geometry;
    if (!Number.isSafeInteger(number) || number < 0 || (number + 1) * recordSize > this.mft.size) {
      throw damaged(`MFT reference ${number}`, `the MFT holds ${Math.floor(this.mft.size / recordSize)} records`);
    }
    return parseRecord(await this.mft.read(number * recordSize, recordSize), number, this.geometry);
  }

  /** The MFT's own $DATA: the segment in record 0, and those in extension records its $ATTRIBUTE_LIST names (read through the runs known so far). */
  private async mftStream(record0: MftRecord): Promise<Stream> {
    const segments = record0.attributes.filter((a) => a.type === ATTR_DATA && a.name === "");
    const list = record0.attributes.find((a) => a.type === ATTR_ATTRIBUTE_LIST);
    if (list) {
      const entries = parseAttributeList(await this.attributeValue(0, record0.attributes, list, MAX_ATTRIBUTE_LIST_BYTES), 0);
      const dataRecords = entries.filter((e) => e.type === ATTR_DATA && e.name === "" && e.record !== 0).sort((a, b) => a.firstVcn - b.firstVcn);
      for (const entry of dataRecords) {
        this.mft = streamOf(this.volume, this.geometry, segments, "$DATA of the MFT", true);
        const extension = await this.record(entry.record);
        if (extension.baseRecord !== 0) throw damaged(`$ATTRIBUTE_LIST of the MFT`, `it names record ${entry.record}, which is not an extension of the MFT`);
        segments.push(...extension.attributes.filter((a) => a.type === ATTR_DATA && a.name === ""));
      }
    }
    const mft = streamOf(this.volume, this.geometry, segments, "$DATA of the MFT");
    if (mft.size < FIRST_USER_RECORD * this.geometry.recordSize) throw damaged("$MFT", `it holds ${mft.size} bytes, fewer than its ${FIRST_USER_RECORD} metadata records`);
    return mft;
  }
}

/** Walks one directory's B-tree: each INDX record at most once, at most MAX_INDEX_DEPTH deep. */
class IndexWalk {
  private readonly visited = new Set<number>();
  private readonly geometry: Geometry;
  private readonly allocation: Stream | undefined;
  private readonly recordSize: number;
  private readonly where: string;

  constructor(geometry: Geometry, allocation: Stream | undefined, recordSize: number, where: string) {
    this.geometry = geometry;
    this.allocation = allocation;
    this.recordSize = recordSize;
    this.where = where;
  }

  async *entries(node: ParsedIndexEntry[], depth: number): AsyncGenerator<IndexEntry> {
    for (const entry of node) {
      if (entry.subnodeVcn !== undefined) {
        if (depth >= MAX_INDEX_DEPTH) throw damaged(this.where, `its B-tree is deeper than ${MAX_INDEX_DEPTH} levels`);
        yield* this.entries(await this.indexRecord(entry.subnodeVcn), depth + 1);
      }
      if (entry.entry) yield entry.entry;
    }
  }

  private async indexRecord(vcn: number): Promise<ParsedIndexEntry[]> {
    const where = `INDX record at VCN ${vcn} of the ${this.where}`;
    if (!this.allocation) throw damaged(this.where, "an entry points to a sub-node, but the folder has no $INDEX_ALLOCATION");
    if (this.visited.has(vcn)) throw damaged(this.where, `its B-tree reaches the INDX record at VCN ${vcn} twice (a loop)`);
    this.visited.add(vcn);
    // Index records smaller than a cluster are addressed in 512-byte units, larger ones in clusters.
    const unit = this.recordSize >= this.geometry.clusterSize ? this.geometry.clusterSize : FIXUP_STRIDE;
    const offset = vcn * unit;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + this.recordSize > this.allocation.size) {
      throw damaged(where, `it lies outside the index allocation's ${this.allocation.size} bytes`);
    }
    const bytes = await this.allocation.read(offset, this.recordSize);
    if (bytes.toString("latin1", 0, 4) !== "INDX") throw damaged(where, `it has signature ${JSON.stringify(bytes.toString("latin1", 0, 4))} where "INDX" belongs`);
    applyFixups(bytes, where);
    const ownVcn = readSigned64(bytes, 0x10, where);
    if (ownVcn !== vcn) throw damaged(where, `it says it is at VCN ${ownVcn}`);
    return indexNodeEntries(bytes, 0x18, bytes.length, where);
  }
}

interface ParsedIndexEntry {
  /** Undefined for the node's closing entry, which holds no name. */
  readonly entry?: IndexEntry;
  readonly subnodeVcn?: number;
}

/** The entries of one index node: the INDEX_HDR at `header`, its entries within `limit`. */
function indexNodeEntries(bytes: Buffer, header: number, limit: number, where: string): ParsedIndexEntry[] {
  if (header + 16 > limit) throw damaged(where, "its index header is cut short");
  const first = header + bytes.readUInt32LE(header);
  const end = header + bytes.readUInt32LE(header + 4);
  if (end > limit || first < header + 16 || first > end) throw damaged(where, `its entries (bytes ${first - header} to ${end - header} of the node) lie outside it`);
  const entries: ParsedIndexEntry[] = [];
  for (let at = first; ; ) {
    if (at + 16 > end) throw damaged(where, "its entries end without a closing entry");
    const length = bytes.readUInt16LE(at + 8);
    const keyLength = bytes.readUInt16LE(at + 10);
    const flags = bytes.readUInt16LE(at + 12);
    if (length < 16 || length % 8 !== 0 || at + length > end) throw damaged(where, `an entry at byte ${at} claims ${length} bytes`);
    let subnodeVcn: number | undefined;
    if (flags & INDEX_ENTRY_HAS_SUBNODE) {
      if (length < 24) throw damaged(where, `an entry at byte ${at} points to a sub-node but has no room for its VCN`);
      subnodeVcn = readSigned64(bytes, at + length - 8, where);
    }
    if (flags & INDEX_ENTRY_LAST) {
      entries.push({ subnodeVcn });
      return entries;
    }
    if (keyLength < 0x42 || 16 + keyLength > length) throw damaged(where, `an entry at byte ${at} has a ${keyLength}-byte key`);
    const reference = readReference(bytes, at);
    entries.push({ entry: { ...reference, key: bytes.subarray(at + 16, at + 16 + keyLength) }, subnodeVcn });
    at += length;
  }
}

/** A non-resident attribute's content: its runs merged across segments, read through the volume. */
class Stream {
  readonly size: number;
  private readonly volume: RandomAccess;
  private readonly geometry: Geometry;
  private readonly what: string;
  private readonly runs: Run[];
  private readonly initializedSize: number;

  constructor(volume: RandomAccess, geometry: Geometry, what: string, runs: Run[], size: number, initializedSize: number) {
    this.volume = volume;
    this.geometry = geometry;
    this.what = what;
    this.runs = runs;
    this.size = size;
    this.initializedSize = initializedSize;
  }

  /** Bytes of a range (metadata: bounded by the caller); sparse runs and bytes past the initialized size read as zeros. */
  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const end = Math.min(offset + length, this.initializedSize);
    const { clusterSize } = this.geometry;
    for (let position = offset; position < end; ) {
      const run = this.runAt(Math.floor(position / clusterSize));
      const runEnd = Math.min(end, (run.vcn + run.clusters) * clusterSize);
      if (run.lcn !== undefined) {
        const bytes = await this.volume.read(run.lcn * clusterSize + (position - run.vcn * clusterSize), runEnd - position);
        bytes.copy(out, position - offset);
      }
      position = runEnd;
    }
    return out;
  }

  /** The content as data runs of at most MAX_RUN_BYTES and holes (sparse runs, the uninitialized tail). */
  async *fileRuns(): AsyncGenerator<FileRun> {
    const { clusterSize } = this.geometry;
    let holeStart: number | undefined;
    for (const run of this.runs) {
      const start = run.vcn * clusterSize;
      if (start >= this.size) break;
      const end = Math.min(this.size, start + run.clusters * clusterSize);
      const dataEnd = run.lcn === undefined ? start : Math.min(end, Math.max(start, this.initializedSize));
      for (let position = start; position < dataEnd; ) {
        if (holeStart !== undefined) {
          yield { offset: holeStart, length: position - holeStart, hole: true };
          holeStart = undefined;
        }
        const length = Math.min(MAX_RUN_BYTES, dataEnd - position);
        const data = await this.volume.read(run.lcn! * clusterSize + (position - start), length);
        yield { offset: position, length, hole: false, data };
        position += length;
      }
      if (dataEnd < end) holeStart ??= dataEnd;
    }
    if (holeStart !== undefined) yield { offset: holeStart, length: this.size - holeStart, hole: true };
  }

  private runAt(vcn: number): Run {
    let low = 0;
    let high = this.runs.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const run = this.runs[middle];
      if (vcn < run.vcn) high = middle - 1;
      else if (vcn >= run.vcn + run.clusters) low = middle + 1;
      else return run;
    }
    throw damaged(this.what, `its runlist does not map cluster ${vcn} of its ${this.size} bytes`);
  }
}

/**
 * A non-resident attribute's segments (one per record holding part of its runlist) as one stream:
 * they must follow each other VCN after VCN, and their runs cover the content. `partial` allows the
 * runs to end early (the MFT while its later segments are still being found).
 */
function streamOf(volume: RandomAccess, geometry: Geometry, segments: Attribute[], what: string, partial = false): Stream {
  const pieces = segments.map((s) => {
    if (!s.nonResident) throw damaged(what, "part of it is resident and part not");
    return s.nonResident;
  });
  pieces.sort((a, b) => a.firstVcn - b.firstVcn);
  const first = pieces[0];
  if (!first || first.firstVcn !== 0) throw damaged(what, "no segment of its runlist starts at VCN 0");
  const runs: Run[] = [];
  let nextVcn = 0;
  for (const piece of pieces) {
    if (piece.firstVcn !== nextVcn) throw damaged(what, `its runlist segments do not follow each other (VCN ${piece.firstVcn} where ${nextVcn} was next)`);
    runs.push(...piece.runs);
    nextVcn = piece.lastVcn + 1;
  }
  if (!partial && nextVcn * geometry.clusterSize < first.dataSize) {
    throw damaged(what, `its runlist maps ${nextVcn} clusters, short of its ${first.dataSize} bytes`);
  }
  return new Stream(volume, geometry, what, runs, first.dataSize, first.initializedSize);
}

function readGeometry(boot: Buffer, volumeSize: number): Geometry {
  const bytesPerSector = boot.readUInt16LE(0x0b);
  if (!isPowerOfTwoIn(bytesPerSector, 256, 4096)) throw damaged("boot sector", `it gives ${bytesPerSector} bytes per sector`);
  const sectorsPerCluster = boot[0x0d];
  // Values above 0x80 give the count as 2^(256 - value) (clusters of 128 KiB and more).
  const clusterSize = bytesPerSector * (sectorsPerCluster > 0x80 ? 2 ** (256 - sectorsPerCluster) : sectorsPerCluster);
  if (!isPowerOfTwoIn(clusterSize, bytesPerSector, MAX_CLUSTER_BYTES)) throw damaged("boot sector", `it gives ${clusterSize}-byte clusters`);
  const mftCluster = readUnsigned64(boot, 0x30, "boot sector");
  const recordSize = recordBytes(boot.readInt8(0x40), clusterSize);
  const mftByteOffset = mftCluster * clusterSize;
  if (!Number.isSafeInteger(mftByteOffset)) throw damaged("boot sector", `its MFT cluster ${mftCluster} is beyond any volume`);
  return { clusterSize, clusters: Math.floor(volumeSize / clusterSize), mftByteOffset, recordSize };
}

/** The MFT record size field: clusters when positive, 2^-n bytes when negative. */
function recordBytes(field: number, clusterSize: number): number {
  const size = field > 0 ? field * clusterSize : 2 ** -field;
  if (!isPowerOfTwoIn(size, FIXUP_STRIDE, MAX_RECORD_BYTES)) throw damaged("boot sector", `it gives ${size}-byte MFT records`);
  return size;
}

function isPowerOfTwoIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max && (value & (value - 1)) === 0;
}

/** Checks and undoes the update sequence: the last two bytes of each 512-byte stride must hold the sequence number; the array holds what belongs there. */
function applyFixups(bytes: Buffer, where: string): void {
  const offset = bytes.readUInt16LE(4);
  const count = bytes.readUInt16LE(6);
  const strides = bytes.length / FIXUP_STRIDE;
  if (count !== strides + 1 || offset % 2 !== 0 || offset < 8 || offset + count * 2 > bytes.length) {
    throw damaged(where, `its update sequence array (${count} entries at byte ${offset}) does not fit ${strides} sectors of 512 bytes`);
  }
  const sequence = bytes.readUInt16LE(offset);
  for (let i = 1; i <= strides; i++) {
    const end = i * FIXUP_STRIDE - 2;
    const found = bytes.readUInt16LE(end);
    if (found !== sequence) {
      throw damaged(where, `sector ${i - 1} ends with update sequence 0x${found.toString(16)} where 0x${sequence.toString(16)} belongs (a torn or damaged write)`);
    }
    bytes.writeUInt16LE(bytes.readUInt16LE(offset + i * 2), end);
  }
}

function parseRecord(bytes: Buffer, number: number, geometry: Geometry): MftRecord {
  const where = `MFT record ${number}`;
  const signature = bytes.toString("latin1", 0, 4);
  if (signature !== "FILE") throw damaged(where, `it has signature ${JSON.stringify(signature)} where "FILE" belongs`);
  applyFixups(bytes, where);
  const attributesAt = bytes.readUInt16LE(0x14);
  const used = bytes.readUInt32LE(0x18);
  if (used > bytes.length || attributesAt < 0x18 || attributesAt >= used) throw damaged(where, `its attributes (bytes ${attributesAt} to ${used}) lie outside its ${bytes.length} bytes`);
  const attributes: Attribute[] = [];
  for (let at = attributesAt; ; ) {
    if (at + 4 > used) throw damaged(where, "its attributes run past the bytes in use without an end marker");
    const type = bytes.readUInt32LE(at);
    if (type === ATTR_END) break;
    if (at + 16 > used) throw damaged(where, `its attribute at byte ${at} is cut short`);
    const length = bytes.readUInt32LE(at + 4);
    if (length < 16 || at + length > used) throw damaged(where, `its attribute at byte ${at} claims ${length} bytes`);
    attributes.push(parseAttribute(bytes.subarray(at, at + length), `attribute 0x${type.toString(16)} at byte ${at} of ${where}`, geometry));
    at += length;
  }
  const baseReference = readReference(bytes, 0x20);
  return { number, sequence: bytes.readUInt16LE(0x10), flags: bytes.readUInt16LE(0x16), baseRecord: baseReference.record, attributes };
}

function parseAttribute(bytes: Buffer, where: string, geometry: Geometry): Attribute {
  const type = bytes.readUInt32LE(0);
  const nameLength = bytes[9];
  const nameOffset = bytes.readUInt16LE(10);
  if (nameOffset + nameLength * 2 > bytes.length) throw damaged(where, "its name lies outside it");
  const name = bytes.toString("utf16le", nameOffset, nameOffset + nameLength * 2);
  const flags = bytes.readUInt16LE(12);
  if (bytes[8] === 0) {
    if (bytes.length < 0x18) throw damaged(where, "its resident header is cut short");
    const valueLength = bytes.readUInt32LE(0x10);
    const valueOffset = bytes.readUInt16LE(0x14);
    if (valueOffset + valueLength > bytes.length) throw damaged(where, `its ${valueLength}-byte value at byte ${valueOffset} lies outside it`);
    return { type, name, flags, value: bytes.subarray(valueOffset, valueOffset + valueLength) };
  }
  if (bytes.length < 0x40) throw damaged(where, "its non-resident header is cut short");
  const firstVcn = readSigned64(bytes, 0x10, where);
  const lastVcn = readSigned64(bytes, 0x18, where);
  const runsOffset = bytes.readUInt16LE(0x20);
  const dataSize = readUnsigned64(bytes, 0x30, where);
  const initializedSize = readUnsigned64(bytes, 0x38, where);
  if (firstVcn < 0 || lastVcn < firstVcn - 1 || runsOffset > bytes.length) throw damaged(where, `its runlist header (VCNs ${firstVcn} to ${lastVcn}, runs at byte ${runsOffset}) is not valid`);
  if (initializedSize > dataSize) throw damaged(where, `its initialized size ${initializedSize} exceeds its size ${dataSize}`);
  const runs = decodeRuns(bytes, runsOffset, firstVcn, geometry.clusters, where);
  const mapped = runs.reduce((sum, run) => sum + run.clusters, 0);
  if (mapped !== lastVcn - firstVcn + 1) throw damaged(where, `its runs map ${mapped} clusters where its VCNs ${firstVcn} to ${lastVcn} need ${lastVcn - firstVcn + 1}`);
  return { type, name, flags, nonResident: { firstVcn, lastVcn, runs, dataSize, initializedSize } };
}

/** Decodes a runlist: each run a header byte (low nibble: bytes of length, high: bytes of offset), the length, then the LCN relative to the previous run's (none: sparse). */
function decodeRuns(bytes: Buffer, start: number, firstVcn: number, clusters: number, where: string): Run[] {
  const runs: Run[] = [];
  let vcn = firstVcn;
  let lcn = 0;
  for (let at = start; at < bytes.length && bytes[at] !== 0; ) {
    const lengthBytes = bytes[at] & 0x0f;
    const offsetBytes = bytes[at] >> 4;
    if (lengthBytes === 0 || lengthBytes > 8 || offsetBytes > 8 || at + 1 + lengthBytes + offsetBytes > bytes.length) {
      throw damaged(where, `its runlist has a malformed run header 0x${bytes[at].toString(16)} at byte ${at}`);
    }
    const length = toSafeNumber(readLittleEndian(bytes, at + 1, lengthBytes, false), where);
    if (length <= 0) throw damaged(where, `its runlist has a run of ${length} clusters`);
    if (offsetBytes === 0) {
      runs.push({ vcn, clusters: length, lcn: undefined });
    } else {
      lcn += toSafeNumber(readLittleEndian(bytes, at + 1 + lengthBytes, offsetBytes, true), where);
      if (lcn < 0 || lcn + length > clusters) throw damaged(where, `its runlist places ${length} clusters at cluster ${lcn}, outside the volume's ${clusters}`);
      runs.push({ vcn, clusters: length, lcn });
    }
    vcn += length;
    at += 1 + lengthBytes + offsetBytes;
  }
  return runs;
}

interface AttributeListEntry {
  readonly type: number;
  readonly name: string;
  readonly firstVcn: number;
  readonly record: number;
}

function parseAttributeList(bytes: Buffer, number: number): AttributeListEntry[] {
  const where = `$ATTRIBUTE_LIST of MFT record ${number}`;
  const entries: AttributeListEntry[] = [];
  for (let at = 0; at < bytes.length; ) {
    if (at + 0x1a > bytes.length) throw damaged(where, `its entry at byte ${at} is cut short`);
    const length = bytes.readUInt16LE(at + 4);
    const nameLength = bytes[at + 6];
    const nameOffset = bytes[at + 7];
    if (length < 0x1a || at + length > bytes.length || nameOffset + nameLength * 2 > length) throw damaged(where, `its entry at byte ${at} claims ${length} bytes`);
    entries.push({
      type: bytes.readUInt32LE(at),
      name: bytes.toString("utf16le", at + nameOffset, at + nameOffset + nameLength * 2),
      firstVcn: readSigned64(bytes, at + 8, where),
      record: readReference(bytes, at + 0x10).record,
    });
    at += length;
  }
  return entries;
}

/** An MFT reference: a 48-bit record number and a 16-bit use (sequence) number. */
function readReference(bytes: Buffer, at: number): { record: number; sequence: number } {
  return { record: bytes.readUInt32LE(at) + bytes.readUInt16LE(at + 4) * 2 ** 32, sequence: bytes.readUInt16LE(at + 6) };
}

function parseFileName(value: Buffer, where: string): FileName {
  if (value.length < 0x42) throw damaged(where, `its $FILE_NAME holds ${value.length} bytes, fewer than its 66-byte header`);
  const length = value[0x40];
  if (0x42 + length * 2 > value.length) throw damaged(where, `its ${length}-character name runs past its ${value.length} bytes`);
  return { parent: readReference(value, 0).record, namespace: value[0x41], name: value.toString("utf16le", 0x42, 0x42 + length * 2) };
}

function fileNames(file: MftFile): FileName[] {
  return file.attributes.filter((a) => a.type === ATTR_FILE_NAME).map((a) => parseFileName(residentValue(a, file.number), `$FILE_NAME of MFT record ${file.number}`));
}

function standardInformation(file: MftFile): { mtime: number; atime: number; attributes: number } {
  const attribute = file.attributes.find((a) => a.type === ATTR_STANDARD_INFORMATION);
  if (!attribute) throw damaged(`MFT record ${file.number}`, "it has no $STANDARD_INFORMATION");
  const value = residentValue(attribute, file.number);
  if (value.length < 0x24) throw damaged(`$STANDARD_INFORMATION of MFT record ${file.number}`, `it holds ${value.length} bytes, fewer than 36`);
  return { mtime: fileTimeMs(value, 0x08), atime: fileTimeMs(value, 0x18), attributes: value.readUInt32LE(0x20) };
}

/** A listed node for an entry whose MFT record is damaged: the name's own copy of times and size, marked unreadable. */
function nodeFromIndexKey(entry: IndexEntry, problem: string): FsNode {
  const key = entry.key;
  const attributes = key.readUInt32LE(0x38);
  const isDirectory = (attributes & FILE_NAME_DIRECTORY) !== 0;
  return {
    id: String(entry.record),
    type: isDirectory ? "dir" : "file",
    size: isDirectory ? 0 : toSafeNumber(key.readBigUInt64LE(0x30), "index entry"),
    mode: isDirectory ? 0o755 : attributes & FILE_ATTRIBUTE_READONLY ? 0o444 : 0o644,
    mtime: fileTimeMs(key, 0x10),
    atime: fileTimeMs(key, 0x20),
    uid: 0,
    gid: 0,
    nlink: 1,
    unreadable: problem,
  };
}

function readReparsePoint(value: Buffer, number: number): { tag: number; target?: string } {
  const where = `$REPARSE_POINT of MFT record ${number}`;
  if (value.length < 8) throw damaged(where, `it holds ${value.length} bytes, fewer than its 8-byte header`);
  const tag = value.readUInt32LE(0);
  if (tag !== REPARSE_TAG_SYMLINK && tag !== REPARSE_TAG_MOUNT_POINT) return { tag };
  const pathsAt = tag === REPARSE_TAG_SYMLINK ? 20 : 16;
  if (value.length < pathsAt) throw damaged(where, "its link header is cut short");
  const name = (offset: number, length: number): string => {
    if (pathsAt + offset + length > value.length) throw damaged(where, `its name of ${length} bytes at ${offset} lies outside it`);
    return value.toString("utf16le", pathsAt + offset, pathsAt + offset + length);
  };
  const substitute = name(value.readUInt16LE(8), value.readUInt16LE(10));
  const print = name(value.readUInt16LE(12), value.readUInt16LE(14));
  const relative = tag === REPARSE_TAG_SYMLINK && (value.readUInt32LE(16) & SYMLINK_FLAG_RELATIVE) !== 0;
  // A relative link is a path from the link's folder (slashes as Linux shows them); an absolute
  // link or a junction names a Windows path ("C:\Users"), kept as stored.
  if (relative) return { tag, target: (print || substitute).replaceAll("\\", "/") };
  return { tag, target: print || substitute.replace(/^\\\?\?\\/, "") };
}

function residentValue(attribute: Attribute, number: number): Buffer {
  if (!attribute.value) throw damaged(`${attributeName(attribute.type)} of MFT record ${number}`, "it is non-resident, and it must be resident");
  return attribute.value;
}

function unnamed(file: MftFile, type: number): Attribute[] {
  return file.attributes.filter((a) => a.type === type && a.name === "");
}

/** An attribute's content size: its resident value's length or its first segment's data size. */
function sizeOf(segments: Attribute[]): number {
  const first = segments.find((s) => s.value !== undefined || s.nonResident?.firstVcn === 0);
  return first?.value?.length ?? first?.nonResident?.dataSize ?? 0;
}

function attributeName(type: number): string {
  const names: Record<number, string> = { [ATTR_ATTRIBUTE_LIST]: "$ATTRIBUTE_LIST", [ATTR_DATA]: "$DATA", [ATTR_REPARSE_POINT]: "$REPARSE_POINT", [ATTR_INDEX_ALLOCATION]: "$INDEX_ALLOCATION" };
  return names[type] ?? `attribute 0x${type.toString(16)}`;
}

function recordNumberOf(node: FsNode): number {
  const number = Number(node.id);
  if (!/^\d+$/.test(node.id) || !Number.isSafeInteger(number)) throw new UsageError(`"${node.id}" is not an NTFS node of this volume (its id is an MFT record number)`);
  return number;
}

/** A FILETIME as milliseconds since the Unix epoch, rounded down (times before 1970 too). */
function fileTimeMs(bytes: Buffer, at: number): number {
  const ticks = bytes.readBigUInt64LE(at) - FILETIME_UNIX_EPOCH;
  const ms = ticks / 10000n;
  return Number(ticks < 0n && ms * 10000n !== ticks ? ms - 1n : ms);
}

function readLittleEndian(bytes: Buffer, at: number, length: number, signed: boolean): bigint {
  let value = 0n;
  for (let i = length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[at + i]);
  return signed ? BigInt.asIntN(length * 8, value) : value;
}

function readSigned64(bytes: Buffer, at: number, where: string): number {
  return toSafeNumber(bytes.readBigInt64LE(at), where);
}

function readUnsigned64(bytes: Buffer, at: number, where: string): number {
  return toSafeNumber(bytes.readBigUInt64LE(at), where);
}

function toSafeNumber(value: bigint, where: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) throw damaged(where, `it holds the value ${value}, beyond any volume`);
  return Number(value);
}
