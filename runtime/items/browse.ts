/**
 * A point as a tree of paths (issue 11): a disk point's root lists its volumes (volumes.ts), a VM
 * point's root its disks (`os`, `lun0`, `lun1`, … from the point's members), each holding its
 * volumes; inside a volume, its filesystem's folders. Only the blocks a listing or a read needs are
 * fetched from the vault (block-reader.ts); `bytesRead` says how many.
 *
 * Names come from the filesystem, which is untrusted: a name that could not be a path component
 * here ("", ".", "..", or one holding "/" or NUL) is left out of listings and reported, so nothing
 * read from a point can make a restore write outside its target folder.
 */
import path from "node:path";
import type { PointManifest } from "../engine/point.ts";
import type { Vault } from "../engine/vault.ts";
import { IntegrityError, NotFoundError, UsageError } from "../errors.ts";
import { diskPointReader, type DiskPointReader } from "./block-reader.ts";
import { TreeFileSystem } from "./fs/tree.ts";
import type { FileSystem, FsNode } from "./fs/types.ts";
import { diskVolumes, type Volume } from "./volumes.ts";

export type EntryType = "dir" | "file" | "symlink" | "other" | "volume" | "disk";

/** One line of `bulwark ls` (its --json shape). */
export interface BrowseEntry {
  name: string;
  path: string;
  type: EntryType;
  size: number;
  mode?: number;
  mtime?: string;
  uid?: number;
  gid?: number;
  target?: string;
  filesystem?: string;
  label?: string;
  unreadable?: string;
}

/** Where a path leads: the point's root, a disk, a volume, or a node of a volume's filesystem. */
export type Located =
  | { kind: "root"; path: string }
  | { kind: "disk"; path: string; disk: PointDisk }
  | { kind: "volume"; path: string; volume: Volume; scope: string }
  | { kind: "node"; path: string; name: string; node: FsNode; fs: FileSystem; scope: string };

/** Deeper than any real tree: a deeper walk is a directory cycle in a damaged filesystem. */
export const MAX_DEPTH = 512;
/**
 * Directory entries kept in listings, so resolving sibling paths does not list their parents again:
 * bounded in entries, not listings, since a folder may hold a million (a bigger listing is not kept).
 */
const LISTING_ENTRIES_KEPT = 100_000;

class PointDisk {
  readonly name: string;
  readonly reader: DiskPointReader;
  private volumes?: Promise<Volume[]>;

  constructor(name: string, reader: DiskPointReader) {
    this.name = name;
    this.reader = reader;
  }

  listVolumes(): Promise<Volume[]> {
    this.volumes ??= diskVolumes(this.reader);
    return this.volumes;
  }
}

export class PointBrowser {
  readonly point: PointManifest;
  /** The disks of the point: one (unnamed at the root) for a disk point, the members for a VM point. */
  readonly disks: PointDisk[];
  /** Names left out of listings because they cannot be path components here (each once, however often its folder is listed). */
  readonly refusedNames = new Set<string>();
  /** A folder point's tree: the point's root is its top folder (no disks or volumes). */
  readonly tree?: TreeFileSystem;
  private readonly listings = new Map<string, Promise<Array<{ name: string; node: FsNode }>>>();
  /** Entries of each listing kept (known once it is read), and their sum. */
  private readonly listingSizes = new Map<string, number>();
  private listingEntries = 0;

  private constructor(point: PointManifest, disks: PointDisk[], tree?: TreeFileSystem) {
    this.point = point;
    this.disks = disks;
    this.tree = tree;
  }

  /** Opens a disk, VM or folder point (an id, a unique prefix, or "latest" among those). */
  static async open(vault: Vault, reference: string): Promise<PointBrowser> {
    const point = await vault.resolvePoint(reference, (p) => p.kind === "disk" || p.kind === "vm" || p.kind === "tree");
    if (point.content?.layout === "tree") return new PointBrowser(point, [], new TreeFileSystem(vault, point.content));
    if (point.kind === "disk") return new PointBrowser(point, [new PointDisk("", diskPointReader(vault, point))]);
    if (point.kind !== "vm") throw new UsageError(`point ${point.id.slice(0, 12)} is a ${point.kind} point: only disk and VM points hold files to browse`);
    const disks: PointDisk[] = [];
    for (const member of point.members ?? []) {
      const memberPoint = await vault.resolvePoint(member.point);
      disks.push(new PointDisk(memberDiskName(member), diskPointReader(vault, memberPoint)));
    }
    return new PointBrowser(point, disks);
  }

  /** Bytes fetched from the vault so far (chunks as stored: compressed and encrypted). */
  get bytesRead(): number {
    return this.disks.reduce((sum, d) => sum + d.reader.fetched.bytes, this.tree?.bytesRead ?? 0);
  }

