/**
 * LVM2 physical volumes (the root disks of common RHEL images on Azure): the label, the PV header,
 * the metadata area and the newest metadata text in it, parsed into the volume group's logical
 * volumes; a linear logical volume (or a striped one of one stripe) on this PV reads as a disk of
 * its own, its extents mapped to the PV's. What cannot be mapped from this PV alone (extents on
 * another PV, more than one stripe, raid, thin, snapshots, cache) is listed and said so.
 *
 * Sources (LVM2's own source tree, lvmteam/lvm2, the only description of its on-disk format):
 * - lib/label/label.h: the label, 32 bytes in one of the first 4 sectors ("LABELONE", the sector
 *   it is in, a CRC from byte 20 to the end of the sector, the offset of the contents, "LVM2 001").
 * - lib/format_text/layout.h: struct pv_header (a 32-character id, the device size, then two lists
 *   of disk_locn {offset, size}: data areas, then metadata areas, each ended by a zero entry),
 *   struct mda_header (a CRC of the rest of its 512 bytes, the magic " LVM2 x[5A%r0N*>", version
 *   1, its own absolute start, the area's size, then raw_locn {offset, size, checksum, flags}
 *   entries, the first being the committed metadata; flag 1 marks an area whose metadata is ignored).
 * - lib/format_text/format-text.c (reading a VG from a raw area): the text starts at
 *   mda start + offset; when offset + size passes the area's end, the rest of it ("wrap" bytes)
 *   continues at mda start + 512, just after the header (the area is a circular buffer); the
 *   raw_locn checksum is LVM's CRC over the whole text.
 * - lib/misc/crc.c: LVM's CRC is CRC-32 (the reflected polynomial 0xEDB88320) started from
 *   0xf597a6cf with no final inversion.
 * - The metadata text format as vgcfgbackup writes it and lvm.conf(5) / libdm's config parser read
 *   it: `name = value` and `name { ... }` sections, strings in double quotes with backslash
 *   escapes, integers, `[ ... ]` lists, `#` comments; sizes (extent_size, pe_start) in 512-byte
 *   sectors; a segment's `stripes = ["pv0", first extent]` (lib/format_text/import_vsn1.c).
 * - Device-mapper names a logical volume "VG-LV", each hyphen inside the names doubled
 *   (dm_build_dm_name in libdm), which is how the listing names them.
 */
import { crc32 } from "node:zlib";
import { IntegrityError, UsageError } from "../errors.ts";
import type { RandomAccess } from "./block-reader.ts";

export interface LvmLogicalVolume {
  /** "VG-LV", hyphens inside each name doubled, as /dev/mapper shows it. */
  readonly name: string;
  /** The LV's own name in its volume group. */
  readonly lvName: string;
  readonly size: number;
  /** The LV's bytes, mapped onto this PV; absent when it cannot be read from this PV alone. */
  readonly bytes?: RandomAccess;
  /** Why the LV has no bytes here. */
  readonly unreadable?: string;
}

export interface LvmVolumeGroup {
  /** "" for a PV that is not in a volume group (or keeps no copy of its metadata). */
  readonly name: string;
  /** Bytes per extent. */
  readonly extentSize: number;
  /** The group's visible logical volumes, in the order the metadata lists them. */
  readonly volumes: LvmLogicalVolume[];
}

const SECTOR = 512;
const LABEL_SECTORS = 4;
const LABEL_ID = "LABELONE";
const LABEL_TYPE = "LVM2 001";
const MDA_MAGIC = Buffer.from(" LVM2 x[5A%r0N*>", "latin1");
const MDA_HEADER_BYTES = 512;
const INITIAL_CRC = 0xf597a6cf;
const RAW_LOCN_IGNORED = 1;
/** More areas than LVM makes (it makes at most 2 of each): a longer list is damage. */
const MAX_AREAS = 8;
/** LVM's default metadata area is 1 MiB; text larger than this is not metadata a tool wrote. */
const MAX_METADATA_TEXT = 16 * 1024 * 1024;
/** Deeper than LVM's text ever nests (VG, logical_volumes, LV, segment, and a little more). */
const MAX_NESTING = 16;
const MAX_SEGMENTS = 65536;
const SNAPSHOT_UNREADABLE = "it is an LVM snapshot: its extents hold the origin's changed blocks, and snapshots are not read";

