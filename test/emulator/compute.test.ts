import { fixedVhdFooter } from "../../runtime/sources/vhd.ts";
import { ComputeManagementClient } from "@azure/arm-compute";
import { AnonymousCredential, PageBlobClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningAzureEmulator, startAzureEmulator } from "./server.ts";

const MiB = 1024 * 1024;
let emulator: RunningAzureEmulator;
let client: ComputeManagementClient;
const group = "rg-compute";
const location = "westeurope";

beforeAll(async () => {
  emulator = await startAzureEmulator({ maxRangesPerResponse: 3 });
  emulator.world.addResourceGroup(group, location);
  client = new ComputeManagementClient(emulator.credential(), emulator.subscriptionId, { endpoint: emulator.armEndpoint });
});

afterAll(async () => {
  await emulator?.stop();
});

function bytes(length: number, fill: number): Buffer {
  return Buffer.alloc(length, fill);
}

async function snapshot(name: string, diskId: string) {
  return client.snapshots.beginCreateOrUpdateAndWait(group, name, {
    location, creationData: { createOption: "Copy", sourceResourceId: diskId }, incremental: true,
  });
}

async function readSas(name: string, seconds = 600): Promise<string> {
  const access = await client.snapshots.beginGrantAccessAndWait(group, name, { access: "Read", durationInSeconds: seconds });
  expect(access.accessSAS).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/md-/);
  return access.accessSAS!;
}

