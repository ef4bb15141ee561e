/**
 * Retries with exponential backoff and jitter around any store: throttling (429, 503), server
 * errors, timeouts and dropped connections are retried; anything else (a missing object, an
 * authentication failure, "already exists") is not. The Azure SDK retries too; this layer covers
 * what it does not (429, and an outage longer than its own budget).
 */
import { ServiceError } from "../errors.ts";
import { throwIfInterrupted } from "../interruption.ts";
import type { ObjectInfo, ObjectStore, ObjectWriter } from "./store.ts";

const RETRYABLE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "REQUEST_SEND_ERROR", "UND_ERR_SOCKET"]);

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 8, baseDelayMs: 250, maxDelayMs: 15_000 };

export function isRetryable(error: unknown): boolean {
  const e = error as { statusCode?: number; code?: string; name?: string; cause?: unknown };
  if (!e) return false;
  if (e.statusCode === 429 || e.statusCode === 503 || e.statusCode === 500 || e.statusCode === 502 || e.statusCode === 504 || e.statusCode === 408) return true;
  if (e.code && RETRYABLE_CODES.has(e.code)) return true;
  if (e.name === "TimeoutError" || e.name === "AbortError") return false;
  return e.cause !== undefined && e.cause !== error ? isRetryable(e.cause) : false;
}

function retryAfterMs(error: unknown): number | undefined {
  const headers = (error as { response?: { headers?: { get(name: string): string | undefined } } }).response?.headers;
  const value = headers?.get("retry-after");
  if (!value) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? seconds * 1000 : Math.max(0, Date.parse(value) - Date.now());
}

export async function withRetry<T>(what: string, policy: RetryPolicy, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!isRetryable(error)) throw error;
      // Interrupted (Ctrl-C): no more waiting out an outage.
      throwIfInterrupted();
      if (attempt >= policy.attempts) {
        throw new ServiceError(
          `${what} still failing after ${attempt} attempts (${(error as Error).message?.split("\n")[0] ?? error}); ` +
            "the storage service is unavailable or throttling: retry later. Nothing was committed for this operation.",
          { cause: error },
        );
      }
      const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      const delay = retryAfterMs(error) ?? backoff / 2 + Math.random() * (backoff / 2);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

export class RetryingStore implements ObjectStore {
  readonly location: string;
  /** The store this one retries around. */
  readonly inner: ObjectStore;
  private readonly policy: RetryPolicy;

  readonly immutableUntil?: (key: string) => Promise<Date | undefined>;

  constructor(inner: ObjectStore, policy: RetryPolicy = DEFAULT_RETRY) {
    this.inner = inner;
    this.location = inner.location;
    this.policy = policy;
    // Only where the inner store has immutability: its absence says "this storage has none".
    if (inner.immutableUntil) this.immutableUntil = (key) => withRetry(`reading the immutability of ${key}`, this.policy, () => inner.immutableUntil!(key));
  }

  get(key: string): Promise<Buffer> {
    return withRetry(`reading ${key}`, this.policy, () => this.inner.get(key));
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return withRetry(`reading ${key}`, this.policy, () => this.inner.getRange(key, offset, length));
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return withRetry(`checking ${key}`, this.policy, () => this.inner.stat(key));
  }

  create(key: string, data: Uint8Array): Promise<void> {
    return withRetry(`writing ${key}`, this.policy, () => this.inner.create(key, data));
  }

  createWriter(key: string): ObjectWriter {
    // A staged upload is retried whole at commit only through the SDK's own per-request retries;
    // a writer that fails makes the backup fail cleanly (nothing references its object yet).
    return this.inner.createWriter(key);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const items = await withRetry(`listing ${prefix}`, this.policy, async () => {
      const all: ObjectInfo[] = [];
      for await (const item of this.inner.list(prefix)) all.push(item);
      return all;
    });
    yield* items;
  }

  delete(key: string): Promise<void> {
    return withRetry(`deleting ${key}`, this.policy, () => this.inner.delete(key));
  }
}
