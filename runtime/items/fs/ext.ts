/**
 * The ext2, ext3 and ext4 filesystems, read from a volume's bytes (issue 11): the superblock and
 * its feature flags, group descriptors (32 and 64 bytes, with or without meta_bg), inodes of the
 * superblock's size, a file's blocks through an extent tree or an ext2/ext3 indirect block map
 * (holes where extents leave gaps or pointers are zero; uninitialised extents read as zeros),
 * linear and hashed (htree) directories, inline data (files and directories in i_block and the
 * "system.data" extended attribute), fast and slow symlinks, and timestamps with their nanosecond
 * and epoch bits.
 *
 * A volume that needs recovery (a snapshot of a mounted one) is read through its journal's
 * committed transactions (ext-journal.ts), as mounting it would see it; an external journal
 * device is not read. Checksums (metadata_csum) are not verified: every structure is
 * bounds-checked instead. fscrypt-encrypted files and directories are unreadable.
 *
 * Sources (the format as the kernel documents it, Documentation/filesystems/ext4/ in
 * torvalds/linux):
 * - super.rst: the superblock at byte 1024 (fields, s_magic 0xEF53, block size 2^(10 +
 *   s_log_block_size), s_inode_size, s_desc_size, s_first_meta_bg, s_volume_name) and the
 *   compat / incompat / ro_compat feature bits; an unknown incompat bit means the volume cannot
 *   be read correctly.
 * - group_descr.rst and blockgroup.rst: descriptor layout (bg_inode_table_lo/hi), where the
 *   descriptor blocks lie with and without meta_bg, and which groups hold superblock backups
 *   (sparse_super: 0, 1 and powers of 3, 5 and 7; sparse_super2: s_backup_bgs).
 * - inodes.rst: the inode's fields, i_flags, the uid/gid high bits in osd2, and the *_extra
 *   timestamp fields (low two bits extend the signed seconds by 2^32 each, the rest nanoseconds).
 * - ifork.rst and blockmap.rst: the extent tree (header magic 0xF30A, index and leaf entries, the
 *   uninitialised bit of ee_len) and the 12 direct, single, double and triple indirect pointers.
 * - directory.rst: linear directory entries (ext4_dir_entry_2, rec_len), the checksum tail, and
 *   the htree's dx_root / dx_node blocks, which hide inside fake entries so a linear reader of the
 *   leaves sees every name, as the kernel's readdir of an unhashed walk does.
 * - inlinedata.rst and attributes.rst: inline files and directories, and the in-inode extended
 *   attribute area (magic 0xEA020000 after i_extra_isize; values offset from the first entry).
 * - Which name blkid gives (ext4 when a feature ext3 lacks is set, ext3 with a journal, else
 *   ext2): util-linux libblkid's superblocks/ext.c, read to learn the rule.
 */
import { IntegrityError } from "../../errors.ts";
import type { RandomAccess } from "../block-reader.ts";
import { journalOverlay, unescape, type JournalFile, type JournalledBlock } from "./ext-journal.ts";
import { MAX_RUN_BYTES, UnreadableItemError, type DirEntry, type FileRun, type FileSystem, type FileSystemFormat, type FsNode } from "./types.ts";
import { BlockCache } from "./block-cache.ts";
import { nodeTypeOfMode, S_IFMT, S_IFREG } from "./posix-mode.ts";

const SUPERBLOCK_AT = 1024;
const SUPERBLOCK_BYTES = 1024;
const EXT_MAGIC = 0xef53;
const ROOT_INODE = 2;
const GOOD_OLD_INODE_SIZE = 128;
const MAX_LOG_BLOCK_SIZE = 6; // 64 KiB blocks

const COMPAT_HAS_JOURNAL = 0x4;
const COMPAT_SPARSE_SUPER2 = 0x200;

/** Incompat features (super.rst): the ones this reader understands; any other bit refuses the volume. */
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4; // a journal to replay: read as of the last checkpoint
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_EXTENTS = 0x40;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_MMP = 0x100;
const INCOMPAT_FLEX_BG = 0x200;
const INCOMPAT_EA_INODE = 0x400;
const INCOMPAT_CSUM_SEED = 0x2000;
const INCOMPAT_LARGEDIR = 0x4000;
const INCOMPAT_INLINE_DATA = 0x8000;
const INCOMPAT_ENCRYPT = 0x10000;
const INCOMPAT_CASEFOLD = 0x20000;
const UNDERSTOOD_INCOMPAT =
  INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_MMP | INCOMPAT_FLEX_BG |
  INCOMPAT_EA_INODE | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD;
/** The names super.rst gives the incompat bits, for the message that refuses one. */
const INCOMPAT_NAMES: Record<number, string> = { 0x1: "compression", 0x8: "journal_dev", 0x1000: "dirdata" };

