/**
 * LVM2 volume groups made by the real tools on loop devices: a GPT disk whose one partition (8E00)
 * is a PV, and a second PV (a whole disk) in the same group. Device-mapper is not available in
 * this container (no /dev/mapper/control), so the LVs are made without activation (`lvcreate -an
 * --zero n`, `--driverloaded n`) and their content is written where `lvs --segments
 * -o seg_pe_ranges` and `pvs -o pe_start` say their extents are: the reader's mapping is checked
 * against the tools' own report of it, byte for byte, and one LV carries a FAT filesystem read
 * through it. An LV extended after another was made has two segments; an LV on the other PV and
 * one striped over both are listed as unreadable; the metadata is rewritten until it wraps round
 * its circular buffer. Damage: a garbled metadata text, and malformed text given to the parser.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { copyFile, open, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { IntegrityError } from "../../runtime/errors.ts";
import type { RandomAccess } from "../../runtime/items/block-reader.ts";
import { fatFormat } from "../../runtime/items/fs/fat.ts";
import { parseLvmText, readLvm, type LvmVolumeGroup } from "../../runtime/items/lvm.ts";
import { partitionBytes, readPartitionTable } from "../../runtime/items/partitions.ts";
import { writeSparseImage } from "../support/sparse.ts";
import { MIB, pseudoRandom, sha256, tempFolder } from "../cli/vaults.ts";
import { imageAccess } from "./disk-points.ts";

const TOOLS = ["pvcreate", "vgcreate", "lvcreate", "lvextend", "lvs", "pvs", "pvck", "vgchange", "vgremove", "losetup", "sgdisk", "mkfs.vfat", "mcopy"];
/** A hyphen in both names: device-mapper doubles it ("bulwark--d123-data--one"). */
const VG = `bulwark-d${process.pid}`;
const LVM_ENV = { ...process.env, LVM_SUPPRESS_FD_WARNINGS: "1", MTOOLS_SKIP_CHECK: "1" };
/** No backup or archive copies of the test's metadata left in /etc/lvm. */
const NO_BACKUPS = ["--config", "backup { backup = 0 archive = 0 }"];
/** LVs made without device-mapper: not activated, not zeroed. */
const WITHOUT_DM = ["--driverloaded", "n", "-an", "--zero", "n"];

interface SegmentReport {
  lv_name: string;
  seg_start_pe: string;
  seg_size_pe: string;
  seg_pe_ranges: string;
  lv_size: string;
}

function requireTools(): void {
  const missing = TOOLS.filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
  if (missing.length > 0) throw new Error(`the LVM tests need ${missing.join(", ")}: install lvm2, util-linux, gdisk, dosfstools and mtools`);
  if (process.getuid?.() !== 0) throw new Error("the LVM tests need root: they make loop devices and physical volumes");
}

