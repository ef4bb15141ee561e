/**
 * `bulwark diff A B`: what changed between two points of one source. For disk points (and each disk
 * of a VM point), the byte ranges whose blocks differ, read from the two block maps: tree nodes
 * with the same id are skipped unread, and no data block is fetched. With --files (always for folder
 * points), the files added, removed and changed, found by walking both points' folders
 * (runtime/items/browse.ts) and comparing type, size, mode and modification time: a file whose
 * size and time agree is taken as unchanged (as an incremental backup takes it), its content is not
 * read, so a change that kept both is not seen.
 */
import { CHUNK_TREE } from "../engine/chunk-codec.ts";
import { ID_BYTES } from "../engine/crypto.ts";
import { sourceIdentity, type BlockLayout, type PointManifest } from "../engine/point.ts";
import type { Vault } from "../engine/vault.ts";
import { IntegrityError, UsageError } from "../errors.ts";
import { folderKey, folderSeenTwice, MAX_DEPTH, PointBrowser, type BrowseEntry, type Located } from "../items/browse.ts";
import { plural } from "./plural.ts";
import { formatBytes } from "./progress.ts";

type Values = Record<string, unknown>;
type Print = (values: Values, json: unknown, text: string) => void;

export interface ByteRange {
  offset: number;
  length: number;
}

/** The changed ranges of one disk: the disk point itself, or a VM's `os`, `lun0`, … */
export interface DiskDiff {
  disk: string;
  sizes: { from: number; to: number };
  ranges: ByteRange[];
  changedBytes: number;
}

export interface FileChange {
  path: string;
  change: "added" | "removed" | "changed";
  type: BrowseEntry["type"];
  /** For a change: what differs (type, size, mode, mtime). */
  differs?: string[];
}

export interface PointDiff {
  from: string;
  to: string;
  kind: PointManifest["kind"];
  source: string;
  disks: DiskDiff[];
  files?: FileChange[];
}

// ---- changed byte ranges, from the block maps ----

function blockLayoutOf(point: PointManifest): BlockLayout {
  const content = point.content;
  if (!content || content.layout !== "blocks") throw new IntegrityError(`disk point ${point.id} has no block map: its manifest is damaged`);
  const { blockSize, blocksPerNode, tree } = content;
  const wellFormed =
    Number.isSafeInteger(point.size) && point.size >= 0 && Number.isSafeInteger(blockSize) && blockSize > 0 && Number.isSafeInteger(blocksPerNode) && blocksPerNode > 0 && Array.isArray(tree);
  if (!wellFormed || tree.length !== Math.ceil(Math.ceil(point.size / blockSize) / blocksPerNode)) {
    throw new IntegrityError(`the block map of point ${point.id} does not fit its size: its manifest is damaged. Run \`bulwark verify\`.`);
  }
  return content;
}

/** A tree node's block ids, checked to hold exactly the blocks it covers. */
async function blockIds(vault: Vault, point: PointManifest, layout: BlockLayout, node: number): Promise<Buffer | undefined> {
  const hex = layout.tree[node];
  if (hex === undefined) return undefined;
  const ids = await vault.readChunk(CHUNK_TREE, Buffer.from(hex, "hex"));
  const blocks = Math.ceil(point.size / layout.blockSize);
  const expected = Math.min(layout.blocksPerNode, blocks - node * layout.blocksPerNode) * ID_BYTES;
  if (ids.length !== expected) throw new IntegrityError(`tree node ${node} of point ${point.id} holds ${ids.length} bytes of block ids, not ${expected}: the point is damaged. Run \`bulwark verify\`.`);
  return ids;
}

/** Adds [start, end) to ranges, joined to the last one when they touch. */
function addRange(ranges: ByteRange[], start: number, end: number): void {
  const last = ranges.at(-1);
  if (last && last.offset + last.length === start) last.length += end - start;
  else ranges.push({ offset: start, length: end - start });
}

/**
 * The byte ranges where two disk points differ, adjacent changed blocks merged. Bytes past the
 * smaller point's end count as changed. Nodes whose ids agree hold the same block ids: skipped.
 */