const RO_COMPAT_SPARSE_SUPER = 0x1;
/** What ext3 (and ext2) know: anything beyond these makes blkid call the volume ext4. */
const EXT3_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
const EXT3_RO_COMPAT = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir

const FLAG_ENCRYPT = 0x800;
const FLAG_EXTENTS = 0x80000;
const FLAG_INLINE_DATA = 0x10000000;

const EXTENT_MAGIC = 0xf30a;
const EXTENT_ENTRY_BYTES = 12;
/** ifork.rst: the tree is at most 5 levels deep. */
const MAX_EXTENT_DEPTH = 5;
const UNINITIALISED_LENGTH = 32768;
const I_BLOCK_AT = 0x28;
const I_BLOCK_BYTES = 60;
const DIRECT_BLOCKS = 12;

const XATTR_MAGIC = 0xea020000;
const XATTR_INDEX_SYSTEM = 7;

/** PATH_MAX: no symlink target is longer. */
const MAX_SYMLINK_BYTES = 4096;

/** Metadata blocks (descriptors, inode tables, extent nodes, indirect blocks) kept for the walk. */
const METADATA_CACHE_BYTES = 4 * 1024 * 1024;
/** Far more names than any real folder holds: a longer listing is a damaged (looping) directory. */
const MAX_DIRECTORY_ENTRIES = 10_000_000;
/** Inodes of a listing read at once: enough to overlap a vault's latency on cache misses. */
const INODES_IN_FLIGHT = 16;

interface Superblock {
  blockSize: number;
  blocksCount: number;
  firstDataBlock: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  inodesCount: number;
  inodeSize: number;
  descSize: number;
  firstMetaBg: number;
  compat: number;
  incompat: number;
  roCompat: number;
  backupGroups: [number, number];
  /** s_journal_inum: 0 without a journal, or with an external one. */
  journalInode: number;
  label: string;
}

/** One inode as this reader uses it. */
interface Inode {
  number: number;
  mode: number;
  size: number;
  flags: number;
  /** The 60 bytes of i_block: an extent root, block pointers, a fast symlink's target or inline data. */
  iBlock: Buffer;
  /** The in-inode extended attribute area (after i_extra_isize), empty on 128-byte inodes. */
  xattrArea: Buffer;
  /** i_blocks, in 512-byte sectors, without the extended attribute block's: 0 when no block holds content. */
  contentSectors: number;
  node: FsNode;
}

/** Where a file's logical blocks lie: `physical` undefined for a hole (or an uninitialised extent). */
interface BlockMapping {
  logical: number;
  count: number;
  physical: number | undefined;
}

export const extFormat: FileSystemFormat = {
  name: "ext",
  probe(head: Buffer): boolean {
    if (head.length < SUPERBLOCK_AT + SUPERBLOCK_BYTES) return false;
    const sb = head.subarray(SUPERBLOCK_AT, SUPERBLOCK_AT + SUPERBLOCK_BYTES);
    // A journal device holds an external journal, not files.
    return sb.readUInt16LE(0x38) === EXT_MAGIC && (sb.readUInt32LE(0x60) & INCOMPAT_JOURNAL_DEV) === 0;
  },
  async open(volume: RandomAccess): Promise<FileSystem> {
    if (volume.size < SUPERBLOCK_AT + SUPERBLOCK_BYTES) throw new IntegrityError(`the volume holds ${volume.size} bytes: too few for an ext superblock at byte ${SUPERBLOCK_AT}`);
    const superblock = parseSuperblock(await volume.read(SUPERBLOCK_AT, SUPERBLOCK_BYTES));
    const fs = new ExtFileSystem(volume, superblock);
    if ((superblock.incompat & INCOMPAT_RECOVER) !== 0 && superblock.journalInode !== 0) await fs.replayJournal();
    return fs;
  },
};