  /** Where a path in the point leads; NotFoundError naming the first part that is not there. */
  async locate(rawPath: string): Promise<Located> {
    const parts = splitPath(rawPath);
    let at: Located = { kind: "root", path: "/" };
    for (const part of parts) at = await this.child(at, part);
    return at;
  }

  /** The entries under a place (a file lists as itself, as `ls` does). */
  async list(at: Located): Promise<BrowseEntry[]> {
    if (at.kind === "node" && at.node.type !== "dir") return [nodeEntry(at.name, at.path, at.node)];
    return (await this.children(at)).map((child) => this.entry(child));
  }

  /** The places directly under a place: disks, volumes, or a directory's nodes. */
  async children(at: Located): Promise<Located[]> {
    switch (at.kind) {
      case "root":
        if (this.tree) return this.nodeChildren("/", this.tree, await this.tree.root(), "tree");
        if (this.point.kind === "vm") return this.disks.map((disk) => ({ kind: "disk", path: joinPath("/", disk.name), disk }));
        return this.volumeChildren("/", this.disks[0]);
      case "disk":
        return this.volumeChildren(at.path, at.disk);
      case "volume":
        if (!at.volume.fs) {
          const why = `${at.path} cannot be browsed: ${at.volume.unreadable ?? "no filesystem is on it"}`;
          throw at.volume.damaged ? new IntegrityError(why) : new UsageError(why);
        }
        return this.nodeChildren(at.path, at.volume.fs, await at.volume.fs.root(), at.scope);
      case "node":
        if (at.node.type !== "dir") return [];
        return this.nodeChildren(at.path, at.fs, at.node, at.scope);
    }
  }

  entry(at: Located): BrowseEntry {
    switch (at.kind) {
      case "root":
        return { name: "/", path: "/", type: this.point.kind === "disk" ? "disk" : "dir", size: this.point.size };
      case "disk":
        return { name: at.disk.name, path: at.path, type: "disk", size: at.disk.reader.size };
      case "volume": {
        const v = at.volume;
        return {
          name: v.name,
          path: at.path,
          type: "volume",
          size: v.size,
          ...(v.fs ? { filesystem: v.fs.filesystem, label: v.fs.label } : {}),
          ...(v.unreadable ? { unreadable: v.unreadable } : {}),
        };
      }
      case "node":
        return nodeEntry(at.name, at.path, at.node);
    }
  }

  private async child(at: Located, name: string): Promise<Located> {
    const children = await this.children(at);
    const exact = children.find((c) => baseName(c) === name);
    if (exact) return exact;
    // FAT and NTFS names are case-insensitive on Windows (and in Linux's vfat): a unique match in another case is the one meant.
    const fs = at.kind === "volume" ? at.volume.fs : at.kind === "node" ? at.fs : undefined;
    if (fs && (fs.filesystem === "vfat" || fs.filesystem === "ntfs")) {
      const folded = children.filter((c) => baseName(c).toLowerCase() === name.toLowerCase());
      if (folded.length === 1) return folded[0];
    }
    const names = children.slice(0, 8).map(baseName);
    throw new NotFoundError(
      `${joinPath(at.path, name)} is not in point ${this.point.id.slice(0, 12)}` +
        (at.kind === "node" && at.node.type !== "dir" ? `: ${at.path} is not a folder` : `; ${at.path} holds ${names.length ? names.join(", ") + (children.length > names.length ? ", …" : "") : "nothing"} (list it with \`bulwark ls\`)`),
    );
  }

  private async volumeChildren(parent: string, disk: PointDisk): Promise<Located[]> {
    const volumes = await disk.listVolumes();
    return volumes.map((volume) => ({ kind: "volume", path: joinPath(parent, volume.name), volume, scope: `${disk.name}/${volume.name}` }));
  }

  private async nodeChildren(parent: string, fs: FileSystem, dir: FsNode, scope: string): Promise<Located[]> {
    const key = `${scope}:${dir.id}`;
    const listing = this.listing(key, fs, dir);
    const out: Located[] = [];
    for (const { name, node } of await listing) {
      if (!isSafeName(name)) {
        this.refusedNames.add(`${parent}: ${JSON.stringify(name)}`);
        continue;
      }
      out.push({ kind: "node", path: joinPath(parent, name), name, node, fs, scope });
    }
    return out;
  }

