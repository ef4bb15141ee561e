/**
 * What every read-only filesystem reader gives item-level restore (issue 11): a volume's tree of
 * nodes, each listed with what `bulwark ls` shows and `bulwark restore --path` keeps, and a file's
 * bytes as runs of data and holes, so a sparse file is restored sparse and nothing is held in
 * memory beyond one run. Readers read through a RandomAccess (a volume of a point, read through the
 * vault), never a mounted filesystem: what they read is untrusted input, and a malformed structure
 * is an IntegrityError naming the structure, never a crash, a hang or an unbounded allocation.
 */
import type { RandomAccess } from "../block-reader.ts";

export type NodeType = "dir" | "file" | "symlink" | "other";

export interface FsNode {
  /** The filesystem's own id of the node (an inode number, an MFT record, a FAT directory entry's place). Two names with one id are hard links. */
  readonly id: string;
  readonly type: NodeType;
  /** Bytes of a file's content (a symlink: its target's length; a directory: what the filesystem says). */
  readonly size: number;
  /** Permission bits (0o7777). Filesystems without them synthesise what Linux's driver shows (NTFS, FAT: 0o755 for folders, 0o644 for files, 0o444 when read-only). */
  readonly mode: number;
  /** Milliseconds since the Unix epoch. */
  readonly mtime: number;
  readonly atime: number;
  readonly uid: number;
  readonly gid: number;
  /** Names pointing at the node (1 where the filesystem has no hard links). */
  readonly nlink: number;
  /** A symlink's target, as stored. */
  readonly target?: string;
  /** Set when the node's content cannot be read by this reader, saying why (an NTFS compressed or EFS-encrypted file, say). */
  readonly unreadable?: string;
}

export interface DirEntry {
  readonly name: string;
  readonly node: FsNode;
}

/** One piece of a file's content, in order: data, or a hole that reads as zeros. */
export type FileRun =
  | { readonly offset: number; readonly length: number; readonly hole: false; readonly data: Buffer }
  | { readonly offset: number; readonly length: number; readonly hole: true };

/** Bytes of data yielded at most per run, so reading a file holds little in memory. */
export const MAX_RUN_BYTES = 1024 * 1024;

export interface FileSystem {
  /** "ext2", "ext3", "ext4", "xfs", "ntfs", "vfat". */
  readonly filesystem: string;
  /** The volume's label ("" when it has none). */
  readonly label: string;
  root(): Promise<FsNode>;
  /** A directory's entries, without "." and "..", in the order the filesystem keeps them. */
  list(dir: FsNode): Promise<DirEntry[]>;
  /**
   * A file's content as runs covering [0, size) in order, each data run at most MAX_RUN_BYTES.
   * Throws UnreadableItemError for content this reader does not read (node.unreadable says why).
   */
  read(file: FsNode): AsyncIterable<FileRun>;
}

/** A filesystem format: recognised from a volume's first bytes, then opened over the whole volume. */
export interface FileSystemFormat {
  readonly name: string;
  /** True when `head` (the volume's first 64 KiB, or fewer when the volume is smaller) holds this format's superblock. */
  probe(head: Buffer): boolean;
  open(volume: RandomAccess): Promise<FileSystem>;
}

export const PROBE_BYTES = 64 * 1024;

/** A node whose content this reader does not read (compressed, encrypted, a format feature not supported). */
export class UnreadableItemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnreadableItemError";
  }
}