describe("managed disks and incremental snapshots", () => {
  it("diffs two incremental snapshots to exactly the pages written in between", async () => {
    const disk = emulator.compute.createDisk(group, "disk-diff", 8 * MiB);
    emulator.control.writeDisk(disk.id, 0, bytes(64 * 1024, 1));
    const first = await snapshot("snap-diff-1", disk.id);
    expect(first.provisioningState).toBe("Succeeded");
    expect(first.incremental).toBe(true);
    expect(first.creationData?.sourceResourceId).toBe(disk.id);

    emulator.control.writeDisk(disk.id, 4096, bytes(1024, 2)); // inside the first write
    emulator.control.writeDisk(disk.id, 3 * MiB, bytes(512, 3)); // a fresh page
    emulator.control.writeDisk(disk.id, 5 * MiB, bytes(8192, 4));
    await snapshot("snap-diff-2", disk.id);

    const previousUrl = await readSas("snap-diff-1");
    const currentUrl = await readSas("snap-diff-2");
    const current = new PageBlobClient(currentUrl, new AnonymousCredential());
    const diff = await current.getPageRangesDiffForManagedDisks(0, 8 * MiB, previousUrl);
    // The service bounds a response (3 ranges here): the changes come back exactly, in one page.
    expect(diff.pageRange).toEqual([
      { offset: 4096, count: 1023 },
      { offset: 3 * MiB, count: 511 },
      { offset: 5 * MiB, count: 8191 },
    ]);
    expect(diff.clearRange ?? []).toEqual([]);
    expect(diff.blobContentLength).toBe(8 * MiB);

    // A window returns only what falls in it, cut at its edges.
    const windowed = await current.getPageRangesDiffForManagedDisks(5 * MiB + 4096, 8192, previousUrl);
    expect(windowed.pageRange).toEqual([{ offset: 5 * MiB + 4096, count: 4095 }]);

    // The snapshots are point-in-time: the first still holds the old bytes.
    const old = await new PageBlobClient(previousUrl, new AnonymousCredential()).downloadToBuffer(4096, 1024);
    expect(old.equals(bytes(1024, 1))).toBe(true);
    const now = await current.downloadToBuffer(4096, 1024);
    expect(now.equals(bytes(1024, 2))).toBe(true);
    expect((await current.getProperties()).contentLength).toBe(8 * MiB);
  });

  it("pages a long diff with NextMarker, and reports cleared pages", async () => {
    const disk = emulator.compute.createDisk(group, "disk-many", 4 * MiB);
    emulator.control.writeDisk(disk.id, 2 * MiB, bytes(1024, 8));
    await snapshot("snap-many-1", disk.id);
    for (let i = 0; i < 7; i++) emulator.control.writeDisk(disk.id, i * 65536, bytes(512, 9));
    emulator.control.clearDisk(disk.id, 2 * MiB, 1024);
    await snapshot("snap-many-2", disk.id);
    const previousUrl = await readSas("snap-many-1");
    const current = new PageBlobClient(await readSas("snap-many-2"), new AnonymousCredential());
    const offsets: number[] = [];
    const cleared: Array<{ start: number; end: number }> = [];
    let pages = 0;
    for await (const page of current.listPageRangesDiff(0, 4 * MiB, previousUrl).byPage({ maxPageSize: 3 })) {
      pages++;
      expect((page.pageRange ?? []).length + (page.clearRange ?? []).length).toBeLessThanOrEqual(3);
      for (const range of page.pageRange ?? []) offsets.push(range.start);
      for (const range of page.clearRange ?? []) cleared.push({ start: range.start, end: range.end });
    }
    expect(pages).toBe(3);
    expect(offsets).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => i * 65536));
    expect(cleared).toEqual([{ start: 2 * MiB, end: 2 * MiB + 1023 }]);
  });

  it("answers 409 PreviousSnapshotNotFound when the previous snapshot was deleted (Blob service error codes)", async () => {
    const disk = emulator.compute.createDisk(group, "disk-gone", 1 * MiB);
    await snapshot("snap-gone-1", disk.id);
    emulator.control.writeDisk(disk.id, 0, bytes(512, 5));
    await snapshot("snap-gone-2", disk.id);
    const previousUrl = await readSas("snap-gone-1");
    const current = new PageBlobClient(await readSas("snap-gone-2"), new AnonymousCredential());
    // An active SAS blocks the delete; after endGetAccess the snapshot goes.
    await expect(client.snapshots.beginDeleteAndWait(group, "snap-gone-1")).rejects.toMatchObject({ statusCode: 409 });
    await client.snapshots.beginRevokeAccessAndWait(group, "snap-gone-1");
    await client.snapshots.beginDeleteAndWait(group, "snap-gone-1");
    await expect(client.snapshots.get(group, "snap-gone-1")).rejects.toMatchObject({ statusCode: 404, code: "ResourceNotFound" });
    await expect(current.getPageRangesDiffForManagedDisks(0, MiB, previousUrl)).rejects.toMatchObject({ statusCode: 409, code: "PreviousSnapshotNotFound" });
  });

  it("stops serving a SAS once revoked or expired", async () => {
    const disk = emulator.compute.createDisk(group, "disk-sas", 1 * MiB);
    emulator.control.writeDisk(disk.id, 0, bytes(512, 7));
    await snapshot("snap-sas", disk.id);
    const revocable = new PageBlobClient(await readSas("snap-sas"), new AnonymousCredential());
    expect((await revocable.downloadToBuffer(0, 512)).equals(bytes(512, 7))).toBe(true);
    await client.snapshots.beginRevokeAccessAndWait(group, "snap-sas");
    await expect(revocable.downloadToBuffer(0, 512)).rejects.toMatchObject({ statusCode: 403, code: "AuthenticationFailed" });

    // A grant of 60 s serves reads; once its time has passed (the emulator's clock moved past it,
    // rather than a sleep that a busy machine stretches or shrinks) it is refused.
    const shortLived = new PageBlobClient(await readSas("snap-sas", 60), new AnonymousCredential());
    expect((await shortLived.downloadToBuffer(0, 512)).length).toBe(512);
    emulator.control.advanceSasClock(30_000);
    expect((await shortLived.downloadToBuffer(0, 512)).length).toBe(512);
    emulator.control.advanceSasClock(30_000);
    await expect(shortLived.downloadToBuffer(0, 512)).rejects.toMatchObject({ statusCode: 403, code: "AuthenticationFailed" });
    expect(emulator.control.inventory().activeSasGrants.filter((g) => g.resourceId.includes("snap-sas"))).toEqual([]);

    // A tampered signature is refused.
    const forged = (await readSas("snap-sas")).replace(/sig=[^&]+/, "sig=AAAA");
    await expect(new PageBlobClient(forged, new AnonymousCredential()).getProperties()).rejects.toMatchObject({ statusCode: 403 });
    await client.snapshots.beginRevokeAccessAndWait(group, "snap-sas");
  });

  it("uploads into an Upload disk through a write SAS, then attaches it to a new VM", async () => {
    // The smallest upload Azure takes: 20 MiB + the 512-byte footer (see arm/compute.ts).
    const size = 20 * MiB;
    const created = await client.disks.beginCreateOrUpdateAndWait(group, "disk-upload", {
      location, creationData: { createOption: "Upload", uploadSizeBytes: size + 512 },
    });
    expect(created.diskState).toBe("ReadyToUpload");
    expect(created.id).toBe(`/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/disks/disk-upload`);
    const access = await client.disks.beginGrantAccessAndWait(group, "disk-upload", { access: "Write", durationInSeconds: 600 });
    expect((await client.disks.get(group, "disk-upload")).diskState).toBe("ActiveUpload");
    const writer = new PageBlobClient(access.accessSAS!, new AnonymousCredential());
    await writer.uploadPages(bytes(4096, 0xab), 8192, 4096);
    // Direct upload ends with a fixed-VHD footer; the disk is what precedes it.
    await writer.uploadPages(fixedVhdFooter(size), size, 512);
    await client.disks.beginRevokeAccessAndWait(group, "disk-upload");
    await expect(writer.uploadPages(bytes(512, 1), 0, 512)).rejects.toMatchObject({ statusCode: 403 });
    expect((await client.disks.get(group, "disk-upload")).diskState).toBe("Unattached");
    const content = emulator.control.readImage(created.id!);
    expect(content.subarray(8192, 8192 + 4096).equals(bytes(4096, 0xab))).toBe(true);
    expect(content.subarray(0, 8192).every((b) => b === 0)).toBe(true);
    expect(content.length).toBe(size);

    const vm = await client.virtualMachines.beginCreateOrUpdateAndWait(group, "vm-restored", {
      location,
      hardwareProfile: { vmSize: "Standard_B2s" },
      storageProfile: { osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: created.id } } },
      networkProfile: { networkInterfaces: [{ id: `/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Network/networkInterfaces/nic1` }] },
    });
    expect(vm.provisioningState).toBe("Succeeded");
    expect(vm.storageProfile?.osDisk?.managedDisk?.id).toBe(created.id);
    const attached = await client.disks.get(group, "disk-upload");
    expect(attached.diskState).toBe("Attached");
    expect(attached.managedBy).toBe(vm.id);
    const names: string[] = [];
    for await (const machine of client.virtualMachines.list(group)) names.push(machine.name!);
    expect(names).toContain("vm-restored");
    await expect(client.disks.beginDeleteAndWait(group, "disk-upload")).rejects.toMatchObject({ statusCode: 409 });
  });
});