function parseSuperblock(sb: Buffer): Superblock {
  if (sb.readUInt16LE(0x38) !== EXT_MAGIC) throw new IntegrityError(`the ext superblock at byte ${SUPERBLOCK_AT} has magic 0x${sb.readUInt16LE(0x38).toString(16)}, not 0xef53`);
  const incompat = sb.readUInt32LE(0x60);
  const unknown = incompat & ~UNDERSTOOD_INCOMPAT;
  if (unknown !== 0) {
    const names = featureBits(unknown).map((bit) => INCOMPAT_NAMES[bit] ?? `0x${bit.toString(16)}`);
    throw new UnreadableItemError(`the ext volume uses incompatible feature${names.length > 1 ? "s" : ""} ${names.join(", ")} (s_feature_incompat 0x${incompat.toString(16)}), which this reader does not read: restore the whole disk and mount it instead`);
  }
  const logBlockSize = sb.readUInt32LE(0x18);
  if (logBlockSize > MAX_LOG_BLOCK_SIZE) throw new IntegrityError(`the ext superblock gives s_log_block_size ${logBlockSize}: blocks of more than 64 KiB are not ext`);
  const blockSize = 1024 << logBlockSize;
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.readUInt32LE(0x4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = sb.readUInt32LE(0x14);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  const inodesPerGroup = sb.readUInt32LE(0x28);
  const inodesCount = sb.readUInt32LE(0x0);
  const revLevel = sb.readUInt32LE(0x4c);
  const inodeSize = revLevel === 0 ? GOOD_OLD_INODE_SIZE : sb.readUInt16LE(0x58);
  const descSize = is64 ? sb.readUInt16LE(0xfe) : 32;
  const where = "the ext superblock at byte 1024";
  if (blocksPerGroup === 0) throw new IntegrityError(`${where} gives ${blocksPerGroup} blocks per group`);
  if (inodesPerGroup === 0 || inodesPerGroup > blockSize * 8) throw new IntegrityError(`${where} gives ${inodesPerGroup} inodes per group: a group's inode bitmap is one ${blockSize}-byte block`);
  if (inodeSize < GOOD_OLD_INODE_SIZE || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) throw new IntegrityError(`${where} gives an inode size of ${inodeSize} bytes`);
  if (descSize < 32 || descSize > 1024 || (descSize & (descSize - 1)) !== 0 || (is64 && descSize < 64)) throw new IntegrityError(`${where} gives a group descriptor size of ${descSize} bytes`);
  if (firstDataBlock >= blocksCount) throw new IntegrityError(`${where} puts the first data block (${firstDataBlock}) past the last (${blocksCount})`);
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  if (inodesCount > groupCount * inodesPerGroup) throw new IntegrityError(`${where} counts ${inodesCount} inodes, more than ${groupCount} groups of ${inodesPerGroup} hold`);
  return {
    blockSize,
    blocksCount,
    firstDataBlock,
    blocksPerGroup,
    inodesPerGroup,
    inodesCount,
    inodeSize,
    descSize,
    firstMetaBg: sb.readUInt32LE(0x104),
    compat: sb.readUInt32LE(0x5c),
    incompat,
    roCompat: sb.readUInt32LE(0x64),
    backupGroups: [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)],
    journalInode: (sb.readUInt32LE(0x5c) & COMPAT_HAS_JOURNAL) !== 0 ? sb.readUInt32LE(0xe0) : 0,
    label: cString(sb.subarray(0x78, 0x88)),
  };
}

function featureBits(value: number): number[] {
  const bits: number[] = [];
  for (let bit = 1; bit !== 0 && bit <= value >>> 0; bit = (bit << 1) >>> 0) if ((value & bit) !== 0) bits.push(bit);
  return bits;
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString("utf8");
}

/** The name blkid gives the volume. */
function filesystemName(sb: Superblock): "ext2" | "ext3" | "ext4" {
  if ((sb.incompat & ~EXT3_INCOMPAT) !== 0 || (sb.roCompat & ~EXT3_RO_COMPAT) !== 0) return "ext4";
  return (sb.compat & COMPAT_HAS_JOURNAL) !== 0 ? "ext3" : "ext2";
}

class ExtFileSystem implements FileSystem {
  readonly filesystem: string;
  readonly label: string;
  private readonly volume: RandomAccess;
  private readonly sb: Superblock;
  private readonly blocks: BlockCache;
  /** Blocks the journal's committed transactions rewrite (needs_recovery): read from the journal instead. */
  private overlay = new Map<number, JournalledBlock>();
  private journal: JournalFile | undefined;

  constructor(volume: RandomAccess, sb: Superblock) {
    this.volume = volume;
    this.sb = sb;
    this.blocks = new BlockCache(Math.max(1, Math.floor(METADATA_CACHE_BYTES / sb.blockSize)));
    this.filesystem = filesystemName(sb);
    this.label = sb.label;
  }

  /** Reads the journal's committed transactions, so every later read sees the volume as after recovery (ext-journal.ts). */
  async replayJournal(): Promise<void> {
    const inode = await this.inode(this.sb.journalInode, "the superblock's s_journal_inum");
    const blocks = Math.ceil(inode.size / this.sb.blockSize);
    const mappings: BlockMapping[] = [];
    for await (const mapping of (inode.flags & FLAG_EXTENTS) !== 0 ? this.extentMappings(inode, blocks) : this.indirectMappings(inode, blocks)) mappings.push(mapping);
    this.journal = { blocks, read: (block) => this.journalBlock(mappings, block, inode.number) };
    this.overlay = await journalOverlay(this.journal, this.sb.blockSize);
    // Blocks cached while finding the journal were read without it.
    this.blocks.clear();
  }

  async root(): Promise<FsNode> {
    const root = await this.inode(ROOT_INODE);
    if (root.node.type !== "dir") throw new IntegrityError(`the root inode (2) of the ${this.filesystem} volume is not a directory (mode 0o${root.mode.toString(8)})`);
    return root.node;
  }

