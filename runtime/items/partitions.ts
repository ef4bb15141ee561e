/**
 * A disk's partition table, read from its bytes (a point through block-reader.ts, or any other
 * RandomAccess): GPT, recognised by its protective MBR and checked by its CRC32s, falling back to
 * the backup header at the disk's last sector when the primary is damaged; or an MBR with its
 * primary partitions and the logical partitions chained through EBRs in an extended partition.
 *
 * Sources (not Azure references: these are the disk formats themselves):
 * - UEFI Specification 2.10, section 5.2.1 "Legacy Master Boot Record (MBR)" (the four 16-byte
 *   partition records at byte 446, the 0xAA55 signature at 510) and 5.2.3
 *   "Protective MBR" (a record of OSType 0xEE covering the disk marks a GPT disk).
 * - UEFI Specification 2.10, section 5.3.2 "GPT Header" (fields and offsets; the primary
 *   header at LBA 1, the backup at the last LBA; a header is valid when its signature, HeaderCRC32
 *   over HeaderSize bytes with the CRC field zeroed, MyLBA and PartitionEntryArrayCRC32 check; if
 *   the primary is not valid, software must check the backup at the last LBA; SizeOfPartitionEntry
 *   is 128 x 2^n) and 5.3.3 "GPT Partition Entry Array" (type GUID, unique GUID, first and last
 *   LBA inclusive, attributes, a 72-byte UTF-16LE name; an all-zero type GUID marks an unused entry).
 *   The spec's text could not be opened from here: the sections are cited as the spec numbers them,
 *   and the layouts were checked against images made by sfdisk and sgdisk (test/items/partitions.test.ts).
 * - EBR layout: no formal specification exists. Microsoft's "How Basic Disks and Volumes Work"
 *   (Windows Server 2003 Technical Reference) and Wikipedia "Extended boot record": an EBR is an
 *   MBR-shaped sector at the start of each logical partition's region; its first record gives the
 *   logical partition relative to that EBR, its second the next EBR relative to the start of the
 *   extended partition; the extended partition's own types are 0x05, 0x0F (and Linux's 0x85).
 * Partitions are numbered as Linux numbers them (and sfdisk/sgdisk print): GPT by entry slot from
 * 1; MBR primaries by record 1-4, logical partitions from 5 in chain order.
 */
import { crc32 } from "node:zlib";
import { IntegrityError, UsageError } from "../errors.ts";
import type { RandomAccess } from "./block-reader.ts";

export interface Partition {
  /** 1-based, as Linux names it (sda1, sda5...). */
  number: number;
  /** Bytes from the start of the disk. */
  start: number;
  size: number;
  /** GPT: the type GUID (upper case, as sgdisk prints it); MBR: the type byte, as "0x83". */
  type: string;
  /** GPT only: the partition's own GUID and its name. */
  guid?: string;
  name?: string;
  /** GPT attribute bits, as a hex string. */
  attributes?: string;
  /** MBR only: the boot indicator (0x80) is set. */
  bootable?: boolean;
  /** MBR only: the extended partition that holds the logical ones (a container, not a volume). */
  extended?: boolean;
}

export interface PartitionTable {
  scheme: "gpt" | "mbr" | "none";
  sectorSize: number;
  /** GPT: the disk GUID; MBR: the 32-bit disk signature at byte 440, as "0x1234abcd". */
  diskId?: string;
  /** GPT: the MBR only marks the disk as GPT (UEFI 2.10 section 5.2.3); false for a hybrid MBR. */
  protectiveMbr?: boolean;
  /** Which GPT header the partitions come from. */
  header?: "primary" | "backup";
  partitions: Partition[];
  /** What was damaged or odd and how it was read anyway (a damaged primary GPT, say). */
  warnings: string[];
}

const SECTOR = 512;
const MBR_RECORDS_AT = 446;
const MBR_RECORD_BYTES = 16;
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const PROTECTIVE_TYPE = 0xee;
/** Far more logical partitions than any tool makes: a longer chain loops or is damaged. */
const MAX_LOGICAL = 256;
const GPT_SIGNATURE = "EFI PART";
const GPT_HEADER_MIN = 92;
/** Sector sizes a GPT may be laid out for: Azure disks expose 512-byte or 4 KiB logical sectors. */
const GPT_SECTOR_SIZES = [512, 4096];
/** An entry array larger than this is not a real one (the usual is 128 entries of 128 bytes: 16 KiB). */
const MAX_ENTRY_ARRAY = 1024 * 1024;

