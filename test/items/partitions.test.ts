/**
 * Partition tables read from the bytes of disk points, on images partitioned by the real tools:
 * an MBR disk with a primary partition and an extended one chaining four logical partitions
 * (sfdisk), and a GPT disk (sgdisk), each compared with what `sfdisk --json` and `sgdisk -p` report
 * on the same image; a GPT whose primary header or entry array is damaged is read from its backup
 * and says so; one with both copies damaged fails as damaged; a hybrid MBR is named and the GPT
 * read; a GPT laid out for 4 KiB sectors is found at LBA 1 of 4096 bytes (where this machine has loop
 * devices); a disk without a table has none; a partition's bytes read as a disk of their own.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, open } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import { openDiskPoint } from "../../runtime/items/block-reader.ts";
import { partitionBytes, readPartitionTable, type Partition, type PartitionTable } from "../../runtime/items/partitions.ts";
import { writeSparseImage } from "../support/sparse.ts";
import { MIB, pseudoRandom, tempFolder } from "../cli/vaults.ts";
import { fileBytes, PointVault } from "./disk-points.ts";

const SECTOR = 512;
const DISK = 64 * MIB;
/** A loop device with 4 KiB logical sectors (losetup -b 4096) needs root, the loop driver and losetup. */
const LOOP_DEVICES = existsSync("/dev/loop-control") && process.getuid?.() === 0 && spawnSync("losetup", ["--version"]).status === 0;

interface SfdiskJson {
  partitiontable: {
    label: string;
    id: string;
    sectorsize: number;
    partitions: { node: string; start: number; size: number; type: string; bootable?: boolean; uuid?: string; name?: string }[];
  };
}

function sfdiskJson(image: string): SfdiskJson["partitiontable"] {
  return (JSON.parse(execFileSync("sfdisk", ["--json", image], { encoding: "utf8" })) as SfdiskJson).partitiontable;
}

