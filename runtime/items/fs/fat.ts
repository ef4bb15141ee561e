/**
 * FAT12, FAT16 and FAT32 volumes (EFI system partitions, USB-style data disks), read-only from
 * their bytes: the boot sector's BPB, the file allocation table's cluster chains, directories with
 * their 8.3 short names and VFAT long names, and files' content as runs of whole clusters.
 *
 * Sources:
 * - Microsoft, "Microsoft Extensible Firmware Initiative FAT32 File System Specification, FAT:
 *   General Overview of On-Disk Format", version 1.03 (fatgen103): the BPB fields and offsets
 *   (BPB_BytsPerSec at 11 ... BPB_TotSec32 at 32, then the FAT12/16 or the FAT32 extension), "FAT
 *   Type Determination" (the type is decided by the count of clusters alone: < 4085 is FAT12,
 *   < 65525 FAT16, else FAT32; never by BS_FilSysType), the FAT entry layouts (12-bit entries
 *   packed in pairs, the top 4 bits of a FAT32 entry reserved), the end-of-chain and bad-cluster
 *   values, BPB_ExtFlags (bit 7: only the FAT numbered in bits 0-3 is active), "FAT Directory
 *   Structure" (32-byte entries, 0xE5 free, 0x00 free and none after it, 0x05 standing for a first
 *   byte of 0xE5, attributes, DIR_FstClusHI only on FAT32, the date and time fields at 2-second
 *   resolution, the last access date without a time, at most 65,536 entries in a directory) and
 *   "Long Directory Entries" (LDIR_Ord with 0x40 on the last, 13 UCS-2 characters at 1, 14 and 28,
 *   LDIR_Chksum computed over the 11 bytes of the short name, a name ending in 0x0000 then padded
 *   with 0xFFFF; a long name whose checksum or order does not match is an orphan and not used).
 * - Linux, fs/fat/ (what Linux's vfat driver shows, which is what the listing reproduces):
 *   dir.c (bit 0x08 of byte 12 shows the base of a short name in lower case, 0x10 its extension;
 *   a long name whose checksum does not match falls back to the short name), inode.c (0755 for
 *   folders and 0644 for files under the usual umask 022, no write bits on a read-only file,
 *   times of the root folder at the epoch), misc.c (fat_time_fat2unix: the date and time fields
 *   read as a calendar time, a month or day of 0 read as 1), and codepage 437, the default, for
 *   the bytes of short names.
 * Times are stored in local time with no zone; they are read as UTC, as Linux does with tz=UTC.
 */
import { IntegrityError, UsageError } from "../../errors.ts";
import type { RandomAccess } from "../block-reader.ts";
import { MAX_RUN_BYTES, type DirEntry, type FileRun, type FileSystem, type FileSystemFormat, type FsNode } from "./types.ts";

type FatKind = "FAT12" | "FAT16" | "FAT32";

interface Geometry {
  kind: FatKind;
  clusterBytes: number;
  /** The active FAT: where it starts and how many bytes it holds. */
  fatOffset: number;
  fatBytes: number;
  /** FAT12/16: the fixed root directory region. */
  rootDirOffset: number;
  rootDirBytes: number;
  /** FAT32: the root directory's first cluster. */
  rootCluster: number;
  dataOffset: number;
  clusterCount: number;
  /** The label in the boot sector ("" when none). */
  bootLabel: string;
}

const ENTRY_BYTES = 32;
/** fatgen103: a directory holds at most 65,536 entries. */
const MAX_DIR_BYTES = 65536 * ENTRY_BYTES;
const ATTR_READ_ONLY = 0x01;
const ATTR_VOLUME_ID = 0x08;
const ATTR_DIRECTORY = 0x10;
const ATTR_LONG_NAME = 0x0f;
const LAST_LONG_ENTRY = 0x40;
/** 20 long entries of 13 characters hold the longest name (255). */
const MAX_LONG_ENTRIES = 20;
const CASE_LOWER_BASE = 0x08;
const CASE_LOWER_EXT = 0x10;
const END_OF_CHAIN: Record<FatKind, number> = { FAT12: 0xff8, FAT16: 0xfff8, FAT32: 0x0ffffff8 };
/** FAT pages kept: a page of 4 KiB holds 1024 FAT32 entries, so 64 pages follow chains over 256 MiB of 4 KiB clusters. */
const FAT_PAGE_BYTES = 4096;
const FAT_PAGES_CACHED = 64;
const ROOT_ID = "root";
const NO_LABEL = "NO NAME";
/** Bytes 0x80-0xFF of codepage 437, which Linux's vfat uses for short names by default. */
const CP437_HIGH =
  "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0";

