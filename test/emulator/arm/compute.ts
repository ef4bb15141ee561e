/**
 * Microsoft.Compute: managed disks, snapshots (full and incremental, grant and revoke access) and
 * virtual machines that attach existing managed disks, with the shapes, status codes and long-running
 * operations of the Azure REST API specification (Disks_*, Snapshots_*, VirtualMachines_* examples;
 * replayed by compute-conformance.test.ts from fixtures/specs/compute).
 *
 * The limits it enforces, and their sources (MicrosoftDocs/azure-docs):
 * - includes/virtual-machines-disks-incremental-snapshots-restrictions.md (and
 *   articles/virtual-machines/disks-incremental-snapshots.md, "Restrictions"): SAS URIs for at most
 *   five snapshots of one snapshot family at a time; up to seven incremental snapshots per disk every
 *   five minutes; 500 incremental snapshots per disk at any one time. Premium SSD v2 and Ultra Disk
 *   snapshots copy in the background, and their completionPercent "must be 100 before you can use the
 *   snapshot for restoring disk or generate a SAS URI" ("Check status of snapshots or disks"); those of
 *   4096-byte logical sectors "are stored as VHDX" ("Check sector size").
 *   No reference found names the error codes of these refusals: the emulator answers 409
 *   OperationNotAllowed (Compute's code for a refused state) and, for the rate, 429 with Retry-After
 *   (ARM throttling's form); both are assumptions.
 * - Upload disks: uploadSizeBytes "should be between 20972032 (20 MiB + 512 bytes for the VHD footer)
 *   and 35183298347520 bytes (32 TiB + 512 bytes for the VHD footer)" (CreationData.uploadSizeBytes in
 *   Azure/azure-rest-api-specs specification/compute/resource-manager/Microsoft.Compute/DiskRP/stable/
 *   2024-03-02/diskRPCommon.json); the size less the footer must be a whole number of MiB, refused as
 *   400 BadRequest "The upload size in bytes N - 512 bytes for the VHD footer (M in this case) must be a
 *   multiple of MiB." (the service's answer as reported in MicrosoftDocs/azure-docs#58853 and
 *   microsoft/AzureStorageExplorer#3029).
 * - Creating a snapshot of a disk also checks Microsoft.Compute/disks/beginGetAccess/action on the
 *   source disk (a linked access check, refused 403 LinkedAuthorizationFailed), when the emulator is
 *   told which actions the caller holds (restrictActions). No Microsoft reference found states this
 *   check; it is an assumption carried from issue 10's review.
 */
import { type EmulatorReply, type EmulatorRequest, HttpFailure, armError, json, parseJson } from "../http.ts";
import type { FaultInjector } from "../faults.ts";
import type { OperationRegistry, OperationSpec } from "../lro.ts";
import type { PageBlobService, SasTarget } from "../pageblob-sas.ts";
import { PAGE_SIZE, PageImage } from "../pagestore.ts";
import { type World, idKey, parseResourceId } from "./world.ts";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const MAX_SAS_SECONDS = 5 * 24 * 3600;
/** CreationData.uploadSizeBytes bounds (diskRPCommon.json, see above). */
export const MIN_UPLOAD_BYTES = 20 * MiB + 512;
// The spec says "32 TiB + 512 bytes" but gives 35183298347520: 32,767 GiB (32 TiB less 1 GiB) + 512.
export const MAX_UPLOAD_BYTES = 35_183_298_347_520;
/** Incremental snapshot restrictions (see above). */
export const SAS_SNAPSHOTS_PER_FAMILY = 5;
export const SNAPSHOTS_PER_RATE_WINDOW = 7;
export const SNAPSHOTS_PER_DISK = 500;
/** SKUs whose incremental snapshots copy in the background (completionPercent). */
const BACKGROUND_COPY_SKUS = new Set(["premiumv2_lrs", "ultrassd_lrs"]);
/** The VHDX file type identifier at the start of a VHDX file (MS-VHDX, 2.2.1 File Type Identifier). */
const VHDX_SIGNATURE = "vhdxfile";

type DiskState = "Unattached" | "Attached" | "Reserved" | "ActiveSAS" | "ReadyToUpload" | "ActiveUpload";
type ProvisioningState = "Creating" | "Updating" | "Succeeded" | "Failed" | "Deleting";

interface ManagedImageResource {
  id: string;
  name: string;
  resourceGroup: string;
  location: string;
  tags?: Record<string, string>;
  sku: { name: string; tier?: string };
  uniqueId: string;
  timeCreated: string;
  provisioningState: ProvisioningState;
  image: PageImage;
  lastModified: Date;
  osType?: string;
  hyperVGeneration?: string;
  creationData: Record<string, unknown>;
  /** creationData.logicalSectorSize: 512, or 4096 (Premium SSD v2 and Ultra Disks only). */
  logicalSectorSize?: number;
}

export interface DiskRecord extends ManagedImageResource {
  kind: "disk";
  diskState: DiskState;
  /** Disk state to return to after access is revoked. */
  stateBeforeSas?: DiskState;
  managedBy?: string;
}

export interface SnapshotRecord extends ManagedImageResource {
  kind: "snapshot";
  incremental: boolean;
  /** uniqueId of the disk the snapshot was taken of: incremental diffs are allowed within one disk. */
  sourceUniqueId: string;
  diskState: DiskState;
  /** Background copy (Premium SSD v2, Ultra): GETs of the snapshot still to see before it is complete. */
  copyGetsLeft?: number;
  copyGetsTotal?: number;
}

