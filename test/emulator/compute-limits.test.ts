/**
 * The limits Azure documents for managed disks, snapshots and their page-blob data plane, as the
 * emulator enforces them (sources cited in arm/compute.ts and pageblob-sas.ts): upload sizes, SAS per
 * snapshot family, the incremental snapshot rate and count, Premium SSD v2 / Ultra background copies
 * and VHDX snapshots, the linked access check of snapshot creation, page-range paging and timeouts,
 * refused previous snapshots, and the emulator's own count of what each SAS served.
 */
import { ComputeManagementClient } from "@azure/arm-compute";
import { AnonymousCredential, PageBlobClient } from "@azure/storage-blob";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_UPLOAD_BYTES, MIN_UPLOAD_BYTES } from "./arm/compute.ts";
import { type RunningAzureEmulator, startAzureEmulator } from "./server.ts";

const MiB = 1024 * 1024;
let emulator: RunningAzureEmulator;
let client: ComputeManagementClient;
const group = "rg-limits";
const location = "westeurope";

beforeAll(async () => {
  emulator = await startAzureEmulator();
  emulator.world.addResourceGroup(group, location);
  client = new ComputeManagementClient(emulator.credential(), emulator.subscriptionId, { endpoint: emulator.armEndpoint });
});

afterEach(() => {
  emulator.control.restrictActions(undefined);
  emulator.control.pageRanges({ maxRangesPerResponse: 10_000, fragmentedTimeout: null });
  emulator.control.computeKnobs({ backgroundCopyGets: 3, snapshotRateWindowMs: 5 * 60 * 1000 });
});

afterAll(async () => {
  await emulator?.stop();
});

async function snapshot(name: string, diskId: string) {
  return client.snapshots.beginCreateOrUpdateAndWait(group, name, {
    location, creationData: { createOption: "Copy", sourceResourceId: diskId }, incremental: true,
  });
}

async function readSas(name: string): Promise<string> {
  return (await client.snapshots.beginGrantAccessAndWait(group, name, { access: "Read", durationInSeconds: 600 })).accessSAS!;
}

describe("upload disks", () => {
  it("accepts 20 MiB + 512 and 32 TiB + 512 bytes, and refuses sizes outside them or not N MiB + 512 with 400 BadRequest", async () => {
    const upload = (name: string, bytes: number) =>
      client.disks.beginCreateOrUpdateAndWait(group, name, { location, creationData: { createOption: "Upload", uploadSizeBytes: bytes } });
    expect(MIN_UPLOAD_BYTES).toBe(20_972_032);
    expect(MAX_UPLOAD_BYTES).toBe(35_183_298_347_520);
    expect((await upload("up-min", MIN_UPLOAD_BYTES)).diskState).toBe("ReadyToUpload");
    expect((await upload("up-max", MAX_UPLOAD_BYTES)).diskState).toBe("ReadyToUpload");
    await expect(upload("up-small", 2 * MiB + 512)).rejects.toMatchObject({ statusCode: 400, code: "BadRequest" });
    await expect(upload("up-large", MAX_UPLOAD_BYTES + MiB)).rejects.toMatchObject({ statusCode: 400, code: "BadRequest" });
    await expect(upload("up-unaligned", 30 * MiB + 4096 + 512)).rejects.toMatchObject({
      statusCode: 400, code: "BadRequest", message: expect.stringMatching(/must be a multiple of MiB/),
    });
    for (const name of ["up-min", "up-max"]) await client.disks.beginDeleteAndWait(group, name);
  });
});