export const fatFormat: FileSystemFormat = {
  name: "vfat",
  probe(head: Buffer): boolean {
    return head.length >= 512 && bootSectorProblem(head) === undefined;
  },
  async open(volume: RandomAccess): Promise<FileSystem> {
    const boot = await volume.read(0, Math.min(512, volume.size));
    return FatVolume.open(volume, readGeometry(boot, volume.size));
  },
};

/** Why these bytes are not a FAT boot sector, or undefined when they are one. */
function bootSectorProblem(boot: Buffer): string | undefined {
  if (boot.length < 512) return "it is shorter than a sector";
  if (boot.readUInt16LE(510) !== 0xaa55) return "it does not end in the signature 0xAA55";
  // fatgen103: BS_jmpBoot is a short jump (EB xx 90) or a near jump (E9 xx xx).
  if (!(boot[0] === 0xeb && boot[2] === 0x90) && boot[0] !== 0xe9) return "it does not start with a jump instruction";
  const bytesPerSector = boot.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) return `its sector size ${bytesPerSector} is not 512, 1024, 2048 or 4096`;
  const sectorsPerCluster = boot[13];
  if (sectorsPerCluster === 0 || (sectorsPerCluster & (sectorsPerCluster - 1)) !== 0) return `its sectors per cluster ${sectorsPerCluster} is not a power of 2`;
  if (boot.readUInt16LE(14) === 0) return "it has no reserved sectors";
  if (boot[16] === 0) return "it has no FAT";
  if (boot.readUInt16LE(19) === 0 && boot.readUInt32LE(32) === 0) return "its volume has no sectors";
  if (boot.readUInt16LE(22) === 0 && boot.readUInt32LE(36) === 0) return "its FAT has no sectors";
  return undefined;
}

function readGeometry(boot: Buffer, volumeBytes: number): Geometry {
  const problem = bootSectorProblem(boot);
  if (problem) throw new IntegrityError(`the FAT boot sector at byte 0 of the volume is damaged: ${problem}`);
  const bytesPerSector = boot.readUInt16LE(11);
  const sectorsPerCluster = boot[13];
  const reservedSectors = boot.readUInt16LE(14);
  const fatCount = boot[16];
  const rootEntries = boot.readUInt16LE(17);
  const totalSectors = boot.readUInt16LE(19) || boot.readUInt32LE(32);
  const fatSectors = boot.readUInt16LE(22) || boot.readUInt32LE(36);
  const rootDirSectors = Math.ceil((rootEntries * ENTRY_BYTES) / bytesPerSector);
  const dataSector = reservedSectors + fatCount * fatSectors + rootDirSectors;
  if (dataSector >= totalSectors) {
    throw new IntegrityError(`the FAT boot sector is damaged: its FATs and root folder (${dataSector} sectors) fill the whole volume of ${totalSectors} sectors`);
  }
  if (totalSectors * bytesPerSector > volumeBytes) {
    throw new IntegrityError(`the FAT boot sector describes ${totalSectors * bytesPerSector} bytes, but the volume holds ${volumeBytes}: the volume is cut short or its boot sector is damaged`);
  }
  const clusterCount = Math.floor((totalSectors - dataSector) / sectorsPerCluster);
  const kind: FatKind = clusterCount < 4085 ? "FAT12" : clusterCount < 65525 ? "FAT16" : "FAT32";
  if (kind === "FAT32" && rootEntries !== 0) throw new IntegrityError(`the FAT32 boot sector is damaged: it gives a fixed root folder of ${rootEntries} entries, which FAT32 does not have`);
  if (kind !== "FAT32" && rootEntries === 0) throw new IntegrityError(`the ${kind} boot sector is damaged: its root folder has no entries`);
  const fatBytes = fatSectors * bytesPerSector;
  const entryBits = kind === "FAT12" ? 12 : kind === "FAT16" ? 16 : 32;
  if (Math.ceil(((clusterCount + 2) * entryBits) / 8) > fatBytes) {
    throw new IntegrityError(`the ${kind} boot sector is damaged: its FAT of ${fatBytes} bytes cannot hold entries for ${clusterCount} clusters`);
  }
  // BPB_ExtFlags bit 7: FAT mirroring is off and only the FAT numbered in bits 0-3 is in use.
  const extFlags = kind === "FAT32" ? boot.readUInt16LE(40) : 0;
  const activeFat = extFlags & 0x80 ? extFlags & 0x0f : 0;
  if (activeFat >= fatCount) throw new IntegrityError(`the FAT32 boot sector is damaged: its active FAT is number ${activeFat} of ${fatCount}`);
  const labelAt = kind === "FAT32" ? 71 : 43;
  // The label is there only when the extended boot signature 0x29 is.
  const hasLabel = boot[labelAt - 28] === 0x29;
  return {
    kind,
    clusterBytes: sectorsPerCluster * bytesPerSector,
    fatOffset: (reservedSectors + activeFat * fatSectors) * bytesPerSector,
    fatBytes,
    rootDirOffset: (reservedSectors + fatCount * fatSectors) * bytesPerSector,
    rootDirBytes: rootEntries * ENTRY_BYTES,
    rootCluster: kind === "FAT32" ? boot.readUInt32LE(44) : 0,
    dataOffset: dataSector * bytesPerSector,
    clusterCount,
    bootLabel: hasLabel ? labelText(boot.subarray(labelAt, labelAt + 11)) : "",
  };
}