/** Reads the partition table of a disk; a disk with none (a filesystem on the whole disk) has scheme "none". */
export async function readPartitionTable(disk: RandomAccess): Promise<PartitionTable> {
  if (disk.size < SECTOR) return { scheme: "none", sectorSize: SECTOR, partitions: [], warnings: [] };
  const mbr = await disk.read(0, SECTOR);
  const records = mbrRecords(mbr);
  // A filesystem's boot sector on the whole disk also ends in 0xAA55, often with zeros where the
  // records would be: it is a volume, not an MBR without partitions.
  if (!records || isVolumeBootRecord(mbr) || !records.some(isUsed)) return { scheme: "none", sectorSize: SECTOR, partitions: [], warnings: [] };
  if (records.some((r) => r.type === PROTECTIVE_TYPE)) return readGpt(disk, records);
  return readMbr(disk, mbr, records);
}

interface MbrRecord {
  slot: number;
  bootIndicator: number;
  type: number;
  /** In sectors, relative to whatever the record is relative to. */
  firstSector: number;
  sectors: number;
}

/** The four records of an MBR-shaped sector, or undefined if it is not one (no signature, or records that cannot be). */
function mbrRecords(sector: Buffer): MbrRecord[] | undefined {
  if (sector.readUInt16LE(510) !== 0xaa55) return undefined;
  const records: MbrRecord[] = [];
  for (let slot = 0; slot < 4; slot++) {
    const at = MBR_RECORDS_AT + slot * MBR_RECORD_BYTES;
    const record = {
      slot,
      bootIndicator: sector[at],
      type: sector[at + 4],
      firstSector: sector.readUInt32LE(at + 8),
      sectors: sector.readUInt32LE(at + 12),
    };
    // A boot sector of a filesystem (FAT, NTFS) has the signature too, but code or data where the
    // records would be: a boot indicator other than 0x00/0x80 says these are not records.
    if (record.bootIndicator !== 0 && record.bootIndicator !== 0x80) return undefined;
    records.push(record);
  }
  return records;
}

/**
 * The boot sector of a FAT, NTFS or exFAT volume: a jump instruction, then the filesystem's name
 * where its BIOS parameter block puts it (Microsoft's FAT specification, "Boot Sector and BPB":
 * BS_FilSysType at byte 54, or 82 on FAT32; NTFS and exFAT name themselves at byte 3).
 */
function isVolumeBootRecord(sector: Buffer): boolean {
  if (sector[0] !== 0xeb && sector[0] !== 0xe9) return false;
  const at = (offset: number, length: number) => sector.subarray(offset, offset + length).toString("latin1");
  return at(3, 8) === "NTFS    " || at(3, 8) === "EXFAT   " || at(54, 3) === "FAT" || at(82, 3) === "FAT";
}

function isUsed(record: MbrRecord): boolean {
  return record.type !== 0 && record.sectors !== 0;
}

async function readMbr(disk: RandomAccess, mbr: Buffer, records: MbrRecord[]): Promise<PartitionTable> {
  const warnings: string[] = [];
  const partitions: Partition[] = [];
  const extended = records.filter((r) => isUsed(r) && EXTENDED_TYPES.has(r.type));
  if (extended.length > 1) warnings.push(`the MBR holds ${extended.length} extended partitions; only the first one's logical partitions are read`);
  for (const record of records.filter(isUsed)) {
    partitions.push({
      number: record.slot + 1,
      start: record.firstSector * SECTOR,
      size: record.sectors * SECTOR,
      type: typeByte(record.type),
      bootable: record.bootIndicator === 0x80,
      ...(EXTENDED_TYPES.has(record.type) ? { extended: true } : {}),
    });
  }
  if (extended[0]) partitions.push(...(await logicalPartitions(disk, extended[0], warnings)));
  checkWithinDisk(disk, partitions, warnings);
  return { scheme: "mbr", sectorSize: SECTOR, diskId: `0x${mbr.readUInt32LE(440).toString(16).padStart(8, "0")}`, partitions, warnings };
}