  async list(dir: FsNode): Promise<DirEntry[]> {
    const inode = await this.inode(inodeNumberOf(dir));
    if (inode.node.type !== "dir") throw new IntegrityError(`inode ${inode.number} is not a directory`);
    if (inode.node.unreadable) throw new UnreadableItemError(`directory inode ${inode.number} cannot be listed: ${inode.node.unreadable}`);
    const found: { name: string; inode: number }[] = [];
    for await (const block of this.directoryBlocks(inode)) {
      for (const entry of directoryEntries(block.bytes, (this.sb.incompat & INCOMPAT_FILETYPE) !== 0, () => `${block.where} of directory inode ${inode.number}`)) {
        if (entry.name === "." || entry.name === "..") continue;
        if (found.length === MAX_DIRECTORY_ENTRIES) throw new IntegrityError(`directory inode ${inode.number} lists more than ${MAX_DIRECTORY_ENTRIES} names: it is damaged`);
        found.push(entry);
      }
    }
    const entries: DirEntry[] = [];
    for (let at = 0; at < found.length; at += INODES_IN_FLIGHT) {
      const batch = found.slice(at, at + INODES_IN_FLIGHT);
      const nodes = await Promise.all(batch.map((entry) => this.inode(entry.inode, `the entry "${entry.name}" of directory inode ${inode.number}`)));
      batch.forEach((entry, i) => entries.push({ name: entry.name, node: nodes[i].node }));
    }
    return entries;
  }

  async *read(file: FsNode): AsyncIterable<FileRun> {
    const inode = await this.inode(inodeNumberOf(file));
    if (inode.node.unreadable) throw new UnreadableItemError(`inode ${inode.number} cannot be read: ${inode.node.unreadable}`);
    if (inode.node.type === "dir") throw new IntegrityError(`inode ${inode.number} is a directory, not a file`);
    if (inode.node.type === "symlink") {
      // A fast symlink's i_block is its target, not a block map: its content is the target.
      const target = Buffer.from(inode.node.target ?? "", "utf8");
      if (target.length > 0) yield { offset: 0, length: target.length, hole: false, data: target };
      return;
    }
    if (inode.node.type === "other" && inode.size > 0) throw new UnreadableItemError(`inode ${inode.number} is a device, FIFO or socket: it has no content to read`);
    if ((inode.flags & FLAG_INLINE_DATA) !== 0) {
      if (inode.size > 0) yield { offset: 0, length: inode.size, hole: false, data: this.inlineData(inode) };
      return;
    }
    yield* this.contentRuns(inode);
  }

  /** A directory's content, block by block (an inline directory: its two areas), with where each came from for messages. */
  private async *directoryBlocks(inode: Inode): AsyncIterable<{ bytes: Buffer; where: string }> {
    if ((inode.flags & FLAG_INLINE_DATA) !== 0) {
      // inlinedata.rst: the parent's number, then entries in the rest of i_block, then in system.data.
      yield { bytes: inode.iBlock.subarray(4), where: "the inline entries in i_block" };
      const more = systemData(inode);
      if (more && more.length > 0) yield { bytes: more, where: "the inline entries in system.data" };
      return;
    }
    const { blockSize } = this.sb;
    for await (const run of this.contentRuns(inode)) {
      if (run.hole) continue;
      for (let at = 0; at < run.length; at += blockSize) {
        yield { bytes: run.data.subarray(at, at + blockSize), where: `block ${(run.offset + at) / blockSize}` };
      }
    }
  }

  /** A file's bytes from its extents or block map: data runs of at most MAX_RUN_BYTES, holes between. */
  private async *contentRuns(inode: Inode): AsyncIterable<FileRun> {
    const { blockSize } = this.sb;
    const blocksNeeded = Math.ceil(inode.size / blockSize);
    let offset = 0;
    const mappings = (inode.flags & FLAG_EXTENTS) !== 0 ? this.extentMappings(inode, blocksNeeded) : this.indirectMappings(inode, blocksNeeded);
    for await (const mapping of mappings) {
      const start = mapping.logical * blockSize;
      if (start >= inode.size) break;
      if (start > offset) {
        yield { offset, length: start - offset, hole: true };
        offset = start;
      }
      const end = Math.min(inode.size, (mapping.logical + mapping.count) * blockSize);
      if (mapping.physical === undefined) {
        yield { offset, length: end - offset, hole: true };
        offset = end;
        continue;
      }
      while (offset < end) {
        const length = Math.min(MAX_RUN_BYTES, end - offset);
        const data = await this.readBlocks(mapping.physical * blockSize + (offset - start), length, `data of inode ${inode.number} at byte ${offset}`);
        yield { offset, length, hole: false, data };
        offset += length;
      }
    }
    if (offset < inode.size) yield { offset, length: inode.size - offset, hole: true };
  }

