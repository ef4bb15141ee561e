/**
 * The `bulwark:network` and `bulwark:alerts` config keys: how the agents reach the key vault and
 * storage, and who is told when backups go wrong. Pure, like the rest of infra/config.ts (which
 * calls these): raw values in, typed values out, or a UsageError naming the key and the fix.
 */
import { UsageError } from "../runtime/errors.ts";

/**
 * "public": the agents reach the key vault and storage over their public endpoints, data access by
 * RBAC only (the default: the only one that works without a VNet, see components/network.ts).
 * "private": a VNet, a VNet-integrated Container Apps environment and private endpoints; nothing
 * is reachable from the public network.
 */
export type NetworkMode = "public" | "private";

/** Who the action group tells; at least one receiver. */
export interface AlertReceivers {
  emails: string[];
  webhooks: string[];
}

/** "none" only when set deliberately: a deploy without anyone to tell is a silent backup system. */
export type AlertsConfig = AlertReceivers | "none";

function fail(key: string, problem: string, fix: string): never {
  throw new UsageError(`bulwark:${key} ${problem}. ${fix}`);
}

export function parseNetworkMode(value: unknown): NetworkMode {
  if (value === undefined || value === null || value === "") return "public";
  if (value === "public" || value === "private") return value;
  return fail("network", `must be "public" or "private", got ${JSON.stringify(value)}`, "Leave it unset (public endpoints, RBAC-only data access) or set `bulwark:network: private` for a VNet with private endpoints.");
}

/**
 * Whether the key vault takes traffic from the public network. It follows `bulwark:network`;
 * key.publicNetworkAccess may only repeat it, since a vault closed to the public without private
 * endpoints is one no worker can wrap or unwrap with (every backup fails).
 */
export function keyPublicNetworkAccess(value: unknown, network: NetworkMode): boolean {
  const wanted = network === "public";
  if (value === undefined || value === null) return wanted;
  const given = value === true || value === "true" ? true : value === false || value === "false" ? false : undefined;
  if (given === undefined) fail("key.publicNetworkAccess", `must be true or false, got ${JSON.stringify(value)}`, "Remove it: bulwark:network decides it.");
  if (given !== wanted) {
    return given
      ? fail("key.publicNetworkAccess", "is true under `bulwark:network: private`, which opens the key vault to the public network", "Remove key.publicNetworkAccess: in private mode the agents reach the vault over private endpoints only.")
      : fail("key.publicNetworkAccess", "is false under public networking: the agents have no private endpoint, so no worker could wrap or unwrap and every backup would fail", "Remove key.publicNetworkAccess (public access with RBAC-only data access), or set `bulwark:network: private` on the customer stack and on every region stack.");
  }
  return given;
}

const EXAMPLE = "Set `bulwark:alerts: {emails: [ops@example.com], webhooks: [https://hooks.example.com/bulwark]}` (either list may be omitted), or `bulwark:alerts: none` to deploy with nobody told, deliberately.";

/** Deliberately simple: one @, no spaces, a dot in the domain. Azure Monitor checks deliverability. */
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s.]+$/;

function list(value: unknown, key: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) fail(key, "must be a list of strings", EXAMPLE);
  return value.map((v: string) => v.trim());
}

function webhook(url: string, key: string): string {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (parsed?.protocol !== "https:") fail(key, `${JSON.stringify(url)} is not an https URL`, "Use the https endpoint your chat or paging tool gives for incoming webhooks; alerts are never sent in clear text.");
  return url;
}

export function parseAlerts(value: unknown): AlertsConfig {
  if (value === "none") return "none";
  if (value === undefined || value === null || value === "") {
    fail("alerts", "is not set: nobody would be told of a missed RPO, a failed job or a stopped scheduler", EXAMPLE);
  }
  if (typeof value !== "object" || Array.isArray(value)) fail("alerts", `must be a mapping or "none", got ${JSON.stringify(value)}`, EXAMPLE);
  const raw = value as Record<string, unknown>;
  const unknownKeys = Object.keys(raw).filter((k) => k !== "emails" && k !== "webhooks");
  if (unknownKeys.length > 0) fail(`alerts.${unknownKeys[0]}`, "is not a receiver kind", "Use emails and/or webhooks.");
  const emails = list(raw.emails, "alerts.emails").map((email, i) => {
    if (!EMAIL.test(email)) fail(`alerts.emails[${i}]`, `${JSON.stringify(email)} is not an email address`, "Write it as name@example.com.");
    return email;
  });
  const webhooks = list(raw.webhooks, "alerts.webhooks").map((url, i) => webhook(url, `alerts.webhooks[${i}]`));
  if (emails.length + webhooks.length === 0) fail("alerts", "names no email and no webhook", EXAMPLE);
  return { emails, webhooks };
}
