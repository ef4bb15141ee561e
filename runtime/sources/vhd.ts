/**
 * The 512-byte footer of a fixed VHD. Azure's direct upload to a managed disk takes the disk's
 * bytes followed by this footer (uploadSizeBytes = disk size + 512).
 */
import { randomBytes } from "node:crypto";
import { UsageError } from "../errors.ts";

export const VHD_FOOTER_BYTES = 512;

const MiB = 1024 * 1024;
/**
 * Upload disks: uploadSizeBytes "should be between 20972032 (20 MiB + 512 bytes for the VHD footer)
 * and 35183298347520 bytes (32 TiB + 512 bytes for the VHD footer)" (CreationData.uploadSizeBytes,
 * Azure/azure-rest-api-specs specification/compute/resource-manager/Microsoft.Compute/DiskRP/stable/
 * 2024-03-02/diskRPCommon.json; the upper figure is 32,767 GiB + 512), and the size less the footer
 * must be a whole number of MiB (the service's 400 BadRequest "... must be a multiple of MiB.", as
 * reported in MicrosoftDocs/azure-docs#58853).
 */
export const MIN_UPLOAD_DISK_BYTES = 20 * MiB;
export const MAX_UPLOAD_DISK_BYTES = 35_183_298_347_520 - VHD_FOOTER_BYTES;

/** The managed disk size an image of `imageBytes` is uploaded into: whole MiB, at least 20 MiB. */
export function uploadDiskBytes(imageBytes: number): number {
  const bytes = Math.max(MIN_UPLOAD_DISK_BYTES, Math.ceil(imageBytes / MiB) * MiB);
  if (bytes > MAX_UPLOAD_DISK_BYTES) {
    throw new UsageError(`the image is ${imageBytes} bytes; Azure's upload disks hold at most ${MAX_UPLOAD_DISK_BYTES} bytes (32,767 GiB): restore it to a page blob or a local file instead`);
  }
  return bytes;
}

export function fixedVhdFooter(size: number, now = new Date()): Buffer {
  const footer = Buffer.alloc(VHD_FOOTER_BYTES);
  footer.write("conectix", 0, "ascii");
  footer.writeUInt32BE(2, 8); // features: reserved bit set
  footer.writeUInt32BE(0x00010000, 12); // file format version
  footer.writeBigUInt64BE(0xffffffffffffffffn, 16); // data offset: none for fixed disks
  footer.writeUInt32BE(Math.floor((now.getTime() - Date.UTC(2000, 0, 1)) / 1000) >>> 0, 24);
  footer.write("bwrk", 28, "ascii");
  footer.writeUInt32BE(0x00010000, 32);
  footer.write("Wi2k", 36, "ascii");
  footer.writeBigUInt64BE(BigInt(size), 40); // original size
  footer.writeBigUInt64BE(BigInt(size), 48); // current size
  const { cylinders, heads, sectors } = geometry(size / 512);
  footer.writeUInt16BE(cylinders, 56);
  footer.writeUInt8(heads, 58);
  footer.writeUInt8(sectors, 59);
  footer.writeUInt32BE(2, 60); // disk type: fixed
  randomBytes(16).copy(footer, 68); // unique id
  let sum = 0;
  for (const byte of footer) sum += byte;
  footer.writeUInt32BE(~sum >>> 0, 64);
  return footer;
}

/** CHS geometry as the VHD specification computes it. */
function geometry(totalSectors: number): { cylinders: number; heads: number; sectors: number } {
  let sectors = Math.min(totalSectors, 65535 * 16 * 255);
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (sectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024));
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(sectors / sectorsPerTrack);
    }
  }
  sectors = sectorsPerTrack;
  return { cylinders: Math.min(65535, Math.floor(cylinderTimesHeads / heads)), heads, sectors };
}