/** The volume group on a PV, or undefined when the bytes carry no LVM2 label. */
export async function readLvm(pv: RandomAccess): Promise<LvmVolumeGroup | undefined> {
  if (pv.size < LABEL_SECTORS * SECTOR) return undefined;
  const head = await pv.read(0, LABEL_SECTORS * SECTOR);
  const label = findLabel(head);
  if (label === undefined) return undefined;
  const { pvId, metadataAreas } = readPvHeader(head, label);
  const metadata = await newestMetadata(pv, metadataAreas);
  if (metadata === undefined) return { name: "", extentSize: 0, volumes: [] };
  return volumeGroupOf(parseLvmText(metadata), pvId, pv);
}

/** The sector holding the label, or undefined when none of the first four does. */
function findLabel(head: Buffer): number | undefined {
  for (let sector = 0; sector < LABEL_SECTORS; sector++) {
    const at = sector * SECTOR;
    if (head.toString("latin1", at, at + 8) !== LABEL_ID) continue;
    const label = head.subarray(at, at + SECTOR);
    if (label.readBigUInt64LE(8) !== BigInt(sector)) throw new IntegrityError(`the LVM2 label in sector ${sector} is damaged: it says it is in sector ${label.readBigUInt64LE(8)}`);
    if (lvmCrc(label.subarray(20)) !== label.readUInt32LE(16)) throw new IntegrityError(`the LVM2 label in sector ${sector} is damaged: its CRC does not match`);
    const type = label.toString("latin1", 24, 32);
    if (type !== LABEL_TYPE) throw new IntegrityError(`the LVM label in sector ${sector} is of type "${type}", not "${LABEL_TYPE}": only LVM2 is read`);
    return sector;
  }
  return undefined;
}

/** LVM's CRC (lib/misc/crc.c): CRC-32 from 0xf597a6cf without the final inversion, which zlib's crc32 applies. */
function lvmCrc(bytes: Buffer, initial = INITIAL_CRC): number {
  return ~crc32(bytes, ~initial >>> 0) >>> 0;
}

interface DiskArea {
  offset: number;
  size: number;
}

function readPvHeader(head: Buffer, labelSector: number): { pvId: string; metadataAreas: DiskArea[] } {
  const labelAt = labelSector * SECTOR;
  const contents = head.readUInt32LE(labelAt + 20);
  const headerAt = labelAt + contents;
  if (contents < 32 || headerAt + 40 > labelAt + SECTOR) throw new IntegrityError(`the LVM2 label in sector ${labelSector} is damaged: its PV header would start at byte ${contents} of the label`);
  const pvId = head.toString("latin1", headerAt, headerAt + 32);
  let at = headerAt + 40;
  const lists: DiskArea[][] = [];
  // Two lists, each ended by a zero entry: data areas, then metadata areas.
  for (let list = 0; list < 2; list++) {
    const areas: DiskArea[] = [];
    for (;;) {
      if (at + 16 > labelAt + SECTOR || areas.length > MAX_AREAS) {
        throw new IntegrityError(`the LVM2 PV header in sector ${labelSector} is damaged: its list of ${list === 0 ? "data" : "metadata"} areas does not end`);
      }
      const offset = Number(head.readBigUInt64LE(at));
      const size = Number(head.readBigUInt64LE(at + 8));
      at += 16;
      if (offset === 0) break;
      areas.push({ offset, size });
    }
    lists.push(areas);
  }
  return { pvId, metadataAreas: lists[1] };
}

