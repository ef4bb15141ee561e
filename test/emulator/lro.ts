/**
 * Long-running operations as ARM runs them: the first reply carries Azure-AsyncOperation (a status
 * monitor) and Location (the final result), and the client polls. An operation stays InProgress for
 * a number of polls (and until its work is done), so clients genuinely poll; it settles by itself
 * after a while when nobody polls. A fault rule can make it end Failed midway.
 */
import { type EmulatorReply, json } from "./http.ts";

export type OperationStatus = "InProgress" | "Succeeded" | "Failed";

export interface ArmErrorDetail {
  code: string;
  message: string;
}

export interface OperationSpec {
  subscriptionId: string;
  provider: string;
  location: string;
  /**
   * URL segment of the status monitor: "DiskOperations" (Compute disks and snapshots), "operations"
   * (Compute VMs), or "databaseAzureAsyncOperation" (SQL). The Compute shapes are those of recorded
   * traffic (test/emulator/fixtures/specs/compute/recorded-lro-headers.json).
   */
  asyncSegment: string;
  /** URL segment of the result location, e.g. "DiskOperations" (Compute, with ?monitor=true) or "databaseOperationResults". */
  resultSegment: string;
  /**
   * Whether the first reply carries a Location (the result) beside Azure-AsyncOperation (default
   * true). A VM's creation answers 201 with Azure-AsyncOperation only (recorded traffic, as above).
   */
  locationHeader?: boolean;
  /**
   * Where the monitor and the result are served, when not at the subscription-scoped
   * /subscriptions/S/providers/P/locations/L: the path before "/{segment}/{id}", e.g. a resource
   * group's /subscriptions/S/resourceGroups/G/providers/Microsoft.Sql/locations/L (Azure SQL).
   */
  monitorScope?: string;
  /** The operation's work; what it resolves to is the final result served at Location. */
  work?: () => Promise<unknown>;
  /** Applied once when the operation succeeds. */
  onSucceeded?: (result: unknown) => void;
  /** Applied once when the operation fails (compensation the service itself does, e.g. state Failed). */
  onFailed?: (error: ArmErrorDetail) => void;
  /** Put the result into the status monitor's properties.output too (Compute's beginGetAccess does). */
  outputInStatus?: boolean;
  /** Make the operation fail midway with this error. */
  injectedFailure?: ArmErrorDetail;
}

interface Operation {
  id: string;
  spec: OperationSpec;
  status: OperationStatus;
  startTime: string;
  endTime?: string;
  polls: number;
  workDone: boolean;
  workResult?: unknown;
  workError?: ArmErrorDetail;
  result?: unknown;
  error?: ArmErrorDetail;
  settleTimer?: NodeJS.Timeout;
}

export interface LroOptions {
  /** Polls that see InProgress before the operation may complete. */
  pollsBeforeDone: number;
  /** Retry-After (seconds) on the first reply and on InProgress polls. */
  retryAfterSeconds: number;
  /** An operation nobody polls settles by itself after this long. */
  settleAfterMs: number;
}

export class OperationRegistry {
  private readonly operations = new Map<string, Operation>();
  readonly options: LroOptions;

  constructor(options: LroOptions) {
    this.options = options;
  }

  /** Starts an operation; returns the headers for the first (201/202) reply. */
  start(origin: string, spec: OperationSpec): { id: string; headers: Record<string, string> } {
    const id = crypto.randomUUID();
    const operation: Operation = { id, spec, status: "InProgress", startTime: new Date().toISOString(), polls: 0, workDone: spec.work === undefined };
    this.operations.set(id, operation);
    if (spec.work) {
      spec.work().then(
        (result) => {
          operation.workDone = true;
          operation.workResult = result;
        },
        (error: unknown) => {
          operation.workDone = true;
          operation.workError = toErrorDetail(error);
        },
      );
    }
    operation.settleTimer = setTimeout(() => this.settleWhenReady(operation), this.options.settleAfterMs);
    operation.settleTimer.unref();
    return { id, headers: this.headers(origin, operation) };
  }

