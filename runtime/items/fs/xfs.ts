/**
 * XFS v5 (the CRC-enabled format mkfs.xfs has made by default since xfsprogs 3.2.3), read from a
 * volume's bytes: the superblock; inodes (dinode v3) found from their numbers; data forks in local,
 * extents and btree format (a bmbt root in the inode over long-format "BMA3" blocks); directories
 * short-form, single-block ("XDB3") and multi-block ("XDD3" data blocks, whatever leaf or node
 * blocks index them: only the data blocks below the leaf offset are read, in logical order);
 * symlinks inline and remote ("XSLM" blocks); sparse files (unmapped ranges and unwritten extents
 * are holes). Every CRC on the path is checked (CRC32C), as is each block's owner and each inode's
 * own number, so a stray block or inode is damage, not a wrong answer.
 *
 * Not read: XFS v4 (no CRCs: refused, it says so); the realtime device (a file whose data is there
 * is unreadable, and says so); extended attributes; the journal, which is not replayed, so a
 * volume snapshotted while mounted reads as of its last write-back; filesystems with incompatible
 * features other than those named in INCOMPAT_READ (refused by name). Names and symlink targets
 * are decoded as UTF-8 (bytes that are not UTF-8 become U+FFFD).
 *
 * Sources:
 * - "XFS Algorithms & Data Structures" (xfs-documentation, design/XFS_Filesystem_Structure/):
 *   allocation_groups.asciidoc (superblock fields, inode numbers as AG | block in AG | inode in
 *   block by sb_agblklog and sb_inopblog), ondisk_inode.asciidoc (the v3 inode core of 176 bytes,
 *   di_forkoff in 8-byte units, timestamps incl. bigtime), data_extents.asciidoc (the packed
 *   128-bit extent record: flag 1 bit, startoff 54, startblock 52, blockcount 21; the bmbt root
 *   and the long-format btree block with its 72-byte v5 header), directories.asciidoc (short-form,
 *   block, leaf and node directories; data entries and unused regions; the leaf at 32 GiB),
 *   symbolic_links.asciidoc (the XSLM remote header), metadata_integrity.asciidoc (CRC32C,
 *   owner and uuid in each v5 header).
 * - The kernel's on-disk definitions, to check field offsets and bits: fs/xfs/libxfs/xfs_format.h
 *   (struct xfs_dsb, struct xfs_dinode incl. di_big_nextents with XFS_DIFLAG2_NREXT64,
 *   XFS_SB_FEAT_INCOMPAT_*, XFS_DIFLAG2_BIGTIME and the bigtime epoch of -2^31 s),
 *   xfs_da_format.h (xfs_dir3_data_hdr, xfs_dir2_sf_hdr/entry, XFS_DIR2_LEAF_OFFSET) and
 *   Documentation/filesystems/xfs/ (xfs-self-describing-metadata.rst). Where they differ, the
 *   kernel wins: a short-form header's count is every entry (xfs_dir2_sf_getdents loops to it),
 *   not zero beside i8count as directories.asciidoc says.
 * Checked against filesystems made by mkfs.xfs 6.1 and written by the Linux 6.x driver
 * (test/items/xfs.test.ts).
 */
import { IntegrityError } from "../../errors.ts";
import type { RandomAccess } from "../block-reader.ts";
import { MAX_RUN_BYTES, UnreadableItemError, type DirEntry, type FileRun, type FileSystem, type FileSystemFormat, type FsNode } from "./types.ts";
import { BlockCache } from "./block-cache.ts";
import { nodeTypeOfMode, S_IFDIR, S_IFMT, S_IFREG } from "./posix-mode.ts";

const SB_MAGIC = 0x58465342; // "XFSB"
const INODE_MAGIC = 0x494e; // "IN"
const BMBT_MAGIC = 0x424d4133; // "BMA3"
const DIR_BLOCK_MAGIC = 0x58444233; // "XDB3": a directory of one block
const DIR_DATA_MAGIC = 0x58444433; // "XDD3": a data block of a larger directory
const SYMLINK_MAGIC = 0x58534c4d; // "XSLM"