export interface VirtualMachineRecord {
  id: string;
  name: string;
  resourceGroup: string;
  location: string;
  tags?: Record<string, string>;
  vmId: string;
  timeCreated: string;
  provisioningState: ProvisioningState;
  properties: Record<string, any>;
}

function skuTier(name: string): string {
  if (name.startsWith("UltraSSD")) return "Ultra";
  return name.startsWith("Premium") ? "Premium" : "Standard";
}

/**
 * A snapshot of 4096-byte logical sectors as Azure serves it: a VHDX file, not the raw disk. Only the
 * file type identifier is modelled (its first page), ahead of the disk's pages: enough for a reader to
 * see that what it got is not a raw image.
 */
function asVhdx(image: PageImage): PageImage {
  const header = MiB;
  const vhdx = new PageImage(image.size + header);
  const first = Buffer.alloc(PAGE_SIZE);
  first.write(VHDX_SIGNATURE, 0, "ascii");
  vhdx.write(0, first);
  for (const range of image.validRanges()) vhdx.write(header + range.start, image.read(range.start, range.end - range.start + 1));
  return vhdx;
}

export class ComputeProvider {
  readonly disks = new Map<string, DiskRecord>();
  readonly snapshots = new Map<string, SnapshotRecord>();
  readonly virtualMachines = new Map<string, VirtualMachineRecord>();
  /** Knobs tests set through control.ts (limits keep Azure's values unless a test shortens them). */
  readonly knobs = {
    /** GETs of a background-copying snapshot until its completionPercent reaches 100. */
    backgroundCopyGets: 3,
    /** The window of the seven-snapshots rate limit (Azure: five minutes). */
    snapshotRateWindowMs: 5 * 60 * 1000,
    /** When set, the caller holds only these actions (lower case): snapshot creation checks them. */
    grantedActions: undefined as Set<string> | undefined,
  };
  /** When each disk's incremental snapshots were created (by the disk's uniqueId), for the rate limit. */
  private readonly snapshotTimes = new Map<string, number[]>();
  private readonly world: World;
  private readonly operations: OperationRegistry;
  private readonly blobs: PageBlobService;
  private readonly faults: FaultInjector;

  constructor(world: World, operations: OperationRegistry, blobs: PageBlobService, faults: FaultInjector) {
    this.world = world;
    this.operations = operations;
    this.blobs = blobs;
    this.faults = faults;
  }

  /** What a SAS grant of this resource serves, if the resource still exists. */
  sasTarget(resourceId: string): SasTarget | undefined {
    const resource = this.disks.get(idKey(resourceId)) ?? this.snapshots.get(idKey(resourceId));
    if (!resource) return undefined;
    return {
      image: resource.kind === "snapshot" && resource.logicalSectorSize === 4096 ? asVhdx(resource.image) : resource.image,
      kind: resource.kind,
      lineage: resource.kind === "disk" ? resource.uniqueId : resource.sourceUniqueId,
      writable: resource.kind === "disk" && resource.diskState === "ActiveUpload",
      get lastModified() {
        return resource.lastModified;
      },
      touch: () => {
        resource.lastModified = new Date();
      },
    };
  }

  // ---- direct (test-control and seeding) API --------------------------------------------------

  /** Creates a ready, unattached disk of `sizeBytes` (seeding; no LRO). */
  createDisk(
    resourceGroup: string,
    name: string,
    sizeBytes: number,
    options: { location?: string; osType?: string; sku?: string; logicalSectorSize?: number } = {},
  ): DiskRecord {
    const group = this.requireGroup(resourceGroup);
    const disk = this.newDisk(group.name, name, options.location ?? group.location, sizeBytes, { createOption: "Empty" });
    if (options.osType) disk.osType = options.osType;
    if (options.sku) disk.sku = { name: options.sku, tier: skuTier(options.sku) };
    if (options.logicalSectorSize) {
      disk.logicalSectorSize = options.logicalSectorSize;
      disk.creationData.logicalSectorSize = options.logicalSectorSize;
    }
    disk.provisioningState = "Succeeded";
    this.disks.set(idKey(disk.id), disk);
    return disk;
  }

  /** Incremental snapshots of a disk, made at once (seeding: e.g. a disk at Azure's 500-snapshot limit). */
  seedIncrementalSnapshots(diskId: string, count: number, prefix = "seeded"): SnapshotRecord[] {
    const disk = this.requireDisk(diskId);
    const made: SnapshotRecord[] = [];
    for (let i = 0; i < count; i++) {
      const name = `${prefix}-${i}`;
      const now = new Date();
      const snapshot: SnapshotRecord = {
        kind: "snapshot", id: this.resourceId(disk.resourceGroup, "snapshots", name), name, resourceGroup: disk.resourceGroup,
        location: disk.location, sku: { name: "Standard_LRS", tier: "Standard" }, uniqueId: crypto.randomUUID(),
        timeCreated: now.toISOString(), provisioningState: "Succeeded", image: disk.image.freeze(), lastModified: now,
        creationData: { createOption: "Copy", sourceResourceId: disk.id, sourceUniqueId: disk.uniqueId },
        incremental: true, sourceUniqueId: disk.uniqueId, diskState: "Unattached",
      };
      this.snapshots.set(idKey(snapshot.id), snapshot);
      made.push(snapshot);
    }
    return made;
  }