async function patch(file: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(file, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

/** pvck --dump headers: where a metadata area (1 or 2) is and where its committed text lies. */
function metadataLocation(device: string, area = 1): { start: number; size: number; offset: number; length: number } {
  const out = execFileSync("pvck", ["--dump", "headers", device], { env: LVM_ENV, encoding: "utf8" });
  const field = (name: string) => Number(new RegExp(`mda_header_${area}\\.${name.replace(/[[\]]/g, "\\$&")} (\\d+)`).exec(out)![1]);
  return { start: field("start"), size: field("size"), offset: field("raw_locn[0].offset"), length: field("raw_locn[0].size") };
}

describe("LVM2 volume groups made by pvcreate, vgcreate and lvcreate", () => {
  let scratch: string;
  let image: string;
  let second: string;
  let partitionStart: number;
  let pvBytes: RandomAccess;
  const loops: string[] = [];
  let devices: string[];
  let extentSize: number;
  let group: LvmVolumeGroup;
  const contents = new Map<string, Buffer>();
  const segments: SegmentReport[] = [];
  const fatFile = pseudoRandom("on an LV", 200_000);

  function lvm(command: string, args: string[]): string {
    return execFileSync(command, ["--devices", devices.join(","), ...NO_BACKUPS, ...args], { env: LVM_ENV, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  }

  function report<T>(command: string, args: string[]): T[] {
    const json = JSON.parse(lvm(command, ["--reportformat", "json", "--units", "b", "--nosuffix", ...args])) as { report: Record<string, T[]>[] };
    return Object.values(json.report[0])[0];
  }

  /** Writes an LV's content where the tools say its extents are (device-mapper cannot write it here). */
  async function writeThroughSegments(lv: string, content: Buffer, pv: { file: string; start: number; peStart: number }): Promise<void> {
    for (const segment of segments.filter((s) => s.lv_name === lv)) {
      const [, first] = /:(\d+)-\d+$/.exec(segment.seg_pe_ranges)!;
      const from = Number(segment.seg_start_pe) * extentSize;
      const to = from + Number(segment.seg_size_pe) * extentSize;
      await patch(pv.file, pv.start + pv.peStart + Number(first) * extentSize, content.subarray(from, to));
    }
  }

  async function fatVolume(size: number): Promise<Buffer> {
    const file = path.join(scratch, "lv-fat.img");
    await writeSparseImage(file, size, []);
    execFileSync("mkfs.vfat", ["-F", "12", "-n", "ONLV", file], { stdio: "ignore" });
    const payload = path.join(scratch, "payload.bin");
    await writeFile(payload, fatFile);
    execFileSync("mcopy", ["-i", file, payload, "::/payload.bin"], { env: LVM_ENV });
    return readFile(file);
  }

  beforeAll(async () => {
    requireTools();
    scratch = await tempFolder("lvm");
    image = path.join(scratch, "disk.img");
    await writeSparseImage(image, 96 * MIB, []);
    execFileSync("sgdisk", ["-n", "1:2048:0", "-t", "1:8E00", "-c", "1:lvm", image], { stdio: "ignore" });
    const disk = await imageAccess(image);
    const partition = (await readPartitionTable(disk)).partitions[0];
    partitionStart = partition.start;
    pvBytes = partitionBytes(disk, partition);
    second = path.join(scratch, "second.img");
    await writeSparseImage(second, 32 * MIB, []);
    loops.push(execFileSync("losetup", ["-f", "--show", "-o", String(partition.start), "--sizelimit", String(partition.size), image], { encoding: "utf8" }).trim());
    loops.push(execFileSync("losetup", ["-f", "--show", second], { encoding: "utf8" }).trim());
    devices = [...loops];
    const [pv, otherPv] = loops;

    // A small metadata area, so rewriting the metadata soon wraps round its circular buffer.
    lvm("pvcreate", ["--metadatasize", "32k", "--dataalignment", "64k", pv]);
    // Two metadata copies: one after the label, one at the end of the device.
    lvm("pvcreate", ["--pvmetadatacopies", "2", otherPv]);
    lvm("vgcreate", ["-s", "1m", VG, pv, otherPv]);
    lvm("lvcreate", [...WITHOUT_DM, "-L", "4m", "-n", "data-one", VG, pv]);
    lvm("lvcreate", [...WITHOUT_DM, "-L", "3m", "-n", "second", VG, pv]);
    lvm("lvcreate", [...WITHOUT_DM, "-L", "2m", "-n", "third", VG, pv]);
    lvm("lvextend", ["--driverloaded", "n", "-L", "+2m", `${VG}/data-one`, pv]);
    lvm("lvcreate", [...WITHOUT_DM, "-L", "2m", "-n", "elsewhere", VG, otherPv]);
    lvm("lvcreate", [...WITHOUT_DM, "-i", "2", "-I", "64k", "-L", "2m", "-n", "striped", VG, pv, otherPv]);
    for (let tag = 0; tag < 100; tag++) {
      const { size, offset, length } = metadataLocation(pv);
      if (offset + length > size) break;
      lvm("vgchange", ["--addtag", `rewrite${tag}`, VG]);
    }

    extentSize = Number(report<{ vg_extent_size: string }>("vgs", ["-o", "vg_extent_size", VG])[0].vg_extent_size);
    segments.push(...report<SegmentReport>("lvs", ["--segments", "-o", "lv_name,lv_size,seg_start_pe,seg_size_pe,seg_pe_ranges", VG]));
    const peStarts = report<{ pv_name: string; pe_start: string }>("pvs", ["-o", "pv_name,pe_start"]);
    const peStart = (device: string) => Number(peStarts.find((p) => p.pv_name === device)!.pe_start);
    for (const lv of ["data-one", "third", "elsewhere"]) contents.set(lv, pseudoRandom(lv, Number(segments.find((s) => s.lv_name === lv)!.lv_size)));
    contents.set("second", await fatVolume(3 * MIB));
    for (const [lv, content] of contents) {
      const onOther = lv === "elsewhere";
      await writeThroughSegments(lv, content, { file: onOther ? second : image, start: onOther ? 0 : partitionStart, peStart: peStart(onOther ? otherPv : pv) });
    }

    group = (await readLvm(pvBytes))!;
  });

  afterAll(() => {
    if (devices) spawnSync("vgremove", ["--devices", devices.join(","), ...NO_BACKUPS, "-ff", "-y", VG], { env: LVM_ENV, stdio: "ignore" });
    for (const loop of loops) spawnSync("losetup", ["-d", loop], { stdio: "ignore" });
  });

  test("the premises: data-one has two segments, and the metadata read wraps round the end of its area", () => {
    expect(segments.filter((s) => s.lv_name === "data-one")).toHaveLength(2);
    const { size, offset, length } = metadataLocation(loops[0]);
    expect(offset + length).toBeGreaterThan(size);
  });

  test("the volume group, its extent size and its logical volumes, named as device-mapper names them", () => {
    expect(group.name).toBe(VG);
    expect(group.extentSize).toBe(extentSize);
    const doubled = VG.replaceAll("-", "--");
    expect(group.volumes.map((v) => v.name)).toEqual(["data--one", "second", "third", "elsewhere", "striped"].map((lv) => `${doubled}-${lv}`));
    for (const volume of group.volumes) {
      expect(volume.size).toBe(Number(segments.find((s) => s.lv_name === volume.lvName)!.lv_size));
    }
  });

  test("a linear LV of two segments reads as the bytes written where lvs --segments puts its extents, across the segment boundary too", async () => {
    const lv = group.volumes.find((v) => v.lvName === "data-one")!;
    const content = contents.get("data-one")!;
    expect(sha256(await lv.bytes!.read(0, lv.size))).toBe(sha256(content));
    const boundary = 4 * MIB;
    expect((await lv.bytes!.read(boundary - 1000, 3000)).equals(content.subarray(boundary - 1000, boundary + 2000))).toBe(true);
    const third = group.volumes.find((v) => v.lvName === "third")!;
    expect(sha256(await third.bytes!.read(0, third.size))).toBe(sha256(contents.get("third")!));
  });

  test("a FAT filesystem on an LV is read through the LV's bytes", async () => {
    const lv = group.volumes.find((v) => v.lvName === "second")!;
    const fs = await fatFormat.open(lv.bytes!);
    expect(fs.label).toBe("ONLV");
    const payload = (await fs.list(await fs.root())).find((e) => e.name === "payload.bin")!.node;
    const pieces: Buffer[] = [];
    for await (const run of fs.read(payload)) if (!run.hole) pieces.push(run.data);
    expect(sha256(Buffer.concat(pieces))).toBe(sha256(fatFile));
  });

  test("an LV on the other PV and an LV striped over both are listed as unreadable, with why, and no bytes", () => {
    const elsewhere = group.volumes.find((v) => v.lvName === "elsewhere")!;
    expect(elsewhere.bytes).toBeUndefined();
    expect(elsewhere.unreadable).toMatch(/another physical volume/);
    const striped = group.volumes.find((v) => v.lvName === "striped")!;
    expect(striped.bytes).toBeUndefined();
    expect(striped.unreadable).toMatch(/striped over 2/);
  });

  test("the other PV (a whole disk) read on its own: its LV reads, and the first PV's LVs are on another physical volume", async () => {
    const other = (await readLvm(await imageAccess(second)))!;
    expect(other.name).toBe(VG);
    const elsewhere = other.volumes.find((v) => v.lvName === "elsewhere")!;
    expect(sha256(await elsewhere.bytes!.read(0, elsewhere.size))).toBe(sha256(contents.get("elsewhere")!));
    expect(other.volumes.find((v) => v.lvName === "data-one")!.unreadable).toMatch(/another physical volume/);
  });

  test("a PV whose first metadata area is damaged is read from its second copy at the end of the device; both damaged fails as damaged", async () => {
    const first = metadataLocation(loops[1], 1);
    const last = metadataLocation(loops[1], 2);
    expect(last.start).toBeGreaterThan(first.start);
    const damaged = path.join(scratch, "first-mda.img");
    await copyFile(second, damaged);
    await patch(damaged, first.start + 100, Buffer.from("stray write"));
    const group = (await readLvm(await imageAccess(damaged)))!;
    expect(group.volumes.map((v) => v.lvName)).toEqual(["data-one", "second", "third", "elsewhere", "striped"]);

    await patch(damaged, last.start + 100, Buffer.from("stray write"));
    await expect(readLvm(await imageAccess(damaged))).rejects.toThrow(/metadata area at byte \d+ is damaged: its header's CRC does not match/);
  });

  test("bytes without an LVM2 label are not a physical volume", async () => {
    const plain = path.join(scratch, "plain.img");
    await writeSparseImage(plain, MIB, [{ offset: 0, data: pseudoRandom("not lvm", 4096) }]);
    expect(await readLvm(await imageAccess(plain))).toBeUndefined();
  });

  test("a PV whose metadata text is garbled fails as damaged", async () => {
    const { start, offset } = metadataLocation(loops[0]);
    const damaged = path.join(scratch, "garbled.img");
    await copyFile(image, damaged);
    await patch(damaged, partitionStart + start + offset + 10, Buffer.from("}}} garbled {{{"));
    const disk = await imageAccess(damaged);
    const partition = (await readPartitionTable(disk)).partitions[0];
    await expect(readLvm(partitionBytes(disk, partition))).rejects.toThrow(IntegrityError);
    await expect(readLvm(partitionBytes(disk, partition))).rejects.toThrow(/metadata text .* does not match its checksum/);
  });

  test("malformed metadata text is an IntegrityError naming the line, never a hang or a crash", () => {
    const malformed = [
      "vg {\n  extent_size = 8192\n",
      'vg {\n  id = "unterminated\n}',
      "vg {\n  stripes = [\"pv0\", 0\n}",
      "vg {\n  x = @\n}",
      `${"a {\n".repeat(1000)}${"}\n".repeat(1000)}`,
      `vg {\n  big = ${"9".repeat(40)}\n}`,
      "vg }",
    ];
    for (const text of malformed) expect(() => parseLvmText(text), text.slice(0, 40)).toThrow(IntegrityError);
    expect(() => parseLvmText("vg {\n  x = 1\n}\n}")).toThrow(/line 4/);
  });
});