/** The v5 superblock's CRC field, and the bytes of it read (the largest sector size). */
const SB_CRC_AT = 224;
const SB_READ_BYTES = 4096;
const INODE_CORE_BYTES = 176;
const INODE_CRC_AT = 100;
const BMBT_HEADER_BYTES = 72;
const BMBT_CRC_AT = 64;
const DIR_HEADER_BYTES = 64;
const DIR_CRC_AT = 4;
const SYMLINK_HEADER_BYTES = 56;
const SYMLINK_CRC_AT = 12;
const EXTENT_RECORD_BYTES = 16;
/** Directory data blocks live below this logical byte offset; the leaf and free blocks above it. */
const DIR_LEAF_OFFSET = 32 * 1024 ** 3;
/** Linux's PATH_MAX: XFS refuses longer symlink targets (XFS_SYMLINK_MAXLEN). */
const SYMLINK_MAX_BYTES = 1024;
/** Bounds a bmbt descent: each level down must be one less, so this bounds the walk's depth. */
const MAX_BMBT_LEVELS = 16;
/** Metadata blocks (inode clusters, bmbt blocks) kept for later reads. */
const METADATA_CACHE_BYTES = 4 * 1024 * 1024;
/** Inodes read at once when a directory is listed. */
const INODES_IN_FLIGHT = 16;
/** Seconds between the bigtime epoch (the smallest 32-bit time) and the Unix epoch. */
const BIGTIME_EPOCH_OFFSET_S = 2 ** 31;

const FORMAT_LOCAL = 1;
const FORMAT_EXTENTS = 2;
const FORMAT_BTREE = 3;
const DIFLAG_REALTIME = 0x1;
const DIFLAG2_BIGTIME = 1n << 3n;
const DIFLAG2_NREXT64 = 1n << 4n;


const INCOMPAT_FTYPE = 1 << 0;
/**
 * Incompatible features this reader reads: the directory entry's file type byte, sparse inode
 * chunks (inodes are found from their numbers, never from the chunk records), a metadata uuid
 * (uuids are not compared), bigtime timestamps, 64-bit extent counters, and features that change
 * only what the kernel writes (exchange-range, parent pointers: attributes this reader skips).
 */
const INCOMPAT_READ = new Set([
  INCOMPAT_FTYPE,
  1 << 1, // sparse inode chunks
  1 << 2, // meta_uuid
  1 << 3, // bigtime
  1 << 5, // nrext64
  1 << 6, // exchange-range
  1 << 7, // parent pointers
]);
/** Incompatible features refused by name (any other unknown bit is refused by number). */
const INCOMPAT_REFUSED = new Map<number, string>([
  [1 << 4, "needsrepair (the filesystem was marked as needing xfs_repair)"],
  [1 << 8, "metadir (a metadata directory tree)"],
  [1 << 9, "zoned (the zoned realtime allocator)"],
]);

interface Superblock {
  blockSize: number;
  inodeSize: number;
  inodesPerBlockLog: number;
  agBlocks: number;
  agBlockLog: number;
  agCount: number;
  dataBlocks: number;
  rootIno: bigint;
  label: string;
  dirBlockSize: number;
  hasFtype: boolean;
}

/** One mapping of a fork: `count` blocks at file block `startOff` are at filesystem block `startBlock`. */
interface Extent {
  startOff: number;
  startBlock: number;
  count: number;
  /** Allocated but never written: reads as zeros. */
  unwritten: boolean;
}

interface Inode {
  ino: bigint;
  mode: number;
  format: number;
  uid: number;
  gid: number;
  nlink: number;
  atime: number;
  mtime: number;
  size: number;
  nextents: number;
  flags: number;
  /** The data fork's bytes (the literal area up to the attribute fork). */
  fork: Buffer;
}

export const xfsFormat: FileSystemFormat = {
  name: "xfs",
  probe: (head) => head.length >= 4 && head.readUInt32BE(0) === SB_MAGIC,
  async open(volume) {
    const sb = parseSuperblock(await volume.read(0, Math.min(SB_READ_BYTES, volume.size)), volume.size);
    return new XfsVolume(volume, sb);
  },
};

function damaged(what: string): IntegrityError {
  return new IntegrityError(`XFS: ${what}: the volume is damaged there. Restore the whole disk and run xfs_repair on the copy to recover what it can.`);
}