  private headers(origin: string, operation: Operation): Record<string, string> {
    const { subscriptionId, provider, location, asyncSegment, resultSegment } = operation.spec;
    const base = `${origin}${operation.spec.monitorScope ?? `/subscriptions/${subscriptionId}/providers/${provider}/locations/${location}`}`;
    const monitorQuery = asyncSegment === resultSegment ? "?monitor=true&api-version=2024-03-02" : "?api-version=2021-11-01";
    return {
      "azure-asyncoperation": `${base}/${asyncSegment}/${operation.id}?api-version=2024-03-02`,
      ...(operation.spec.locationHeader === false ? {} : { location: `${base}/${resultSegment}/${operation.id}${monitorQuery}` }),
      "retry-after": String(this.options.retryAfterSeconds),
    };
  }

  private settleWhenReady(operation: Operation): void {
    if (operation.status !== "InProgress") return;
    if (!operation.workDone) {
      operation.settleTimer = setTimeout(() => this.settleWhenReady(operation), 20);
      operation.settleTimer.unref();
      return;
    }
    this.settle(operation);
  }

  private settle(operation: Operation): void {
    if (operation.status !== "InProgress") return;
    clearTimeout(operation.settleTimer);
    operation.endTime = new Date().toISOString();
    const failure = operation.spec.injectedFailure ?? operation.workError;
    if (failure) {
      operation.status = "Failed";
      operation.error = failure;
      operation.spec.onFailed?.(failure);
    } else {
      operation.status = "Succeeded";
      operation.result = operation.workResult;
      operation.spec.onSucceeded?.(operation.workResult);
    }
  }

  private advance(operation: Operation): void {
    operation.polls++;
    if (operation.status === "InProgress" && operation.workDone && operation.polls > this.options.pollsBeforeDone) {
      this.settle(operation);
    }
  }

  /** Answers a GET on a status monitor or result location, or undefined if the path is not one. */
  handle(origin: string, pathSegments: string[], query: URLSearchParams): EmulatorReply | undefined {
    // subscriptions/{sub}/providers/{provider}/locations/{loc}/{segment}/{id}, or {monitorScope}/{segment}/{id}
    const operation = this.operations.get(pathSegments.at(-1) ?? "");
    if (!operation) return undefined;
    const scope = operation.spec.monitorScope;
    if (scope !== undefined) {
      if (`/${pathSegments.slice(0, -2).join("/")}`.toLowerCase() !== scope.toLowerCase()) return undefined;
    } else {
      if (pathSegments.length !== 8 || pathSegments[0]?.toLowerCase() !== "subscriptions") return undefined;
      if (pathSegments[2]?.toLowerCase() !== "providers" || pathSegments[4]?.toLowerCase() !== "locations") return undefined;
    }
    const segment = pathSegments.at(-2) ?? "";
    const { asyncSegment, resultSegment } = operation.spec;
    const isMonitor =
      segment === asyncSegment && (asyncSegment !== resultSegment || query.get("monitor") !== "true");
    if (!isMonitor && segment !== resultSegment) return undefined;
    this.advance(operation);
    if (isMonitor) {
      const body: Record<string, unknown> = { name: operation.id, status: operation.status, startTime: operation.startTime };
      if (operation.endTime) body.endTime = operation.endTime;
      if (operation.status === "Failed") body.error = operation.error;
      if (operation.status === "Succeeded" && operation.spec.outputInStatus && operation.result !== undefined) {
        body.properties = { output: operation.result };
      }
      const headers: Record<string, string> =
        operation.status === "InProgress" ? { "retry-after": String(this.options.retryAfterSeconds) } : {};
      return json(200, body, headers);
    }
    if (operation.status === "InProgress") {
      return { status: 202, headers: this.headers(origin, operation) };
    }
    if (operation.status === "Failed") return json(400, { error: operation.error });
    return operation.result === undefined ? { status: 200 } : json(200, operation.result);
  }

  /** Operations still running (for "nothing leaked" checks). */
  running(): number {
    let count = 0;
    for (const operation of this.operations.values()) if (operation.status === "InProgress") count++;
    return count;
  }

  close(): void {
    for (const operation of this.operations.values()) clearTimeout(operation.settleTimer);
  }
}

export function toErrorDetail(error: unknown): ArmErrorDetail {
  if (error && typeof error === "object" && "code" in error && "message" in error) {
    return { code: String((error as ArmErrorDetail).code), message: String((error as ArmErrorDetail).message) };
  }
  return { code: "InternalServerError", message: error instanceof Error ? error.message : String(error) };
}
