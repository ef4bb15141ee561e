/**
 * Recovery-point manifests. A point's content is a tree of chunks: its manifest lists the ids of
 * "tree" chunks, each of which lists the ids of data chunks. Disk images are block maps (fixed
 * block size, so a block's offset is implied by its position; the all-zero id means a zero
 * block, stored as nothing), so every disk point is a synthetic full with no chain to replay.
 * Files are streams of content-defined chunks (id and length per entry).
 */
export interface BlockLayout {
  layout: "blocks";
  blockSize: number;
  /** Blocks per tree chunk (the last may hold fewer). */
  blocksPerNode: number;
  /** Hex ids of the tree chunks, in disk order. */
  tree: string[];
}

export interface StreamLayout {
  layout: "stream";
  /** Hex ids of the tree chunks, in file order; each entry is a 32-byte id and a u32 length. */
  tree: string[];
}

/**
 * A folder tree (backup-tree.ts, tree-entries.ts): `index` names the chunks that index its sorted
 * entry chunks; `tree` lists every chunk the point references (entry, index and content-tree
 * chunks and file data) as stream-tree entries, so prune, verify, commit and copy walk it as they
 * walk a stream point's tree.
 */
export interface TreeLayout {
  layout: "tree";
  /** Hex ids of the index chunks, in entry order. */
  index: string[];
  /** Hex ids of the reference chunks; each entry is a 32-byte id and a u32 length. */
  tree: string[];
}

export interface PointStats {
  bytesRead: number;
  /** Raw bytes of chunks this backup added (not already in the vault). */
  bytesNew: number;
  /** Bytes this backup added to storage, after compression and encryption. */
  bytesStored: number;
  chunksNew: number;
  durationMs: number;
}

export interface PointManifest {
  version: 1;
  id: string;
  time: string;
  /** "disk", "file" and "tree" (a folder) points hold content; "vm" points group disk points. */
  kind: "disk" | "file" | "tree" | "vm" | "sql";
  source: { type: string; path: string; host?: string; [key: string]: unknown };
  size: number;
  tags: Record<string, string>;
  content?: BlockLayout | StreamLayout | TreeLayout;
  /** The point this one was built from (for disks: the block map it updated). */
  parent?: string;
  /** For groups (a VM): the member points. */
  members?: { role: string; point: string; [key: string]: unknown }[];
  /** Workload-specific facts (a VM's configuration, a database's settings...). */
  details?: Record<string, unknown>;
  stats: PointStats;
  /**
   * The point's place among the points of its source (see sourceIdentity): its sequence number and
   * the source's point before it. Set by the vault at commit (Vault.commitPoint), so a point deleted
   * outside retention shows as a gap (see chain.ts).
   */
  chain?: { sequence: number; previous?: string };
}

/**
 * What makes two points points of one source: ARM resource ids compare case-insensitively (Azure
 * treats them so), local paths exactly as they are and only on the same host (`Case.img` and
 * `case.img` are two files on Linux; /data on two machines are two sources).
 */
export function sourceIdentity(point: { kind: string; source: { path: string; host?: string; [key: string]: unknown } }): string {
  const path = point.source.path;
  if (/^\/subscriptions\//i.test(path)) return `${point.kind}:arm:${path.toLowerCase()}`;
  return `${point.kind}:local:${point.source.host ?? ""}:${path}`;
}

export const BLOCK_TREE_ENTRY = 32;
export const STREAM_TREE_ENTRY = 36;
/** 4096 entries: a tree chunk of 128 KiB covers 256 MiB of disk at 64 KiB blocks. */
export const ENTRIES_PER_NODE = 4096;