interface MetadataCopy {
  text: string;
  seqno: number;
}

/** The newest committed metadata text among the PV's metadata areas (LVM keeps one or two). */
async function newestMetadata(pv: RandomAccess, areas: DiskArea[]): Promise<string | undefined> {
  let newest: MetadataCopy | undefined;
  let damage: IntegrityError | undefined;
  for (const area of areas) {
    try {
      const text = await metadataText(pv, area);
      if (text === undefined) continue;
      const seqno = seqnoOf(text);
      if (!newest || seqno > newest.seqno) newest = { text, seqno };
    } catch (error) {
      if (!(error instanceof IntegrityError)) throw error;
      damage ??= error;
    }
  }
  // One damaged copy beside a good one is read from the good one, as LVM does.
  if (!newest && damage) throw damage;
  return newest?.text;
}

/** The committed text of one metadata area, or undefined when it holds none (or is ignored). */
async function metadataText(pv: RandomAccess, area: DiskArea): Promise<string | undefined> {
  const where = `the LVM2 metadata area at byte ${area.offset}`;
  if (area.offset + MDA_HEADER_BYTES > pv.size) throw new IntegrityError(`${where} is damaged: it lies past the end of the ${pv.size}-byte physical volume`);
  const header = await pv.read(area.offset, MDA_HEADER_BYTES);
  if (!header.subarray(4, 20).equals(MDA_MAGIC)) throw new IntegrityError(`${where} is damaged: its header has not the LVM2 magic`);
  if (lvmCrc(header.subarray(4)) !== header.readUInt32LE(0)) throw new IntegrityError(`${where} is damaged: its header's CRC does not match`);
  if (header.readUInt32LE(20) !== 1) throw new IntegrityError(`${where} has version ${header.readUInt32LE(20)} of its header, and only version 1 is read`);
  const start = Number(header.readBigUInt64LE(24));
  const size = Number(header.readBigUInt64LE(32));
  if (start !== area.offset || size <= MDA_HEADER_BYTES || start + size > pv.size) {
    throw new IntegrityError(`${where} is damaged: its header says it starts at byte ${start} and holds ${size} bytes`);
  }
  // The first raw location is the committed metadata.
  const offset = Number(header.readBigUInt64LE(40));
  const length = Number(header.readBigUInt64LE(48));
  const checksum = header.readUInt32LE(56);
  const flags = header.readUInt32LE(60);
  if (offset === 0 || flags & RAW_LOCN_IGNORED) return undefined;
  if (offset < MDA_HEADER_BYTES || offset >= size || length === 0 || length > size - MDA_HEADER_BYTES || length > MAX_METADATA_TEXT) {
    throw new IntegrityError(`${where} is damaged: its metadata is said to be ${length} bytes at offset ${offset} of a ${size}-byte area`);
  }
  // A circular buffer: text running past the area's end continues just after the header.
  const wrap = Math.max(0, offset + length - size);
  const first = await pv.read(start + offset, length - wrap);
  const bytes = wrap > 0 ? Buffer.concat([first, await pv.read(start + MDA_HEADER_BYTES, wrap)]) : first;
  if (lvmCrc(bytes) !== checksum) throw new IntegrityError(`${where} is damaged: its metadata text (${length} bytes at offset ${offset}) does not match its checksum`);
  return bytes.toString("utf8").replace(/\0+$/, "");
}

/** The seqno of a metadata text, found without parsing it all (to choose the newest copy). */
function seqnoOf(text: string): number {
  const match = /\bseqno\s*=\s*(\d+)/.exec(text);
  if (!match) throw new IntegrityError("the LVM2 metadata is damaged: it has no seqno");
  return Number(match[1]);
}

// The metadata text: sections of named values.

export type LvmValue = string | number | LvmValue[] | LvmSection;

export class LvmSection {
  readonly values = new Map<string, LvmValue>();

  section(name: string): LvmSection | undefined {
    const value = this.values.get(name);
    return value instanceof LvmSection ? value : undefined;
  }