function parseSuperblock(sector: Buffer, volumeSize: number): Superblock {
  if (sector.length < 512 || sector.readUInt32BE(0) !== SB_MAGIC) throw damaged("the superblock at byte 0 has no XFSB magic");
  const version = sector.readUInt16BE(100) & 0xf;
  if (version === 4) {
    throw new UnreadableItemError("this XFS volume is version 4 (made without metadata CRCs, mkfs.xfs -m crc=0): only XFS v5 is read; restore the whole disk and mount it to get its files");
  }
  if (version !== 5) throw damaged(`the superblock's version is ${version}, not 4 or 5`);
  const sectorSize = sector.readUInt16BE(102);
  if (!isPowerOfTwo(sectorSize) || sectorSize < 512 || sectorSize > SB_READ_BYTES || sectorSize > sector.length) throw damaged(`the superblock's sector size ${sectorSize} is not one XFS uses`);
  checkCrc(sector.subarray(0, sectorSize), SB_CRC_AT, "the superblock at byte 0");
  checkIncompatFeatures(sector.readUInt32BE(216));
  if (sector[126] !== 0) throw damaged("the superblock says mkfs.xfs did not finish (sb_inprogress)");

  const blockSize = sector.readUInt32BE(4);
  const blockLog = sector[120];
  const inodeSize = sector.readUInt16BE(104);
  const inodesPerBlockLog = sector[123];
  const agBlocks = sector.readUInt32BE(84);
  const agBlockLog = sector[124];
  const agCount = sector.readUInt32BE(88);
  const dirBlockSize = blockSize * 2 ** sector[192];
  const dataBlocks = Number(sector.readBigUInt64BE(8));
  const checks: [boolean, string][] = [
    [isPowerOfTwo(blockSize) && blockSize >= 512 && blockSize <= 65536 && 2 ** blockLog === blockSize, `block size ${blockSize} (log ${blockLog})`],
    [isPowerOfTwo(inodeSize) && inodeSize >= 512 && inodeSize <= 2048 && inodeSize <= blockSize, `inode size ${inodeSize} (v5 inodes are 512 to 2048 bytes)`],
    [2 ** inodesPerBlockLog === blockSize / inodeSize, `inodes per block log ${inodesPerBlockLog}`],
    [agBlocks > 0 && agBlockLog < 32 && 2 ** agBlockLog >= agBlocks && 2 ** (agBlockLog - 1) < agBlocks, `AG size ${agBlocks} blocks (log ${agBlockLog})`],
    [agCount > 0 && (agCount - 1) * agBlocks < dataBlocks && dataBlocks <= agCount * agBlocks, `${agCount} AGs of ${agBlocks} blocks for ${dataBlocks} blocks`],
    [dirBlockSize <= 65536, `directory block size ${dirBlockSize}`],
    [dataBlocks * blockSize <= volumeSize, `${dataBlocks} blocks of ${blockSize} bytes, more than the volume's ${volumeSize} bytes`],
  ];
  const failed = checks.find(([ok]) => !ok);
  if (failed) throw damaged(`the superblock's ${failed[1]} cannot be`);
  const labelBytes = sector.subarray(108, 120);
  const nul = labelBytes.indexOf(0);
  return {
    blockSize,
    inodeSize,
    inodesPerBlockLog,
    agBlocks,
    agBlockLog,
    agCount,
    dataBlocks,
    rootIno: sector.readBigUInt64BE(56),
    label: labelBytes.subarray(0, nul < 0 ? labelBytes.length : nul).toString("utf8"),
    dirBlockSize,
    hasFtype: (sector.readUInt32BE(216) & INCOMPAT_FTYPE) !== 0,
  };
}

function checkIncompatFeatures(incompat: number): void {
  const refused: string[] = [];
  for (let bit = 0; bit < 32; bit++) {
    const mask = (1 << bit) >>> 0;
    if ((incompat & mask) === 0 || INCOMPAT_READ.has(mask | 0)) continue;
    refused.push(INCOMPAT_REFUSED.get(mask | 0) ?? `unknown feature bit ${bit}`);
  }
  if (refused.length > 0) {
    throw new UnreadableItemError(`this XFS volume uses incompatible features this reader does not read: ${refused.join(", ")}; restore the whole disk and mount it to get its files`);
  }
}

class XfsVolume implements FileSystem {
  readonly filesystem = "xfs";
  readonly label: string;
  private readonly volume: RandomAccess;
  private readonly sb: Superblock;
  private readonly metadata: BlockCache;

  constructor(volume: RandomAccess, sb: Superblock) {
    this.volume = volume;
    this.sb = sb;
    this.label = sb.label;
    this.metadata = new BlockCache(Math.max(1, Math.floor(METADATA_CACHE_BYTES / sb.blockSize)));
  }

  async root(): Promise<FsNode> {
    const inode = await this.inode(this.sb.rootIno, "the root directory (sb_rootino)");
    if ((inode.mode & S_IFMT) !== S_IFDIR) throw damaged(`the root inode ${inode.ino} is not a directory`);
    return this.node(inode);
  }