  /**
   * The leaves of an extent tree in logical order. Every entry, index or leaf, must start at or
   * after where the walk has reached, and siblings strictly after each other: so a damaged tree
   * cannot loop, and the entries visited are bounded by the file's blocks times the depth.
   */
  private async *extentMappings(inode: Inode, blocksNeeded: number): AsyncIterable<BlockMapping> {
    let reached = 0;
    const walk = async function* (this: ExtFileSystem, node: Buffer, where: string, expectedDepth: number | undefined): AsyncIterable<BlockMapping> {
      const header = extentHeader(node, where, expectedDepth);
      let previous = -1;
      for (let i = 0; i < header.entries; i++) {
        const at = EXTENT_ENTRY_BYTES * (i + 1);
        const logical = node.readUInt32LE(at);
        if (logical >= blocksNeeded) return;
        if (logical < reached || logical <= previous) throw new IntegrityError(`entry ${i} of ${where} starts at logical block ${logical}: it overlaps or is out of order`);
        previous = logical;
        if (header.depth === 0) {
          const rawLength = node.readUInt16LE(at + 4);
          const uninitialised = rawLength > UNINITIALISED_LENGTH;
          const count = uninitialised ? rawLength - UNINITIALISED_LENGTH : rawLength;
          const physical = node.readUInt16LE(at + 6) * 2 ** 32 + node.readUInt32LE(at + 8);
          if (count === 0) throw new IntegrityError(`extent ${i} of ${where} (logical block ${logical}) is empty`);
          this.checkBlocks(physical, count, `extent ${i} of ${where}`);
          reached = logical + count;
          yield { logical, count, physical: uninitialised ? undefined : physical };
        } else {
          reached = logical;
          const child = node.readUInt16LE(at + 8) * 2 ** 32 + node.readUInt32LE(at + 4);
          this.checkBlocks(child, 1, `index entry ${i} of ${where}`);
          const childWhere = `extent tree block ${child} of inode ${inode.number}`;
          yield* walk.call(this, await this.metadataBlock(child, childWhere), childWhere, header.depth - 1);
        }
      }
    };
    yield* walk.call(this, inode.iBlock, `the extent root of inode ${inode.number}`, undefined);
  }

  /** An ext2/ext3 block map: 12 direct pointers, then single, double and triple indirect blocks; zero pointers are holes. */
  private async *indirectMappings(inode: Inode, blocksNeeded: number): AsyncIterable<BlockMapping> {
    const perBlock = this.sb.blockSize / 4;
    let pending: BlockMapping | undefined;
    const emit = (logical: number, physical: number | undefined, count: number): BlockMapping | undefined => {
      if (pending && pending.logical + pending.count === logical && (pending.physical === undefined ? physical === undefined : physical === pending.physical + pending.count)) {
        pending.count += count;
        return undefined;
      }
      const done = pending;
      pending = { logical, count, physical };
      return done;
    };
    const walk = async function* (this: ExtFileSystem, pointer: number, level: number, logical: number, where: string): AsyncIterable<BlockMapping> {
      const span = perBlock ** level;
      const count = Math.min(span, blocksNeeded - logical);
      if (pointer === 0) {
        const done = emit(logical, undefined, count);
        if (done) yield done;
        return;
      }
      this.checkBlocks(pointer, 1, where);
      if (level === 0) {
        const done = emit(logical, pointer, 1);
        if (done) yield done;
        return;
      }
      const block = await this.metadataBlock(pointer, `indirect block ${pointer} of inode ${inode.number}`);
      const childSpan = perBlock ** (level - 1);
      for (let i = 0; i < perBlock && logical + i * childSpan < blocksNeeded; i++) {
        yield* walk.call(this, block.readUInt32LE(i * 4), level - 1, logical + i * childSpan, `pointer ${i} of indirect block ${pointer} of inode ${inode.number}`);
      }
    };
    let logical = 0;
    for (let slot = 0; slot < 15 && logical < blocksNeeded; slot++) {
      const level = slot < DIRECT_BLOCKS ? 0 : slot - DIRECT_BLOCKS + 1;
      yield* walk.call(this, inode.iBlock.readUInt32LE(slot * 4), level, logical, `block pointer ${slot} of inode ${inode.number}`);
      logical += perBlock ** level;
    }
    if (logical < blocksNeeded) throw new IntegrityError(`inode ${inode.number} is ${inode.size} bytes: more than its block map can address`);
    if (pending) yield pending;
  }

