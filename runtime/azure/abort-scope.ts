/**
 * The abort signal of the work in progress, carried with the async context (AsyncLocalStorage), so
 * that every Azure request a job's step makes is aborted with the step (shutdown, lost lease, time
 * limit), including the requests made deep inside sources and stores that take no signal of their
 * own. The job runner runs each step inside `withAbortScope(step's signal)`; the Azure SDK clients
 * carry a policy that adds the scope's signal to each request:
 *
 * - Resource Manager clients (core-rest-pipeline): `abortScopePolicy`, passed as a per-call policy
 *   in the client options' `additionalPolicies` (a PipelinePolicy is `{ name, sendRequest(request,
 *   next) }`; https://learn.microsoft.com/javascript/api/overview/azure/core-rest-pipeline-readme);
 *   a request's `abortSignal` is the same one an operation's `OperationOptions.abortSignal` sets
 *   ("The signal which can be used to abort requests"), and the retry policy stops on it too;
 * - Storage clients built from a `newPipeline()` (@azure/storage-blob): `abortScopeFactory`, put
 *   first in the pipeline's `factories` (RequestPolicyFactory, the storage SDK's extension point).
 *
 * Cleanup that must run even when the work is stopped (revoking a SAS) runs `outsideAbortScope`.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { PipelinePolicy } from "@azure/core-rest-pipeline";
import type { RequestPolicyFactory } from "@azure/storage-blob";

const scope = new AsyncLocalStorage<AbortSignal | undefined>();

/** Runs `body` with `signal` as the scope's signal: Azure requests made inside abort with it. */
export function withAbortScope<T>(signal: AbortSignal, body: () => Promise<T>): Promise<T> {
  return scope.run(signal, body);
}

/** Runs `body` outside any abort scope (cleanup that must finish even when the work was stopped). */
export function outsideAbortScope<T>(body: () => T): T {
  return scope.run(undefined, body);
}

export function currentAbortSignal(): AbortSignal | undefined {
  return scope.getStore();
}

interface AbortSignalLike {
  readonly aborted: boolean;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** The request's own signal and the scope's, as one. */
function joined(own: AbortSignalLike | undefined, scoped: AbortSignal): AbortSignal {
  if (!own) return scoped;
  if (own instanceof AbortSignal) return AbortSignal.any([own, scoped]);
  const controller = new AbortController();
  if (own.aborted) controller.abort();
  else own.addEventListener("abort", () => controller.abort(), { once: true });
  return AbortSignal.any([controller.signal, scoped]);
}

/** For Resource Manager (and other core-rest-pipeline) clients: `additionalPolicies: [{ policy: abortScopePolicy, position: "perCall" }]`. */
export const abortScopePolicy: PipelinePolicy = {
  name: "bulwarkAbortScope",
  sendRequest(request, next) {
    const signal = currentAbortSignal();
    if (signal) request.abortSignal = joined(request.abortSignal, signal);
    return next(request);
  },
};

/** For storage clients on a `newPipeline()`: `pipeline.factories.unshift(abortScopeFactory)`. */
export const abortScopeFactory: RequestPolicyFactory = {
  create(nextPolicy) {
    return {
      sendRequest(resource) {
        const signal = currentAbortSignal();
        if (signal) resource.abortSignal = joined(resource.abortSignal, signal);
        return nextPolicy.sendRequest(resource);
      },
    };
  },
};
