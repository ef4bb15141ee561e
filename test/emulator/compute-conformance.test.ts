/**
 * The emulator's Microsoft.Compute against Azure's own references, not against Bulwark: the REST
 * specification's examples for the operations Bulwark calls (fixtures/specs/compute/*.json, each with
 * its source repository, commit and path) are replayed as raw HTTP requests, and the replies are held
 * to the examples' status codes, the fields Bulwark relies on (with the examples' JSON types), and the
 * long-running-operation headers Azure really sends (recorded SDK traffic: recorded-lro-headers.json).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningAzureEmulator, startAzureEmulator } from "./server.ts";
import { type ArmReply, armCall } from "./arm-call.ts";

interface SpecExample {
  source: { repo: string; commit: string; path: string };
  example: { parameters: Record<string, any>; responses: Record<string, { body?: any; headers?: Record<string, string> }> };
}

const fixtures = path.join(import.meta.dirname, "fixtures", "specs", "compute");
function example(name: string): SpecExample {
  return JSON.parse(readFileSync(path.join(fixtures, `${name}.json`), "utf8")) as SpecExample;
}
const recorded = JSON.parse(readFileSync(path.join(fixtures, "recorded-lro-headers.json"), "utf8"));

let emulator: RunningAzureEmulator;
let token: string;
const group = "myResourceGroup";
const location = "westus";

beforeAll(async () => {
  emulator = await startAzureEmulator();
  emulator.world.addResourceGroup(group, location);
  token = (await emulator.credential().getToken("https://management.azure.com/.default"))!.token;
});

afterAll(async () => {
  await emulator?.stop();
});

type Reply = ArmReply;

function call(method: string, url: string, body?: unknown): Promise<Reply> {
  return armCall(emulator.armEndpoint, token, method, url, body);
}

function armPath(type: string, name: string, action?: string): string {
  const base = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/${type}/${name}`;
  return `${base}${action ? `/${action}` : ""}?api-version=2024-03-02`;
}

/** The operation id and shape of a Compute monitor URL: /subscriptions/S/providers/Microsoft.Compute/locations/L/KIND/ID. */
function monitor(url: string | null): { kind: string; id: string; query: URLSearchParams; location: string } {
  expect(url).toBeTruthy();
  const parsed = new URL(url!);
  const match = /^\/subscriptions\/([^/]+)\/providers\/Microsoft\.Compute\/locations\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(parsed.pathname);
  expect(match, `monitor URL ${url}`).toBeTruthy();
  expect(match![1]).toBe(emulator.subscriptionId);
  return { location: match![2]!, kind: match![3]!, id: match![4]!, query: parsed.searchParams };
}

/** Polls an Azure-AsyncOperation monitor until it settles; returns the last status body. */
async function settle(asyncOperation: string): Promise<Record<string, any>> {
  for (let i = 0; i < 50; i++) {
    const polled = await call("GET", asyncOperation);
    expect(polled.status).toBe(200);
    // The recorded status bodies carry name, status and startTime on every poll.
    expect(Object.keys(polled.body)).toEqual(expect.arrayContaining(Object.keys(recorded.virtualMachineCreate.statusBodies[0])));
    if (polled.body.status !== "InProgress") return polled.body;
  }
  throw new Error(`operation ${asyncOperation} did not settle`);
}

/** Every field present in both bodies has the same JSON type (object, array, string, number, boolean). */
function expectSameTypes(actual: any, expected: any, at = "body"): void {
  for (const [key, value] of Object.entries(expected ?? {})) {
    if (!(key in (actual ?? {}))) continue;
    const kind = (v: unknown) => (Array.isArray(v) ? "array" : v === null ? "null" : typeof v);
    // The examples spell enum values of a few properties as numbers-in-strings ("0"); the type is what matters.
    expect(kind(actual[key]), `${at}.${key}`).toBe(kind(value));
    if (kind(value) === "object") expectSameTypes(actual[key], value, `${at}.${key}`);
  }
}