  /** An inline file's bytes: i_block, then the system.data attribute. */
  private inlineData(inode: Inode): Buffer {
    const head = inode.iBlock.subarray(0, Math.min(inode.size, I_BLOCK_BYTES));
    const tail = inode.size > I_BLOCK_BYTES ? systemData(inode) : undefined;
    const data = tail ? Buffer.concat([head, tail]) : head;
    if (data.length < inode.size) throw new IntegrityError(`inode ${inode.number} keeps ${data.length} bytes of inline data, but its size is ${inode.size}`);
    return data.subarray(0, inode.size);
  }

  private async inode(number: number, from?: string): Promise<Inode> {
    const { inodesPerGroup, inodeSize, blockSize } = this.sb;
    if (!Number.isSafeInteger(number) || number < 1 || number > this.sb.inodesCount) {
      throw new IntegrityError(`${from ?? "a node"} names inode ${number}, but the volume has inodes 1 to ${this.sb.inodesCount}`);
    }
    const group = Math.floor((number - 1) / inodesPerGroup);
    const index = (number - 1) % inodesPerGroup;
    const table = await this.inodeTable(group);
    const byteInTable = index * inodeSize;
    const block = table + Math.floor(byteInTable / blockSize);
    this.checkBlocks(block, 1, `the inode table of group ${group}`);
    const bytes = await this.metadataBlock(block, `the inode table of group ${group}`);
    const at = byteInTable % blockSize;
    const inode = parseInode(number, bytes.subarray(at, at + inodeSize), blockSize, (this.sb.incompat & INCOMPAT_LARGEDIR) !== 0);
    if (inode.node.type !== "symlink" || inode.node.unreadable) return inode;
    return { ...inode, node: { ...inode.node, target: await this.symlinkTarget(inode) } };
  }

  /** A fast symlink's target is i_block itself, an inline one is inline data, a slow one is the content of its blocks. */
  private async symlinkTarget(inode: Inode): Promise<string> {
    if (inode.size > MAX_SYMLINK_BYTES) throw new IntegrityError(`symlink inode ${inode.number} gives a target of ${inode.size} bytes, longer than any path`);
    if ((inode.flags & FLAG_INLINE_DATA) !== 0) return this.inlineData(inode).toString("utf8");
    // The kernel's rule (ext4_inode_is_fast_symlink): a symlink without blocks of its own keeps its target in i_block.
    if (inode.contentSectors === 0 && inode.size <= I_BLOCK_BYTES) return inode.iBlock.subarray(0, inode.size).toString("utf8");
    const parts: Buffer[] = [];
    for await (const run of this.contentRuns(inode)) parts.push(run.hole ? Buffer.alloc(run.length) : run.data);
    return Buffer.concat(parts).toString("utf8");
  }

  private async inodeTable(group: number): Promise<number> {
    const { descSize, blockSize } = this.sb;
    const perBlock = blockSize / descSize;
    const descriptorBlock = this.descriptorBlock(Math.floor(group / perBlock));
    const where = `the group descriptor of group ${group} (block ${descriptorBlock})`;
    this.checkBlocks(descriptorBlock, 1, where);
    const block = await this.metadataBlock(descriptorBlock, where);
    const at = (group % perBlock) * descSize;
    const table = block.readUInt32LE(at + 0x8) + (descSize >= 64 ? block.readUInt32LE(at + 0x28) * 2 ** 32 : 0);
    const tableBlocks = Math.ceil((this.sb.inodesPerGroup * this.sb.inodeSize) / blockSize);
    this.checkBlocks(table, tableBlocks, `the inode table named by ${where}`);
    return table;
  }

  /** group_descr.rst: descriptors follow the superblock, or with meta_bg lie in the first group of each meta group. */
  private descriptorBlock(index: number): number {
    const { blockSize, firstDataBlock, blocksPerGroup, descSize } = this.sb;
    const superblockBlock = Math.floor(SUPERBLOCK_AT / blockSize);
    if ((this.sb.incompat & INCOMPAT_META_BG) === 0 || index < this.sb.firstMetaBg) return superblockBlock + 1 + index;
    const group = index * (blockSize / descSize);
    const hasSuper = this.groupHasSuperblock(group) ? 1 : 0;
    const extra = blockSize === 1024 && index === 0 && firstDataBlock === 0 ? 1 : 0;
    return firstDataBlock + group * blocksPerGroup + hasSuper + extra;
  }

  private groupHasSuperblock(group: number): boolean {
    if (group === 0) return true;
    if ((this.sb.compat & COMPAT_SPARSE_SUPER2) !== 0) return group === this.sb.backupGroups[0] || group === this.sb.backupGroups[1];
    if ((this.sb.roCompat & RO_COMPAT_SPARSE_SUPER) === 0 || group === 1) return true;
    return [3, 5, 7].some((base) => isPowerOf(group, base));
  }