describe("throttling and failing operations", () => {
  it("honours 429 Retry-After through the SDK's own retry", async () => {
    emulator.compute.createDisk(group, "disk-throttled", MiB);
    const before = emulator.control.faults.throttled;
    emulator.control.throttle({ method: "GET", path: "/disks/disk-throttled", times: 2, retryAfterSeconds: 1 });
    const started = Date.now();
    const disk = await client.disks.get(group, "disk-throttled");
    expect(disk.name).toBe("disk-throttled");
    expect(emulator.control.faults.throttled - before).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
  });

  it("surfaces a snapshot that fails midway as an error and leaves a Failed snapshot to clean up", async () => {
    const disk = emulator.compute.createDisk(group, "disk-fail", MiB);
    emulator.control.failOperation({ method: "PUT", path: "/snapshots/snap-fail", times: 1, code: "InternalDiskManagementError", message: "Snapshot creation failed midway." });
    await expect(snapshot("snap-fail", disk.id)).rejects.toThrow(/Snapshot creation failed midway/);
    const failed = await client.snapshots.get(group, "snap-fail");
    expect(failed.provisioningState).toBe("Failed");
    await client.snapshots.beginDeleteAndWait(group, "snap-fail");
    const left: string[] = [];
    for await (const s of client.snapshots.listByResourceGroup(group)) left.push(s.name!);
    expect(left).not.toContain("snap-fail");
  });

  it("refuses requests without a valid bearer token", async () => {
    const response = await fetch(`${emulator.armEndpoint}/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/disks?api-version=2024-03-02`, {
      headers: { authorization: "Bearer not.a.token" },
    });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("AuthenticationFailed");
  });
});
