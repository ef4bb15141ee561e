/**
 * How a failed command reports: one line on stderr, `bulwark COMMAND: what happened; what to do`,
 * or with --json one JSON object {error, code, exitCode} on stderr, and the documented exit code
 * (runtime/errors.ts). Failures that are not ours are given the same shape: an Azure credential
 * that is missing or refused is exit 8 naming what to set, a service that did not answer exit 8.
 */
import { BulwarkError, describeError } from "../errors.ts";
import { isRetryable } from "../store/retry.ts";

export interface FailureReport {
  error: string;
  /** A stable word per exit code, for scripts that read --json. */
  code: string;
  exitCode: number;
}

const CODES: Record<number, string> = {
  1: "failure",
  2: "usage",
  3: "wrong-key",
  4: "not-found",
  5: "damaged",
  6: "unreadable-source",
  7: "vault-busy",
  8: "service",
  130: "interrupted",
  143: "interrupted",
};

/** The @azure/identity errors: no credential found, or the one found refused. */
const UNAVAILABLE = new Set(["CredentialUnavailableError", "AggregateAuthenticationError"]);
const REFUSED = new Set(["AuthenticationError", "AuthenticationRequiredError"]);

/** How deep a chain of causes is followed: a cycle or a hostile chain must not loop. */
const MAX_CAUSES = 8;

/** An error as far as it is read here; AuthenticationError carries the service's description. */
interface ErrorLike {
  name?: string;
  message?: string;
  errorResponse?: { errorDescription?: string };
  cause?: unknown;
}

function causes(error: unknown): ErrorLike[] {
  const chain: ErrorLike[] = [];
  let current = error as ErrorLike | undefined;
  while (current && typeof current === "object" && chain.length < MAX_CAUSES) {
    chain.push(current);
    current = current.cause as ErrorLike | undefined;
  }
  return chain;
}

const WHAT_TO_SET =
  "set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET (a service principal), run where a managed identity is assigned, or run `az login`" +
  " (for Azurite or a storage key, set AZURE_STORAGE_CONNECTION_STRING)";

/** The one line for an Azure credential failure, or undefined if the error is not one. */
function credentialMessage(error: unknown): string | undefined {
  for (const e of causes(error)) {
    const firstLine = (e.message ?? "").split("\n")[0].trim();
    if (UNAVAILABLE.has(e.name ?? "") || /^(ChainedTokenCredential|DefaultAzureCredential)\b/.test(firstLine)) {
      return `no Azure credential could be used: ${WHAT_TO_SET}`;
    }
    if (REFUSED.has(e.name ?? "")) {
      // Entra's own words (AADSTS…) say which part is wrong; the message's first line only has the status.
      const said = e.errorResponse?.errorDescription?.split("\n")[0].trim() || firstLine;
      return `Azure refused the credential (${said.slice(0, 200)}): check it, or ${WHAT_TO_SET}`;
    }
  }
  return undefined;
}

export function failureReport(error: unknown): FailureReport {
  const report = (message: string, exitCode: number): FailureReport => ({ error: message, code: CODES[exitCode] ?? "failure", exitCode });
  if (error instanceof BulwarkError) return report(error.message, error.exitCode);
  const credential = credentialMessage(error);
  if (credential) return report(credential, 8);
  // A dropped connection or an outage that outlasted every retry: a service failure, not a bug.
  if (isRetryable(error)) {
    return report(
      `a storage or Azure service did not answer (${describeError(error).split("\n")[0]}); check that it is reachable and retry: nothing half-written was committed`,
      8,
    );
  }
  return report(`unexpected failure: ${describeError(error).split("\n")[0]} (set BULWARK_DEBUG=1 for details)`, 1);
}

/** Whether the command line asked for JSON (read before parsing, so a parse error is JSON too). */
export function wantsJson(args: string[]): boolean {
  const end = args.indexOf("--");
  return (end < 0 ? args : args.slice(0, end)).includes("--json");
}

/** The report as written to stderr: `prefix` is what was run (`bulwark backup`, or `bulwark`). */
export function formatFailure(report: FailureReport, prefix: string, json: boolean): string {
  return json ? `${JSON.stringify(report)}\n` : `${prefix}: ${report.error}\n`;
}

export function interruptedReport(message: string, exitCode: number): FailureReport {
  return { error: message, code: CODES[exitCode] ?? "interrupted", exitCode };
}