  number(name: string, where: string): number {
    const value = this.values.get(name);
    if (typeof value !== "number") throw new IntegrityError(`the LVM2 metadata is damaged: ${where} has no number ${name}`);
    return value;
  }

  string(name: string): string | undefined {
    const value = this.values.get(name);
    return typeof value === "string" ? value : undefined;
  }

  list(name: string): LvmValue[] | undefined {
    const value = this.values.get(name);
    return Array.isArray(value) ? value : undefined;
  }

  sections(): [string, LvmSection][] {
    return [...this.values].filter((entry): entry is [string, LvmSection] => entry[1] instanceof LvmSection);
  }
}

/** Parses LVM2's metadata text; malformed text is an IntegrityError saying where. */
export function parseLvmText(text: string): LvmSection {
  return new TextParser(text).document();
}

class TextParser {
  private readonly text: string;
  private at = 0;

  constructor(text: string) {
    this.text = text;
  }

  document(): LvmSection {
    const root = this.sectionBody(0);
    this.skipBlank();
    if (this.at < this.text.length) this.fail("a '}' closes no section");
    return root;
  }

  private sectionBody(depth: number): LvmSection {
    if (depth > MAX_NESTING) this.fail(`sections nest deeper than ${MAX_NESTING}`);
    const section = new LvmSection();
    for (;;) {
      this.skipBlank();
      if (this.at >= this.text.length || this.text[this.at] === "}") return section;
      const name = this.name();
      this.skipBlank();
      const next = this.text[this.at++];
      if (next === "{") {
        section.values.set(name, this.sectionBody(depth + 1));
        this.skipBlank();
        if (this.text[this.at++] !== "}") this.fail(`section ${name} is not closed`);
      } else if (next === "=") {
        section.values.set(name, this.value(depth));
      } else {
        this.fail(`${name} is followed by neither '=' nor '{'`);
      }
    }
  }

  private value(depth: number): LvmValue {
    this.skipBlank();
    const next = this.text[this.at];
    if (next === '"') return this.string();
    if (next === "[") return this.list(depth);
    return this.number();
  }

  private list(depth: number): LvmValue[] {
    if (depth > MAX_NESTING) this.fail(`lists nest deeper than ${MAX_NESTING}`);
    this.at++;
    const items: LvmValue[] = [];
    for (;;) {
      this.skipBlank();
      if (this.text[this.at] === "]") {
        this.at++;
        return items;
      }
      if (items.length > 0) {
        if (this.text[this.at] !== ",") this.fail("list items are not separated by ','");
        this.at++;
        this.skipBlank();
      }
      if (this.at >= this.text.length) this.fail("a list is not closed");
      items.push(this.value(depth + 1));
    }
  }

  private string(): string {
    let value = "";
    for (this.at++; ; this.at++) {
      const char = this.text[this.at];
      if (char === undefined) this.fail("a string is not closed");
      if (char === '"') break;
      if (char === "\\") {
        this.at++;
        if (this.at >= this.text.length) this.fail("a string is not closed");
      }
      value += this.text[this.at];
    }
    this.at++;
    return value;
  }

  private number(): number {
    const match = /^-?\d+(\.\d+)?/.exec(this.text.slice(this.at, this.at + 32));
    if (!match) this.fail("a value is neither a string, a number nor a list");
    const value = Number(match[0]);
    if (!Number.isSafeInteger(value) && !match[1]) this.fail(`the number ${match[0]} is too large`);
    this.at += match[0].length;
    return value;
  }

  private name(): string {
    const match = /^[A-Za-z0-9_.+\-]+/.exec(this.text.slice(this.at, this.at + 256));
    if (!match) this.fail("a name was expected");
    this.at += match[0].length;
    return match[0];
  }