describe("incremental snapshot limits", () => {
  it("generates SAS URIs for at most five snapshots of one family at a time; a revoke frees a slot", async () => {
    const disk = emulator.compute.createDisk(group, "disk-family", MiB);
    for (let i = 0; i < 6; i++) await snapshot(`family-${i}`, disk.id);
    for (let i = 0; i < 5; i++) await readSas(`family-${i}`);
    await expect(readSas("family-5")).rejects.toMatchObject({ statusCode: 409, code: "OperationNotAllowed", message: expect.stringMatching(/at most 5 snapshots/) });
    // Another SAS of a snapshot that already has one does not take a new slot.
    expect(await readSas("family-0")).toMatch(/md-/);
    await client.snapshots.beginRevokeAccessAndWait(group, "family-0");
    expect(await readSas("family-5")).toMatch(/md-/);
    for (let i = 0; i < 6; i++) await client.snapshots.beginRevokeAccessAndWait(group, `family-${i}`);
  });

  it("allows seven incremental snapshots of a disk per window, then answers 429 with Retry-After until the window passes", async () => {
    emulator.control.computeKnobs({ snapshotRateWindowMs: 2_000 });
    const disk = emulator.compute.createDisk(group, "disk-rate", MiB);
    const started = Date.now();
    for (let i = 0; i < 7; i++) await snapshot(`rate-${i}`, disk.id);
    const token = (await emulator.credential().getToken("https://management.azure.com/.default"))!.token;
    const refused = await fetch(`${emulator.armEndpoint}/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/snapshots/rate-7?api-version=2024-03-02`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ location, properties: { creationData: { createOption: "Copy", sourceResourceId: disk.id }, incremental: true } }),
    });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // The SDK honours Retry-After and succeeds once the window has moved on.
    await snapshot("rate-7", disk.id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
  });

  it("refuses a 501st incremental snapshot of a disk with 409 until older ones are deleted", async () => {
    const disk = emulator.compute.createDisk(group, "disk-500", MiB);
    const seeded = emulator.compute.seedIncrementalSnapshots(disk.id, 500);
    await expect(snapshot("one-too-many", disk.id)).rejects.toMatchObject({ statusCode: 409, code: "OperationNotAllowed", message: expect.stringMatching(/500 incremental snapshots/) });
    await client.snapshots.beginDeleteAndWait(group, seeded[0]!.name);
    expect((await snapshot("one-too-many", disk.id)).provisioningState).toBe("Succeeded");
  });
});

describe("Premium SSD v2 and Ultra Disk snapshots", () => {
  it("copy in the background: completionPercent grows to 100 and no SAS is granted before", async () => {
    emulator.control.computeKnobs({ backgroundCopyGets: 2 });
    const disk = emulator.compute.createDisk(group, "disk-v2", MiB, { sku: "PremiumV2_LRS" });
    emulator.control.writeDisk(disk.id, 0, Buffer.alloc(512, 3));
    const created = await snapshot("snap-v2", disk.id);
    expect(created.completionPercent).toBeLessThan(100);
    await expect(readSas("snap-v2")).rejects.toMatchObject({ statusCode: 409, code: "OperationNotAllowed", message: expect.stringMatching(/completionPercent/) });
    const seen: number[] = [];
    for (let i = 0; i < 5 && seen.at(-1) !== 100; i++) seen.push((await client.snapshots.get(group, "snap-v2")).completionPercent!);
    expect(seen.at(-1)).toBe(100);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    const sas = new PageBlobClient(await readSas("snap-v2"), new AnonymousCredential());
    expect((await sas.downloadToBuffer(0, 512)).equals(Buffer.alloc(512, 3))).toBe(true);
    await client.snapshots.beginRevokeAccessAndWait(group, "snap-v2");
  });

  it("serves a snapshot of 4096-byte logical sectors as VHDX, not as the raw disk", async () => {
    emulator.control.computeKnobs({ backgroundCopyGets: 0 });
    const disk = emulator.compute.createDisk(group, "disk-4k", MiB, { sku: "UltraSSD_LRS", logicalSectorSize: 4096 });
    emulator.control.writeDisk(disk.id, 0, Buffer.alloc(4096, 9));
    const created = await snapshot("snap-4k", disk.id);
    expect(created.creationData?.logicalSectorSize).toBe(4096);
    const sas = new PageBlobClient(await readSas("snap-4k"), new AnonymousCredential());
    expect((await sas.downloadToBuffer(0, 8)).toString("ascii")).toBe("vhdxfile");
    await client.snapshots.beginRevokeAccessAndWait(group, "snap-4k");
  });
});

describe("the linked access check of snapshot creation", () => {
  it("refuses a snapshot of a disk with 403 LinkedAuthorizationFailed to a caller without beginGetAccess on the disk", async () => {
    const disk = emulator.compute.createDisk(group, "disk-linked", MiB);
    emulator.control.restrictActions(["Microsoft.Compute/snapshots/write", "Microsoft.Compute/snapshots/read", "Microsoft.Compute/locations/diskOperations/read"]);
    await expect(snapshot("snap-linked", disk.id)).rejects.toMatchObject({
      statusCode: 403, code: "LinkedAuthorizationFailed", message: expect.stringContaining("Microsoft.Compute/disks/beginGetAccess/action"),
    });
    emulator.control.restrictActions(["Microsoft.Compute/snapshots/write", "Microsoft.Compute/disks/beginGetAccess/action"]);
    expect((await snapshot("snap-linked", disk.id)).provisioningState).toBe("Succeeded");
  });
});