  async list(dir: FsNode): Promise<DirEntry[]> {
    const inode = await this.inode(inodeNumber(dir), "a listed directory");
    if ((inode.mode & S_IFMT) !== S_IFDIR) throw new UnreadableItemError(`XFS inode ${inode.ino} is not a directory, so it cannot be listed`);
    const named = inode.format === FORMAT_LOCAL ? shortFormEntries(inode, this.sb.hasFtype) : await this.blockEntries(inode);
    const entries: DirEntry[] = [];
    for (let i = 0; i < named.length; i += INODES_IN_FLIGHT) {
      const batch = named.slice(i, i + INODES_IN_FLIGHT);
      const nodes = await Promise.all(batch.map(async (e) => this.node(await this.inode(e.ino, `"${e.name}" in directory ${inode.ino}`))));
      batch.forEach((e, j) => entries.push({ name: e.name, node: nodes[j] }));
    }
    return entries;
  }

  async *read(file: FsNode): AsyncIterable<FileRun> {
    const inode = await this.inode(inodeNumber(file), "a file being read");
    if ((inode.mode & S_IFMT) !== S_IFREG) throw new UnreadableItemError(`XFS inode ${inode.ino} is not a regular file, so it has no content to read`);
    const unreadable = unreadableReason(inode);
    if (unreadable) throw new UnreadableItemError(`XFS inode ${inode.ino}: ${unreadable}`);
    yield* this.extentRuns(inode);
  }

  /** A file's extents as runs: data read in pieces of at most MAX_RUN_BYTES, holes merged. */
  private async *extentRuns(inode: Inode): AsyncGenerator<FileRun> {
    const { blockSize } = this.sb;
    let position = 0;
    let holeStart: number | undefined;
    for await (const extent of this.extents(inode)) {
      const start = extent.startOff * blockSize;
      if (start >= inode.size) break;
      const end = Math.min(start + extent.count * blockSize, inode.size);
      if (start > position) holeStart ??= position;
      if (extent.unwritten) {
        holeStart ??= start;
      } else {
        if (holeStart !== undefined) yield { offset: holeStart, length: start - holeStart, hole: true };
        holeStart = undefined;
        const disk = this.extentByte(extent, inode);
        for (let at = start; at < end; at += MAX_RUN_BYTES) {
          const length = Math.min(MAX_RUN_BYTES, end - at);
          yield { offset: at, length, hole: false, data: await this.volume.read(disk + (at - start), length) };
        }
      }
      position = end;
    }
    if (position < inode.size) holeStart ??= position;
    if (holeStart !== undefined) yield { offset: holeStart, length: inode.size - holeStart, hole: true };
  }

  private async node(inode: Inode): Promise<FsNode> {
    const kind = nodeTypeOfMode(inode.mode);
    const target = kind === "symlink" ? await this.symlinkTarget(inode) : undefined;
    const unreadable = kind === "file" ? unreadableReason(inode) : undefined;
    return {
      id: inode.ino.toString(),
      type: kind,
      // A symlink's size is its target's length in bytes, as stored.
      size: inode.size,
      mode: inode.mode & 0o7777,
      mtime: inode.mtime,
      atime: inode.atime,
      uid: inode.uid,
      gid: inode.gid,
      nlink: inode.nlink,
      ...(target === undefined ? {} : { target }),
      ...(unreadable === undefined ? {} : { unreadable }),
    };
  }

  /** Reads and checks an inode; `role` says what it was looked up as, for messages. */
  private async inode(ino: bigint, role: string): Promise<Inode> {
    const { sb } = this;
    const agIno = ino & ((1n << BigInt(sb.agBlockLog + sb.inodesPerBlockLog)) - 1n);
    const ag = ino >> BigInt(sb.agBlockLog + sb.inodesPerBlockLog);
    const agBlock = Number(agIno >> BigInt(sb.inodesPerBlockLog));
    const index = Number(agIno & ((1n << BigInt(sb.inodesPerBlockLog)) - 1n));
    if (ag >= BigInt(sb.agCount) || agBlock >= sb.agBlocks) throw damaged(`inode number ${ino} (${role}) is outside the filesystem's ${sb.agCount} AGs`);
    const blockAt = (Number(ag) * sb.agBlocks + agBlock) * sb.blockSize;
    const at = blockAt + index * sb.inodeSize;
    const block = await this.metadataBlock(blockAt);
    const raw = block.subarray(index * sb.inodeSize, (index + 1) * sb.inodeSize);
    const where = `inode ${ino} (${role}, byte ${at})`;
    if (raw.readUInt16BE(0) !== INODE_MAGIC) throw damaged(`${where} has magic 0x${raw.readUInt16BE(0).toString(16)}, not "IN"`);
    if (raw[4] !== 3) throw damaged(`${where} is version ${raw[4]}, not the v3 inode of XFS v5`);
    checkCrc(raw, INODE_CRC_AT, where);
    if (raw.readBigUInt64BE(152) !== ino) throw damaged(`${where} says it is inode ${raw.readBigUInt64BE(152)}`);
    return parseInode(raw, ino, where);
  }