  private skipBlank(): void {
    for (;;) {
      while (this.at < this.text.length && /\s/.test(this.text[this.at])) this.at++;
      if (this.text[this.at] !== "#") return;
      const end = this.text.indexOf("\n", this.at);
      this.at = end < 0 ? this.text.length : end;
    }
  }

  private fail(problem: string): never {
    const line = this.text.slice(0, this.at).split("\n").length;
    throw new IntegrityError(`the LVM2 metadata text is damaged at line ${line}: ${problem}`);
  }
}

// The volume group and its logical volumes.

interface Segment {
  startExtent: number;
  extentCount: number;
  /** The first extent on this PV. */
  pvExtent: number;
}

function volumeGroupOf(document: LvmSection, pvId: string, pv: RandomAccess): LvmVolumeGroup {
  // The text holds one section, the volume group, among top-level values (contents, version...).
  const groups = document.sections();
  if (groups.length !== 1) throw new IntegrityError(`the LVM2 metadata is damaged: it holds ${groups.length} volume groups, not 1`);
  const [vgName, vg] = groups[0];
  const extentSectors = vg.number("extent_size", `volume group ${vgName}`);
  if (extentSectors <= 0) throw new IntegrityError(`the LVM2 metadata is damaged: volume group ${vgName} has extents of ${extentSectors} sectors`);
  const extentSize = extentSectors * SECTOR;
  const thisPv = findThisPv(vg, vgName, pvId);
  const peStart = thisPv ? thisPv.section.number("pe_start", `physical volume ${thisPv.name}`) * SECTOR : 0;
  const lvs = vg.section("logical_volumes")?.sections() ?? [];
  const cowStores = snapshotStores(lvs);
  const volumes: LvmLogicalVolume[] = [];
  for (const [lvName, lv] of lvs) {
    if (!statusOf(lv).includes("VISIBLE")) continue;
    const volume = logicalVolume(vgName, lvName, lv, { extentSize, pvName: thisPv?.name, peStart, pv });
    // A snapshot's own extents are a linear LV holding the changes since it was taken, not a volume to browse.
    volumes.push(cowStores.has(lvName) ? { name: volume.name, lvName, size: volume.size, unreadable: SNAPSHOT_UNREADABLE } : volume);
  }
  return { name: vgName, extentSize, volumes };
}

/** This PV's section (pv0, pv1...), found by the id in its PV header. */
function findThisPv(vg: LvmSection, vgName: string, pvId: string): { name: string; section: LvmSection } | undefined {
  const pvs = vg.section("physical_volumes");
  if (!pvs) throw new IntegrityError(`the LVM2 metadata is damaged: volume group ${vgName} has no physical_volumes`);
  for (const [name, section] of pvs.sections()) {
    // The text writes the id with hyphens (6-4-4-4-4-4-6), the PV header without.
    if (section.string("id")?.replaceAll("-", "") === pvId) return { name, section };
  }
  return undefined;
}

/** The LVs that hold a snapshot's changes (a hidden LV's "snapshot" segment names them as its cow_store). */
function snapshotStores(lvs: [string, LvmSection][]): Set<string> {
  const stores = new Set<string>();
  for (const [, lv] of lvs) {
    for (const [, segment] of lv.sections()) {
      const store = segment.string("type") === "snapshot" ? segment.string("cow_store") : undefined;
      if (store) stores.add(store);
    }
  }
  return stores;
}

function statusOf(section: LvmSection): string[] {
  return (section.list("status") ?? []).filter((s): s is string => typeof s === "string");
}

interface Placement {
  extentSize: number;
  /** This PV's name in the metadata (undefined when the metadata does not list it). */
  pvName: string | undefined;
  peStart: number;
  pv: RandomAccess;
}