  /** Writes bytes into a disk, as the VM using it would. */
  writeDisk(diskId: string, offset: number, data: Uint8Array): void {
    const disk = this.requireDisk(diskId);
    disk.image.write(offset, data);
    disk.lastModified = new Date();
  }

  /** Clears (trims) pages of a disk, as a VM discarding blocks would. */
  clearDisk(diskId: string, offset: number, length: number): void {
    const disk = this.requireDisk(diskId);
    disk.image.clear(offset, length);
    disk.lastModified = new Date();
  }

  readImage(resourceId: string): Buffer {
    const resource = this.disks.get(idKey(resourceId)) ?? this.snapshots.get(idKey(resourceId));
    if (!resource) throw new Error(`no disk or snapshot ${resourceId}`);
    return resource.image.read(0, resource.image.size);
  }

  private requireDisk(diskId: string): DiskRecord {
    const disk = this.disks.get(idKey(diskId));
    if (!disk) throw new Error(`no disk ${diskId}`);
    return disk;
  }

  private requireGroup(name: string) {
    const group = this.world.resourceGroup(name);
    if (!group) {
      throw new HttpFailure(armError(404, "ResourceGroupNotFound", `Resource group '${name}' could not be found.`));
    }
    return group;
  }

  private resourceId(group: string, type: string, name: string): string {
    return `/subscriptions/${this.world.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/${type}/${name}`;
  }