describe("page ranges", () => {
  async function fragmentedSnapshot(name: string, size: number, ranges: number): Promise<PageBlobClient> {
    const disk = emulator.compute.createDisk(group, `disk-${name}`, size);
    const gap = Math.floor(size / ranges / 512) * 512;
    for (let i = 0; i < ranges; i++) emulator.control.writeDisk(disk.id, i * gap, Buffer.alloc(512, 1));
    await snapshot(name, disk.id);
    return new PageBlobClient(await readSas(name), new AnonymousCredential());
  }

  it("lists at most maxRangesPerResponse ranges per response with a NextMarker for the rest", async () => {
    emulator.control.pageRanges({ maxRangesPerResponse: 4 });
    const sas = await fragmentedSnapshot("paged", 4 * MiB, 10);
    const pages: number[] = [];
    for await (const page of sas.listPageRanges(0, 4 * MiB).byPage()) pages.push((page.pageRange ?? []).length);
    expect(pages).toEqual([4, 4, 2]);
  });

  it("times out a request over a large span of a fragmented blob with 500 OperationTimedOut, and answers the same ranges in segments", async () => {
    emulator.control.pageRanges({ fragmentedTimeout: { spanBytes: 2 * MiB, ranges: 5 } });
    const sas = await fragmentedSnapshot("fragmented", 8 * MiB, 16);
    const noRetry = new PageBlobClient(sas.url, new AnonymousCredential(), { retryOptions: { maxTries: 1 } });
    await expect(noRetry.getPageRanges(0, 8 * MiB)).rejects.toMatchObject({ statusCode: 500, code: "OperationTimedOut" });
    let found = 0;
    for (let at = 0; at < 8 * MiB; at += 2 * MiB) found += ((await noRetry.getPageRanges(at, 2 * MiB)).pageRange ?? []).length;
    expect(found).toBe(16);
  });

  it("refuses a diff's previous snapshot as documented (409 PreviousSnapshotNotFound) or as reported (plain 403), on request", async () => {
    const disk = emulator.compute.createDisk(group, "disk-refusal", MiB);
    await snapshot("refusal-1", disk.id);
    await snapshot("refusal-2", disk.id);
    const previous = await readSas("refusal-1");
    const current = new PageBlobClient(await readSas("refusal-2"), new AnonymousCredential(), { retryOptions: { maxTries: 1 } });
    emulator.control.refusePreviousSnapshot("PreviousSnapshotNotFound");
    await expect(current.getPageRangesDiffForManagedDisks(0, MiB, previous)).rejects.toMatchObject({ statusCode: 409, code: "PreviousSnapshotNotFound" });
    emulator.control.refusePreviousSnapshot("AuthenticationFailed");
    await expect(current.getPageRangesDiffForManagedDisks(0, MiB, previous)).rejects.toMatchObject({ statusCode: 403, code: "AuthenticationFailed" });
    expect((await current.getPageRangesDiffForManagedDisks(0, MiB, previous)).pageRange).toEqual([]);
    for (const name of ["refusal-1", "refusal-2"]) await client.snapshots.beginRevokeAccessAndWait(group, name);
  });

  it("counts the requests and bytes each SAS serves", async () => {
    const disk = emulator.compute.createDisk(group, "disk-counted", MiB);
    emulator.control.writeDisk(disk.id, 0, Buffer.alloc(8192, 2));
    const created = await snapshot("counted", disk.id);
    const sas = new PageBlobClient(await readSas("counted"), new AnonymousCredential());
    await sas.getPageRanges(0, MiB);
    await sas.downloadToBuffer(0, 4096);
    await sas.downloadToBuffer(4096, 1024);
    expect(emulator.control.sasUsage(created.id)).toEqual([
      expect.objectContaining({ resourceId: created.id, reads: 2, bytesRead: 5120, pageListRequests: 1 }),
    ]);
    await client.snapshots.beginRevokeAccessAndWait(group, "counted");
  });
});
