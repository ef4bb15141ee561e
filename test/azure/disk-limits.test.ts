/**
 * Managed-disk backups and restores through the real CLI against the limits Azure documents (the
 * emulator enforces them; sources in test/emulator/arm/compute.ts and test/emulator/pageblob-sas.ts):
 * page ranges asked in segments that do not time out and followed through NextMarker, the diff's
 * fallback on a refused previous snapshot (documented 409 or plain 403), revoke failures reported,
 * Premium SSD v2 background copies waited for, VHDX-served snapshots refused, and local images of
 * any size restored into a valid upload disk.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { roleActionsFor } from "../../runtime/azure/role.ts";
import { KiB, MiB, type AzureWorld, bulwarkSnapshots, diskIdIn, expectNothingLeaked, pattern, startWorld } from "./harness.ts";

let world: AzureWorld;
let vault: string;
/** Disks backed up so far: each keeps exactly one golden snapshot. */
const golden: string[] = [];

beforeAll(async () => {
  world = await startWorld({ seed: false });
  vault = await world.newVault("vault");
});

afterAll(async () => {
  await world?.stop();
});

/** A disk with `count` small writes spread evenly over it: a fragmented page blob. */
function fragmentedDisk(name: string, size: number, count: number): string {
  const disk = world.emulator.compute.createDisk(world.group, name, size);
  const gap = Math.floor(size / count / (64 * KiB)) * 64 * KiB;
  for (let i = 0; i < count; i++) world.emulator.control.writeDisk(disk.id, i * gap, pattern(i, 4 * KiB));
  return disk.id;
}

describe("page ranges of a large fragmented disk", () => {
  it("are asked in 150 MiB segments that do not time out, each followed through its NextMarkers", async () => {
    const size = 512 * MiB;
    const diskId = fragmentedDisk("fragmented-disk", size, 400);
    // A request over more than 150 MiB of this blob times out, as Azure's guidance warns; answers hold 64 ranges.
    world.emulator.control.pageRanges({ maxRangesPerResponse: 64, fragmentedTimeout: { spanBytes: 150 * MiB, ranges: 64 } });
    try {
      const first = await world.json(["backup", diskId, "--vault", vault]);
      expect(first.mode).toBe("first");
      expect(first.changedBytes).toBe(400 * 4 * KiB);
      const usage = world.emulator.control.sasUsage(bulwarkSnapshots(world).find((s) => s.sourceResourceId === diskId)!.id);
      // Four segments (150, 150, 150, 62 MiB) holding 120, 120, 120 and 40 ranges: 2 + 2 + 2 + 1 responses.
      expect(usage.reduce((n, u) => n + u.pageListRequests, 0)).toBe(7);
      expect(usage.reduce((n, u) => n + u.bytesRead, 0)).toBe(first.bytesFetched);

      world.emulator.control.writeDisk(diskId, 300 * MiB, pattern(900, 4 * KiB));
      const second = await world.json(["backup", diskId, "--vault", vault]);
      expect(second.mode).toBe("incremental");
      expect(second.changedBytes).toBe(4 * KiB);
      golden.push(diskId);
      await expectNothingLeaked(world, golden);
    } finally {
      world.emulator.control.pageRanges({ maxRangesPerResponse: 10_000, fragmentedTimeout: null });
    }
  });
});

describe("the diff's fallback", () => {
  let diskId: string;

  beforeAll(async () => {
    diskId = fragmentedDisk("fallback-disk", 8 * MiB, 4);
    await world.json(["backup", diskId, "--vault", vault]);
    golden.push(diskId);
  });

  it("reads in full, and says why, when the diff refuses the previous snapshot with a plain 403", async () => {
    world.emulator.control.writeDisk(diskId, MiB, pattern(7, 4 * KiB));
    world.emulator.control.refusePreviousSnapshot("AuthenticationFailed");
    const outcome = await world.json(["backup", diskId, "--vault", vault]);
    expect(outcome.mode).toBe("full-fallback");
    expect(outcome.fallbackReason).toMatch(/403 AuthenticationFailed/);
    await expectNothingLeaked(world, golden);
  });

  it("reads in full, and says why, when the diff refuses it as documented (409 PreviousSnapshotNotFound)", async () => {
    world.emulator.control.writeDisk(diskId, 2 * MiB, pattern(8, 4 * KiB));
    world.emulator.control.refusePreviousSnapshot("PreviousSnapshotNotFound");
    const outcome = await world.json(["backup", diskId, "--vault", vault]);
    expect(outcome.mode).toBe("full-fallback");
    expect(outcome.fallbackReason).toMatch(/409 PreviousSnapshotNotFound/);
    await expectNothingLeaked(world, golden);
  });

  it("reports a revoke that failed instead of ignoring it", async () => {
    world.emulator.control.failOperation({ method: "POST", path: /\/snapshots\/[^/]+\/endGetAccess$/i, times: 1, code: "InternalOperationError", message: "Revoke failed midway." });
    try {
      const run = await world.cli(["backup", diskId, "--vault", vault, "--json"]);
      expect(run.code).toBe(0);
      expect(run.stderr).toMatch(/could not revoke read access to snapshot .*Revoke failed midway.*revoke it/s);
    } finally {
      world.emulator.control.clearFaults();
    }
  });
});