/** `sgdisk -p`: the disk GUID, and per partition its number, first and last sector and name. */
function sgdiskPrint(image: string): {
  diskGuid: string;
  partitions: { number: number; first: number; last: number; code: string; name: string }[];
  /** Its warnings (stderr): what it says of a damaged table. */
  warnings: string;
} {
  const run = spawnSync("sgdisk", ["-p", image], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`sgdisk -p ${image} exited ${run.status}: ${run.stderr}`);
  const out = run.stdout;
  const diskGuid = /Disk identifier \(GUID\): (\S+)/.exec(out)![1];
  const partitions = [...out.matchAll(/^\s*(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+ \S+\s+([0-9A-F]{4})  (.*)$/gm)].map((m) => ({
    number: Number(m[1]),
    first: Number(m[2]),
    last: Number(m[3]),
    code: m[4],
    name: m[5],
  }));
  return { diskGuid, partitions, warnings: run.stderr };
}

/** Overwrites bytes of an image file (damage, as a bad sector or a stray write would do). */
async function damage(image: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(image, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

describe("partition tables of disk points", () => {
  let vaults: PointVault;
  let scratch: string;
  let gptImage: string;
  let gptTable: PartitionTable;

  /** Backs the image up and reads the partition table of its point, through the vault. */
  async function tableOfPoint(image: string): Promise<PartitionTable> {
    return (await pointAndTable(image)).table;
  }

  async function pointAndTable(image: string) {
    const point = await vaults.backup(image);
    const { vault } = await vaults.open();
    const disk = await openDiskPoint(vault, point.id);
    return { disk, table: await readPartitionTable(disk) };
  }

  beforeAll(async () => {
    vaults = await PointVault.create("partitions");
    scratch = await tempFolder("partitions");
    gptImage = path.join(scratch, "gpt.img");
    await writeSparseImage(gptImage, DISK, []);
    execFileSync("sgdisk", [
      "-n", "1:2048:+8M", "-t", "1:EF00", "-c", "1:EFI system partition",
      "-n", "2:0:+16M", "-t", "2:8300", "-c", "2:root",
      // Slot 3 left empty: numbers are entry slots, not positions in a list.
      "-n", "4:0:+4M", "-t", "4:8E00", "-c", "4:données ☃", "-A", "4:set:2",
      gptImage,
    ], { stdio: "ignore" });
    gptTable = await tableOfPoint(gptImage);
  });

  afterAll(async () => {
    await vaults?.close();
  });

  test("an MBR disk with a primary partition and four logical ones in an extended partition lists what sfdisk --json lists", async () => {
    const image = path.join(scratch, "mbr.img");
    // Data in the first logical partition, so the point is not all zeros but EBRs stay where sfdisk put them.
    await writeSparseImage(image, DISK, [{ offset: 12288 * SECTOR, data: pseudoRandom("logical", MIB) }]);
    const script = [
      "label: dos",
      "unit: sectors",
      "",
      "start=2048, size=8192, type=83, bootable",
      "start=10240, type=5",
      "start=12288, size=4096, type=83",
      "start=18432, size=6144, type=82",
      "start=26624, size=2048, type=7",
      "type=b",
    ].join("\n");
    execFileSync("sfdisk", ["-q", image], { input: `${script}\n` });

    const { disk, table } = await pointAndTable(image);
    const reference = sfdiskJson(image);
    expect(reference.label).toBe("dos");
    expect(table.scheme).toBe("mbr");
    expect(table.sectorSize).toBe(reference.sectorsize);
    expect(table.diskId).toBe(reference.id);
    expect(table.warnings).toEqual([]);
    const expected: Partition[] = reference.partitions.map((p) => {
      const type = Number.parseInt(p.type, 16);
      return {
        number: Number(/(\d+)$/.exec(p.node)![1]),
        start: p.start * SECTOR,
        size: p.size * SECTOR,
        type: `0x${type.toString(16).padStart(2, "0")}`,
        bootable: p.bootable ?? false,
        ...(type === 0x05 ? { extended: true } : {}),
      };
    });
    expect(expected.map((p) => p.number)).toEqual([1, 2, 5, 6, 7, 8]);
    expect(table.partitions).toEqual(expected);

    // The first logical partition's bytes, as a disk of their own: what a filesystem reader gets.
    const fifth = partitionBytes(disk, table.partitions.find((p) => p.number === 5)!);
    expect(fifth.size).toBe(4096 * SECTOR);
    expect((await fifth.read(MIB - 100, 200)).equals(await fileBytes(image, 12288 * SECTOR + MIB - 100, 200))).toBe(true);
    await expect(fifth.read(fifth.size - 1, 2)).rejects.toThrow(`cannot read 2 bytes at offset ${fifth.size - 1} of partition 5: it holds ${fifth.size} bytes`);
  });

  test("a GPT disk made by sgdisk lists what sgdisk -p and sfdisk --json list, from its primary header behind a protective MBR", async () => {
    const printed = sgdiskPrint(gptImage);
    const reference = sfdiskJson(gptImage);
    expect(gptTable.scheme).toBe("gpt");
    expect(gptTable.protectiveMbr).toBe(true);
    expect(gptTable.header).toBe("primary");
    expect(gptTable.warnings).toEqual([]);
    expect(gptTable.diskId).toBe(printed.diskGuid);
    expect(gptTable.partitions.map((p) => ({ number: p.number, first: p.start / SECTOR, last: (p.start + p.size) / SECTOR - 1, name: p.name }))).toEqual(
      printed.partitions.map(({ number, first, last, name }) => ({ number, first, last, name })),
    );
    expect(gptTable.partitions.map((p) => ({ type: p.type, guid: p.guid, name: p.name }))).toEqual(
      reference.partitions.map((p) => ({ type: p.type, guid: p.uuid, name: p.name })),
    );
    expect(gptTable.partitions[0].type).toBe("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"); // EF00: the EFI system partition
    expect(gptTable.partitions.map((p) => p.number)).toEqual([1, 2, 4]);
    // Attribute bit 2 (legacy BIOS bootable), set with sgdisk -A 4:set:2.
    expect(gptTable.partitions[2].attributes).toBe("0x0000000000000004");
  });

  test.skipIf(!LOOP_DEVICES)("a GPT disk laid out for 4 KiB sectors (sgdisk on a 4096-byte-sector loop device) lists what sgdisk -p lists", async () => {
    const image = path.join(scratch, "gpt-4k.img");
    await writeSparseImage(image, DISK, []);
    const device = execFileSync("losetup", ["-f", "--show", "-b", "4096", image], { encoding: "utf8" }).trim();
    let printed: ReturnType<typeof sgdiskPrint>;
    try {
      execFileSync("sgdisk", ["-n", "1:0:+8M", "-t", "1:EF00", "-c", "1:EFI", "-n", "2:0:+16M", "-t", "2:8300", "-c", "2:root", device], { stdio: "ignore" });
      printed = sgdiskPrint(device);
    } finally {
      execFileSync("losetup", ["-d", device]);
    }

    const table = await tableOfPoint(image);
    expect(table.scheme).toBe("gpt");
    expect(table.sectorSize).toBe(4096);
    expect(table.header).toBe("primary");
    expect(table.diskId).toBe(printed.diskGuid);
    expect(table.partitions.map((p) => ({ number: p.number, first: p.start / 4096, last: (p.start + p.size) / 4096 - 1, name: p.name }))).toEqual(
      printed.partitions.map(({ number, first, last, name }) => ({ number, first, last, name })),
    );
  });

  test("a GPT disk with a hybrid MBR (sgdisk -h) is read from its GPT, and says the MBR is a hybrid", async () => {
    const image = path.join(scratch, "gpt-hybrid.img");
    await copyFile(gptImage, image);
    execFileSync("sgdisk", ["-h", "2", image], { stdio: "ignore" });
    expect(sfdiskJson(image).label).toBe("gpt");

    const table = await tableOfPoint(image);
    expect(table.scheme).toBe("gpt");
    expect(table.protectiveMbr).toBe(false);
    expect(table.partitions).toEqual(gptTable.partitions);
    expect(table.warnings).toEqual(["the MBR is a hybrid one (1 record besides the GPT's 0xEE one); the partitions are read from the GPT"]);
  });

  test("a GPT disk whose primary header is damaged is read from the backup header, and says so", async () => {
    const image = path.join(scratch, "gpt-damaged-header.img");
    await copyFile(gptImage, image);
    await damage(image, SECTOR + 60, Buffer.from([0x5a])); // a byte of the disk GUID: the header's CRC32 no longer matches
    const printed = sgdiskPrint(image);
    expect(printed.warnings).toMatch(/Invalid CRC on main header data; loaded backup partition table/);

    const table = await tableOfPoint(image);
    expect(table.header).toBe("backup");
    expect(table.partitions).toEqual(gptTable.partitions);
    expect(table.partitions.map((p) => ({ number: p.number, first: p.start / SECTOR, last: (p.start + p.size) / SECTOR - 1, name: p.name }))).toEqual(
      printed.partitions.map(({ number, first, last, name }) => ({ number, first, last, name })),
    );
    expect(table.diskId).toBe(gptTable.diskId);
    expect(table.warnings).toEqual([
      `the primary GPT header is damaged (its CRC32 does not match its bytes); the partitions are read from the backup GPT header at the last sector (LBA ${DISK / SECTOR - 1})`,
    ]);
  });

  test("a GPT disk whose primary entry array is damaged is read from the backup's entries, and says so", async () => {
    const image = path.join(scratch, "gpt-damaged-entries.img");
    await copyFile(gptImage, image);
    await damage(image, 2 * SECTOR + 56, Buffer.from("X\0", "latin1")); // the first letter of partition 1's name

    const table = await tableOfPoint(image);
    expect(table.header).toBe("backup");
    expect(table.partitions).toEqual(gptTable.partitions);
    expect(table.warnings[0]).toMatch(/^the primary GPT header is damaged \(the CRC32 of its entry array at LBA 2 does not match\)/);
  });

  test("a GPT disk whose primary and backup headers are both damaged fails as damaged, naming both", async () => {
    const image = path.join(scratch, "gpt-damaged-both.img");
    await copyFile(gptImage, image);
    await damage(image, SECTOR + 60, Buffer.from([0x5a]));
    await damage(image, DISK - SECTOR + 60, Buffer.from([0x5a]));

    const failure = tableOfPoint(image);
    await expect(failure).rejects.toThrow(IntegrityError);
    await expect(failure).rejects.toThrow(
      `no valid GPT header: at 512-byte sectors, the primary GPT header: its CRC32 does not match its bytes; the backup at LBA ${DISK / SECTOR - 1}: its CRC32 does not match its bytes`,
    );
  });

  test("a FAT32 filesystem on the whole disk (mkfs.vfat), whose boot sector ends like an MBR, has no partition table", async () => {
    const image = path.join(scratch, "whole-disk-fat.img");
    await writeSparseImage(image, DISK, []);
    execFileSync("mkfs.vfat", ["-F", "32", image], { stdio: "ignore" });
    const table = await tableOfPoint(image);
    expect(table).toEqual({ scheme: "none", sectorSize: SECTOR, partitions: [], warnings: [] });
  });

  test("a disk without a partition table (a filesystem on the whole disk, or zeros) has none", async () => {
    const image = path.join(scratch, "blank.img");
    await writeSparseImage(image, 4 * MIB, [{ offset: MIB, data: pseudoRandom("blank", 4096) }]);
    const table = await tableOfPoint(image);
    expect(table).toEqual({ scheme: "none", sectorSize: SECTOR, partitions: [], warnings: [] });
  });
});
