/**
 * Disk backups when Azure misbehaves, through the real CLI: read access revoked midway, the previous
 * (golden) snapshot deleted by someone, throttling with Retry-After, and long-running operations that
 * fail midway. Each ends in a clear outcome (success, or an exit code and a message that says what
 * happened), with nothing left behind: no extra snapshot, no open SAS, the golden snapshot and every
 * committed point intact, and a vault that verifies.
 */
import { ComputeManagementClient } from "@azure/arm-compute";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../support/wait.ts";
import {
  KiB, MiB, type AzureWorld, bulwarkSnapshots, expectNothingLeaked, pattern, restoreToFile, startWorld,
  expectCallsAllowedByRole,
} from "./harness.ts";

let world: AzureWorld;
let compute: ComputeManagementClient;
let vault: string;
let diskId: string;
const SIZE = 24 * MiB;
let writes = 0;
/** 64 KiB blocks written since the last successful backup. */
const unsaved = new Set<number>();

beforeAll(async () => {
  world = await startWorld({ seed: false });
  compute = new ComputeManagementClient(world.emulator.credential(), world.emulator.subscriptionId, { endpoint: world.emulator.armEndpoint });
  vault = await world.newVault("vault");
  diskId = world.emulator.compute.createDisk(world.group, "busy-disk", SIZE).id;
  // Mostly written, so a full read takes a while.
  for (let offset = 0; offset < SIZE; offset += 2 * MiB) world.emulator.control.writeDisk(diskId, offset, pattern(offset / MiB, MiB + 512 * KiB));
  const first = await world.json(["backup", diskId, "--vault", vault]);
  expect(first.mode).toBe("first");
});

beforeEach(() => {
  world.emulator.control.clearFaults();
  // Each case starts from a disk that changed since the last backup.
  const offset = (writes++ % 20) * MiB + 64 * KiB;
  // Half a block: read as those 32 KiB, the rest patched from the previous point (backup-blocks.ts).
  world.emulator.control.writeDisk(diskId, offset, pattern(500 + writes, 32 * KiB));
  unsaved.add(offset / (64 * KiB));
});

afterAll(async () => {
  await world?.stop();
});

async function points(): Promise<string[]> {
  return (await world.json<Array<{ id: string }>>(["points", "--vault", vault])).map((p) => p.id);
}

/** After a failed backup: the golden snapshot is the one from before, no new point, nothing open, vault sound. */
async function expectUnchanged(golden: string, pointsBefore: string[]): Promise<void> {
  expect(bulwarkSnapshots(world).map((s) => s.id)).toEqual([golden]);
  expect(await points()).toEqual(pointsBefore);
  await expectNothingLeaked(world, [diskId]);
  expect((await world.json(["verify", "--vault", vault])).ok).toBe(true);
}

function golden(): string {
  const snapshots = bulwarkSnapshots(world);
  expect(snapshots).toHaveLength(1);
  return snapshots[0]!.id;
}