/** A short name's or a label's bytes as text: codepage 437 above 0x7F, trailing spaces dropped. */
function cp437(bytes: Buffer): string {
  let text = "";
  for (const byte of bytes) text += byte < 0x80 ? String.fromCharCode(byte) : CP437_HIGH[byte - 0x80];
  return text.replace(/ +$/, "");
}

function labelText(bytes: Buffer): string {
  const label = cp437(bytes);
  return label === NO_LABEL ? "" : label;
}

class FatVolume implements FileSystem {
  readonly filesystem = "vfat";
  private labelFound = "";
  private readonly volume: RandomAccess;
  private readonly geometry: Geometry;
  private readonly fat: FatTable;
  private readonly rootNode: FsNode;

  constructor(volume: RandomAccess, geometry: Geometry) {
    this.volume = volume;
    this.geometry = geometry;
    this.fat = new FatTable(volume, geometry);
    this.rootNode = { id: ROOT_ID, type: "dir", size: 0, mode: 0o755, mtime: 0, atime: 0, uid: 0, gid: 0, nlink: 1 };
  }

  /** Opens the volume: its label is the root folder's volume-label entry, else the boot sector's. */
  static async open(volume: RandomAccess, geometry: Geometry): Promise<FatVolume> {
    const fat = new FatVolume(volume, geometry);
    const { labelEntry } = await fat.entries(fat.rootNode);
    fat.labelFound = labelEntry ?? geometry.bootLabel;
    return fat;
  }

  get label(): string {
    return this.labelFound;
  }

  async root(): Promise<FsNode> {
    return this.rootNode;
  }

  async list(dir: FsNode): Promise<DirEntry[]> {
    if (dir.type !== "dir") throw new UsageError(`cannot list ${dir.id}: it is a ${dir.type}, not a folder`);
    return (await this.entries(dir)).found;
  }

  async *read(file: FsNode): AsyncIterable<FileRun> {
    if (file.type !== "file") throw new UsageError(`cannot read ${file.id} as a file: it is a ${file.type}`);
    if (file.size === 0) return;
    const { clusterBytes } = this.geometry;
    const first = (await this.entryAt(file.id)).firstCluster;
    const clusters = Math.ceil(file.size / clusterBytes);
    let offset = 0;
    for await (const run of this.fat.chain(first, { exactly: clusters, what: `the file at ${file.id}` })) {
      const runEnd = Math.min(file.size, offset + run.count * clusterBytes);
      let at = this.clusterOffset(run.first);
      while (offset < runEnd) {
        const length = Math.min(MAX_RUN_BYTES, runEnd - offset);
        yield { offset, length, hole: false, data: await this.volume.read(at, length) };
        offset += length;
        at += length;
      }
    }
  }