  private newDisk(group: string, name: string, location: string, sizeBytes: number, creationData: Record<string, unknown>): DiskRecord {
    const now = new Date();
    return {
      kind: "disk",
      id: this.resourceId(group, "disks", name),
      name,
      resourceGroup: group,
      location,
      sku: { name: "Standard_LRS", tier: "Standard" },
      uniqueId: crypto.randomUUID(),
      timeCreated: now.toISOString(),
      provisioningState: "Creating",
      image: new PageImage(sizeBytes),
      lastModified: now,
      creationData,
      diskState: "Unattached",
    };
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  /** segments: after /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/ , or a list path. */
  handle(request: EmulatorRequest, group: string | undefined, rest: string[]): EmulatorReply {
    const [type = "", name, action] = rest;
    const kind = type.toLowerCase();
    if (kind !== "disks" && kind !== "snapshots" && kind !== "virtualmachines") {
      return armError(400, "InvalidResourceType", `The emulator does not serve Microsoft.Compute/${type}.`);
    }
    if (group === undefined) {
      if (name !== undefined || request.method !== "GET") return armError(404, "NotFound", "No such subscription-level operation.");
      return this.list(kind, undefined);
    }
    this.requireGroup(group);
    if (name === undefined) {
      if (request.method !== "GET") return armError(405, "MethodNotAllowed", `${request.method} is not allowed on a collection.`);
      return this.list(kind, group);
    }
    const id = this.resourceId(this.world.resourceGroup(group)!.name, kind === "virtualmachines" ? "virtualMachines" : kind, name);
    if (kind === "virtualmachines") {
      if (action !== undefined) return armError(400, "InvalidRequest", `The emulator does not serve virtualMachines/${action}.`);
      return this.handleVm(request, id, group, name);
    }
    if (action === undefined) {
      if (request.method === "GET") return this.getImageResource(kind, id);
      if (request.method === "PUT") return kind === "disks" ? this.putDisk(request, id, group, name) : this.putSnapshot(request, id, group, name);
      if (request.method === "DELETE") return this.deleteImageResource(request, kind, id);
      return armError(405, "MethodNotAllowed", `${request.method} is not supported on ${kind}.`);
    }
    if (request.method === "POST" && action.toLowerCase() === "begingetaccess") return this.grantAccess(request, kind, id);
    if (request.method === "POST" && action.toLowerCase() === "endgetaccess") return this.revokeAccess(request, kind, id);
    return armError(400, "InvalidRequest", `The emulator does not serve ${kind}/${action}.`);
  }

  private list(kind: string, group: string | undefined): EmulatorReply {
    const inGroup = (r: { resourceGroup: string }) => group === undefined || r.resourceGroup.toLowerCase() === group.toLowerCase();
    const value =
      kind === "disks"
        ? [...this.disks.values()].filter(inGroup).map((d) => this.diskJson(d))
        : kind === "snapshots"
          ? [...this.snapshots.values()].filter(inGroup).map((s) => this.snapshotJson(s))
          : [...this.virtualMachines.values()].filter(inGroup).map((v) => this.vmJson(v));
    return json(200, { value });
  }

  /**
   * A disk or snapshot operation is watched at .../locations/L/DiskOperations/ID (both headers, the
   * result with ?monitor=true), as Azure's recorded traffic shows; the REST spec's DiskRP examples show
   * .../operations/ID instead (the sources disagree: fixtures/specs/compute/recorded-lro-headers.json).
   */
  private diskLro(location: string, extra: Partial<OperationSpec>): OperationSpec {
    return { ...this.lroSpec(location, extra), asyncSegment: "DiskOperations", resultSegment: "DiskOperations" };
  }

  /** A VM operation is watched at .../locations/L/operations/ID (recorded traffic, as above). */
  private lroSpec(location: string, extra: Partial<OperationSpec>): OperationSpec {
    return {
      subscriptionId: this.world.subscriptionId,
      provider: "Microsoft.Compute",
      location,
      asyncSegment: "operations",
      resultSegment: "operations",
      ...extra,
    };
  }

  private getImageResource(kind: string, id: string): EmulatorReply {
    const resource = kind === "disks" ? this.disks.get(idKey(id)) : this.snapshots.get(idKey(id));
    if (!resource) return notFound(kind === "disks" ? "Microsoft.Compute/disks" : "Microsoft.Compute/snapshots", id);
    // A background copy progresses as it is watched (a GET is the only clock a test can drive).
    if (resource.kind === "snapshot" && resource.copyGetsLeft) resource.copyGetsLeft--;
    return json(200, resource.kind === "disk" ? this.diskJson(resource) : this.snapshotJson(resource));
  }

  /** 100 once created, unless a background copy (Premium SSD v2, Ultra) is still running. */
  private completionPercent(snapshot: SnapshotRecord): number {
    if (snapshot.provisioningState !== "Succeeded") return 0;
    if (!snapshot.copyGetsLeft || !snapshot.copyGetsTotal) return 100;
    return Math.floor((100 * (snapshot.copyGetsTotal - snapshot.copyGetsLeft)) / snapshot.copyGetsTotal);
  }

  diskJson(disk: DiskRecord): Record<string, unknown> {
    const properties: Record<string, unknown> = {
      creationData: disk.creationData,
      diskSizeGB: Math.max(1, Math.ceil(disk.image.size / GiB)),
      diskSizeBytes: disk.image.size,
      uniqueId: disk.uniqueId,
      encryption: { type: "EncryptionAtRestWithPlatformKey" },
      networkAccessPolicy: "AllowAll",
      publicNetworkAccess: "Enabled",
      timeCreated: disk.timeCreated,
      provisioningState: disk.provisioningState,
      diskState: disk.diskState,
    };
    if (disk.osType) properties.osType = disk.osType;
    if (disk.hyperVGeneration) properties.hyperVGeneration = disk.hyperVGeneration;
    const body: Record<string, unknown> = {
      name: disk.name, id: disk.id, type: "Microsoft.Compute/disks", location: disk.location, sku: disk.sku, properties,
    };
    if (disk.tags) body.tags = disk.tags;
    if (disk.managedBy) body.managedBy = disk.managedBy;
    return body;
  }

  snapshotJson(snapshot: SnapshotRecord): Record<string, unknown> {
    const properties: Record<string, unknown> = {
      creationData: snapshot.creationData,
      diskSizeGB: Math.max(1, Math.ceil(snapshot.image.size / GiB)),
      diskSizeBytes: snapshot.image.size,
      uniqueId: snapshot.uniqueId,
      incremental: snapshot.incremental,
      encryption: { type: "EncryptionAtRestWithPlatformKey" },
      networkAccessPolicy: "AllowAll",
      publicNetworkAccess: "Enabled",
      timeCreated: snapshot.timeCreated,
      provisioningState: snapshot.provisioningState,
      diskState: snapshot.diskState,
    };
    if (snapshot.incremental) {
      properties.incrementalSnapshotFamilyId = snapshot.sourceUniqueId;
      properties.completionPercent = this.completionPercent(snapshot);
    }
    if (snapshot.osType) properties.osType = snapshot.osType;
    if (snapshot.hyperVGeneration) properties.hyperVGeneration = snapshot.hyperVGeneration;
    const body: Record<string, unknown> = {
      name: snapshot.name, id: snapshot.id, type: "Microsoft.Compute/snapshots", location: snapshot.location, sku: snapshot.sku, properties,
    };
    if (snapshot.tags) body.tags = snapshot.tags;
    return body;
  }

  private putDisk(request: EmulatorRequest, id: string, group: string, name: string): EmulatorReply {
    const body = parseJson(request);
    const existing = this.disks.get(idKey(id));
    if (existing) {
      // An update: tags only here (resizing and changing the source are not emulated).
      if (existing.provisioningState !== "Succeeded" && existing.provisioningState !== "Failed") {
        return armError(409, "OperationNotAllowed", `Disk '${name}' is busy (provisioningState ${existing.provisioningState}); retry later.`);
      }
      if (body.tags) existing.tags = body.tags;
      return json(200, this.diskJson(existing));
    }
    const location = body.location;
    if (typeof location !== "string" || !location) return armError(400, "LocationRequired", "The location property is required for this definition.");
    const creationData = body.properties?.creationData ?? {};
    const createOption = String(creationData.createOption ?? "");
    let disk: DiskRecord;
    if (createOption === "Empty") {
      const gb = Number(body.properties?.diskSizeGB);
      if (!Number.isInteger(gb) || gb < 1) return armError(400, "InvalidParameter", "diskSizeGB is required for createOption Empty and must be a positive integer.");
      const sector = creationData.logicalSectorSize;
      disk = this.newDisk(this.world.resourceGroup(group)!.name, name, location, gb * GiB, { createOption, ...(sector ? { logicalSectorSize: sector } : {}) });
      if (sector) disk.logicalSectorSize = Number(sector);
    } else if (createOption === "Upload") {
      const bytes = Number(creationData.uploadSizeBytes);
      const refused = uploadSizeRefusal(bytes);
      if (refused) return refused;
      disk = this.newDisk(this.world.resourceGroup(group)!.name, name, location, bytes, { createOption, uploadSizeBytes: bytes });
      disk.diskState = "ReadyToUpload";
    } else if (createOption === "Copy") {
      const sourceId = String(creationData.sourceResourceId ?? "");
      const source = this.snapshots.get(idKey(sourceId)) ?? this.disks.get(idKey(sourceId));
      if (!source) return notFound("source", sourceId);
      disk = this.newDisk(this.world.resourceGroup(group)!.name, name, location, source.image.size, {
        createOption, sourceResourceId: source.id, sourceUniqueId: source.uniqueId,
      });
      disk.image = source.image.freeze();
      disk.osType = source.osType;
      disk.hyperVGeneration = source.hyperVGeneration;
    } else {
      return armError(400, "InvalidParameter", `createOption '${createOption}' is not supported by the emulator (Empty, Upload, Copy are).`);
    }
    if (body.sku?.name) disk.sku = { name: body.sku.name, tier: skuTier(body.sku.name) };
    if (body.tags) disk.tags = body.tags;
    if (body.properties?.osType) disk.osType = body.properties.osType;
    if (body.properties?.hyperVGeneration) disk.hyperVGeneration = body.properties.hyperVGeneration;
    this.disks.set(idKey(id), disk);
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.diskLro(location, {
      injectedFailure,
      onSucceeded: () => { disk.provisioningState = "Succeeded"; },
      onFailed: () => { disk.provisioningState = "Failed"; },
    }));
    return json(202, this.diskJson(disk), headers);
  }

