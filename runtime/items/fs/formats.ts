/**
 * The filesystems item-level restore reads, and how a volume's is recognised: each format looks
 * for its own superblock in the volume's first bytes. NTFS is tried before FAT because an NTFS
 * boot sector is shaped like a FAT one (both start with a jump and a BIOS parameter block).
 */
import type { RandomAccess } from "../block-reader.ts";
import { extFormat } from "./ext.ts";
import { fatFormat } from "./fat.ts";
import { ntfsFormat } from "./ntfs.ts";
import { PROBE_BYTES, type FileSystem, type FileSystemFormat } from "./types.ts";
import { xfsFormat } from "./xfs.ts";

export const FORMATS: readonly FileSystemFormat[] = [extFormat, xfsFormat, ntfsFormat, fatFormat];

/** The filesystem on a volume, opened; undefined when none of the formats recognises it. */
export async function openFileSystem(volume: RandomAccess): Promise<FileSystem | undefined> {
  const head = await volume.read(0, Math.min(PROBE_BYTES, volume.size));
  const format = FORMATS.find((f) => f.probe(head));
  return format?.open(volume);
}