  /** Re-reads a node's short entry (its id is the entry's byte offset) for its first cluster. */
  private async entryAt(id: string): Promise<{ firstCluster: number }> {
    const at = Number(id);
    if (!Number.isSafeInteger(at) || at < 0 || at % ENTRY_BYTES !== 0 || at + ENTRY_BYTES > this.volume.size) {
      throw new UsageError(`${id} is not a node of this FAT volume: a node's id is the byte offset of its directory entry`);
    }
    return { firstCluster: this.firstCluster(await this.volume.read(at, ENTRY_BYTES)) };
  }

  private firstCluster(entry: Buffer): number {
    // DIR_FstClusHI is used only on FAT32 (FAT12/16 keep 0 there, OS/2 kept other things).
    const high = this.geometry.kind === "FAT32" ? entry.readUInt16LE(20) : 0;
    return high * 0x10000 + entry.readUInt16LE(26);
  }

  private clusterOffset(cluster: number): number {
    return this.geometry.dataOffset + (cluster - 2) * this.geometry.clusterBytes;
  }

  /** A folder's entries and, for the root, its volume label entry. */
  private async entries(dir: FsNode): Promise<{ found: DirEntry[]; labelEntry?: string }> {
    const parser = new DirectoryParser();
    for await (const { bytes, offset } of this.directoryBytes(dir)) {
      if (!parser.add(bytes, offset)) break;
    }
    return parser.result();
  }

  /** The bytes of a folder, a cluster run at a time, each with its offset in the volume. */
  private async *directoryBytes(dir: FsNode): AsyncIterable<{ bytes: Buffer; offset: number }> {
    const { kind, rootDirOffset, rootDirBytes, rootCluster, clusterBytes } = this.geometry;
    if (dir.id === ROOT_ID && kind !== "FAT32") {
      yield { bytes: await this.volume.read(rootDirOffset, rootDirBytes), offset: rootDirOffset };
      return;
    }
    const first = dir.id === ROOT_ID ? rootCluster : (await this.entryAt(dir.id)).firstCluster;
    const what = dir.id === ROOT_ID ? "the root folder" : `the folder at ${dir.id}`;
    const atMost = Math.ceil(MAX_DIR_BYTES / clusterBytes);
    for await (const run of this.fat.chain(first, { atMost, what })) {
      const at = this.clusterOffset(run.first);
      yield { bytes: await this.volume.read(at, run.count * clusterBytes), offset: at };
    }
  }
}

/** Turns a folder's 32-byte entries into named nodes, joining long-name entries to their short entry. */
class DirectoryParser {
  private readonly found: DirEntry[] = [];
  private labelEntry: string | undefined;
  /** The long name being gathered: its UTF-16 pieces by order, the checksum it gives, the order expected next. */
  private long: { pieces: Buffer[]; checksum: number; next: number } | undefined;

  /** Adds entries; false once the end-of-folder entry is seen. */
  add(bytes: Buffer, offset: number): boolean {
    for (let at = 0; at + ENTRY_BYTES <= bytes.length; at += ENTRY_BYTES) {
      const entry = bytes.subarray(at, at + ENTRY_BYTES);
      if (entry[0] === 0x00) return false;
      this.addEntry(entry, offset + at);
    }
    return true;
  }

  result(): { found: DirEntry[]; labelEntry?: string } {
    return { found: this.found, labelEntry: this.labelEntry };
  }

  private addEntry(entry: Buffer, offset: number): void {
    const attributes = entry[11];
    if (entry[0] === 0xe5) {
      this.long = undefined;
      return;
    }
    if ((attributes & 0x3f) === ATTR_LONG_NAME) {
      this.addLongPiece(entry);
      return;
    }
    const long = this.long;
    this.long = undefined;
    if (attributes & ATTR_VOLUME_ID) {
      this.labelEntry ??= labelText(entry.subarray(0, 11));
      return;
    }
    const shortName = entry.subarray(0, 11);
    if (shortName.toString("latin1") === ".          " || shortName.toString("latin1") === "..         ") return;
    const matched = long && long.next === 0 && long.checksum === shortNameChecksum(shortName) ? longName(long.pieces) : undefined;
    // A long name no FAT tool writes (a "/", "..") could lead a restore out of its folder: the short name stands.
    const name = matched !== undefined && isSafeName(matched) ? matched : displayedShortName(entry);
    if (!isSafeName(name)) throw new IntegrityError(`the folder entry at byte ${offset} of the volume is damaged: its name ${JSON.stringify(name)} cannot be a FAT name`);
    this.found.push({ name, node: nodeOf(entry, offset) });
  }