  /** The filesystem block holding byte `at` (an inode cluster, a bmbt block), through the cache. */
  private metadataBlock(at: number): Promise<Buffer> {
    return this.metadata.get(at, () => this.readBlocks(at, this.sb.blockSize));
  }

  private async readBlocks(at: number, length: number): Promise<Buffer> {
    if (at + length > this.volume.size) throw damaged(`a structure at byte ${at} lies past the volume's end (${this.volume.size} bytes)`);
    return this.volume.read(at, length);
  }

  /** A filesystem block number (AG in its high bits) as a byte of the volume, checked to lie in an AG. */
  private fsBlockByte(fsBlock: number, count: number, what: string): number {
    const { sb } = this;
    const ag = Math.floor(fsBlock / 2 ** sb.agBlockLog);
    const agBlock = fsBlock % 2 ** sb.agBlockLog;
    const linear = ag * sb.agBlocks + agBlock;
    // The last AG may be shorter than the others: the filesystem ends at sb_dblocks.
    if (ag >= sb.agCount || agBlock + count > sb.agBlocks || linear + count > sb.dataBlocks) {
      throw damaged(`${what} points at block ${fsBlock} (+${count}), outside the filesystem's AGs`);
    }
    return linear * sb.blockSize;
  }

  private extentByte(extent: Extent, inode: Inode): number {
    return this.fsBlockByte(extent.startBlock, extent.count, `an extent of inode ${inode.ino}`);
  }

  /** The data fork's extents in file order, each checked to start past the one before. */
  private async *extents(inode: Inode): AsyncGenerator<Extent> {
    let next = 0;
    let seen = 0;
    const records = inode.format === FORMAT_EXTENTS ? this.inodeExtents(inode) : inode.format === FORMAT_BTREE ? this.bmbtExtents(inode) : undefined;
    if (!records) throw damaged(`inode ${inode.ino} has data fork format ${inode.format}, which holds no extents`);
    for await (const extent of records) {
      if (++seen > inode.nextents) throw damaged(`inode ${inode.ino}'s block map holds more than the ${inode.nextents} extents its inode counts`);
      if (extent.count === 0 || extent.startOff < next) throw damaged(`inode ${inode.ino}'s extent at file block ${extent.startOff} overlaps or repeats the one before`);
      next = extent.startOff + extent.count;
      yield extent;
    }
  }

  private async *inodeExtents(inode: Inode): AsyncGenerator<Extent> {
    if (inode.nextents * EXTENT_RECORD_BYTES > inode.fork.length) throw damaged(`inode ${inode.ino} counts ${inode.nextents} extents, more than its fork of ${inode.fork.length} bytes holds`);
    for (let i = 0; i < inode.nextents; i++) yield parseExtent(inode.fork, i * EXTENT_RECORD_BYTES, inode);
  }

  /** The extents under the bmbt root in the inode, walked depth first (left to right is file order). */
  private async *bmbtExtents(inode: Inode): AsyncGenerator<Extent> {
    const { fork } = inode;
    const level = fork.readUInt16BE(0);
    const records = fork.readUInt16BE(2);
    const maxRecords = Math.floor((fork.length - 4) / 16);
    if (level < 1 || level > MAX_BMBT_LEVELS || records < 1 || records > maxRecords) throw damaged(`inode ${inode.ino}'s bmbt root says level ${level} with ${records} records`);
    for (let i = 0; i < records; i++) {
      yield* this.bmbtBlock(readSafeUInt64(fork, 4 + maxRecords * 8 + i * 8, `inode ${inode.ino}'s bmbt root`), level - 1, inode);
    }
  }