/** Follows the EBR chain of an extended partition; a broken link ends the chain with a warning. */
async function logicalPartitions(disk: RandomAccess, extended: MbrRecord, warnings: string[]): Promise<Partition[]> {
  const logical: Partition[] = [];
  const seen = new Set<number>();
  let ebrSector = extended.firstSector;
  while (logical.length < MAX_LOGICAL) {
    if (seen.has(ebrSector)) {
      warnings.push(`the chain of extended boot records loops back to sector ${ebrSector}; logical partitions after ${logical.length + 4} are not read`);
      return logical;
    }
    seen.add(ebrSector);
    if ((ebrSector + 1) * SECTOR > disk.size) {
      warnings.push(`an extended boot record at sector ${ebrSector} lies past the end of the disk; logical partitions after ${logical.length + 4} are not read`);
      return logical;
    }
    const records = mbrRecords(await disk.read(ebrSector * SECTOR, SECTOR));
    if (!records) {
      warnings.push(`the extended boot record at sector ${ebrSector} has no valid signature; logical partitions after ${logical.length + 4} are not read`);
      return logical;
    }
    const [own, next] = records;
    if (isUsed(own)) {
      logical.push({
        number: 5 + logical.length,
        start: (ebrSector + own.firstSector) * SECTOR,
        size: own.sectors * SECTOR,
        type: typeByte(own.type),
        bootable: own.bootIndicator === 0x80,
      });
    }
    if (!isUsed(next)) return logical;
    ebrSector = extended.firstSector + next.firstSector;
  }
  warnings.push(`the extended partition chains more than ${MAX_LOGICAL} logical partitions; the rest are not read`);
  return logical;
}

function typeByte(type: number): string {
  return `0x${type.toString(16).padStart(2, "0")}`;
}

interface GptHeader {
  lba: number;
  alternateLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entryBytes: number;
  entriesCrc: number;
}

async function readGpt(disk: RandomAccess, mbrRecords: MbrRecord[]): Promise<PartitionTable> {
  // A protective MBR holds the 0xEE record alone (UEFI 2.10 section 5.2.3); a hybrid MBR also
  // describes some partitions for BIOS-era tools: the GPT is the truth either way.
  const others = mbrRecords.filter((r) => isUsed(r) && r.type !== PROTECTIVE_TYPE);
  const hybrid = others.length > 0 ? [`the MBR is a hybrid one (${others.length} record${others.length === 1 ? "" : "s"} besides the GPT's 0xEE one); the partitions are read from the GPT`] : [];
  const failures: string[] = [];
  for (const sectorSize of GPT_SECTOR_SIZES) {
    const lastLba = Math.floor(disk.size / sectorSize) - 1;
    if (lastLba < 2) continue;
    const primary = await readGptCopy(disk, sectorSize, 1);
    if (primary.header) return gptTable(disk, sectorSize, primary.header, primary.entries!, "primary", hybrid.length === 0, [...hybrid]);
    // Only a sector size whose LBA 1 holds at least a signature tells what the disk was laid out for.
    const hasSignature = primary.reason !== "no GPT signature";
    const backup = await readGptCopy(disk, sectorSize, lastLba);
    if (backup.header) {
      const warning = `the primary GPT header is damaged (${primary.reason}); the partitions are read from the backup GPT header at the last sector (LBA ${lastLba})`;
      return gptTable(disk, sectorSize, backup.header, backup.entries!, "backup", hybrid.length === 0, [...hybrid, warning]);
    }
    if (hasSignature || backup.reason !== "no GPT signature") {
      failures.push(`at ${sectorSize}-byte sectors, the primary GPT header: ${primary.reason}; the backup at LBA ${lastLba}: ${backup.reason}`);
    }
  }
  throw new IntegrityError(
    `the disk has a protective MBR (a GPT disk) but no valid GPT header${failures.length ? `: ${failures.join("; ")}` : " at LBA 1 or at its last sector"}. ` +
      "Its partition table is damaged: restore the whole disk and repair it with a partitioning tool (gdisk can rebuild a GPT).",
  );
}

