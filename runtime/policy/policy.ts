/**
 * Backup policies: plain YAML or JSON files, validated on load. Every error names the file and the
 * field (`policies/prod.yaml: schedule.every: "4x" is not a duration ...`) so a user can fix it
 * without reading code. The file format is described in README.md beside this file.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseDocument } from "yaml";
import { UsageError } from "../errors.ts";
import { RETENTION_KINDS, ruleIsEmpty, type RetentionRule } from "../retention/gfs.ts";
import { CronExpression, CronSyntaxError } from "./cron.ts";
import { kindOfResourceId, PROTECTABLE_TYPES, type ProtectableType } from "./items.ts";
import { parseDuration, type Schedule } from "./schedule.ts";

export interface TaggedSelector {
  type: ProtectableType;
  tagName: string;
  tagValue: string;
  subscriptions: string[];
}

export interface Policy {
  name: string;
  /** Where the points go: a vault URL (https://account.blob.core.windows.net/container) or a local path. */
  vault: string;
  protect: {
    resources: string[];
    tagged: TaggedSelector[];
  };
  schedule: Schedule;
  retention: RetentionRule;
  /** Send an item's work to another region's agent when its own region has none. */
  crossRegion: boolean;
  /** Vaults (in other regions) that each committed point is copied to, with the same retention. */
  copyTo: string[];
  /** The file the policy came from, for messages. */
  source: string;
}

type Json = unknown;

class FieldChecker {
  readonly file: string;

  constructor(file: string) {
    this.file = file;
  }

  fail(field: string, message: string): never {
    throw new UsageError(`${this.file}: ${field ? `${field}: ` : ""}${message}`);
  }

  object(value: Json, field: string, allowed: string[]): Record<string, Json> {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      this.fail(field, `must be a mapping with ${allowed.join(", ")}`);
    }
    const record = value as Record<string, Json>;
    for (const key of Object.keys(record)) {
      if (!allowed.includes(key)) {
        this.fail(field ? `${field}.${key}` : key, `is not a known field; expected one of ${allowed.join(", ")}`);
      }
    }
    return record;
  }

  string(value: Json, field: string): string {
    if (typeof value !== "string" || value.trim() === "") this.fail(field, "must be a non-empty string");
    return value.trim();
  }

  stringList(value: Json, field: string): string[] {
    if (!Array.isArray(value)) this.fail(field, "must be a list of strings");
    return value.map((entry, i) => this.string(entry, `${field}[${i}]`));
  }
}

/** Vaults a point is copied to, at most: each copy is a job after every backup. */
export const MAX_COPY_VAULTS = 3;

/** One spelling per vault: URLs by scheme, host (case-insensitive) and path without a trailing slash; folders resolved. */
export function vaultKey(location: string): string {
  if (/^https?:\/\//i.test(location)) {
    try {
      const url = new URL(location);
      return `${url.protocol}//${url.host.toLowerCase()}${url.pathname.replace(/\/+$/, "")}${url.search}`;
    } catch {
      return location;
    }
  }
  return path.resolve(location);
}

/** A vault location as policies take it: an http(s) container URL without a query string, or a local path. */
function checkVaultLocation(check: FieldChecker, value: Json, field: string): string {
  const vault = check.string(value, field);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(vault)) {
    let url: URL;
    try {
      url = new URL(vault);
    } catch {
      check.fail(field, `"${vault}" is not a valid URL`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      check.fail(field, `"${vault}" must be an https:// container URL or a local path`);
    }
    if (url.search) check.fail(field, "must not carry a query string (no SAS tokens in policy files)");
  }
  return vault;
}

