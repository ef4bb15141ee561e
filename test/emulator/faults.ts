/**
 * Fault injection for tests: throttle the next K requests that match (429 with Retry-After, as ARM
 * and storage throttle), or make the next long-running operations started by matching requests end
 * in Failed midway.
 */
import type { EmulatorRequest } from "./http.ts";
import type { ArmErrorDetail } from "./lro.ts";

export interface RequestMatch {
  /** HTTP method, any when omitted. */
  method?: string;
  /** A substring of the path (case-insensitive) or a regular expression tested against the path. */
  path: string | RegExp;
}

export interface ThrottleRule extends RequestMatch {
  times: number;
  retryAfterSeconds?: number;
  /** 429 by default (ARM); storage throttles with 503 ServerBusy. */
  status?: number;
}

export interface OperationFailureRule extends RequestMatch {
  times: number;
  code?: string;
  message?: string;
}

function matches(rule: RequestMatch, request: EmulatorRequest): boolean {
  if (rule.method && rule.method.toUpperCase() !== request.method) return false;
  if (typeof rule.path === "string") return request.path.toLowerCase().includes(rule.path.toLowerCase());
  return rule.path.test(request.path);
}

export class FaultInjector {
  private throttles: ThrottleRule[] = [];
  private failures: OperationFailureRule[] = [];
  /** Requests answered with a throttle, counted for tests. */
  throttled = 0;
  /** Operations failed on purpose, counted for tests. */
  failedOperations = 0;

  throttle(rule: ThrottleRule): void {
    this.throttles.push({ ...rule });
  }

  failOperation(rule: OperationFailureRule): void {
    this.failures.push({ ...rule });
  }

  clear(): void {
    this.throttles = [];
    this.failures = [];
  }

  takeThrottle(request: EmulatorRequest): ThrottleRule | undefined {
    const rule = this.throttles.find((r) => r.times > 0 && matches(r, request));
    if (!rule) return undefined;
    rule.times--;
    this.throttled++;
    return rule;
  }

  takeOperationFailure(request: EmulatorRequest): ArmErrorDetail | undefined {
    const rule = this.failures.find((r) => r.times > 0 && matches(r, request));
    if (!rule) return undefined;
    rule.times--;
    this.failedOperations++;
    return {
      code: rule.code ?? "InternalOperationError",
      message: rule.message ?? "The operation failed midway because of an internal error (injected by the emulator).",
    };
  }
}