export async function changedRanges(vault: Vault, from: PointManifest, to: PointManifest, name = ""): Promise<DiskDiff> {
  const a = blockLayoutOf(from);
  const b = blockLayoutOf(to);
  if (a.blockSize !== b.blockSize || a.blocksPerNode !== b.blocksPerNode) {
    throw new UsageError(`points ${from.id.slice(0, 12)} and ${to.id.slice(0, 12)} have block maps of different shapes (${a.blockSize} and ${b.blockSize} byte blocks): their blocks cannot be compared`);
  }
  const { blockSize, blocksPerNode } = a;
  const common = Math.min(from.size, to.size);
  const ranges: ByteRange[] = [];
  const nodes = Math.ceil(Math.ceil(common / blockSize) / blocksPerNode);
  for (let node = 0; node < nodes; node++) {
    if (a.tree[node] === b.tree[node]) continue;
    const [idsA, idsB] = await Promise.all([blockIds(vault, from, a, node), blockIds(vault, to, b, node)]);
    const first = node * blocksPerNode;
    const count = Math.min(blocksPerNode, Math.ceil(common / blockSize) - first);
    for (let i = 0; i < count; i++) {
      const at = i * ID_BYTES;
      if (idsA!.compare(idsB!, at, at + ID_BYTES, at, at + ID_BYTES) === 0) continue;
      const start = (first + i) * blockSize;
      addRange(ranges, start, Math.min(start + blockSize, common));
    }
  }
  if (from.size !== to.size) addRange(ranges, common, Math.max(from.size, to.size));
  return { disk: name, sizes: { from: from.size, to: to.size }, ranges, changedBytes: ranges.reduce((sum, r) => sum + r.length, 0) };
}

/** A VM member's name as `ls` shows it: `os`, or `lunN`. */
function memberName(member: { role: string; lun?: unknown }): string {
  return member.role === "os" ? "os" : typeof member.lun === "number" ? `lun${member.lun}` : member.role;
}

/** Each disk of the two points paired by name: the point itself for disk points, the members for VM points. */
async function diskDiffs(vault: Vault, from: PointManifest, to: PointManifest): Promise<DiskDiff[]> {
  if (from.kind === "disk") return [await changedRanges(vault, from, to)];
  if (from.kind !== "vm") return [];
  const membersOf = (p: PointManifest) => new Map((p.members ?? []).map((m) => [memberName(m), m.point]));
  const [a, b] = [membersOf(from), membersOf(to)];
  const diffs: DiskDiff[] = [];
  for (const [name, pointA] of a) {
    const pointB = b.get(name);
    if (pointB === undefined) continue; // a disk detached since: its files show as removed with --files
    diffs.push(await changedRanges(vault, await vault.resolvePoint(pointA), await vault.resolvePoint(pointB), name));
  }
  return diffs;
}

// ---- changed files, from the two points' folders ----

/** What differs between two entries of one path; empty when they agree. A folder's size and time follow its entries, so they are not compared. */
function differences(a: BrowseEntry, b: BrowseEntry): string[] {
  if (a.type !== b.type) return ["type"];
  const fields: (keyof BrowseEntry)[] = a.type === "dir" || a.type === "disk" ? ["mode"] : ["size", "mode", "mtime", "target"];
  return fields.filter((field) => a[field] !== b[field]);
}

/** The places under a folder, by name (a name twice in a hostile listing keeps the first). */
async function childrenByName(browser: PointBrowser, at: Located | undefined): Promise<Map<string, Located>> {
  const byName = new Map<string, Located>();
  if (!at) return byName;
  if (at.kind === "volume" && !at.volume.fs) return byName;
  if (at.kind === "node" && at.node.type !== "dir") return byName;
  for (const child of await browser.children(at)) {
    const name = child.path.slice(child.path.lastIndexOf("/") + 1);
    if (!byName.has(name)) byName.set(name, child);
  }
  return byName;
}

/**
 * Walks both points' folders together, in name order: a path in one only is added or removed (its
 * contents not listed under it), a path in both compared and, if a folder, walked. Each folder is
 * walked once per point: a hostile filesystem whose folders loop is reported (exit 5).
 */