  /** A folder's entries, kept while the listings kept hold at most LISTING_ENTRIES_KEPT entries, least recently used dropped first. */
  private listing(key: string, fs: FileSystem, dir: FsNode): Promise<Array<{ name: string; node: FsNode }>> {
    const kept = this.listings.get(key);
    if (kept) {
      // Map order is insertion order: re-inserting makes this the most recently used.
      this.listings.delete(key);
      this.listings.set(key, kept);
      const size = this.listingSizes.get(key);
      if (size !== undefined) {
        this.listingSizes.delete(key);
        this.listingSizes.set(key, size);
      }
      return kept;
    }
    const listing = fs.list(dir);
    this.listings.set(key, listing);
    listing.then(
      (entries) => {
        if (this.listings.get(key) !== listing) return;
        this.listingSizes.set(key, entries.length);
        this.listingEntries += entries.length;
        for (const [oldest, size] of this.listingSizes) {
          if (this.listingEntries <= LISTING_ENTRIES_KEPT) break;
          this.listings.delete(oldest);
          this.listingSizes.delete(oldest);
          this.listingEntries -= size;
        }
      },
      () => {
        if (this.listings.get(key) === listing) this.listings.delete(key);
      },
    );
    return listing;
  }
}

/** A VM member's disk name: `os` for the OS disk, `lunN` for a data disk at LUN N. */
function memberDiskName(member: { role: string; lun?: unknown }): string {
  if (member.role === "os") return "os";
  if (typeof member.lun === "number" && Number.isInteger(member.lun) && member.lun >= 0) return `lun${member.lun}`;
  throw new IntegrityError(`a member of the VM point has role ${JSON.stringify(member.role)} and no LUN: the point's manifest is damaged`);
}

function nodeEntry(name: string, entryPath: string, node: FsNode): BrowseEntry {
  return {
    name,
    path: entryPath,
    type: node.type,
    size: node.size,
    mode: node.mode,
    mtime: Number.isFinite(node.mtime) && Math.abs(node.mtime) <= 8.64e15 ? new Date(node.mtime).toISOString() : undefined,
    uid: node.uid,
    gid: node.gid,
    ...(node.target !== undefined ? { target: node.target } : {}),
    ...(node.unreadable ? { unreadable: node.unreadable } : {}),
  };
}

function baseName(at: Located): string {
  switch (at.kind) {
    case "root":
      return "/";
    case "disk":
      return at.disk.name;
    case "volume":
      return at.volume.name;
    case "node":
      return at.name;
  }
}

/**
 * A folder's identity within the point (its volume and node id), so a walk descends into each
 * folder once: a damaged or hostile filesystem whose folders loop, or list one folder in several
 * places, would otherwise make a walk endless or exponential.
 */
export function folderKey(at: Located): string | undefined {
  return at.kind === "node" && at.node.type === "dir" ? `${at.scope}:${at.node.id}` : undefined;
}

/** The error for a folder a walk has already been into. */
export function folderSeenTwice(at: Located): IntegrityError {
  return new IntegrityError(`${at.path} is a folder already listed elsewhere in its volume (the same node): the filesystem's folders loop, so it is damaged; it was not walked again`);
}

/** A name that can be one component of a path here. */
export function isSafeName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}

/** The components of a path in a point: "/part1/etc/hosts" → part1, etc, hosts. ".." is refused rather than resolved. */
export function splitPath(raw: string): string[] {
  if (raw.includes("\0")) throw new UsageError("a path in a point cannot hold a NUL character");
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new UsageError(`${raw}: give a path without ".." (paths in a point start at its root, e.g. /part1/etc)`);
  return parts;
}

export function joinPath(parent: string, name: string): string {
  return path.posix.join(parent, name);
}

/**
 * Every place under `from` whose name (or, for a pattern with a "/", whose path) matches a glob
 * (`*`, `?`, `[…]`, `**`), in tree order. A folder that cannot be read is reported and the walk goes on.
 */
export async function* findPaths(
  browser: PointBrowser,
  from: Located,
  pattern: string,
  onUnreadable: (at: Located, error: unknown) => void,
): AsyncGenerator<Located> {
  const byPath = pattern.includes("/");
  const stack: Array<{ at: Located; depth: number }> = [{ at: from, depth: 0 }];
  const walked = new Set<string>();
  while (stack.length > 0) {
    const { at, depth } = stack.pop()!;
    if (at.kind !== "root" && path.posix.matchesGlob(byPath ? at.path : path.posix.basename(at.path), pattern)) yield at;
    if (at.kind === "node" && at.node.type !== "dir") continue;
    if (at.kind === "volume" && !at.volume.fs) {
      if (at.volume.damaged) onUnreadable(at, new IntegrityError(at.volume.unreadable ?? "the volume is damaged"));
      continue;
    }
    const key = folderKey(at);
    if (key !== undefined) {
      if (walked.has(key)) {
        onUnreadable(at, folderSeenTwice(at));
        continue;
      }
      walked.add(key);
    }
    if (depth >= MAX_DEPTH) {
      onUnreadable(at, new IntegrityError(`${at.path} is more than ${MAX_DEPTH} folders deep: the filesystem's folders loop (it is damaged)`));
      continue;
    }
    let children: Located[];
    try {
      children = await browser.children(at);
    } catch (error) {
      if (!(error instanceof IntegrityError)) throw error;
      onUnreadable(at, error);
      continue;
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push({ at: children[i], depth: depth + 1 });
  }
}