  private putSnapshot(request: EmulatorRequest, id: string, group: string, name: string): EmulatorReply {
    const body = parseJson(request);
    const existing = this.snapshots.get(idKey(id));
    if (existing) {
      if (body.tags) existing.tags = body.tags;
      return json(200, this.snapshotJson(existing));
    }
    const location = body.location;
    if (typeof location !== "string" || !location) return armError(400, "LocationRequired", "The location property is required for this definition.");
    const creationData = body.properties?.creationData ?? {};
    if (creationData.createOption !== "Copy") {
      return armError(400, "InvalidParameter", `createOption '${creationData.createOption}' is not supported for snapshots by the emulator (Copy is).`);
    }
    // The spec's example names its source without the leading slash (Snapshot_Create_FromAnExistingSnapshot.json).
    const sourceId = `/${String(creationData.sourceResourceId ?? "").replace(/^\/+/, "")}`;
    const source = this.disks.get(idKey(sourceId)) ?? this.snapshots.get(idKey(sourceId));
    if (!source) return notFound("Microsoft.Compute/disks", sourceId);
    if (source.kind === "disk" && (source.diskState === "ReadyToUpload" || source.diskState === "ActiveUpload")) {
      return armError(409, "OperationNotAllowed", `Disk '${source.name}' is being uploaded (${source.diskState}); it cannot be snapshotted until the upload ends.`);
    }
    if (source.provisioningState !== "Succeeded") {
      return armError(409, "OperationNotAllowed", `'${source.name}' is not ready (provisioningState ${source.provisioningState}).`);
    }
    const linked = this.linkedAccessRefusal(id, source);
    if (linked) return linked;
    const incremental = body.properties?.incremental === true;
    const lineage = source.kind === "disk" ? source.uniqueId : source.sourceUniqueId;
    if (incremental && source.kind === "disk") {
      const limited = this.incrementalLimitRefusal(source);
      if (limited) return limited;
    }
    const now = new Date();
    const snapshot: SnapshotRecord = {
      kind: "snapshot",
      id: this.resourceId(this.world.resourceGroup(group)!.name, "snapshots", name),
      name,
      resourceGroup: this.world.resourceGroup(group)!.name,
      location,
      sku: body.sku?.name ? { name: body.sku.name, tier: "Standard" } : { name: "Standard_LRS", tier: "Standard" },
      uniqueId: crypto.randomUUID(),
      timeCreated: now.toISOString(),
      provisioningState: "Creating",
      // Point in time: the disk's pages as they are now.
      image: source.image.freeze(),
      lastModified: now,
      creationData: {
        createOption: "Copy", sourceResourceId: source.id, sourceUniqueId: source.uniqueId,
        ...(source.logicalSectorSize ? { logicalSectorSize: source.logicalSectorSize } : {}),
      },
      incremental,
      sourceUniqueId: lineage,
      diskState: "Unattached",
      osType: source.osType,
      hyperVGeneration: source.hyperVGeneration,
      // Snapshots inherit the logical sector size of their disk ("Check sector size").
      logicalSectorSize: source.logicalSectorSize,
    };
    if (incremental && BACKGROUND_COPY_SKUS.has(source.sku.name.toLowerCase()) && this.knobs.backgroundCopyGets > 0) {
      snapshot.copyGetsLeft = snapshot.copyGetsTotal = this.knobs.backgroundCopyGets;
    }
    if (incremental) this.snapshotTimes.set(lineage, [...(this.snapshotTimes.get(lineage) ?? []), Date.now()]);
    if (body.tags) snapshot.tags = body.tags;
    this.snapshots.set(idKey(snapshot.id), snapshot);
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.diskLro(location, {
      injectedFailure,
      onSucceeded: () => { snapshot.provisioningState = "Succeeded"; },
      onFailed: () => { snapshot.provisioningState = "Failed"; },
    }));
    return json(202, this.snapshotJson(snapshot), headers);
  }

  private deleteImageResource(request: EmulatorRequest, kind: string, id: string): EmulatorReply {
    const map: Map<string, DiskRecord | SnapshotRecord> = kind === "disks" ? this.disks : this.snapshots;
    const resource = map.get(idKey(id));
    if (!resource) return { status: 204 };
    if (resource.kind === "disk" && resource.managedBy) {
      return armError(409, "OperationNotAllowed", `Disk '${resource.name}' is attached to VM '${resource.managedBy}'. Detach it or delete the VM first.`);
    }
    if (this.blobs.active(resource.id).length > 0) {
      return armError(409, "OperationNotAllowed",
        `${resource.kind === "disk" ? "Disk" : "Snapshot"} '${resource.name}' has an active SAS URI. Revoke access (endGetAccess) before deleting it.`);
    }
    const injectedFailure = this.faults.takeOperationFailure(request);
    const previousState = resource.provisioningState;
    resource.provisioningState = "Deleting";
    const { headers } = this.operations.start(request.origin, this.diskLro(resource.location, {
      injectedFailure,
      onSucceeded: () => { map.delete(idKey(id)); },
      onFailed: () => { resource.provisioningState = previousState; },
    }));
    return { status: 202, headers };
  }

  private grantAccess(request: EmulatorRequest, kind: string, id: string): EmulatorReply {
    const resource = kind === "disks" ? this.disks.get(idKey(id)) : this.snapshots.get(idKey(id));
    if (!resource) return notFound(kind === "disks" ? "Microsoft.Compute/disks" : "Microsoft.Compute/snapshots", id);
    const body = parseJson(request);
    const access = body.access;
    const duration = Number(body.durationInSeconds);
    if (access !== "Read" && access !== "Write") return armError(400, "InvalidParameter", "access must be Read or Write.");
    if (!Number.isInteger(duration) || duration < 1 || duration > MAX_SAS_SECONDS) {
      return armError(400, "InvalidParameter", `durationInSeconds must be an integer between 1 and ${MAX_SAS_SECONDS}.`);
    }
    if (resource.provisioningState !== "Succeeded") {
      return armError(409, "OperationNotAllowed", `'${resource.name}' is not ready (provisioningState ${resource.provisioningState}).`);
    }
    if (resource.kind === "snapshot" && access === "Write") {
      return armError(409, "OperationNotAllowed", "Write access cannot be granted on a snapshot.");
    }
    if (resource.kind === "snapshot") {
      const refused = this.snapshotReadRefusal(resource);
      if (refused) return refused;
    }
    if (resource.kind === "disk") {
      if (access === "Write" && resource.diskState !== "ReadyToUpload" && resource.diskState !== "ActiveUpload") {
        return armError(409, "OperationNotAllowed", `Write access needs a disk created with createOption Upload in ReadyToUpload; '${resource.name}' is ${resource.diskState}.`);
      }
      if (access === "Read" && resource.diskState === "Attached") {
        return armError(409, "OperationNotAllowed", `Disk '${resource.name}' is attached to a running VM; take a snapshot and read that instead.`);
      }
      if (access === "Read" && (resource.diskState === "ReadyToUpload" || resource.diskState === "ActiveUpload")) {
        return armError(409, "OperationNotAllowed", `Disk '${resource.name}' is being uploaded; end the upload (endGetAccess) before reading it.`);
      }
    }
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.diskLro(resource.location, {
      injectedFailure,
      outputInStatus: true,
      work: async () => {
        const grant = this.blobs.grant(request.origin, resource.id, access, duration);
        if (resource.diskState !== "ActiveSAS" && resource.diskState !== "ActiveUpload") {
          resource.diskState = access === "Write" ? "ActiveUpload" : "ActiveSAS";
        }
        return { accessSAS: grant.url };
      },
    }));
    return { status: 202, headers };
  }

  private revokeAccess(request: EmulatorRequest, kind: string, id: string): EmulatorReply {
    const resource = kind === "disks" ? this.disks.get(idKey(id)) : this.snapshots.get(idKey(id));
    if (!resource) return notFound(kind === "disks" ? "Microsoft.Compute/disks" : "Microsoft.Compute/snapshots", id);
    // Access ends when the request is accepted; the operation only reports it.
    this.blobs.revokeAll(resource.id);
    if (resource.kind === "disk" && resource.diskState === "ActiveUpload" && resource.creationData.createOption === "Upload") {
      // Direct upload takes the disk's bytes and a fixed-VHD footer (uploadSizeBytes = size + 512); the
      // disk itself is what precedes the footer. Without a footer the upload is refused, as Azure does.
      const footer = resource.image.read(resource.image.size - 512, 512);
      if (footer.subarray(0, 8).toString("latin1") !== "conectix") {
        return armError(400, "InvalidUploadFooter", `Disk '${resource.name}': the last 512 bytes of the upload are not a fixed VHD footer.`);
      }
      resource.image = resource.image.truncated(512);
    }
    if (resource.diskState === "ActiveSAS" || resource.diskState === "ActiveUpload") {
      resource.diskState = resource.kind === "disk" && resource.managedBy ? "Reserved" : "Unattached";
    }
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.diskLro(resource.location, { injectedFailure }));
    return { status: 202, headers };
  }

  /** A snapshot whose background copy is running, or whose family already has five open SAS, is not readable yet. */
  private snapshotReadRefusal(snapshot: SnapshotRecord): EmulatorReply | undefined {
    const percent = this.completionPercent(snapshot);
    if (percent < 100) {
      return armError(409, "OperationNotAllowed",
        `Snapshot '${snapshot.name}' is still being copied in the background (completionPercent ${percent}); a SAS can be generated once it is 100.`);
    }
    if (!snapshot.incremental || this.blobs.active(snapshot.id).length > 0) return undefined;
    const family = [...this.snapshots.values()].filter((s) => s.incremental && s.sourceUniqueId === snapshot.sourceUniqueId);
    const open = family.filter((s) => this.blobs.active(s.id).length > 0);
    if (open.length >= SAS_SNAPSHOTS_PER_FAMILY) {
      return armError(409, "OperationNotAllowed",
        `SAS URIs can be generated for at most ${SAS_SNAPSHOTS_PER_FAMILY} snapshots of one snapshot family at a time; revoke access (endGetAccess) to one of: ${open.map((s) => s.name).join(", ")}.`);
    }
    return undefined;
  }

  /** Seven incremental snapshots per disk per five minutes, and 500 per disk at any time. */
  private incrementalLimitRefusal(disk: DiskRecord): EmulatorReply | undefined {
    const existing = [...this.snapshots.values()].filter((s) => s.incremental && s.sourceUniqueId === disk.uniqueId).length;
    if (existing >= SNAPSHOTS_PER_DISK) {
      return armError(409, "OperationNotAllowed",
        `Disk '${disk.name}' already has ${existing} incremental snapshots, the most a disk may have; delete older ones first.`);
    }
    const since = Date.now() - this.knobs.snapshotRateWindowMs;
    const recent = (this.snapshotTimes.get(disk.uniqueId) ?? []).filter((t) => t > since);
    this.snapshotTimes.set(disk.uniqueId, recent);
    if (recent.length >= SNAPSHOTS_PER_RATE_WINDOW) {
      const waitMs = recent[0]! + this.knobs.snapshotRateWindowMs - Date.now();
      return armError(429, "TooManyRequests",
        `Up to ${SNAPSHOTS_PER_RATE_WINDOW} incremental snapshots of disk '${disk.name}' can be created every five minutes; retry after the time in Retry-After.`,
        { "retry-after": String(Math.max(1, Math.ceil(waitMs / 1000))) });
    }
    return undefined;
  }

  /**
   * Creating a snapshot also checks beginGetAccess on its source disk (assumption, see the top of
   * this file), answered as ARM answers a failed linked access check.
   */
  private linkedAccessRefusal(snapshotId: string, source: DiskRecord | SnapshotRecord): EmulatorReply | undefined {
    const granted = this.knobs.grantedActions;
    if (!granted) return undefined;
    if (!granted.has("microsoft.compute/snapshots/write")) {
      return armError(403, "AuthorizationFailed",
        `The client does not have authorization to perform action 'Microsoft.Compute/snapshots/write' over scope '${snapshotId}' or the scope is invalid.`);
    }
    const linkedAction = source.kind === "disk" ? "Microsoft.Compute/disks/beginGetAccess/action" : "Microsoft.Compute/snapshots/beginGetAccess/action";
    if (granted.has(linkedAction.toLowerCase())) return undefined;
    return armError(403, "LinkedAuthorizationFailed",
      `The client has permission to perform action 'Microsoft.Compute/snapshots/write' on scope '${snapshotId}', however the current tenant does not have permission to perform action '${linkedAction}' on the linked scope(s) '${source.id}' or the linked scope(s) are invalid.`);
  }

  // ---- virtual machines ------------------------------------------------------------------------

  vmJson(vm: VirtualMachineRecord): Record<string, unknown> {
    const body: Record<string, unknown> = {
      name: vm.name,
      id: vm.id,
      type: "Microsoft.Compute/virtualMachines",
      location: vm.location,
      properties: { ...vm.properties, vmId: vm.vmId, timeCreated: vm.timeCreated, provisioningState: vm.provisioningState },
    };
    if (vm.tags) body.tags = vm.tags;
    return body;
  }

  private handleVm(request: EmulatorRequest, id: string, group: string, name: string): EmulatorReply {
    const vm = this.virtualMachines.get(idKey(id));
    if (request.method === "GET") return vm ? json(200, this.vmJson(vm)) : notFound("Microsoft.Compute/virtualMachines", id);
    if (request.method === "PUT") return this.putVm(request, id, group, name);
    if (request.method === "DELETE") {
      if (!vm) return { status: 204 };
      const injectedFailure = this.faults.takeOperationFailure(request);
      vm.provisioningState = "Deleting";
      const { headers } = this.operations.start(request.origin, this.lroSpec(vm.location, {
        injectedFailure,
        onSucceeded: () => {
          for (const disk of this.disks.values()) {
            if (disk.managedBy && idKey(disk.managedBy) === idKey(vm.id)) {
              disk.managedBy = undefined;
              if (disk.diskState === "Attached" || disk.diskState === "Reserved") disk.diskState = "Unattached";
            }
          }
          this.virtualMachines.delete(idKey(vm.id));
        },
        onFailed: () => { vm.provisioningState = "Failed"; },
      }));
      return { status: 202, headers };
    }
    return armError(405, "MethodNotAllowed", `${request.method} is not supported on virtualMachines.`);
  }

  /** Creates a VM that attaches existing managed disks (the restore path), or records one (seeding). */
  createVirtualMachine(group: string, name: string, definition: Record<string, any>): { vm: VirtualMachineRecord; attach: DiskRecord[] } {
    const location = definition.location;
    if (typeof location !== "string" || !location) throw new HttpFailure(armError(400, "LocationRequired", "The location property is required for this definition."));
    const properties = structuredClone(definition.properties ?? {});
    const storage = properties.storageProfile ?? {};
    const osDisk = storage.osDisk;
    if (!osDisk?.managedDisk?.id) {
      throw new HttpFailure(armError(400, "InvalidParameter", "storageProfile.osDisk.managedDisk.id is required: the emulator only attaches existing managed disks."));
    }
    if (osDisk.createOption !== "Attach") {
      throw new HttpFailure(armError(400, "InvalidParameter", `osDisk.createOption '${osDisk.createOption}' is not supported by the emulator (Attach is).`));
    }
    const nics = properties.networkProfile?.networkInterfaces;
    if (!Array.isArray(nics) || nics.length === 0) {
      throw new HttpFailure(armError(400, "InvalidParameter", "networkProfile.networkInterfaces needs at least one network interface id."));
    }
    const id = this.resourceId(this.world.resourceGroup(group)!.name, "virtualMachines", name);
    const attach: DiskRecord[] = [];
    const entries: Array<Record<string, any>> = [osDisk, ...((storage.dataDisks ?? []) as Array<Record<string, any>>)];
    for (const entry of entries) {
      const diskId = entry.managedDisk?.id;
      const disk = diskId ? this.disks.get(idKey(diskId)) : undefined;
      if (!disk) throw new HttpFailure(notFound("Microsoft.Compute/disks", String(diskId)).reply);
      if (entry !== osDisk && entry.createOption !== "Attach") {
        throw new HttpFailure(armError(400, "InvalidParameter", `dataDisk createOption '${entry.createOption}' is not supported by the emulator (Attach is).`));
      }
      if (disk.managedBy && idKey(disk.managedBy) !== idKey(id)) {
        throw new HttpFailure(armError(409, "OperationNotAllowed", `Disk '${disk.name}' is already attached to VM '${disk.managedBy}'.`));
      }
      if (disk.diskState === "ActiveSAS" || disk.diskState === "ActiveUpload" || disk.diskState === "ReadyToUpload") {
        throw new HttpFailure(armError(409, "OperationNotAllowed", `Disk '${disk.name}' is ${disk.diskState}; revoke access or finish the upload before attaching it.`));
      }
      entry.name = disk.name;
      entry.diskSizeGB = Math.max(1, Math.ceil(disk.image.size / GiB));
      entry.managedDisk = { id: disk.id, storageAccountType: disk.sku.name };
      entry.caching ??= "ReadWrite";
      if (entry === osDisk) entry.osType ??= disk.osType ?? "Linux";
      attach.push(disk);
    }
    properties.storageProfile = storage;
    const vm: VirtualMachineRecord = {
      id, name, resourceGroup: this.world.resourceGroup(group)!.name, location, vmId: crypto.randomUUID(),
      timeCreated: new Date().toISOString(), provisioningState: "Creating", properties,
    };
    if (definition.tags) vm.tags = definition.tags;
    for (const disk of attach) {
      disk.managedBy = id;
      disk.diskState = "Attached";
    }
    this.virtualMachines.set(idKey(id), vm);
    return { vm, attach };
  }

  private putVm(request: EmulatorRequest, id: string, group: string, name: string): EmulatorReply {
    const body = parseJson(request);
    const existing = this.virtualMachines.get(idKey(id));
    if (existing) {
      if (body.tags) existing.tags = body.tags;
      return json(200, this.vmJson(existing));
    }
    const { vm, attach } = this.createVirtualMachine(group, name, body);
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.lroSpec(vm.location, {
      injectedFailure,
      locationHeader: false,
      onSucceeded: () => { vm.provisioningState = "Succeeded"; },
      onFailed: () => {
        // A failed VM keeps its record (as Azure does) but lets go of the disks so they can be reused.
        vm.provisioningState = "Failed";
        for (const disk of attach) {
          disk.managedBy = undefined;
          disk.diskState = "Unattached";
        }
      },
    }));
    return json(201, this.vmJson(vm), headers);
  }
}

export function notFound(type: string, id: string): EmulatorReply & { reply: EmulatorReply } {
  const reply = armError(404, "ResourceNotFound", `The Resource '${type}/${parseResourceId(id)?.name ?? id}' under resource group '${parseResourceId(id)?.resourceGroup ?? "?"}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`);
  return { ...reply, reply };
}

/** Upload disks take uploadSizeBytes within Azure's bounds, a whole number of MiB plus the 512-byte footer. */
export function uploadSizeRefusal(bytes: number): EmulatorReply | undefined {
  if (!Number.isInteger(bytes) || bytes < MIN_UPLOAD_BYTES || bytes > MAX_UPLOAD_BYTES) {
    return armError(400, "BadRequest",
      `The upload size in bytes ${bytes} must be between ${MIN_UPLOAD_BYTES} (20 MiB + 512 bytes for the VHD footer) and ${MAX_UPLOAD_BYTES} (32 TiB + 512 bytes for the VHD footer).`);
  }
  if ((bytes - 512) % MiB !== 0) {
    return armError(400, "BadRequest",
      `The upload size in bytes ${bytes} - 512 bytes for the VHD footer (${bytes - 512} in this case) must be a multiple of MiB.`);
  }
  return undefined;
}