  /** Throws unless blocks [first, first + count) are inside the filesystem and the volume. */
  private checkBlocks(first: number, count: number, where: string): void {
    const last = first + count;
    // Block 0 holds the boot sector or the superblock, never a file's blocks or a table.
    if (first === 0 || last > this.sb.blocksCount || last * this.sb.blockSize > this.volume.size) {
      throw new IntegrityError(`${where} points at blocks ${first} to ${last - 1}, outside the volume's ${Math.min(this.sb.blocksCount, Math.floor(this.volume.size / this.sb.blockSize))} blocks`);
    }
  }

  private metadataBlock(block: number, where: string): Promise<Buffer> {
    return this.blocks.get(block, () => this.readBlocks(block * this.sb.blockSize, this.sb.blockSize, where));
  }

  private async readBlocks(offset: number, length: number, where: string): Promise<Buffer> {
    if (offset + length > this.volume.size) throw new IntegrityError(`${where} lies past the end of the ${this.volume.size}-byte volume`);
    const bytes = await this.volume.read(offset, length);
    if (this.overlay.size === 0 || !this.journal) return bytes;
    const { blockSize } = this.sb;
    for (let block = Math.floor(offset / blockSize); block * blockSize < offset + length; block++) {
      const journalled = this.overlay.get(block);
      if (!journalled) continue;
      const raw = await this.journal.read(journalled.journalBlock);
      const replayed = journalled.escaped ? unescape(raw) : raw;
      const from = Math.max(offset, block * blockSize);
      const to = Math.min(offset + length, (block + 1) * blockSize);
      replayed.copy(bytes, from - offset, from - block * blockSize, to - block * blockSize);
    }
    return bytes;
  }

  /** A block of the journal file, through the journal inode's mappings (sorted by logical block). */
  private async journalBlock(mappings: BlockMapping[], block: number, inodeNumber: number): Promise<Buffer> {
    let low = 0;
    let high = mappings.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const mapping = mappings[middle];
      if (block < mapping.logical) high = middle - 1;
      else if (block >= mapping.logical + mapping.count) low = middle + 1;
      else {
        if (mapping.physical === undefined) break;
        const { blockSize } = this.sb;
        return this.volume.read((mapping.physical + block - mapping.logical) * blockSize, blockSize);
      }
    }
    throw new IntegrityError(`block ${block} of the journal (inode ${inodeNumber}) is a hole: the journal is damaged`);
  }
}

function isPowerOf(value: number, base: number): boolean {
  let power = base;
  while (power < value) power *= base;
  return power === value;
}

function inodeNumberOf(node: FsNode): number {
  const number = Number(node.id);
  if (!/^\d+$/.test(node.id) || !Number.isSafeInteger(number)) throw new IntegrityError(`"${node.id}" is not an inode number of an ext volume`);
  return number;
}

function parseInode(number: number, bytes: Buffer, blockSize: number, largeDirectories: boolean): Inode {
  const where = `inode ${number}`;
  const mode = bytes.readUInt16LE(0x0);
  const flags = bytes.readUInt32LE(0x20);
  // As the kernel's ext4_isize: i_size_high counts for files, inline data and (with largedir) folders; it was i_dir_acl before.
  const sizeHigh = (mode & S_IFMT) === S_IFREG || largeDirectories || (flags & FLAG_INLINE_DATA) !== 0 ? bytes.readUInt32LE(0x6c) : 0;
  const size = sizeHigh * 2 ** 32 + bytes.readUInt32LE(0x4);
  if (!Number.isSafeInteger(size)) throw new IntegrityError(`${where} gives a size of ${size} bytes`);
  const extraSize = bytes.length > GOOD_OLD_INODE_SIZE ? bytes.readUInt16LE(0x80) : 0;
  if (GOOD_OLD_INODE_SIZE + extraSize > bytes.length || extraSize % 4 !== 0) throw new IntegrityError(`${where} gives i_extra_isize ${extraSize}, past its ${bytes.length} bytes`);
  const extraEnd = GOOD_OLD_INODE_SIZE + extraSize;
  const time = (secondsAt: number, extraAt: number) => timestamp(bytes.readInt32LE(secondsAt), extraAt + 4 <= extraEnd ? bytes.readUInt32LE(extraAt) : 0);
  const iBlock = bytes.subarray(I_BLOCK_AT, I_BLOCK_AT + I_BLOCK_BYTES);
  const xattrBlock = bytes.readUInt16LE(0x76) * 2 ** 32 + bytes.readUInt32LE(0x68);
  const sectors = bytes.readUInt16LE(0x74) * 2 ** 32 + bytes.readUInt32LE(0x1c);
  const contentSectors = xattrBlock === 0 ? sectors : Math.max(0, sectors - blockSize / 512);
  const inode = { number, mode, size, flags, iBlock, xattrArea: bytes.subarray(extraEnd), contentSectors };
  const type = nodeTypeOfMode(mode);
  const node: FsNode = {
    id: String(number),
    type,
    size,
    mode: mode & 0o7777,
    mtime: time(0x10, 0x88),
    atime: time(0x8, 0x8c),
    uid: bytes.readUInt16LE(0x2) + bytes.readUInt16LE(0x78) * 0x10000,
    gid: bytes.readUInt16LE(0x18) + bytes.readUInt16LE(0x7a) * 0x10000,
    nlink: bytes.readUInt16LE(0x1a),
    ...((flags & FLAG_ENCRYPT) !== 0 ? { unreadable: "it is encrypted (fscrypt), and this reader holds no key" } : {}),
  };
  return { ...inode, node };
}