  private async *bmbtBlock(fsBlock: number, level: number, inode: Inode): AsyncGenerator<Extent> {
    const at = this.fsBlockByte(fsBlock, 1, `inode ${inode.ino}'s bmbt`);
    const block = await this.metadataBlock(at);
    const where = `bmbt block ${fsBlock} of inode ${inode.ino} (byte ${at})`;
    if (block.readUInt32BE(0) !== BMBT_MAGIC) throw damaged(`${where} has no BMA3 magic`);
    checkCrc(block, BMBT_CRC_AT, where);
    const records = block.readUInt16BE(6);
    const maxRecords = Math.floor((block.length - BMBT_HEADER_BYTES) / 16);
    if (block.readUInt16BE(4) !== level || records < 1 || records > maxRecords) throw damaged(`${where} says level ${block.readUInt16BE(4)} with ${records} records where level ${level} was due`);
    if (block.readBigUInt64BE(56) !== inode.ino) throw damaged(`${where} belongs to inode ${block.readBigUInt64BE(56)}`);
    for (let i = 0; i < records; i++) {
      if (level === 0) {
        yield parseExtent(block, BMBT_HEADER_BYTES + i * EXTENT_RECORD_BYTES, inode);
      } else {
        yield* this.bmbtBlock(readSafeUInt64(block, BMBT_HEADER_BYTES + maxRecords * 8 + i * 8, where), level - 1, inode);
      }
    }
  }

  /** The entries of a block, leaf or node directory, from its data blocks in logical order. */
  private async blockEntries(inode: Inode): Promise<NamedIno[]> {
    const entries: NamedIno[] = [];
    for await (const { logical, bytes } of this.directoryDataBlocks(inode)) {
      entries.push(...dataBlockEntries(bytes, this.sb.hasFtype, `directory block at ${logical} of directory inode ${inode.ino}`, inode.ino));
    }
    return entries;
  }

  /** Each directory block below the leaf offset, assembled from its filesystem blocks. */
  private async *directoryDataBlocks(inode: Inode): AsyncGenerator<{ logical: number; bytes: Buffer }> {
    const { blockSize, dirBlockSize } = this.sb;
    const blocksPerDirBlock = dirBlockSize / blockSize;
    const leafBlock = DIR_LEAF_OFFSET / blockSize;
    let parts: Buffer[] = [];
    let partsFrom = -1;
    for await (const extent of this.extents(inode)) {
      if (extent.startOff >= leafBlock) break;
      if (extent.unwritten) throw damaged(`directory inode ${inode.ino} has an unwritten extent at file block ${extent.startOff}`);
      const disk = this.extentByte(extent, inode);
      const end = Math.min(extent.startOff + extent.count, leafBlock);
      for (let block = extent.startOff; block < end; block++) {
        const first = block - (block % blocksPerDirBlock);
        if (partsFrom !== first) {
          if (parts.length > 0 || block !== first) throw damaged(`directory block at ${first} of directory inode ${inode.ino} is only partly mapped`);
          partsFrom = first;
        }
        // A directory block is usually one filesystem block; larger ones may span extents.
        parts.push(await this.readBlocks(disk + (block - extent.startOff) * blockSize, blockSize));
        if (parts.length === blocksPerDirBlock) {
          yield { logical: first, bytes: parts.length === 1 ? parts[0] : Buffer.concat(parts) };
          parts = [];
          partsFrom = -1;
        }
      }
    }
    if (parts.length > 0) throw damaged(`directory block at ${partsFrom} of directory inode ${inode.ino} is only partly mapped`);
  }

  private async symlinkTarget(inode: Inode): Promise<string> {
    if (inode.size < 1 || inode.size > SYMLINK_MAX_BYTES) throw damaged(`symlink inode ${inode.ino} says its target is ${inode.size} bytes`);
    if (inode.format === FORMAT_LOCAL) {
      if (inode.size > inode.fork.length) throw damaged(`symlink inode ${inode.ino}'s target of ${inode.size} bytes is longer than its fork`);
      return inode.fork.subarray(0, inode.size).toString("utf8");
    }
    const pieces: Buffer[] = [];
    let length = 0;
    for await (const extent of this.extents(inode)) {
      const disk = this.extentByte(extent, inode);
      for (let i = 0; i < extent.count && length < inode.size; i++) {
        const at = disk + i * this.sb.blockSize;
        const block = await this.readBlocks(at, this.sb.blockSize);
        const where = `symlink block of inode ${inode.ino} (byte ${at})`;
        if (block.readUInt32BE(0) !== SYMLINK_MAGIC) throw damaged(`${where} has no XSLM magic`);
        checkCrc(block, SYMLINK_CRC_AT, where);
        const offset = block.readUInt32BE(4);
        const bytes = block.readUInt32BE(8);
        if (block.readBigUInt64BE(32) !== inode.ino || offset !== length || bytes > block.length - SYMLINK_HEADER_BYTES || length + bytes > inode.size) {
          throw damaged(`${where} holds ${bytes} bytes at target offset ${offset} for inode ${block.readBigUInt64BE(32)}`);
        }
        pieces.push(block.subarray(SYMLINK_HEADER_BYTES, SYMLINK_HEADER_BYTES + bytes));
        length += bytes;
      }
    }
    if (length !== inode.size) throw damaged(`symlink inode ${inode.ino}'s blocks hold ${length} of its ${inode.size} target bytes`);
    return Buffer.concat(pieces).toString("utf8");
  }
}

