/**
 * The test-control side of the emulator (never part of Azure): write into a disk as its VM would,
 * read a disk or snapshot, read and change a database's rows, list what exists (to assert that
 * nothing leaked), and inject faults. Available in-process as EmulatorControl and over HTTP under
 * /_emulator/ for child processes.
 */
import type { ComputeProvider } from "./arm/compute.ts";
import type { DatabaseContent, TableRows } from "./arm/bacpac.ts";
import type { SqlProvider } from "./arm/sql.ts";
import type { FaultInjector, OperationFailureRule, ThrottleRule } from "./faults.ts";
import { type EmulatorReply, type EmulatorRequest, json } from "./http.ts";
import type { OperationRegistry } from "./lro.ts";
import type { PageBlobOptions, PageBlobService, PreviousSnapshotRefusal, SasGrant, SasUsage } from "./pageblob-sas.ts";

export interface Inventory {
  disks: Array<{ id: string; diskState: string; provisioningState: string; sizeBytes: number; managedBy?: string }>;
  snapshots: Array<{ id: string; provisioningState: string; incremental: boolean; sourceResourceId: string }>;
  virtualMachines: Array<{ id: string; provisioningState: string }>;
  databases: Array<{ id: string; status: string }>;
  activeSasGrants: SasGrant[];
  runningOperations: number;
}

export class EmulatorControl {
  private readonly compute: ComputeProvider;
  private readonly sql: SqlProvider;
  private readonly blobs: PageBlobService;
  private readonly operations: OperationRegistry;
  readonly faults: FaultInjector;

  constructor(compute: ComputeProvider, sql: SqlProvider, blobs: PageBlobService, operations: OperationRegistry, faults: FaultInjector) {
    this.compute = compute;
    this.sql = sql;
    this.blobs = blobs;
    this.operations = operations;
    this.faults = faults;
  }

  /** Writes bytes into a managed disk (512-byte aligned), as the VM using it would. */
  writeDisk(diskId: string, offset: number, data: Uint8Array): void {
    this.compute.writeDisk(diskId, offset, data);
  }

  /** Clears (trims) pages of a managed disk: they read as zeros and diff as ClearRange. */
  clearDisk(diskId: string, offset: number, length: number): void {
    this.compute.clearDisk(diskId, offset, length);
  }

  /** The full content of a disk or snapshot. */
  readImage(resourceId: string): Buffer {
    return this.compute.readImage(resourceId);
  }

  databaseContent(databaseId: string): DatabaseContent {
    return structuredClone(this.sql.database(databaseId).content);
  }

  setTableRows(databaseId: string, table: string, rows: TableRows): void {
    this.sql.database(databaseId).content[table] = structuredClone(rows);
  }

  throttle(rule: ThrottleRule): void {
    this.faults.throttle(rule);
  }

  failOperation(rule: OperationFailureRule): void {
    this.faults.failOperation(rule);
  }

  clearFaults(): void {
    this.faults.clear();
  }

  /**
   * Page-range answers: at most maxRangesPerResponse ranges per response (Azure: 10,000), and
   * fragmentedTimeout (or null to clear it) to time out requests over a large fragmented span.
   */
  pageRanges(options: { maxRangesPerResponse?: number; fragmentedTimeout?: PageBlobOptions["fragmentedTimeout"] | null }): void {
    if (options.maxRangesPerResponse !== undefined) this.blobs.options.maxRangesPerResponse = options.maxRangesPerResponse;
    if (options.fragmentedTimeout !== undefined) this.blobs.options.fragmentedTimeout = options.fragmentedTimeout ?? undefined;
  }

  /** The next `times` page-range diffs refuse their previous snapshot URL (documented 409, or a plain 403). */
  refusePreviousSnapshot(as: PreviousSnapshotRefusal, times = 1): void {
    this.blobs.refusePreviousSnapshot(as, times);
  }

  /** Requests and bytes each SAS grant (of one disk or snapshot, if given) served: the emulator's own count. */
  sasUsage(resourceId?: string): SasUsage[] {
    return this.blobs.usageOf(resourceId);
  }

  /** The caller holds only these actions from now on (snapshot creation checks them); undefined lifts it. */
  restrictActions(actions: string[] | undefined): void {
    this.compute.knobs.grantedActions = actions ? new Set(actions.map((a) => a.toLowerCase())) : undefined;
  }