/** inodes.rst: the extra field's low two bits add multiples of 2^32 to the signed seconds; the rest are nanoseconds. */
function timestamp(seconds: number, extra: number): number {
  const epoch = extra & 0x3;
  const nanoseconds = extra >>> 2;
  return (seconds + epoch * 2 ** 32) * 1000 + Math.floor(nanoseconds / 1e6);
}

/** The value of the in-inode "system.data" attribute (inline data beyond i_block), if there is one. */
function systemData(inode: Pick<Inode, "number" | "xattrArea">): Buffer | undefined {
  const area = inode.xattrArea;
  if (area.length < 4 || area.readUInt32LE(0) !== XATTR_MAGIC) return undefined;
  const entries = area.subarray(4);
  // Each entry is at least 16 bytes plus its name, so this many steps reach the area's end.
  for (let at = 0; at + 16 <= entries.length && entries.readUInt32LE(at) !== 0; ) {
    const nameLength = entries[at];
    const nameIndex = entries[at + 1];
    const valueOffset = entries.readUInt16LE(at + 2);
    const valueInode = entries.readUInt32LE(at + 4);
    const valueSize = entries.readUInt32LE(at + 8);
    const name = entries.subarray(at + 16, at + 16 + nameLength).toString("latin1");
    if (nameIndex === XATTR_INDEX_SYSTEM && name === "data") {
      if (valueInode !== 0) throw new UnreadableItemError(`inode ${inode.number} keeps its inline data in a separate attribute inode, which this reader does not read`);
      if (valueOffset + valueSize > entries.length) throw new IntegrityError(`the system.data attribute of inode ${inode.number} (${valueSize} bytes at ${valueOffset}) runs past the inode's attribute area`);
      return entries.subarray(valueOffset, valueOffset + valueSize);
    }
    at += (16 + nameLength + 3) & ~3;
  }
  return undefined;
}

function extentHeader(node: Buffer, where: string, expectedDepth: number | undefined): { entries: number; depth: number } {
  const magic = node.readUInt16LE(0);
  if (magic !== EXTENT_MAGIC) throw new IntegrityError(`${where} has extent header magic 0x${magic.toString(16)}, not 0xf30a`);
  const entries = node.readUInt16LE(2);
  const max = node.readUInt16LE(4);
  const depth = node.readUInt16LE(6);
  const capacity = Math.floor(node.length / EXTENT_ENTRY_BYTES) - 1;
  if (entries > max || max > capacity) throw new IntegrityError(`${where} claims ${entries} of ${max} extent entries; it has room for ${capacity}`);
  if (depth > MAX_EXTENT_DEPTH || (expectedDepth !== undefined && depth !== expectedDepth)) {
    throw new IntegrityError(`${where} has extent tree depth ${depth}${expectedDepth === undefined ? "" : `, where its parent says ${expectedDepth}`}`);
  }
  return { entries, depth };
}

/** directory.rst: ext4_dir_entry_2 records filling the block; inode 0 marks an unused record (and the htree's and checksum's fake ones). */
function directoryEntries(block: Buffer, hasFileType: boolean, where: () => string): { name: string; inode: number }[] {
  const entries: { name: string; inode: number }[] = [];
  for (let at = 0; at < block.length; ) {
    if (at + 8 > block.length) throw new IntegrityError(`the directory record at byte ${at} of ${where()} is cut off by the block's end`);
    const inode = block.readUInt32LE(at);
    const rawLength = block.readUInt16LE(at + 4);
    // A 64 KiB block's single record stores its length as 0 or 65535 (directory.rst, rec_len).
    const recordLength = block.length === 65536 && (rawLength === 0 || rawLength === 65535) ? 65536 : rawLength;
    const nameLength = hasFileType ? block[at + 6] : block.readUInt16LE(at + 6);
    if (recordLength < 8 || recordLength % 4 !== 0 || at + recordLength > block.length || (inode !== 0 && 8 + nameLength > recordLength)) {
      throw new IntegrityError(`the directory record at byte ${at} of ${where()} has record length ${rawLength} (name of ${nameLength} bytes), which does not fit the block`);
    }
    if (inode !== 0) entries.push({ inode, name: block.subarray(at + 8, at + 8 + nameLength).toString("utf8") });
    at += recordLength;
  }
  return entries;
}