describe("the snapshot's linked access check on its source disk", () => {
  it("passes under the backup identity's role alone, and a role without disks/beginGetAccess fails with one actionable message", async () => {
    const disk = world.emulator.compute.createDisk(world.group, "linked-disk", 4 * MiB);
    world.emulator.control.writeDisk(disk.id, 0, pattern(5, 64 * KiB));
    const backupRole = roleActionsFor("backup").actions;
    try {
      world.emulator.control.restrictActions(backupRole.filter((a) => a.toLowerCase() !== "microsoft.compute/disks/begingetaccess/action"));
      const refused = await world.cli(["backup", disk.id, "--vault", vault]);
      expect(refused.code).toBe(8);
      expect(refused.stderr).toMatch(/access denied \(LinkedAuthorizationFailed\).*backup role/);
      expect(bulwarkSnapshots(world).filter((s) => s.sourceResourceId === disk.id)).toEqual([]);

      world.emulator.control.restrictActions(backupRole);
      const outcome = await world.json(["backup", disk.id, "--vault", vault]);
      expect(outcome.mode).toBe("first");
      golden.push(disk.id);
      await expectNothingLeaked(world, golden);
    } finally {
      world.emulator.control.restrictActions(undefined);
    }
  });
});

describe("Premium SSD v2 and Ultra Disks", () => {
  it("waits for a Premium SSD v2 snapshot's background copy before asking for read access, and shows its progress", async () => {
    world.emulator.control.computeKnobs({ backgroundCopyGets: 3 });
    const disk = world.emulator.compute.createDisk(world.group, "premium-v2-disk", 4 * MiB, { sku: "PremiumV2_LRS" });
    world.emulator.control.writeDisk(disk.id, 0, pattern(3, 64 * KiB));
    const run = await world.cli(["backup", disk.id, "--vault", vault, "--json"], { BULWARK_SNAPSHOT_COPY_POLL_MS: "20" });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/background copy of snapshot .*: \d+%/);
    expect(JSON.parse(run.stdout).bytesFetched).toBe(64 * KiB);
    golden.push(disk.id);
    await expectNothingLeaked(world, golden);
  });

  it("gives up on a background copy that outlasts its bound with one message (exit 8), leaving no snapshot or SAS", async () => {
    world.emulator.control.computeKnobs({ backgroundCopyGets: 1000 });
    try {
      const disk = world.emulator.compute.createDisk(world.group, "premium-v2-slow", 4 * MiB, { sku: "PremiumV2_LRS" });
      const run = await world.cli(["backup", disk.id, "--vault", vault], { BULWARK_SNAPSHOT_COPY_POLL_MS: "20", BULWARK_SNAPSHOT_COPY_TIMEOUT_S: "0" });
      expect(run.code).toBe(8);
      expect(run.stderr).toMatch(/background copy of snapshot .* is at \d+% .*run the backup again later/);
      expect(bulwarkSnapshots(world).filter((s) => s.sourceResourceId === disk.id)).toEqual([]);
      expect(world.emulator.control.inventory().activeSasGrants).toEqual([]);
    } finally {
      world.emulator.control.computeKnobs({ backgroundCopyGets: 3 });
    }
  });

  it("refuses a disk of 4096-byte logical sectors (snapshots served as VHDX) with one message and exit 6, leaving nothing", async () => {
    const disk = world.emulator.compute.createDisk(world.group, "ultra-4k-disk", 4 * MiB, { sku: "UltraSSD_LRS", logicalSectorSize: 4096 });
    world.emulator.control.writeDisk(disk.id, 0, pattern(4, 64 * KiB));
    const run = await world.cli(["backup", disk.id, "--vault", vault]);
    expect(run.code).toBe(6);
    expect(run.stderr).toMatch(/4096-byte logical sectors.*VHDX.*leave this disk out/s);
    expect(bulwarkSnapshots(world).filter((s) => s.sourceResourceId === disk.id)).toEqual([]);
    expect(world.emulator.control.inventory().activeSasGrants).toEqual([]);
  });
});

describe("restoring a local image of any size to a managed disk", () => {
  it("rounds the new disk up to whole MiB (at least 20 MiB), says so, and restores the image's bytes", async () => {
    const size = 21 * MiB + 4 * KiB;
    const image = pattern(11, size);
    const file = path.join(world.dir, "odd.img");
    await writeFile(file, image);
    const point = await world.json(["backup", file, "--vault", vault, "--as", "disk"]);
    const target = diskIdIn(world, world.group, "odd-image-restored");
    const restored = await world.json(["restore", point.id, "--vault", vault, "--to", target, "--location", world.location]);
    expect(restored.diskSizeBytes).toBe(22 * MiB);
    expect(restored.note).toMatch(/whole number of MiB/);
    const content = world.emulator.control.readImage(target);
    expect(content.length).toBe(22 * MiB);
    expect(content.subarray(0, size).equals(image)).toBe(true);
    expect(content.subarray(size).every((b) => b === 0)).toBe(true);
  });
});