interface NamedIno {
  name: string;
  ino: bigint;
}

function parseInode(raw: Buffer, ino: bigint, where: string): Inode {
  const flags2 = raw.readBigUInt64BE(120);
  const bigtime = (flags2 & DIFLAG2_BIGTIME) !== 0n;
  const nextents = (flags2 & DIFLAG2_NREXT64) !== 0n ? readSafeUInt64(raw, 24, where) : raw.readUInt32BE(76);
  const forkOffset = raw[82] * 8;
  const literalBytes = raw.length - INODE_CORE_BYTES;
  if (forkOffset > literalBytes) throw damaged(`${where} puts its attribute fork at ${forkOffset}, past its ${literalBytes}-byte literal area`);
  const size = raw.readBigInt64BE(56);
  if (size < 0n || size > BigInt(Number.MAX_SAFE_INTEGER)) throw damaged(`${where} says its size is ${size} bytes`);
  return {
    ino,
    mode: raw.readUInt16BE(2),
    format: raw[5],
    uid: raw.readUInt32BE(8),
    gid: raw.readUInt32BE(12),
    nlink: raw.readUInt32BE(16),
    atime: timestampMs(raw, 32, bigtime),
    mtime: timestampMs(raw, 40, bigtime),
    size: Number(size),
    nextents,
    flags: raw.readUInt16BE(90),
    fork: raw.subarray(INODE_CORE_BYTES, INODE_CORE_BYTES + (forkOffset || literalBytes)),
  };
}

/** A timestamp as Unix milliseconds: bigtime is nanoseconds since -2^31 s, else seconds and nanoseconds. */
function timestampMs(raw: Buffer, at: number, bigtime: boolean): number {
  if (bigtime) return Number(raw.readBigUInt64BE(at) / 1_000_000n) - BIGTIME_EPOCH_OFFSET_S * 1000;
  return raw.readInt32BE(at) * 1000 + Math.floor(raw.readUInt32BE(at + 4) / 1_000_000);
}

/** A packed extent record: flag (1 bit), startoff (54), startblock (52), blockcount (21). */
function parseExtent(bytes: Buffer, at: number, inode: Inode): Extent {
  const high = bytes.readBigUInt64BE(at);
  const low = bytes.readBigUInt64BE(at + 8);
  const startOff = (high >> 9n) & ((1n << 54n) - 1n);
  const startBlock = ((high & 0x1ffn) << 43n) | (low >> 21n);
  if (startOff > BigInt(Number.MAX_SAFE_INTEGER) || startBlock > BigInt(Number.MAX_SAFE_INTEGER)) throw damaged(`an extent of inode ${inode.ino} is at file block ${startOff}, disk block ${startBlock}`);
  return { startOff: Number(startOff), startBlock: Number(startBlock), count: Number(low & 0x1fffffn), unwritten: high >> 63n === 1n };
}

function readSafeUInt64(bytes: Buffer, at: number, where: string): number {
  const value = bytes.readBigUInt64BE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw damaged(`${where} holds ${value} at byte ${at}`);
  return Number(value);
}

/**
 * A short-form directory in the inode: the count of entries, the count of those whose inode
 * numbers need 8 bytes, the parent, then entries of namelen, a 2-byte offset tag, the name, a file
 * type byte (ftype) and the inode number (4 bytes, or 8 when any needs them).
 */