/** One copy of the GPT (its header at `lba`, and its entry array), checked as UEFI 2.10 section 5.3.2 says. */
async function readGptCopy(
  disk: RandomAccess,
  sectorSize: number,
  lba: number,
): Promise<{ header?: GptHeader; entries?: Buffer; reason?: string }> {
  const sector = await disk.read(lba * sectorSize, sectorSize);
  if (sector.subarray(0, 8).toString("latin1") !== GPT_SIGNATURE) return { reason: "no GPT signature" };
  const headerBytes = sector.readUInt32LE(12);
  if (headerBytes < GPT_HEADER_MIN || headerBytes > sectorSize) return { reason: `a header size of ${headerBytes} bytes` };
  const header = Buffer.from(sector.subarray(0, headerBytes));
  const storedCrc = header.readUInt32LE(16);
  header.writeUInt32LE(0, 16);
  if (crc32(header) !== storedCrc) return { reason: "its CRC32 does not match its bytes" };
  const parsed: GptHeader = {
    lba: Number(sector.readBigUInt64LE(24)),
    alternateLba: Number(sector.readBigUInt64LE(32)),
    diskGuid: guidAt(sector, 56),
    entriesLba: Number(sector.readBigUInt64LE(72)),
    entryCount: sector.readUInt32LE(80),
    entryBytes: sector.readUInt32LE(84),
    entriesCrc: sector.readUInt32LE(88),
  };
  if (parsed.lba !== lba) return { reason: `it says it lies at LBA ${parsed.lba}, not ${lba}` };
  const arrayBytes = parsed.entryCount * parsed.entryBytes;
  if (!isEntrySize(parsed.entryBytes) || arrayBytes > MAX_ENTRY_ARRAY) {
    return { reason: `an entry array of ${parsed.entryCount} entries of ${parsed.entryBytes} bytes` };
  }
  if ((parsed.entriesLba * sectorSize) + arrayBytes > disk.size) return { reason: `its entry array at LBA ${parsed.entriesLba} lies past the end of the disk` };
  const entries = await disk.read(parsed.entriesLba * sectorSize, arrayBytes);
  if (crc32(entries) !== parsed.entriesCrc) return { reason: `the CRC32 of its entry array at LBA ${parsed.entriesLba} does not match` };
  return { header: parsed, entries };
}

/** 128 x 2^n bytes (UEFI 2.10 section 5.3.2, SizeOfPartitionEntry). */
function isEntrySize(bytes: number): boolean {
  return bytes >= 128 && Number.isInteger(Math.log2(bytes / 128));
}

function gptTable(
  disk: RandomAccess,
  sectorSize: number,
  header: GptHeader,
  entries: Buffer,
  which: "primary" | "backup",
  protectiveMbr: boolean,
  warnings: string[],
): PartitionTable {
  const partitions: Partition[] = [];
  for (let i = 0; i < header.entryCount; i++) {
    const entry = entries.subarray(i * header.entryBytes, (i + 1) * header.entryBytes);
    if (entry.subarray(0, 16).every((b) => b === 0)) continue;
    const first = Number(entry.readBigUInt64LE(32));
    const last = Number(entry.readBigUInt64LE(40));
    partitions.push({
      number: i + 1,
      start: first * sectorSize,
      size: (last - first + 1) * sectorSize,
      type: guidAt(entry, 0),
      guid: guidAt(entry, 16),
      attributes: `0x${entry.readBigUInt64LE(48).toString(16).padStart(16, "0")}`,
      name: utf16Name(entry.subarray(56, 128)),
    });
  }
  checkWithinDisk(disk, partitions, warnings);
  return { scheme: "gpt", sectorSize, diskId: header.diskGuid, protectiveMbr, header: which, partitions, warnings };
}

/** A GUID as printed: its first three fields are stored little-endian (UEFI 2.10 Appendix A). */
function guidAt(bytes: Buffer, at: number): string {
  const hex = (from: number, to: number) => bytes.subarray(at + from, at + to).toString("hex");
  const reversed = (from: number, to: number) => Buffer.from(bytes.subarray(at + from, at + to)).reverse().toString("hex");
  return `${reversed(0, 4)}-${reversed(4, 6)}-${reversed(6, 8)}-${hex(8, 10)}-${hex(10, 16)}`.toUpperCase();
}

/** The name field: UTF-16LE, up to 36 code units, ended by a NUL when shorter. */
function utf16Name(field: Buffer): string {
  const text = field.toString("utf16le");
  const end = text.indexOf("\0");
  return end === -1 ? text : text.slice(0, end);
}

/** A partition that runs past the disk is kept (its start may still be readable) and named. */
function checkWithinDisk(disk: RandomAccess, partitions: Partition[], warnings: string[]): void {
  for (const p of partitions) {
    if (p.size <= 0) warnings.push(`partition ${p.number} has no sectors (its last sector is before its first)`);
    else if (p.start + p.size > disk.size) warnings.push(`partition ${p.number} runs ${p.start + p.size - disk.size} bytes past the end of the disk (${disk.size} bytes)`);
  }
}

/**
 * The bytes of one partition, as a disk of its own (what a filesystem reader is given). A
 * partition that runs past the end of the disk is cut at the disk's end.
 */
export function partitionBytes(disk: RandomAccess, partition: Partition): RandomAccess {
  const size = Math.max(0, Math.min(partition.size, disk.size - partition.start));
  return {
    size,
    read(offset: number, length: number): Promise<Buffer> {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
        return Promise.reject(
          new UsageError(`cannot read ${length} bytes at offset ${offset} of partition ${partition.number}: it holds ${size} bytes`),
        );
      }
      return disk.read(partition.start + offset, length);
    },
  };
}