/** copyTo: distinct vaults, none of them the policy's own, at most MAX_COPY_VAULTS. */
function checkCopyTo(check: FieldChecker, value: Json, vault: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) check.fail("copyTo", "must be a list of vault URLs (in other regions)");
  if (value.length > MAX_COPY_VAULTS) check.fail("copyTo", `names ${value.length} vaults; at most ${MAX_COPY_VAULTS} (each is a copy job after every backup)`);
  const seen = new Set([vaultKey(vault)]);
  return value.map((entry, i) => {
    const field = `copyTo[${i}]`;
    const location = checkVaultLocation(check, entry, field);
    if (vaultKey(location) === vaultKey(vault)) check.fail(field, `"${location}" is the policy's own vault; a copy goes to another vault (made with \`bulwark init --like\`)`);
    if (seen.has(vaultKey(location))) check.fail(field, `"${location}" is named twice`);
    seen.add(vaultKey(location));
    return location;
  });
}

const POLICY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Parses and validates one policy document (already decoded from YAML or JSON). */
export function validatePolicy(document: Json, file: string): Policy {
  const check: FieldChecker = new FieldChecker(file);
  const top = check.object(document, "", ["name", "vault", "protect", "schedule", "retention", "crossRegion", "copyTo"]);
  for (const required of ["name", "vault", "protect", "schedule", "retention"]) {
    if (top[required] === undefined) check.fail(required, "is required");
  }

  const name = check.string(top.name, "name");
  if (!POLICY_NAME.test(name)) {
    check.fail("name", `"${name}" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }

  const vault = checkVaultLocation(check, top.vault, "vault");
  const copyTo = checkCopyTo(check, top.copyTo, vault);

  const protect = check.object(top.protect, "protect", ["resources", "tagged"]);
  const resources = protect.resources === undefined ? [] : check.stringList(protect.resources, "protect.resources");
  resources.forEach((id, i) => {
    if (!kindOfResourceId(id)) {
      check.fail(
        `protect.resources[${i}]`,
        `"${id}" is not the ARM id of a VM, managed disk or Azure SQL database ` +
          `(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>, ...)`,
      );
    }
  });
  const taggedList =
    protect.tagged === undefined ? [] : Array.isArray(protect.tagged) ? protect.tagged : [protect.tagged];
  const tagged = taggedList.map((entry, i): TaggedSelector => {
    const field = Array.isArray(protect.tagged) ? `protect.tagged[${i}]` : "protect.tagged";
    const selector = check.object(entry, field, ["type", "tag", "subscriptions"]);
    const type = check.string(selector.type, `${field}.type`);
    const known = PROTECTABLE_TYPES.find((t) => t.toLowerCase() === type.toLowerCase());
    if (!known) check.fail(`${field}.type`, `"${type}" is not one of ${PROTECTABLE_TYPES.join(", ")}`);
    const tag = check.string(selector.tag, `${field}.tag`);
    const eq = tag.indexOf("=");
    if (eq <= 0) check.fail(`${field}.tag`, `"${tag}" must be key=value`);
    if (selector.subscriptions === undefined) check.fail(`${field}.subscriptions`, "is required (a list of subscription ids)");
    const subscriptions = check.stringList(selector.subscriptions, `${field}.subscriptions`);
    if (subscriptions.length === 0) check.fail(`${field}.subscriptions`, "must name at least one subscription id");
    return { type: known, tagName: tag.slice(0, eq).trim(), tagValue: tag.slice(eq + 1).trim(), subscriptions };
  });
  if (resources.length === 0 && tagged.length === 0) {
    check.fail("protect", "must list resources or a tagged selector (or both); this policy protects nothing");
  }

  const scheduleFields = check.object(top.schedule, "schedule", ["cron", "every", "rpo"]);
  if ((scheduleFields.cron === undefined) === (scheduleFields.every === undefined)) {
    check.fail("schedule", 'must have exactly one of cron ("m h dom mon dow", UTC) or every ("4h", "30m", "1d")');
  }
  let rpoMs: number | undefined;
  if (scheduleFields.rpo !== undefined) {
    const text = check.string(scheduleFields.rpo, "schedule.rpo");
    rpoMs = parseDuration(text);
    if (rpoMs === undefined) check.fail("schedule.rpo", `"${text}" is not a duration; write e.g. "8h", "30m", "1d"`);
  }
  let schedule: Schedule;
  if (scheduleFields.every !== undefined) {
    const text = check.string(scheduleFields.every, "schedule.every");
    const intervalMs = parseDuration(text);
    if (intervalMs === undefined) check.fail("schedule.every", `"${text}" is not a duration; write e.g. "4h", "30m", "1d"`);
    schedule = { kind: "every", intervalMs, rpoMs, text: `every ${text}` };
  } else {
    const text = check.string(scheduleFields.cron, "schedule.cron");
    let cron: CronExpression;
    try {
      cron = new CronExpression(text);
    } catch (error) {
      if (error instanceof CronSyntaxError) check.fail("schedule.cron", error.message);
      throw error;
    }
    if (!cron.nextFire(new Date(Date.UTC(2000, 0, 1)))) {
      check.fail("schedule.cron", `"${text}" never fires (no such date)`);
    }
    schedule = { kind: "cron", cron, rpoMs, text: `cron ${text}` };
  }

  const retentionFields = check.object(top.retention, "retention", [...RETENTION_KINDS]);
  const retention: RetentionRule = {};
  for (const kind of RETENTION_KINDS) {
    const value = retentionFields[kind];
    if (value === undefined) continue;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
      check.fail(`retention.${kind}`, `must be a whole number of points, 0 or more (got ${JSON.stringify(value)})`);
    }
    retention[kind] = value;
  }
  if (ruleIsEmpty(retention)) {
    check.fail("retention", `keeps nothing by any rule; set at least one of ${RETENTION_KINDS.join(", ")} above 0`);
  }

  let crossRegion = false;
  if (top.crossRegion !== undefined) {
    if (typeof top.crossRegion !== "boolean") check.fail("crossRegion", "must be true or false");
    crossRegion = top.crossRegion;
  }

  return { name, vault, protect: { resources, tagged }, schedule, retention, crossRegion, copyTo, source: file };
}

/** Parses policy text: JSON when the file ends in .json, YAML otherwise (YAML also reads JSON). */
export function parsePolicy(text: string, file: string): Policy {
  let document: Json;
  if (file.toLowerCase().endsWith(".json")) {
    try {
      document = JSON.parse(text);
    } catch (error) {
      throw new UsageError(`${file}: is not valid JSON: ${(error as Error).message}`);
    }
  } else {
    const parsed = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (parsed.errors.length > 0) {
      const first = parsed.errors[0];
      const where = first.linePos ? ` (line ${first.linePos[0].line}, column ${first.linePos[0].col})` : "";
      throw new UsageError(`${file}: is not valid YAML${where}: ${first.message.split("\n")[0]}`);
    }
    document = parsed.toJS();
  }
  return validatePolicy(document, file);
}

export async function loadPolicyFile(file: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new UsageError(`${file}: cannot read the policy file: ${(error as Error).message}`);
  }
  return parsePolicy(text, file);
}

const POLICY_EXTENSIONS = [".yaml", ".yml", ".json"];

/**
 * Loads every policy from the given files and folders (a folder contributes its *.yaml, *.yml and
 * *.json files, not recursively). Policy names must be unique across all of them.
 */
export async function loadPolicies(paths: string[]): Promise<Policy[]> {
  const files: string[] = [];
  for (const entry of paths) {
    let info;
    try {
      info = await stat(entry);
    } catch {
      throw new UsageError(`${entry}: no such policy file or folder`);
    }
    if (info.isDirectory()) {
      const names = (await readdir(entry)).filter((n) => POLICY_EXTENSIONS.includes(path.extname(n).toLowerCase()));
      files.push(...names.sort().map((n) => path.join(entry, n)));
    } else {
      files.push(entry);
    }
  }
  const policies: Policy[] = [];
  const byName = new Map<string, string>();
  for (const file of files) {
    const policy = await loadPolicyFile(file);
    const earlier = byName.get(policy.name);
    if (earlier) throw new UsageError(`${file}: name: "${policy.name}" is already the name of the policy in ${earlier}`);
    byName.set(policy.name, file);
    policies.push(policy);
  }
  return policies;
}