function logicalVolume(vgName: string, lvName: string, lv: LvmSection, placement: Placement): LvmLogicalVolume {
  const name = `${vgName.replaceAll("-", "--")}-${lvName.replaceAll("-", "--")}`;
  const where = `logical volume ${lvName}`;
  const segments = lv.sections().filter(([key]) => /^segment\d+$/.test(key));
  if (segments.length > MAX_SEGMENTS) throw new IntegrityError(`the LVM2 metadata is damaged: ${where} has ${segments.length} segments`);
  let extents = 0;
  let unreadable: string | undefined;
  const mapped: Segment[] = [];
  for (const [key, segment] of segments) {
    const startExtent = segment.number("start_extent", `${where} ${key}`);
    const extentCount = segment.number("extent_count", `${where} ${key}`);
    if (startExtent < 0 || extentCount <= 0) throw new IntegrityError(`the LVM2 metadata is damaged: ${where} ${key} has ${extentCount} extents from ${startExtent}`);
    extents += extentCount;
    const mapping = segmentOnThisPv(segment, placement.pvName);
    if (typeof mapping === "string") unreadable ??= mapping;
    else mapped.push({ startExtent, extentCount, pvExtent: mapping });
  }
  const size = extents * placement.extentSize;
  if (!Number.isSafeInteger(size)) throw new IntegrityError(`the LVM2 metadata is damaged: ${where} has ${extents} extents`);
  if (unreadable) return { name, lvName, size, unreadable };
  mapped.sort((a, b) => a.startExtent - b.startExtent);
  let next = 0;
  for (const segment of mapped) {
    if (segment.startExtent !== next) throw new IntegrityError(`the LVM2 metadata is damaged: the segments of ${where} leave a gap or overlap at extent ${next}`);
    const end = placement.peStart + (segment.pvExtent + segment.extentCount) * placement.extentSize;
    if (end > placement.pv.size) throw new IntegrityError(`the LVM2 metadata is damaged: ${where} maps extents up to byte ${end} of a ${placement.pv.size}-byte physical volume`);
    next += segment.extentCount;
  }
  return { name, lvName, size, bytes: new LinearVolume(name, size, mapped, placement) };
}

/** The segment's first extent on this PV, or why it cannot be read from it. */
function segmentOnThisPv(segment: LvmSection, pvName: string | undefined): number | string {
  const type = segment.string("type");
  if (type !== "striped") return `it is a ${type ?? "untyped"} volume, and only linear volumes are read`;
  const stripeCount = segment.values.get("stripe_count");
  if (stripeCount !== 1) return `it is striped over ${String(stripeCount)} physical volumes, and only linear volumes are read`;
  const stripes = segment.list("stripes");
  if (!stripes || stripes.length !== 2 || typeof stripes[0] !== "string" || typeof stripes[1] !== "number" || stripes[1] < 0) {
    throw new IntegrityError(`the LVM2 metadata is damaged: a segment's stripes are not ["pvN", extent]`);
  }
  if (stripes[0] !== pvName) return `its extents are on ${stripes[0]}, another physical volume of the group`;
  return stripes[1];
}

/** An LV's bytes: each read split over its segments, each segment's extents read from the PV. */
class LinearVolume implements RandomAccess {
  readonly size: number;
  private readonly name: string;
  private readonly segments: Segment[];
  private readonly placement: Placement;

  constructor(name: string, size: number, segments: Segment[], placement: Placement) {
    this.name = name;
    this.size = size;
    this.segments = segments;
    this.placement = placement;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new UsageError(`cannot read ${length} bytes at offset ${offset} of logical volume ${this.name}: it holds ${this.size} bytes`);
    }
    const { extentSize, peStart, pv } = this.placement;
    const pieces: Buffer[] = [];
    for (const segment of this.segments) {
      const segmentStart = segment.startExtent * extentSize;
      const segmentEnd = segmentStart + segment.extentCount * extentSize;
      const from = Math.max(offset, segmentStart);
      const to = Math.min(offset + length, segmentEnd);
      if (from >= to) continue;
      pieces.push(await pv.read(peStart + segment.pvExtent * extentSize + (from - segmentStart), to - from));
    }
    return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces, length);
  }
}