describe("disk backups when Azure misbehaves", () => {
  it("read access revoked midway: the backup fails clearly and releases the new snapshot", async () => {
    const previous = golden();
    const before = await points();
    // Every read of the data plane answers 503 ServerBusy until the revocation has landed, so the
    // revocation comes after the backup started reading (its first read was refused) and before it
    // could read anything, whatever the machine's speed. 503 is retried with exponential delays
    // (Azure/azure-sdk-for-js, sdk/storage/storage-common StorageRetryPolicy.shouldRetry: 500 and
    // 503 are retried), which leaves seconds for the revocation below, issued as soon as the first
    // read is seen.
    const faults = world.emulator.control.faults;
    const throttledBefore = faults.throttled;
    world.emulator.control.throttle({ method: "GET", path: /^\/md-/, times: 1_000, status: 503, retryAfterSeconds: 1 });
    let finished = false;
    const child = world.cli(["backup", diskId, "--vault", vault]).finally(() => (finished = true));
    await waitFor("the backup's first read of the new snapshot", () => finished || faults.throttled > throttledBefore, 60_000, 5);
    expect(finished, "the backup ended before reading").toBe(false);
    const grant = world.emulator.control.inventory().activeSasGrants.find((g) => g.resourceId !== previous && /-bulwark-/.test(g.resourceId));
    expect(grant, "the new snapshot's read grant").toBeDefined();
    // Snapshots_RevokeAccess (POST .../endGetAccess) is a long-running operation; once it has
    // completed, access has ended (https://learn.microsoft.com/dotnet/api/azure.resourcemanager.compute.snapshotresource.revokeaccess).
    // Only then do reads stop being refused, so the next one meets the revocation.
    await compute.snapshots.beginRevokeAccessAndWait(world.group, grant!.resourceId.split("/").at(-1)!);
    world.emulator.control.clearFaults();
    const revoked = grant!.resourceId;
    const result = await child;
    expect(result.stderr).toMatch(/read access to the snapshot expired or was revoked/);
    expect(result.code).toBe(8);
    expect(world.emulator.control.inventory().snapshots.map((s) => s.id)).not.toContain(revoked);
    await expectUnchanged(previous, before);
  });

  it("throttled with 429 and Retry-After on snapshot create: the backup waits and succeeds", async () => {
    const throttledBefore = world.emulator.control.faults.throttled;
    world.emulator.control.throttle({ method: "PUT", path: "/snapshots/", times: 2, retryAfterSeconds: 1 });
    const started = Date.now();
    const image = world.emulator.control.readImage(diskId);
    const backup = await world.json(["backup", diskId, "--vault", vault]);
    expect(world.emulator.control.faults.throttled - throttledBefore).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(backup.mode).toBe("incremental");
    expect(backup.bytesFetched).toBe(unsaved.size * 32 * KiB);
    unsaved.clear();
    expect((await restoreToFile(world, vault, backup.id, "throttled.img")).equals(image)).toBe(true);
    await expectNothingLeaked(world, [diskId]);
  });

  it("a snapshot that fails midway: the backup fails clearly, no snapshot is left, the golden one stays", async () => {
    const previous = golden();
    const before = await points();
    world.emulator.control.failOperation({ method: "PUT", path: "/snapshots/", times: 1, code: "InternalDiskManagementError", message: "Snapshot creation failed midway (injected)." });
    const result = await world.cli(["backup", diskId, "--vault", vault]);
    expect(result.code).toBe(8);
    expect(result.stderr).toMatch(/creating an incremental snapshot of .*busy-disk failed: .*Snapshot creation failed midway/);
    expect(world.emulator.control.faults.failedOperations).toBeGreaterThan(0);
    await expectUnchanged(previous, before);

    // The next backup carries on incrementally from the golden snapshot.
    const image = world.emulator.control.readImage(diskId);
    const next = await world.json(["backup", diskId, "--vault", vault]);
    expect(next.mode).toBe("incremental");
    expect(next.bytesFetched).toBe(unsaved.size * 32 * KiB);
    unsaved.clear();
    expect((await restoreToFile(world, vault, next.id, "after-failure.img")).equals(image)).toBe(true);
    await expectNothingLeaked(world, [diskId]);
  });

  it("read access that fails midway: the backup fails clearly and deletes the new snapshot", async () => {
    const previous = golden();
    const before = await points();
    world.emulator.control.failOperation({ method: "POST", path: /-bulwark-[^/]+\/beginGetAccess$/i, times: 1, code: "InternalDiskManagementError", message: "Granting access failed midway (injected)." });
    const result = await world.cli(["backup", diskId, "--vault", vault]);
    expect(result.code).toBe(8);
    expect(result.stderr).toMatch(/getting read access to snapshot .* failed: .*Granting access failed midway/);
    await expectUnchanged(previous, before);
  });

  it("the golden snapshot deleted by someone: the next backup reads in full, says why, and restores correctly", async () => {
    const previous = golden();
    await compute.snapshots.beginDeleteAndWait(world.group, previous.split("/").at(-1)!);
    expect(bulwarkSnapshots(world)).toEqual([]);
    const image = world.emulator.control.readImage(diskId);
    const backup = await world.json(["backup", diskId, "--vault", vault]);
    expect(backup.mode).toBe("full-fallback");
    expect(backup.fallbackReason).toMatch(/previous snapshot .* no longer exists/);
    // A full read of the allocated blocks, not of the whole disk.
    expect(backup.bytesFetched).toBeGreaterThan(SIZE / 2);
    expect(backup.bytesFetched).toBeLessThan(SIZE);
    unsaved.clear();
    expect((await restoreToFile(world, vault, backup.id, "fallback.img")).equals(image)).toBe(true);
    await expectNothingLeaked(world, [diskId]);
    expect((await world.json(["verify", "--vault", vault, "--read-data"])).ok).toBe(true);
  });

  it("made only Azure calls that the backup role allows", () => {
    expectCallsAllowedByRole(world);
  });
});