  /** Shortens Compute's background copy (GETs until complete) or the snapshot rate window, for fast tests. */
  computeKnobs(knobs: { backgroundCopyGets?: number; snapshotRateWindowMs?: number }): void {
    if (knobs.backgroundCopyGets !== undefined) this.compute.knobs.backgroundCopyGets = knobs.backgroundCopyGets;
    if (knobs.snapshotRateWindowMs !== undefined) this.compute.knobs.snapshotRateWindowMs = knobs.snapshotRateWindowMs;
  }

  /** Moves the clock that SAS expiry is judged by forward, so a test expires a grant without waiting. */
  advanceSasClock(ms: number): void {
    this.blobs.clockShiftMs += ms;
  }

  inventory(): Inventory {
    return {
      disks: [...this.compute.disks.values()].map((d) => ({
        id: d.id, diskState: d.diskState, provisioningState: d.provisioningState, sizeBytes: d.image.size, ...(d.managedBy ? { managedBy: d.managedBy } : {}),
      })),
      snapshots: [...this.compute.snapshots.values()].map((s) => ({
        id: s.id, provisioningState: s.provisioningState, incremental: s.incremental, sourceResourceId: String(s.creationData.sourceResourceId),
      })),
      virtualMachines: [...this.compute.virtualMachines.values()].map((v) => ({ id: v.id, provisioningState: v.provisioningState })),
      databases: [...this.sql.databases.values()].map((d) => ({ id: d.id, status: d.status })),
      activeSasGrants: this.blobs.active(),
      runningOperations: this.operations.running(),
    };
  }

  /** HTTP form, under /_emulator/. */
  handle(request: EmulatorRequest, segments: string[]): EmulatorReply {
    const route = `${request.method} ${segments.join("/")}`;
    const id = request.query.get("id") ?? "";
    const bodyJson = () => JSON.parse(request.body.toString("utf8") || "{}");
    try {
      switch (route) {
        case "GET inventory":
          return json(200, this.inventory());
        case "POST disks/write":
          this.writeDisk(id, Number(request.query.get("offset") ?? "0"), request.body);
          return { status: 204 };
        case "POST disks/clear":
          this.clearDisk(id, Number(request.query.get("offset") ?? "0"), Number(request.query.get("length") ?? "0"));
          return { status: 204 };
        case "GET images/read":
          return { status: 200, headers: { "content-type": "application/octet-stream" }, body: this.readImage(id) };
        case "GET sql/content":
          return json(200, this.databaseContent(id));
        case "PUT sql/rows": {
          const table = request.query.get("table") ?? "";
          this.setTableRows(id, table, bodyJson());
          return { status: 204 };
        }
        case "POST faults/throttle":
          this.throttle(ruleFrom(bodyJson()));
          return { status: 204 };
        case "POST faults/fail-operation":
          this.failOperation(ruleFrom(bodyJson()));
          return { status: 204 };
        case "DELETE faults":
          this.clearFaults();
          return { status: 204 };
        case "POST faults/refuse-previous-snapshot": {
          const body = bodyJson();
          this.refusePreviousSnapshot(body.as, body.times ?? 1);
          return { status: 204 };
        }
        case "POST page-ranges":
          this.pageRanges(bodyJson());
          return { status: 204 };
        case "GET sas-usage":
          return json(200, this.sasUsage(request.query.get("id") ?? undefined));
        case "POST rbac/restrict":
          this.restrictActions(bodyJson().actions);
          return { status: 204 };
        case "POST compute/knobs":
          this.computeKnobs(bodyJson());
          return { status: 204 };
        default:
          return json(404, { error: { code: "NotFound", message: `No control route ${route}.` } });
      }
    } catch (error) {
      return json(400, { error: { code: "BadRequest", message: (error as Error).message } });
    }
  }
}

/** JSON rules name the path either as a substring (path) or a regular expression (pathPattern). */
function ruleFrom<T extends { path: string | RegExp }>(body: Record<string, any>): T {
  const path = typeof body.pathPattern === "string" ? new RegExp(body.pathPattern, "i") : String(body.path ?? "");
  return { ...body, path } as T;
}