  private addLongPiece(entry: Buffer): void {
    const order = entry[0] & ~LAST_LONG_ENTRY;
    const checksum = entry[13];
    const chars = Buffer.concat([entry.subarray(1, 11), entry.subarray(14, 26), entry.subarray(28, 32)]);
    if (entry[0] & LAST_LONG_ENTRY) {
      if (order === 0 || order > MAX_LONG_ENTRIES) {
        this.long = undefined;
        return;
      }
      this.long = { pieces: [], checksum, next: order - 1 };
      this.long.pieces[order - 1] = chars;
      return;
    }
    // A piece out of order or of another name: the gathered name is an orphan.
    if (!this.long || order !== this.long.next || order === 0 || checksum !== this.long.checksum) {
      this.long = undefined;
      return;
    }
    this.long.pieces[order - 1] = chars;
    this.long.next = order - 1;
  }
}

function isSafeName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !/[/\\\0]/.test(name);
}

/** fatgen103's ChkSum over the 11 bytes of a short name. */
function shortNameChecksum(shortName: Buffer): number {
  let sum = 0;
  for (const byte of shortName) sum = (((sum & 1) << 7) + (sum >> 1) + byte) & 0xff;
  return sum;
}

function longName(pieces: Buffer[]): string {
  const units = Buffer.concat(pieces);
  let end = 0;
  while (end + 1 < units.length && units.readUInt16LE(end) !== 0) end += 2;
  return units.subarray(0, end).toString("utf16le");
}

/** The short name as Linux shows it: base and extension, each lower-cased when its case bit says so. */
function displayedShortName(entry: Buffer): string {
  const raw = Buffer.from(entry.subarray(0, 11));
  if (raw[0] === 0x05) raw[0] = 0xe5;
  let base = cp437(raw.subarray(0, 8));
  let extension = cp437(raw.subarray(8, 11));
  if (entry[12] & CASE_LOWER_BASE) base = base.toLowerCase();
  if (entry[12] & CASE_LOWER_EXT) extension = extension.toLowerCase();
  return extension ? `${base}.${extension}` : base;
}

function nodeOf(entry: Buffer, offset: number): FsNode {
  const attributes = entry[11];
  const isDir = (attributes & ATTR_DIRECTORY) !== 0;
  const mtime = fatTime(entry.readUInt16LE(24), entry.readUInt16LE(22));
  return {
    id: String(offset),
    type: isDir ? "dir" : "file",
    size: isDir ? 0 : entry.readUInt32LE(28),
    // Linux drops the write bits of a read-only file; a folder's read-only bit is not applied.
    mode: isDir ? 0o755 : attributes & ATTR_READ_ONLY ? 0o444 : 0o644,
    mtime,
    atime: fatTime(entry.readUInt16LE(18), 0),
    uid: 0,
    gid: 0,
    nlink: 1,
  };
}

/** A FAT date (day 0-4, month 5-8, years since 1980 9-15) and time (2-second units 0-4, minutes 5-10, hours 11-15), read as UTC. */
function fatTime(date: number, time: number): number {
  const year = 1980 + (date >> 9);
  const month = Math.max(1, (date >> 5) & 0x0f);
  const day = Math.max(1, date & 0x1f);
  return Date.UTC(year, month - 1, day, time >> 11, (time >> 5) & 0x3f, (time & 0x1f) * 2);
}

interface ClusterRun {
  first: number;
  count: number;
}

type ChainLength = { exactly: number; what: string } | { atMost: number; what: string };

/** The active FAT, read a page at a time with the most recent pages kept. */
class FatTable {
  private readonly volume: RandomAccess;
  private readonly geometry: Geometry;
  private readonly pages = new Map<number, Buffer>();

