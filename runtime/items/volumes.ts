/**
 * The volumes of a disk, as `bulwark ls` shows them at a disk's root: `part1`, `part2`, … by
 * partition number (Linux's numbering, see partitions.ts), `VG-LV` for the logical volumes of an
 * LVM2 physical volume (as device-mapper names them), or `volume` for a filesystem on the whole
 * disk; each with the filesystem found on it (or none this reader knows) and its label.
 */
import { describeError, IntegrityError } from "../errors.ts";
import type { RandomAccess } from "./block-reader.ts";
import { openFileSystem } from "./fs/formats.ts";
import type { FileSystem } from "./fs/types.ts";
import { readLvm } from "./lvm.ts";
import { partitionBytes, readPartitionTable } from "./partitions.ts";

export interface Volume {
  readonly name: string;
  readonly size: number;
  /** The filesystem on it, opened; undefined when none this reader knows is there (swap, BitLocker, an empty partition). */
  readonly fs?: FileSystem;
  /** Why the volume cannot be browsed (no known filesystem, damaged, an LVM volume this reader cannot map). */
  readonly unreadable?: string;
  /** Set when `unreadable` is damage (exit 5), not a filesystem or layout this reader does not read. */
  readonly damaged?: boolean;
  /** GPT partition type or name, MBR type byte: what a person uses to tell volumes apart. */
  readonly partitionType?: string;
}

/** The volumes of a disk, in partition order; a damaged volume is listed with why, never stops the others. */
export async function diskVolumes(disk: RandomAccess): Promise<Volume[]> {
  const table = await readPartitionTable(disk);
  const candidates =
    table.scheme === "none"
      ? [{ name: "volume", bytes: disk, partitionType: undefined }]
      : table.partitions.filter((p) => !p.extended).map((p) => ({ name: `part${p.number}`, bytes: partitionBytes(disk, p), partitionType: p.name || p.type }));
  const volumes: Volume[] = [];
  for (const candidate of candidates) volumes.push(...(await volumesOn(candidate.name, candidate.bytes, candidate.partitionType)));
  return volumes;
}

/** A partition (or the whole disk): its filesystem, or the logical volumes of the LVM physical volume it is. */
async function volumesOn(name: string, bytes: RandomAccess, partitionType: string | undefined): Promise<Volume[]> {
  let group;
  try {
    group = await readLvm(bytes);
  } catch (error) {
    return [{ name, size: bytes.size, partitionType, unreadable: `its LVM metadata cannot be read: ${describeError(error)}`, damaged: error instanceof IntegrityError }];
  }
  if (!group) return [await volumeOf(name, bytes, partitionType)];
  const volumes: Volume[] = [];
  for (const lv of group.volumes) {
    if (!lv.bytes) volumes.push({ name: lv.name, size: lv.size, partitionType: `LVM ${group.name}`, unreadable: lv.unreadable ?? "this reader cannot map it" });
    else volumes.push(await volumeOf(lv.name, lv.bytes, `LVM ${group.name}`));
  }
  return volumes;
}

async function volumeOf(name: string, bytes: RandomAccess, partitionType: string | undefined): Promise<Volume> {
  try {
    const fs = await openFileSystem(bytes);
    if (!fs) return { name, size: bytes.size, partitionType, unreadable: "no filesystem Bulwark reads is on it (ext2/3/4, XFS, NTFS and FAT are read; swap, BitLocker and empty volumes are not): serve the disk with `bulwark mount` to mount another filesystem with the OS's tools" };
    return { name, size: bytes.size, partitionType, fs };
  } catch (error) {
    if (!(error instanceof IntegrityError) && !(error instanceof Error && error.name === "UnreadableItemError")) throw error;
    return { name, size: bytes.size, partitionType, unreadable: describeError(error), damaged: error instanceof IntegrityError };
  }
}