export async function changedFiles(from: PointBrowser, to: PointBrowser): Promise<FileChange[]> {
  const changes: FileChange[] = [];
  const walked = [new Set<string>(), new Set<string>()];
  const seenBefore = (at: Located | undefined, side: number) => {
    const key = at && folderKey(at);
    if (key === undefined) return false;
    if (walked[side].has(key)) return true;
    walked[side].add(key);
    return false;
  };
  const walk = async (a: Located | undefined, b: Located | undefined, depth: number): Promise<void> => {
    if (seenBefore(a, 0)) throw folderSeenTwice(a!);
    if (seenBefore(b, 1)) throw folderSeenTwice(b!);
    if (depth > MAX_DEPTH) throw new IntegrityError(`${(a ?? b)!.path} is more than ${MAX_DEPTH} folders deep: the filesystem's folders loop (it is damaged)`);
    const [childrenA, childrenB] = await Promise.all([childrenByName(from, a), childrenByName(to, b)]);
    const names = [...new Set([...childrenA.keys(), ...childrenB.keys()])].sort();
    for (const name of names) {
      const [childA, childB] = [childrenA.get(name), childrenB.get(name)];
      if (!childB) changes.push({ path: childA!.path, change: "removed", type: from.entry(childA!).type });
      else if (!childA) changes.push({ path: childB.path, change: "added", type: to.entry(childB).type });
      else {
        const [entryA, entryB] = [from.entry(childA), to.entry(childB)];
        const differs = differences(entryA, entryB);
        if (differs.length) changes.push({ path: childB.path, change: "changed", type: entryB.type, differs });
        if (entryA.type === entryB.type && ["dir", "disk", "volume"].includes(entryA.type)) await walk(childA, childB, depth + 1);
      }
    }
  };
  await walk(await from.locate("/"), await to.locate("/"), 0);
  return changes;
}

// ---- the command ----

/** Two points of one source, or a UsageError naming both sources. */
function checkSameSource(from: PointManifest, to: PointManifest): void {
  if (sourceIdentity(from) === sourceIdentity(to)) return;
  throw new UsageError(
    `points ${from.id.slice(0, 12)} and ${to.id.slice(0, 12)} are of different sources (${from.kind} ${from.source.path} and ${to.kind} ${to.source.path}): diff compares two points of one source`,
  );
}

function diffText(diff: PointDiff): string {
  const lines = [`${diff.from} -> ${diff.to} (${diff.kind} ${diff.source})`];
  for (const disk of diff.disks) {
    const label = disk.disk ? `disk ${disk.disk}: ` : "";
    const size = disk.sizes.from === disk.sizes.to ? formatBytes(disk.sizes.to) : `${formatBytes(disk.sizes.from)} -> ${formatBytes(disk.sizes.to)}`;
    lines.push(`${label}${plural(disk.ranges.length, "changed range")}, ${formatBytes(disk.changedBytes)} of ${size}`);
    for (const r of disk.ranges) lines.push(`  ${r.offset}-${r.offset + r.length} (${formatBytes(r.length)})`);
  }
  if (diff.files) {
    const count = (change: FileChange["change"]) => diff.files!.filter((f) => f.change === change).length;
    lines.push(`files: ${count("added")} added, ${count("removed")} removed, ${count("changed")} changed`);
    const mark = { added: "+", removed: "-", changed: "M" } as const;
    for (const f of diff.files) lines.push(`${mark[f.change]} ${f.path}${f.type === "dir" ? "/" : ""}${f.differs ? `  (${f.differs.join(", ")})` : ""}`);
  }
  return lines.join("\n");
}

export async function diffCommand(vault: Vault, values: Values, positionals: string[], print: Print): Promise<number> {
  const [refA, refB, extra] = positionals;
  if (!refA || !refB || extra) throw new UsageError("give two points of one source: bulwark diff A B --vault V");
  const from = await vault.resolvePoint(refA);
  const to = await vault.resolvePoint(refB);
  checkSameSource(from, to);
  if (!["disk", "vm", "tree"].includes(from.kind)) throw new UsageError(`point ${from.id.slice(0, 12)} is a ${from.kind} point: diff compares disk, VM and folder points`);
  const diff: PointDiff = { from: from.id, to: to.id, kind: from.kind, source: from.source.path, disks: await diskDiffs(vault, from, to) };
  let refused = 0;
  if (values.files === true || from.kind === "tree") {
    const [browserA, browserB] = await Promise.all([PointBrowser.open(vault, from.id), PointBrowser.open(vault, to.id)]);
    diff.files = await changedFiles(browserA, browserB);
    for (const name of [...browserA.refusedNames, ...browserB.refusedNames]) process.stderr.write(`bulwark diff: left out a name that cannot be a path (damaged filesystem?): ${name}\n`);
    refused = browserA.refusedNames.size + browserB.refusedNames.size;
  }
  print(values, diff, diffText(diff));
  return refused > 0 ? 5 : 0;
}