  constructor(volume: RandomAccess, geometry: Geometry) {
    this.volume = volume;
    this.geometry = geometry;
  }

  /**
   * A chain's clusters from `first`, as runs of consecutive clusters. A file's chain has exactly
   * the clusters its size needs and ends there; a folder's ends at an end-of-chain mark within
   * `atMost` clusters. Either way the walk is bounded, so a chain made into a loop ends as damage.
   */
  async *chain(first: number, length: ChainLength): AsyncIterable<ClusterRun> {
    const { clusterCount, kind } = this.geometry;
    const limit = "exactly" in length ? length.exactly : Math.min(length.atMost, clusterCount);
    if ("exactly" in length && length.exactly > clusterCount) {
      throw new IntegrityError(`${length.what} is damaged: it says it needs ${length.exactly} clusters, but the ${kind} volume has ${clusterCount}`);
    }
    this.checkCluster(first, length.what, "starts at");
    let run: ClusterRun = { first, count: 1 };
    let cluster = first;
    for (let walked = 1; ; walked++) {
      const next = await this.entry(cluster);
      const ended = next >= END_OF_CHAIN[kind];
      if ("exactly" in length && walked === length.exactly) {
        if (!ended) {
          throw new IntegrityError(
            `${length.what} is damaged: its FAT chain goes on past the ${length.exactly} clusters its size needs (at cluster ${cluster}, the FAT gives ${next}), so it loops or is cross-linked`,
          );
        }
        break;
      }
      if (ended) {
        if ("exactly" in length) throw new IntegrityError(`${length.what} is damaged: its FAT chain ends after ${walked} clusters, but its size needs ${length.exactly}`);
        break;
      }
      if (walked >= limit) throw new IntegrityError(`${length.what} is damaged: its FAT chain goes on past ${limit} clusters (more than a folder may hold), so it loops`);
      this.checkCluster(next, length.what, `goes from cluster ${cluster} to`);
      if (next === run.first + run.count) {
        run.count++;
      } else {
        yield run;
        run = { first: next, count: 1 };
      }
      cluster = next;
    }
    yield run;
  }

  private checkCluster(cluster: number, what: string, how: string): void {
    const { clusterCount, kind } = this.geometry;
    if (cluster < 2 || cluster >= clusterCount + 2) {
      throw new IntegrityError(`${what} is damaged: its FAT chain ${how} cluster ${cluster}, outside the ${kind} volume's clusters 2-${clusterCount + 1}`);
    }
  }

  private async entry(cluster: number): Promise<number> {
    switch (this.geometry.kind) {
      case "FAT12": {
        const at = cluster + (cluster >> 1);
        const pair = (await this.byte(at)) | ((await this.byte(at + 1)) << 8);
        return cluster & 1 ? pair >> 4 : pair & 0x0fff;
      }
      case "FAT16": {
        // 16- and 32-bit entries are aligned, so one never spans two pages.
        const page = await this.page(Math.floor((cluster * 2) / FAT_PAGE_BYTES));
        return page.readUInt16LE((cluster * 2) % FAT_PAGE_BYTES);
      }
      case "FAT32": {
        const page = await this.page(Math.floor((cluster * 4) / FAT_PAGE_BYTES));
        // The top 4 bits of a FAT32 entry are reserved.
        return page.readUInt32LE((cluster * 4) % FAT_PAGE_BYTES) & 0x0fffffff;
      }
    }
  }

  private async byte(at: number): Promise<number> {
    const page = await this.page(Math.floor(at / FAT_PAGE_BYTES));
    return page[at % FAT_PAGE_BYTES];
  }

  private async page(index: number): Promise<Buffer> {
    const cached = this.pages.get(index);
    if (cached) {
      this.pages.delete(index);
      this.pages.set(index, cached);
      return cached;
    }
    const start = index * FAT_PAGE_BYTES;
    const bytes = await this.volume.read(this.geometry.fatOffset + start, Math.min(FAT_PAGE_BYTES, this.geometry.fatBytes - start));
    this.pages.set(index, bytes);
    if (this.pages.size > FAT_PAGES_CACHED) this.pages.delete(this.pages.keys().next().value!);
    return bytes;
  }
}
