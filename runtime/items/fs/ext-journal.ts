/**
 * An ext3/ext4 journal (jbd2) as a replay overlay: which filesystem blocks the committed
 * transactions that were not yet checkpointed would rewrite, and where their new contents lie in
 * the journal. A snapshot of a mounted volume (every Azure disk point of a running VM) has
 * needs_recovery set, and its most recent metadata (new files, renames) may exist only in the
 * journal: reading through the overlay sees the volume as mounting it (or e2fsck) would, without
 * writing anything.
 *
 * Replay follows the order the kernel documents: from s_start with s_sequence, descriptor blocks
 * name the filesystem blocks of the data blocks that follow them, a commit block makes its
 * transaction count, revoke blocks stop the replay of a block by that and earlier transactions,
 * and the first block that is not the next expected one ends the log. A transaction without its
 * commit block is not replayed. Checksums are not verified (as in ext.ts, every structure is
 * bounds-checked instead); fast commits (ext4's fast_commit area) are not replayed.
 *
 * Sources: the kernel's Documentation/filesystems/ext4/journal.rst (torvalds/linux): the journal
 * superblock (s_blocksize, s_maxlen, s_first, s_sequence, s_start, feature bits), the block header
 * (magic 0xC03B3998, block type, sequence; all big-endian), descriptor block tags (tag3 of 16
 * bytes with csum_v3, else 8 bytes plus 4 with 64bit plus 2 with csum_v2; the escape, same-UUID and
 * last-tag flags; the 16-byte UUID after a tag without same-UUID; the 4-byte block tail with
 * checksums), revocation blocks (r_count, then 4- or 8-byte block numbers) and commit blocks.
 */
import { IntegrityError } from "../../errors.ts";

/** Where a filesystem block's replayed content lies in the journal. */
export interface JournalledBlock {
  journalBlock: number;
  /** The block began with the journal's magic: jbd2 wrote zeros there, replay puts the magic back. */
  escaped: boolean;
}

/** The journal file, block by block (its logical blocks, mapped through the journal inode). */
export interface JournalFile {
  readonly blocks: number;
  read(block: number): Promise<Buffer>;
}

const JBD2_MAGIC = 0xc03b3998;
const BLOCK_DESCRIPTOR = 1;
const BLOCK_COMMIT = 2;
const BLOCK_SUPERBLOCK_V1 = 3;
const BLOCK_SUPERBLOCK_V2 = 4;
const BLOCK_REVOKE = 5;
const HEADER_BYTES = 12;

const INCOMPAT_REVOKE = 0x1;
const INCOMPAT_64BIT = 0x2;
const INCOMPAT_ASYNC_COMMIT = 0x4;
const INCOMPAT_CSUM_V2 = 0x8;
const INCOMPAT_CSUM_V3 = 0x10;
const INCOMPAT_FAST_COMMIT = 0x20;
const UNDERSTOOD_INCOMPAT = INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3 | INCOMPAT_FAST_COMMIT;
/** The kernel's default fast commit area when the superblock gives none. */
const DEFAULT_FAST_COMMIT_BLOCKS = 256;

const TAG_ESCAPED = 0x1;
const TAG_SAME_UUID = 0x2;
const TAG_LAST = 0x8;
const UUID_BYTES = 16;
const BLOCK_TAIL_BYTES = 4;

interface JournalSuperblock {
  blockSize: number;
  /** The first log block and one past the last: the log wraps from `last` back to `first`. */
  first: number;
  last: number;
  sequence: number;
  start: number;
  incompat: number;
}

interface Transaction {
  sequence: number;
  blocks: { fsBlock: number; journalBlock: number; escaped: boolean }[];
  revoked: number[];
}

/**
 * The committed, not yet checkpointed transactions of a journal, replayed into a map from
 * filesystem block to its newest journalled copy. Empty when the journal is clean (s_start 0).
 */
export async function journalOverlay(journal: JournalFile, fsBlockSize: number): Promise<Map<number, JournalledBlock>> {
  const overlay = new Map<number, JournalledBlock>();
  const sb = parseJournalSuperblock(await journal.read(0), journal.blocks, fsBlockSize);
  if (sb.start === 0) return overlay;
  const transactions = await committedTransactions(journal, sb);
  // A revoke by transaction T stops the replay of that block by T and every transaction before it.
  const revokedUpTo = new Map<number, number>();
  for (const transaction of transactions) for (const block of transaction.revoked) revokedUpTo.set(block, transaction.sequence);
  for (const transaction of transactions) {
    for (const block of transaction.blocks) {
      const revokedBy = revokedUpTo.get(block.fsBlock);
      if (revokedBy !== undefined && transaction.sequence <= revokedBy) continue;
      overlay.set(block.fsBlock, { journalBlock: block.journalBlock, escaped: block.escaped });
    }
  }
  return overlay;
}

/** Puts back the magic jbd2 zeroed at the start of an escaped block. */
export function unescape(block: Buffer): Buffer {
  const copy = Buffer.from(block);
  copy.writeUInt32BE(JBD2_MAGIC, 0);
  return copy;
}