function shortFormEntries(inode: Inode, hasFtype: boolean): NamedIno[] {
  const { fork } = inode;
  const where = `short-form directory inode ${inode.ino}`;
  if (inode.size > fork.length || inode.size < 6) throw damaged(`${where} says it holds ${inode.size} bytes in a fork of ${fork.length}`);
  const bytes = fork.subarray(0, inode.size);
  // count is every entry; i8count, when not 0, says some inode numbers need 8 bytes, so all take 8.
  const count = bytes[0];
  const inoBytes = bytes[1] > 0 ? 8 : 4;
  let at = 2 + inoBytes;
  const entries: NamedIno[] = [];
  for (let i = 0; i < count; i++) {
    const nameLength = at < bytes.length ? bytes[at] : 0;
    const next = at + 3 + nameLength + (hasFtype ? 1 : 0) + inoBytes;
    if (nameLength === 0 || next > bytes.length) throw damaged(`${where}'s entry ${i} runs past its ${bytes.length} bytes`);
    const name = bytes.subarray(at + 3, at + 3 + nameLength).toString("utf8");
    const inoAt = next - inoBytes;
    entries.push({ name, ino: inoBytes === 8 ? bytes.readBigUInt64BE(inoAt) : BigInt(bytes.readUInt32BE(inoAt)) });
    at = next;
  }
  return entries;
}

/**
 * The entries of one directory data block ("XDB3" for a directory of one block, whose leaf and
 * tail end the block; "XDD3" otherwise): named entries and unused regions back to back from the
 * 64-byte header, each a multiple of 8 bytes. "." and ".." are left out.
 */
function dataBlockEntries(block: Buffer, hasFtype: boolean, where: string, ino: bigint): NamedIno[] {
  const magic = block.readUInt32BE(0);
  if (magic !== DIR_BLOCK_MAGIC && magic !== DIR_DATA_MAGIC) throw damaged(`${where} has magic 0x${magic.toString(16)}, not XDB3 or XDD3`);
  checkCrc(block, DIR_CRC_AT, where);
  if (block.readBigUInt64BE(40) !== ino) throw damaged(`${where} belongs to inode ${block.readBigUInt64BE(40)}`);
  let end = block.length;
  if (magic === DIR_BLOCK_MAGIC) {
    const leafEntries = block.readUInt32BE(block.length - 8);
    end = block.length - 8 - leafEntries * 8;
    if (end < DIR_HEADER_BYTES) throw damaged(`${where}'s tail counts ${leafEntries} leaf entries, more than the block holds`);
  }
  const entries: NamedIno[] = [];
  let at = DIR_HEADER_BYTES;
  while (at < end) {
    if (block.readUInt16BE(at) === 0xffff) {
      const length = block.readUInt16BE(at + 2);
      if (length < 8 || length % 8 !== 0 || at + length > end) throw damaged(`${where} has an unused region of ${length} bytes at ${at}`);
      at += length;
      continue;
    }
    const nameLength = at + 8 < end ? block[at + 8] : 0;
    const length = roundUp8(8 + 1 + nameLength + (hasFtype ? 1 : 0) + 2);
    if (nameLength === 0 || at + length > end) throw damaged(`${where} has an entry of ${nameLength}-byte name at ${at} that runs past ${end}`);
    const name = block.subarray(at + 9, at + 9 + nameLength).toString("utf8");
    if (name !== "." && name !== "..") entries.push({ name, ino: block.readBigUInt64BE(at) });
    at += length;
  }
  return entries;
}

function inodeNumber(node: FsNode): bigint {
  if (!/^\d+$/.test(node.id)) throw new UnreadableItemError(`"${node.id}" is not an XFS inode number: the node is not from this filesystem`);
  return BigInt(node.id);
}

function unreadableReason(inode: Inode): string | undefined {
  if (inode.flags & DIFLAG_REALTIME) return "its data is on the realtime device, which this reader does not read";
  return undefined;
}

function roundUp8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Checks the little-endian CRC32C at `crcAt` of a v5 structure, computed with that field as zeros. */
function checkCrc(bytes: Buffer, crcAt: number, where: string): void {
  let crc = crc32cUpdate(0xffffffff, bytes.subarray(0, crcAt));
  crc = crc32cUpdate(crc, ZERO_CRC);
  crc = (crc32cUpdate(crc, bytes.subarray(crcAt + 4)) ^ 0xffffffff) >>> 0;
  const stored = bytes.readUInt32LE(crcAt);
  if (crc !== stored) throw damaged(`${where} fails its CRC32C check (stored 0x${stored.toString(16)}, computed 0x${crc.toString(16)})`);
}

const ZERO_CRC = Buffer.alloc(4);
/** CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of XFS v5 metadata. */
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32cUpdate(crc: number, bytes: Uint8Array): number {
  let c = crc;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return c >>> 0;
}