/** Disk and snapshot operations are watched at DiskOperations monitors: both headers, as recorded. */
function expectDiskOperationHeaders(reply: Reply): { asyncOperation: string; location: string } {
  const asyncOperation = reply.headers.get("azure-asyncoperation");
  const resultLocation = reply.headers.get("location");
  const status = monitor(asyncOperation);
  const result = monitor(resultLocation);
  const recordedStatus = monitor(recorded.diskAndSnapshotDelete.headers["Azure-AsyncOperation"].replace("azure_subscription_id", emulator.subscriptionId));
  expect(status.kind).toBe(recordedStatus.kind);
  expect(result.kind).toBe(recordedStatus.kind);
  expect(status.kind).toBe("DiskOperations");
  expect(status.id).toBe(result.id);
  expect(status.location).toBe(location);
  expect(result.query.get("monitor")).toBe("true");
  expect(status.query.get("monitor")).toBeNull();
  return { asyncOperation: asyncOperation!, location: resultLocation! };
}

describe("Microsoft.Compute replays of the REST specification's examples", () => {
  let diskId: string;
  let snapshotId: string;

  it("Snapshots_CreateOrUpdate (incremental copy of a disk): 202 with the example's body shape and DiskOperations monitors", async () => {
    const disk = emulator.compute.createDisk(group, "myDisk", 2 * 1024 * 1024, { location });
    emulator.control.writeDisk(disk.id, 0, Buffer.alloc(4096, 7));
    diskId = disk.id;
    const spec = example("Snapshot_Create_FromAnExistingSnapshot").example;
    // The example copies a snapshot; Bulwark copies a disk, incrementally (articles/virtual-machines/disks-incremental-snapshots.md).
    const request = structuredClone(spec.parameters.snapshot);
    request.location = location;
    request.properties.creationData.sourceResourceId = diskId;
    request.properties.incremental = true;
    const created = await call("PUT", armPath("snapshots", "mySnapshot"), request);
    expect(Object.keys(spec.responses)).toContain(String(created.status));
    expect(created.status).toBe(202);
    expect(Object.keys(created.body)).toEqual(expect.arrayContaining(Object.keys(spec.responses["202"]!.body)));
    expectSameTypes(created.body, spec.responses["202"]!.body);
    const { asyncOperation } = expectDiskOperationHeaders(created);
    expect((await settle(asyncOperation)).status).toBe("Succeeded");
    snapshotId = created.body.id;
  });

  it("Snapshots_Get of an incremental snapshot: the fields Bulwark reads, typed as in the example", async () => {
    const spec = example("Snapshot_GetIncrementalSnapshot").example;
    const got = await call("GET", armPath("snapshots", "mySnapshot"));
    expect(got.status).toBe(200);
    const expected = spec.responses["200"]!.body;
    for (const key of ["id", "name", "type", "location"]) expect(got.body).toHaveProperty(key);
    for (const key of ["creationData", "diskSizeBytes", "uniqueId", "incremental", "incrementalSnapshotFamilyId", "timeCreated", "provisioningState", "encryption"]) {
      expect(got.body.properties, key).toHaveProperty(key);
    }
    expect(got.body.properties.creationData).toMatchObject({ createOption: "Copy", sourceResourceId: diskId });
    expect(got.body.properties.creationData.sourceUniqueId).toEqual(expect.any(String));
    expectSameTypes(got.body, expected);
  });

  it("Snapshots_GrantAccess and Snapshots_RevokeAccess: 202, DiskOperations monitors, the SAS in the final result", async () => {
    const grant = example("Snapshot_BeginGetAccess").example;
    const granted = await call("POST", armPath("snapshots", "mySnapshot", "beginGetAccess"), grant.parameters.grantAccessData);
    expect(granted.status).toBe(202);
    const { asyncOperation, location: result } = expectDiskOperationHeaders(granted);
    expect((await settle(asyncOperation)).status).toBe("Succeeded");
    const final = await call("GET", result);
    expect(final.status).toBe(200);
    expect(Object.keys(final.body)).toEqual(Object.keys(grant.responses["200"]!.body));
    // The SAS names an md- account, a container and the blob "abcd", as the example's does.
    const sas = new URL(final.body.accessSAS);
    const exampleSas = new URL(grant.responses["200"]!.body.accessSAS);
    expect(sas.pathname.split("/").filter(Boolean).at(-1)).toBe(exampleSas.pathname.split("/").filter(Boolean).at(-1));
    expect(sas.pathname.split("/")[1]).toMatch(/^md-/);

    const revoke = example("Snapshot_EndGetAccess").example;
    const revoked = await call("POST", armPath("snapshots", "mySnapshot", "endGetAccess"));
    expect(Object.keys(revoke.responses)).toContain(String(revoked.status));
    const monitors = expectDiskOperationHeaders(revoked);
    expect((await settle(monitors.asyncOperation)).status).toBe("Succeeded");
  });

  it("Disks_Get: the fields Bulwark reads, typed as in the example", async () => {
    const spec = example("Disk_Get").example;
    const got = await call("GET", armPath("disks", "myDisk"));
    expect(got.status).toBe(200);
    for (const key of ["id", "name", "type", "location", "sku"]) expect(got.body).toHaveProperty(key);
    for (const key of ["creationData", "diskSizeGB", "timeCreated", "provisioningState", "encryption"]) expect(got.body.properties, key).toHaveProperty(key);
    expectSameTypes(got.body, spec.responses["200"]!.body);
  });

  it("Disks_CreateOrUpdate Upload, as the example sends it: 202, ReadyToUpload, DiskOperations monitors; Disks_GrantAccess Write", async () => {
    const spec = example("Disk_Create_UploadDisk").example;
    const request = structuredClone(spec.parameters.disk);
    request.location = location;
    const created = await call("PUT", armPath("disks", "myUploadDisk"), request);
    expect(created.status).toBe(202);
    expect(Object.keys(created.body)).toEqual(expect.arrayContaining(Object.keys(spec.responses["202"]!.body)));
    expect(created.body.properties.creationData).toEqual(spec.responses["202"]!.body.properties.creationData);
    expectSameTypes(created.body, spec.responses["202"]!.body);
    const { asyncOperation } = expectDiskOperationHeaders(created);
    expect((await settle(asyncOperation)).status).toBe("Succeeded");
    const disk = await call("GET", armPath("disks", "myUploadDisk"));
    expect(disk.body.properties.diskState).toBe("ReadyToUpload");

    const grant = example("Disk_BeginGetAccess").example;
    const granted = await call("POST", armPath("disks", "myUploadDisk", "beginGetAccess"), { ...grant.parameters.grantAccessData, access: "Write" });
    expect(granted.status).toBe(202);
    const monitors = expectDiskOperationHeaders(granted);
    expect((await settle(monitors.asyncOperation)).status).toBe("Succeeded");
    const final = await call("GET", monitors.location);
    expect(Object.keys(final.body)).toEqual(Object.keys(grant.responses["200"]!.body));
    await call("POST", armPath("disks", "myUploadDisk", "endGetAccess"));
  });

  it("Snapshots_Delete: 202 with DiskOperations monitors, then 204 once gone", async () => {
    const spec = example("Snapshot_Delete").example;
    const deleted = await call("DELETE", armPath("snapshots", "mySnapshot"));
    expect(Object.keys(spec.responses)).toContain(String(deleted.status));
    const { asyncOperation } = expectDiskOperationHeaders(deleted);
    expect((await settle(asyncOperation)).status).toBe("Succeeded");
    const again = await call("DELETE", armPath("snapshots", "mySnapshot"));
    expect(again.status).toBe(204);
    expect(snapshotId).toBeTruthy();
  });

  it("VirtualMachines_CreateOrUpdate: 201 and an Azure-AsyncOperation at .../locations/L/operations/ID, as recorded", async () => {
    const os = emulator.compute.createDisk(group, "myOsDisk", 1024 * 1024, { location, osType: "Linux" });
    const created = await call("PUT", `/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/virtualMachines/myVM?api-version=2024-07-01`, {
      location,
      properties: {
        hardwareProfile: { vmSize: "Standard_D2_v2" },
        storageProfile: { osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: os.id } } },
        networkProfile: { networkInterfaces: [{ id: `/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Network/networkInterfaces/nic`, properties: { primary: true } }] },
      },
    });
    expect(created.status).toBe(recorded.virtualMachineCreate.status);
    const status = monitor(created.headers.get("azure-asyncoperation"));
    const recordedStatus = monitor(recorded.virtualMachineCreate.headers["Azure-AsyncOperation"].replace("azure_subscription_id", emulator.subscriptionId));
    expect(status.kind).toBe(recordedStatus.kind);
    expect(status.kind).toBe("operations");
    // The recorded 201 carries no Location header: the SDK polls Azure-AsyncOperation, then GETs the VM.
    expect(created.headers.get("location")).toBeNull();
    const settled = await settle(created.headers.get("azure-asyncoperation")!);
    expect(Object.keys(settled).sort()).toEqual(Object.keys(recorded.virtualMachineCreate.statusBodies[1]).sort());
  });
});