function parseJournalSuperblock(block: Buffer, journalBlocks: number, fsBlockSize: number): JournalSuperblock {
  const where = "the journal superblock (block 0 of the journal)";
  const type = block.readUInt32BE(4);
  if (block.readUInt32BE(0) !== JBD2_MAGIC || (type !== BLOCK_SUPERBLOCK_V1 && type !== BLOCK_SUPERBLOCK_V2)) {
    throw new IntegrityError(`${where} has magic 0x${block.readUInt32BE(0).toString(16)} and type ${type}, not a jbd2 superblock`);
  }
  const blockSize = block.readUInt32BE(0xc);
  const maxLength = block.readUInt32BE(0x10);
  const first = block.readUInt32BE(0x14);
  const incompat = type === BLOCK_SUPERBLOCK_V2 ? block.readUInt32BE(0x28) : 0;
  if (blockSize !== fsBlockSize) throw new IntegrityError(`${where} gives ${blockSize}-byte blocks, but the filesystem's are ${fsBlockSize} bytes`);
  if (maxLength > journalBlocks || first === 0 || first >= maxLength) throw new IntegrityError(`${where} gives a log of blocks ${first} to ${maxLength - 1}, but the journal file holds ${journalBlocks} blocks`);
  const unknown = incompat & ~UNDERSTOOD_INCOMPAT;
  if (unknown !== 0) throw new IntegrityError(`${where} has journal features 0x${unknown.toString(16)} this reader does not know: the journal cannot be replayed`);
  const fastCommitBlocks = (incompat & INCOMPAT_FAST_COMMIT) !== 0 ? block.readUInt32BE(0x54) || DEFAULT_FAST_COMMIT_BLOCKS : 0;
  const last = maxLength - fastCommitBlocks;
  if (last <= first) throw new IntegrityError(`${where} leaves no log blocks beside its ${fastCommitBlocks} fast commit blocks`);
  const start = block.readUInt32BE(0x1c);
  if (start !== 0 && (start < first || start >= last)) throw new IntegrityError(`${where} starts the log at block ${start}, outside blocks ${first} to ${last - 1}`);
  return { blockSize, first, last, sequence: block.readUInt32BE(0x18), start, incompat };
}

/** Walks the log from s_start: every transaction whose commit block was written, in order. Visits each log block at most once. */
async function committedTransactions(journal: JournalFile, sb: JournalSuperblock): Promise<Transaction[]> {
  const committed: Transaction[] = [];
  const logBlocks = sb.last - sb.first;
  let at = sb.start;
  let visited = 0;
  let current: Transaction = { sequence: sb.sequence, blocks: [], revoked: [] };
  const next = () => {
    visited++;
    at = at + 1 === sb.last ? sb.first : at + 1;
  };
  while (visited < logBlocks) {
    const block = await journal.read(at);
    // The first block that is not the next expected header is the end of the log.
    if (block.readUInt32BE(0) !== JBD2_MAGIC || block.readUInt32BE(8) !== current.sequence >>> 0) break;
    const type = block.readUInt32BE(4);
    const where = `journal block ${at} (transaction ${current.sequence})`;
    next();
    if (type === BLOCK_DESCRIPTOR) {
      for (const tag of descriptorTags(block, sb, where)) {
        if (visited >= logBlocks) return committed;
        current.blocks.push({ fsBlock: tag.fsBlock, journalBlock: at, escaped: tag.escaped });
        next();
      }
    } else if (type === BLOCK_REVOKE) {
      current.revoked.push(...revokedBlocks(block, sb, where));
    } else if (type === BLOCK_COMMIT) {
      committed.push(current);
      current = { sequence: (current.sequence + 1) >>> 0, blocks: [], revoked: [] };
    } else {
      break;
    }
  }
  return committed;
}

function descriptorTags(block: Buffer, sb: JournalSuperblock, where: string): { fsBlock: number; escaped: boolean }[] {
  const csum3 = (sb.incompat & INCOMPAT_CSUM_V3) !== 0;
  const csum2 = (sb.incompat & INCOMPAT_CSUM_V2) !== 0;
  const wide = (sb.incompat & INCOMPAT_64BIT) !== 0;
  const tagBytes = csum3 ? 16 : 8 + (wide ? 4 : 0) + (csum2 ? 2 : 0);
  const end = block.length - (csum2 || csum3 ? BLOCK_TAIL_BYTES : 0);
  const tags: { fsBlock: number; escaped: boolean }[] = [];
  for (let at = HEADER_BYTES; at + tagBytes <= end; ) {
    const low = block.readUInt32BE(at);
    const flags = csum3 ? block.readUInt32BE(at + 4) : block.readUInt16BE(at + 6);
    const high = wide ? block.readUInt32BE(at + 8) : 0;
    tags.push({ fsBlock: high * 2 ** 32 + low, escaped: (flags & TAG_ESCAPED) !== 0 });
    at += tagBytes + ((flags & TAG_SAME_UUID) !== 0 ? 0 : UUID_BYTES);
    if ((flags & TAG_LAST) !== 0) return tags;
  }
  if (tags.length === 0) throw new IntegrityError(`${where} is a descriptor block without tags`);
  return tags;
}

function revokedBlocks(block: Buffer, sb: JournalSuperblock, where: string): number[] {
  const used = block.readUInt32BE(HEADER_BYTES);
  if (used < HEADER_BYTES + 4 || used > block.length) throw new IntegrityError(`${where} is a revoke block claiming ${used} bytes of its ${block.length}`);
  const recordBytes = (sb.incompat & INCOMPAT_64BIT) !== 0 ? 8 : 4;
  const blocks: number[] = [];
  for (let at = HEADER_BYTES + 4; at + recordBytes <= used; at += recordBytes) {
    blocks.push(recordBytes === 8 ? block.readUInt32BE(at) * 2 ** 32 + block.readUInt32BE(at + 4) : block.readUInt32BE(at));
  }
  return blocks;
}
