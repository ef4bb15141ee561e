/**
 * Typed stack configuration. `parseStackConfig` is pure: the raw `bulwark:*` values in, a typed
 * config out, or a UsageError naming the key and saying how to fix it. `readStackConfig` is the
 * thin wrapper that feeds it from the running Pulumi stack.
 */
import { UsageError } from "../runtime/errors.ts";
import { kindOfResourceId } from "../runtime/policy/items.ts";
import { parseDuration } from "../runtime/policy/schedule.ts";
import type { RetentionRule } from "../runtime/retention/gfs.ts";
import { keyPublicNetworkAccess, parseAlerts, parseNetworkMode } from "./network-and-alerts-config.ts";
import type { AlertsConfig, NetworkMode } from "./network-and-alerts-config.ts";

export const CONFIG_NAMESPACE = "bulwark";

export interface ProtectedScope {
  subscriptionId: string;
  /** Absent: the whole subscription (its resources in `region`). */
  resourceGroup?: string;
  /** The region of what is protected there; a region stack protects only its own region's scopes. */
  region: string;
}

export interface KeyConfig {
  size: 2048 | 3072 | 4096;
  /** ISO 8601 duration after which Key Vault rotates the key, e.g. P90D. */
  rotationPeriod: string;
  /** ISO 8601 duration after which a key version expires; must exceed the rotation period. */
  expiresAfter: string;
  /** Follows bulwark:network: false only in private mode (agents reach the vault over private endpoints). */
  publicNetworkAccess: boolean;
}

/** A value that was set with `pulumi config set --secret`; it is handled only as a Pulumi secret. */
export interface SecretValue {
  secret: true;
  value: string;
}

export interface CustomerConfig {
  kind: "customer";
  customer: string;
  tenantId: string;
  /** Where Bulwark's customer-side resources (key vault, bridge) live. */
  subscriptionId: string;
  homeRegion: string;
  protect: ProtectedScope[];
  /** bulwark:restoreResourceGroups: the only resource groups where restores may create disks, VMs and databases. */
  restoreResourceGroups: RestoreResourceGroup[];
  image: string;
  /** Where the image is pulled from by the jobs' own identities; absent for a public image. */
  registry?: ContainerRegistry;
  bridgeSchedule: string;
  key: KeyConfig;
  /** bulwark:keyVaultRecover: recover the soft-deleted key vault of the same name instead of creating it (one deployment). */
  keyVaultRecover: boolean;
  /** bulwark:network: whether the key vault is reached publicly or over the region stacks' private endpoints. */
  network: NetworkMode;
  /** bulwark:console: the web console as a Container App over one region stack's fleet; absent: no console. */
  console?: ConsoleConfig;
}

export interface ConsoleConfig {
  /** The region stack (organization/project/stack) whose fleet, vault and agents the console shows. */
  regionStack: string;
}

export type Redundancy =
  | "Standard_LRS"
  | "Standard_ZRS"
  | "Standard_GRS"
  | "Standard_GZRS"
  | "Standard_RAGRS"
  | "Standard_RAGZRS";

export interface RetentionConfig {
  /** How many days of points are kept: the policy's `daily` (the newest point of each day). */
  pointsDays: number;
  /** Version-level immutability: no version can be changed or deleted before this many days. */
  immutabilityDays: number;
  /**
   * The operator has locked the vault container's policy (infra/README.md, checklist step 5; Azure
   * creates it Unlocked): the program then never changes or deletes it.
   */
  immutabilityLocked: boolean;
  /** Soft delete for blobs and containers. */
  softDeleteDays: number;
  /**
   * The backup policy's retention (restic `forget` semantics, runtime/policy/README.md): `daily`
   * is `pointsDays`; `last` defaults to one day of points at `backupEvery`; `hourly`, `weekly`,
   * `monthly` and `yearly` only when configured.
   */
  rule: RetentionRule;
}

/** The backup policy the region's scheduler runs (rendered into BULWARK_POLICY_JSON). */
export interface BackupPolicyConfig {
  /** How often each protected item is backed up: a runtime duration such as 4h (not the scheduler's tick). */
  every: string;
  /** The tag (key=value) that marks a VM, managed disk or Azure SQL database for backup. */
  tag: string;
  /** Explicit ARM ids protected whether tagged or not; each lies in one of the region's protected scopes. */
  resources: string[];
}

export interface WorkerConfig {
  replicaTimeoutSeconds: number;
  replicaRetryLimit: number;
  maxExecutions: number;
  cpu: number;
  memory: string;
  /** Jobs one worker execution runs at once (BULWARK_MAX_JOBS_PER_WORKER). */
  maxJobsPerWorker: number;
  /** Jobs all of the region's workers run at once (BULWARK_MAX_JOBS_PER_REGION). */
  maxJobsPerRegion: number;
}

/** The Azure SQL server login the import/export service uses; both halves are secret config. */
export interface SqlAdminConfig {
  login: SecretValue;
  password: SecretValue;
}

export interface RegionConfig {
  kind: "region";
  customer: string;
  /** The customer stack's fully qualified name: organization/project/stack. */
  customerStack: string;
  region: string;
  image: string;
  /** Where the image is pulled from by the jobs' own identities; absent for a public image. */
  registry?: ContainerRegistry;
  /** The scheduler job's tick (cron, UTC): how often it looks for due items, not how often they are backed up. */
  schedule: string;
  retention: RetentionConfig;
  redundancy: Redundancy;
  worker: WorkerConfig;
  policy: BackupPolicyConfig;
  sqlAdmin?: SqlAdminConfig;
  /** bulwark:network: public endpoints, or a VNet with private endpoints. */
  network: NetworkMode;
  /** bulwark:alerts: who Azure Monitor tells. */
  alerts: AlertsConfig;
  /** bulwark:copyRegion: where a copy vault keeps a copy of every point (the paired region); absent: no copy. */
  copyRegion?: string;
}

export type StackConfig = CustomerConfig | RegionConfig;

/** Public Azure regions (programmatic names). */
export const AZURE_REGIONS: ReadonlySet<string> = new Set([
  "australiacentral", "australiacentral2", "australiaeast", "australiasoutheast", "austriaeast",
  "belgiumcentral", "brazilsouth", "brazilsoutheast", "canadacentral", "canadaeast", "centralindia",
  "centralus", "chilecentral", "eastasia", "eastus", "eastus2", "francecentral", "francesouth",
  "germanynorth", "germanywestcentral", "indonesiacentral", "israelcentral", "italynorth",
  "japaneast", "japanwest", "jioindiacentral", "jioindiawest", "koreacentral", "koreasouth",
  "malaysiawest", "mexicocentral", "newzealandnorth", "northcentralus", "northeurope",
  "norwayeast", "norwaywest", "polandcentral", "qatarcentral", "southafricanorth",
  "southafricawest", "southcentralus", "southeastasia", "southindia", "spaincentral",
  "swedencentral", "swedensouth", "switzerlandnorth", "switzerlandwest", "uaecentral", "uaenorth",
  "uksouth", "ukwest", "westcentralus", "westeurope", "westindia", "westus", "westus2", "westus3",
]);

const REDUNDANCIES: readonly Redundancy[] = [
  "Standard_LRS", "Standard_ZRS", "Standard_GRS", "Standard_GZRS", "Standard_RAGRS", "Standard_RAGZRS",
];

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function fail(key: string, problem: string, fix: string): never {
  throw new UsageError(`${CONFIG_NAMESPACE}:${key} ${problem}. ${fix}`);
}

type Raw = Record<string, unknown>;

function requireString(raw: Raw, key: string, fix: string): string {
  const value = raw[key];
  if (value === undefined || value === null || value === "") fail(key, "is not set", fix);
  if (typeof value !== "string") fail(key, `must be a string, got ${JSON.stringify(value)}`, fix);
  return value.trim();
}

function optionalObject(raw: Raw, key: string): Raw {
  const value = raw[key];
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    fail(key, `must be an object, got ${JSON.stringify(value)}`, `Write it as a YAML mapping under ${CONFIG_NAMESPACE}:${key}.`);
  }
  return value as Raw;
}

function integer(value: unknown, key: string, min: number, max: number, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    fail(key, `must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`, "Correct the value in the stack's config.");
  }
  return n;
}

function boolean(value: unknown, key: string, fallback: boolean): boolean {
  if (value === undefined || value === null) return fallback;
  if (value === true || value === "true") return true;
  if (value === false || value === "false") return false;
  return fail(key, `must be true or false, got ${JSON.stringify(value)}`, "Correct the value in the stack's config.");
}

/** bulwark:copyRegion: another region than the stack's, and (for now) public networking only. */
function copyRegion(raw: Raw, home: string, network: NetworkMode): string | undefined {
  if (raw.copyRegion === undefined || raw.copyRegion === null || raw.copyRegion === "") return undefined;
  const copy = region(raw.copyRegion, "copyRegion");
  if (copy === home) fail("copyRegion", `is the stack's own region ${home}`, "Name the paired region (e.g. northeurope for westeurope), so a regional outage leaves the copy readable.");
  if (network === "private") {
    fail("copyRegion", "is not available with bulwark:network private yet", "The copy vault would need private endpoints in the paired region; use public networking (RBAC-only data access) or remove copyRegion.");
  }
  return copy;
}

function region(value: unknown, key: string): string {
  if (typeof value !== "string" || value === "") {
    fail(key, "is not set", "Set it to an Azure region's programmatic name, e.g. westeurope (see `az account list-locations -o table`).");
  }
  const normalized = value.toLowerCase().replace(/\s+/g, "");
  if (!AZURE_REGIONS.has(normalized)) {
    fail(key, `names an unknown Azure region "${value}"`, "Use a programmatic region name such as westeurope or eastus2 (see `az account list-locations -o table`).");
  }
  return normalized;
}

function customerName(raw: Raw): string {
  const name = requireString(raw, "customer", "Set it to a short lowercase name, e.g. `pulumi config set bulwark:customer contoso`.");
  // No "--": Container Apps names, which the customer name starts, may not hold one (infra/naming.ts).
  if (!/^[a-z][a-z0-9-]{1,18}[a-z0-9]$/.test(name) || name.includes("--")) {
    fail("customer", `"${name}" is not a valid customer name`, "Use 3 to 20 lowercase letters, digits or single hyphens, starting with a letter and ending with a letter or digit; it becomes part of Azure resource names.");
  }
  return name;
}

function image(raw: Raw): string {
  const value = requireString(raw, "image", "Set it to the runtime image, e.g. `pulumi config set bulwark:image myregistry.azurecr.io/bulwark:1.0.0`.");
  // registry/repository[:tag][@digest]; a tag or digest pins what runs, never an implicit :latest.
  if (!/^[a-z0-9.-]+(:\d+)?\/[a-z0-9._\/-]+(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$/.test(value) || !/[:@][^/]*$/.test(value)) {
    fail("image", `"${value}" is not a pinned image reference`, "Use registry/repository:tag or registry/repository@sha256:digest, e.g. myregistry.azurecr.io/bulwark:1.0.0.");
  }
  if (/:latest$/.test(value)) fail("image", "uses the :latest tag", "Pin a version tag or a digest so every region runs the same code.");
  return value;
}

/** An Azure Container Registry the jobs pull the image from, as their own identities. */
export interface ContainerRegistry {
  /** The login server the image names: `<registry name>.azurecr.io`, all lowercase. */
  server: string;
  /** The registry's ARM id: where each job identity gets AcrPull. */
  resourceId: string;
}

/** A registry's ARM id; registry names are 5-50 alphanumerics (resource-name-rules.md, Microsoft.ContainerRegistry). */
const REGISTRY_ID = /^\/subscriptions\/[0-9a-f-]{36}\/resourceGroups\/[-\w.()]{1,90}\/providers\/Microsoft\.ContainerRegistry\/registries\/([a-zA-Z0-9]{5,50})$/i;

/**
 * bulwark:registryId, required when the image is in an Azure Container Registry: a registry's host
 * is `<registry name>.azurecr.io`, all lowercase (MicrosoftDocs/azure-docs
 * articles/container-registry/container-registry-concepts.md, "Content addressable elements of an
 * artifact"), so the id must name that registry. Only the public cloud's azurecr.io is recognised.
 */
function containerRegistry(raw: Raw, imageReference: string): ContainerRegistry | undefined {
  const server = imageReference.split("/")[0];
  const inAcr = server.endsWith(".azurecr.io");
  const registryName = inAcr ? server.slice(0, -".azurecr.io".length) : "<name>";
  const example = `/subscriptions/<guid>/resourceGroups/<group>/providers/Microsoft.ContainerRegistry/registries/${registryName}`;
  const value = raw.registryId;
  if (value === undefined || value === null || value === "") {
    if (inAcr) {
      fail("registryId", `is not set, but bulwark:image is in the Azure Container Registry ${server}`, `Set it to that registry's resource id (${example}, from \`az acr show -n ${registryName} --query id\`): each job pulls as its own identity, which gets AcrPull there.`);
    }
    return undefined;
  }
  const match = typeof value === "string" ? REGISTRY_ID.exec(value.trim()) : null;
  if (!match) fail("registryId", `${JSON.stringify(value)} is not the resource id of an Azure Container Registry`, `Write ${example} (\`az acr show -n <name> --query id\`).`);
  if (!inAcr) {
    fail("registryId", `is set, but bulwark:image (${imageReference}) is not in an Azure Container Registry (*.azurecr.io)`, "Remove bulwark:registryId for a public image, or point bulwark:image at the registry.");
  }
  if (`${match[1].toLowerCase()}.azurecr.io` !== server) {
    fail("registryId", `names the registry ${match[1]}, but bulwark:image is pulled from ${server}`, `Use the id of the registry whose login server is ${server}.`);
  }
  return { server, resourceId: (value as string).trim() };
}

/**
 * CPU and memory pairs Container Apps runs in a Consumption plan environment (what
 * components/agent-environment.ts creates without workload profiles): memory twice the CPU, CPU
 * 0.25 to 2 in steps of 0.25 (MicrosoftDocs/azure-docs articles/container-apps/containers.md, the
 * allocations table, "Consumption plan" column). The Consumption workload profile also runs
 * 2.25-4 CPU; held to the smaller table, which both kinds of environment run.
 */
export const CONTAINER_ALLOCATIONS: readonly { cpu: number; memoryGi: number }[] = [1, 2, 3, 4, 5, 6, 7, 8].map((quarters) => ({ cpu: quarters / 4, memoryGi: quarters / 2 }));

function requireAllocation(cpu: number, memory: string): void {
  const memoryGi = Number(memory.slice(0, -"Gi".length));
  if (CONTAINER_ALLOCATIONS.some((a) => a.cpu === cpu && a.memoryGi === memoryGi)) return;
  const pairs = CONTAINER_ALLOCATIONS.map((a) => `${a.cpu}/${a.memoryGi}Gi`).join(", ");
  fail("worker.cpu", `and worker.memory (${cpu} CPU, ${memory}) are not a pair Container Apps runs`, `Use one of ${pairs}: memory is twice the CPU, from 0.25 to 2 CPU in steps of 0.25 (the Consumption plan's allocations).`);
}

const CRON_FIELDS: readonly [string, number, number][] = [
  ["minute", 0, 59],
  ["hour", 0, 23],
  ["day of month", 1, 31],
  ["month", 1, 12],
  ["day of week", 0, 6],
];

/** Container Apps jobs take five-field cron in UTC. */
export function validateCron(expression: string): string | undefined {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 5) return `has ${fields.length} fields, a cron expression has 5 (minute hour day-of-month month day-of-week)`;
  for (let i = 0; i < 5; i++) {
    const [label, min, max] = CRON_FIELDS[i];
    for (const part of fields[i].split(",")) {
      const match = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
      if (!match) return `has an invalid ${label} field "${fields[i]}"`;
      const numbers = [match[2], match[3]].filter((n) => n !== undefined).map(Number);
      if (numbers.some((n) => n < min || n > max)) return `has ${/^[aeiouh]/.test(label) ? "an" : "a"} ${label} outside ${min}-${max} in "${fields[i]}"`;
      if (numbers.length === 2 && numbers[0] > numbers[1]) return `has a backwards ${label} range "${part}"`;
      if (match[4] !== undefined && Number(match[4]) === 0) return `has a zero step in "${part}"`;
    }
  }
  return undefined;
}

function cron(raw: Raw, key: string, fallback: string): string {
  const value = raw[key] ?? fallback;
  if (typeof value !== "string") fail(key, "must be a cron expression string", 'Quote it, e.g. "0 2 * * *".');
  const problem = validateCron(value);
  if (problem) fail(key, `"${value}" ${problem}`, 'Use five-field cron in UTC, e.g. "0 2 * * *" for 02:00 every day.');
  return value.trim();
}

/** Days in an ISO 8601 duration of years, months and days (Key Vault's rotation policy units). */
export function durationDays(duration: string): number | undefined {
  const match = /^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$/.exec(duration);
  if (!match || duration === "P") return undefined;
  return Number(match[1] ?? 0) * 365 + Number(match[2] ?? 0) * 30 + Number(match[3] ?? 0);
}

function keyConfig(raw: Raw, network: NetworkMode): KeyConfig {
  const key = optionalObject(raw, "key");
  const size = integer(key.size, "key.size", 2048, 4096, 3072);
  if (size !== 2048 && size !== 3072 && size !== 4096) fail("key.size", `must be 2048, 3072 or 4096, got ${size}`, "Pick an RSA key size Key Vault supports; 3072 is the default.");
  const rotationPeriod = key.rotationPeriod ?? "P90D";
  const expiresAfter = key.expiresAfter ?? "P1Y";
  const fix = "Write an ISO 8601 duration in years, months or days, e.g. P90D or P1Y.";
  if (typeof rotationPeriod !== "string") fail("key.rotationPeriod", "must be a string", fix);
  if (typeof expiresAfter !== "string") fail("key.expiresAfter", "must be a string", fix);
  const rotationDays = durationDays(rotationPeriod);
  const expiryDays = durationDays(expiresAfter);
  if (rotationDays === undefined) fail("key.rotationPeriod", `"${rotationPeriod}" is not a duration`, fix);
  if (expiryDays === undefined) fail("key.expiresAfter", `"${expiresAfter}" is not a duration`, fix);
  if (rotationDays < 7) fail("key.rotationPeriod", `${rotationPeriod} is shorter than Key Vault's minimum of 7 days`, "Use P7D or longer.");
  if (expiryDays < rotationDays + 28) {
    fail("key.expiresAfter", `${expiresAfter} leaves less than 28 days between rotation (${rotationPeriod}) and expiry`, "Make the expiry at least 28 days longer than the rotation period, so a new version exists before the old one expires.");
  }
  return { size, rotationPeriod, expiresAfter, publicNetworkAccess: keyPublicNetworkAccess(key.publicNetworkAccess, network) };
}

function protectedScopes(raw: Raw): ProtectedScope[] {
  const list = raw.protect;
  const example = "List them as `bulwark:protect: [{subscriptionId: <guid>, resourceGroup: <name>, region: westeurope}]` (omit resourceGroup to protect a whole subscription).";
  if (!Array.isArray(list) || list.length === 0) fail("protect", "lists no subscription or resource group to protect", example);
  const seen = new Set<string>();
  return list.map((entry: unknown, i: number) => {
    const key = `protect[${i}]`;
    if (typeof entry !== "object" || entry === null) fail(key, "must be a mapping", example);
    const e = entry as Raw;
    if (typeof e.subscriptionId !== "string" || !GUID.test(e.subscriptionId)) {
      fail(`${key}.subscriptionId`, `must be a subscription id (a GUID), got ${JSON.stringify(e.subscriptionId)}`, "Copy it from `az account list -o table`.");
    }
    let resourceGroup: string | undefined;
    if (e.resourceGroup !== undefined) {
      if (typeof e.resourceGroup !== "string" || !/^[-\w._()]{1,90}$/.test(e.resourceGroup) || e.resourceGroup.endsWith(".")) {
        fail(`${key}.resourceGroup`, `is not a valid resource group name: ${JSON.stringify(e.resourceGroup)}`, "Use the resource group's exact name (1-90 letters, digits, - _ . ( ), not ending in a period).");
      }
      resourceGroup = e.resourceGroup;
    }
    const scope = { subscriptionId: e.subscriptionId.toLowerCase(), resourceGroup, region: region(e.region, `${key}.region`) };
    const id = scopeId(scope).toLowerCase();
    if (seen.has(id)) fail(key, `repeats ${scopeId(scope)}`, "List each scope once.");
    seen.add(id);
    return scope;
  });
}

/** A resource group where restores may create resources (the restore identity's role is assigned there alone). */
export interface RestoreResourceGroup {
  subscriptionId: string;
  resourceGroup: string;
  /** The region whose agents restore into it. */
  region: string;
}

function restoreResourceGroups(raw: Raw): RestoreResourceGroup[] {
  const list = raw.restoreResourceGroups ?? [];
  const example = "List them as `bulwark:restoreResourceGroups: [{subscriptionId: <guid>, resourceGroup: <name>, region: westeurope}]`; restores create disks, VMs and databases only there.";
  if (!Array.isArray(list)) fail("restoreResourceGroups", "must be a list", example);
  const seen = new Set<string>();
  return list.map((entry: unknown, i: number) => {
    const key = `restoreResourceGroups[${i}]`;
    if (typeof entry !== "object" || entry === null) fail(key, "must be a mapping", example);
    const e = entry as Raw;
    if (typeof e.subscriptionId !== "string" || !GUID.test(e.subscriptionId)) {
      fail(`${key}.subscriptionId`, `must be a subscription id (a GUID), got ${JSON.stringify(e.subscriptionId)}`, "Copy it from `az account list -o table`.");
    }
    if (typeof e.resourceGroup !== "string" || !/^[-\w._()]{1,90}$/.test(e.resourceGroup) || e.resourceGroup.endsWith(".")) {
      fail(`${key}.resourceGroup`, `is not a valid resource group name: ${JSON.stringify(e.resourceGroup)}`, "Name an existing resource group (1-90 letters, digits, - _ . ( ), not ending in a period); a whole subscription is not accepted.");
    }
    const group = { subscriptionId: e.subscriptionId.toLowerCase(), resourceGroup: e.resourceGroup, region: region(e.region, `${key}.region`) };
    const id = scopeId(group).toLowerCase();
    if (seen.has(id)) fail(key, `repeats ${scopeId(group)}`, "List each resource group once.");
    seen.add(id);
    return group;
  });
}

/**
 * The restore role may create and delete disks, VMs and databases where it is assigned: a restore
 * group that is itself a protected resource group would put what Bulwark protects in its reach. (A
 * restore group inside a protected subscription is allowed: the role reaches that group alone.)
 */
function restoreGroupsApart(groups: RestoreResourceGroup[], protect: ProtectedScope[]): RestoreResourceGroup[] {
  groups.forEach((group, i) => {
    const id = scopeId(group).toLowerCase();
    const same = protect.find((scope) => scope.resourceGroup !== undefined && scopeId(scope).toLowerCase() === id);
    if (same) {
      fail(
        `restoreResourceGroups[${i}]`,
        `${scopeId(group)} is also a protected resource group (bulwark:protect)`,
        "Restores may create and delete there, so name a dedicated restore group that holds nothing you protect.",
      );
    }
  });
  return groups;
}

export function scopeId(scope: Pick<ProtectedScope, "subscriptionId" | "resourceGroup">): string {
  return scope.resourceGroup === undefined
    ? `/subscriptions/${scope.subscriptionId}`
    : `/subscriptions/${scope.subscriptionId}/resourceGroups/${scope.resourceGroup}`;
}

export function parseCustomerConfig(raw: Raw): CustomerConfig {
  const tenantId = requireString(raw, "tenantId", "Set it to the customer's Entra tenant id (`az account show --query tenantId`).");
  if (!GUID.test(tenantId)) fail("tenantId", `"${tenantId}" is not a tenant id (a GUID)`, "Copy it from `az account show --query tenantId`.");
  const subscriptionId = requireString(raw, "subscriptionId", "Set it to the subscription that holds Bulwark's customer-side resources.");
  if (!GUID.test(subscriptionId)) fail("subscriptionId", `"${subscriptionId}" is not a subscription id (a GUID)`, "Copy it from `az account list -o table`.");
  const network = parseNetworkMode(raw.network);
  return {
    kind: "customer",
    customer: customerName(raw),
    tenantId: tenantId.toLowerCase(),
    subscriptionId: subscriptionId.toLowerCase(),
    homeRegion: region(raw.homeRegion, "homeRegion"),
    protect: protectedScopes(raw),
    restoreResourceGroups: restoreGroupsApart(restoreResourceGroups(raw), protectedScopes(raw)),
    image: image(raw),
    registry: containerRegistry(raw, image(raw)),
    bridgeSchedule: cron(raw, "bridgeSchedule", "0 * * * *"),
    key: keyConfig(raw, network),
    keyVaultRecover: boolean(raw.keyVaultRecover, "keyVaultRecover", false),
    network,
    console: consoleConfig(raw, network),
  };
}

/**
 * bulwark:console: `{regionStack: org/project/stack}` deploys the console; absent, false or
 * `{enabled: false}` turns it off. Public networking only for now: the console's environment has
 * no private endpoints into a private region's storage.
 */
function consoleConfig(raw: Raw, network: NetworkMode): ConsoleConfig | undefined {
  const value = raw.console;
  if (value === undefined || value === null || value === false || value === "false") return undefined;
  const example = "Write `bulwark:console: {regionStack: myorg/bulwark/contoso-westeurope}` (deploy that region stack first), or remove it for no console.";
  if (typeof value !== "object" || Array.isArray(value)) fail("console", `must be a mapping or false, got ${JSON.stringify(value)}`, example);
  const settings = value as Raw;
  if (!boolean(settings.enabled, "console.enabled", true)) return undefined;
  const regionStack = settings.regionStack;
  if (typeof regionStack !== "string" || !/^[\w.-]+\/[\w.-]+\/[\w.-]+$/.test(regionStack)) {
    fail("console.regionStack", `${JSON.stringify(regionStack)} is not a fully qualified stack name`, example);
  }
  if (network === "private") {
    fail("console", "is not available with bulwark:network private yet", "The console's environment has no private endpoints into the region's storage: remove bulwark:console, or run `bulwark console` where the private network reaches.");
  }
  return { regionStack };
}

function secretValue(raw: Raw, key: string, secretKeys: ReadonlySet<string>): SecretValue | undefined {
  const value = raw[key];
  if (value === undefined || value === null || value === "") return undefined;
  if (!secretKeys.has(key)) {
    fail(key, "is stored in plain text", `It holds a credential: remove it and set it again with \`pulumi config set --secret ${CONFIG_NAMESPACE}:${key} <value>\`.`);
  }
  if (typeof value !== "string") fail(key, "must be a string", "Set it as a single string secret.");
  return { secret: true, value };
}

const DAY_MS = 86_400_000;

function backupEvery(raw: Raw): { text: string; ms: number } {
  const value = raw.backupEvery ?? "4h";
  const fix = 'Write a duration in minutes, hours, days or weeks, e.g. "4h", "30m" or "1d" (how often each item is backed up; the scheduler\'s tick is bulwark:schedule).';
  if (typeof value !== "string") fail("backupEvery", `must be a string, got ${JSON.stringify(value)}`, fix);
  const ms = parseDuration(value);
  if (ms === undefined) fail("backupEvery", `"${value}" is not a duration`, fix);
  return { text: value.trim(), ms };
}

function protectTag(raw: Raw): string {
  const value = raw.protectTag ?? "bulwark-protect=true";
  const fix = 'Write the tag as key=value, e.g. "bulwark-protect=true"; Azure tag names cannot contain < > % & \\ ? /.';
  if (typeof value !== "string") fail("protectTag", `must be a string, got ${JSON.stringify(value)}`, fix);
  const text = value.trim();
  const eq = text.indexOf("=");
  const name = text.slice(0, eq).trim();
  const tagValue = text.slice(eq + 1).trim();
  if (eq <= 0 || name === "" || tagValue === "" || /[<>%&\\?\/]/.test(name) || name.length > 512 || tagValue.length > 256) {
    fail("protectTag", `"${text}" is not a tag`, fix);
  }
  return `${name}=${tagValue}`;
}

function protectResources(raw: Raw): string[] {
  const list = raw.protectResources;
  if (list === undefined || list === null) return [];
  const fix = "List ARM ids of VMs, managed disks or Azure SQL databases, e.g. /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>.";
  if (!Array.isArray(list)) fail("protectResources", "must be a list of resource ids", fix);
  return list.map((id: unknown, i: number) => {
    if (typeof id !== "string" || !kindOfResourceId(id.trim())) {
      fail(`protectResources[${i}]`, `${JSON.stringify(id)} is not the ARM id of a VM, managed disk or Azure SQL database`, fix);
    }
    return id.trim();
  });
}

function retentionRule(retention: Raw, pointsDays: number, everyMs: number): RetentionRule {
  const rule: RetentionRule = {
    // Every point of the last day survives prune, whatever its bucket.
    last: integer(retention.last, "retention.last", 0, 10000, Math.ceil(DAY_MS / everyMs)),
    daily: pointsDays,
  };
  for (const kind of ["hourly", "weekly", "monthly", "yearly"] as const) {
    const n = integer(retention[kind], `retention.${kind}`, 0, 10000, 0);
    if (n > 0) rule[kind] = n;
  }
  if (rule.last === 0) delete rule.last;
  return rule; // never empty: pointsDays is at least 1
}

function sqlAdmin(raw: Raw, secretKeys: ReadonlySet<string>): SqlAdminConfig | undefined {
  const login = secretValue(raw, "sqlAdminLogin", secretKeys);
  const password = secretValue(raw, "sqlAdminPassword", secretKeys);
  if (login === undefined && password === undefined) return undefined;
  if (login === undefined || password === undefined) {
    const missing = login === undefined ? "sqlAdminLogin" : "sqlAdminPassword";
    fail(missing, "is not set, but its other half is", `Azure SQL export and import need both: \`pulumi config set --secret ${CONFIG_NAMESPACE}:${missing} <value>\`.`);
  }
  return { login, password };
}

export function parseRegionConfig(raw: Raw, secretKeys: ReadonlySet<string> = new Set()): RegionConfig {
  const customerStack = requireString(raw, "customerStack", "Set it to the customer stack's name, e.g. `pulumi config set bulwark:customerStack myorg/bulwark/contoso`.");
  if (!/^[\w.-]+\/[\w.-]+\/[\w.-]+$/.test(customerStack)) {
    fail("customerStack", `"${customerStack}" is not a fully qualified stack name`, "Write organization/project/stack, e.g. myorg/bulwark/contoso.");
  }
  if (raw.notificationWebhook !== undefined && raw.notificationWebhook !== null && raw.notificationWebhook !== "") {
    fail("notificationWebhook", "is not used: the agents send no notifications (job reports are in the fleet's reports table and the job logs)", `Remove it with \`pulumi config rm ${CONFIG_NAMESPACE}:notificationWebhook\`.`);
  }
  const retention = optionalObject(raw, "retention");
  const pointsDays = integer(retention.pointsDays, "retention.pointsDays", 1, 36500, 30);
  const immutabilityDays = integer(retention.immutabilityDays, "retention.immutabilityDays", 1, 146000, pointsDays);
  if (immutabilityDays > pointsDays) {
    fail("retention.immutabilityDays", `(${immutabilityDays}) is longer than retention.pointsDays (${pointsDays})`, "Prune could never delete expired points: keep immutability at or below the retention.");
  }
  const redundancy = raw.redundancy ?? "Standard_ZRS";
  if (typeof redundancy !== "string" || !(REDUNDANCIES as readonly string[]).includes(redundancy)) {
    fail("redundancy", `must be one of ${REDUNDANCIES.join(", ")}, got ${JSON.stringify(redundancy)}`, "Choose it before the first backup: it cannot change afterwards.");
  }
  const worker = optionalObject(raw, "worker");
  const memory = worker.memory ?? "4Gi";
  if (typeof memory !== "string" || !/^\d+(\.\d+)?Gi$/.test(memory)) fail("worker.memory", `must look like 4Gi, got ${JSON.stringify(memory)}`, "Use a Container Apps memory size such as 2Gi or 4Gi.");
  const cpu = worker.cpu === undefined ? 2 : Number(worker.cpu);
  if (!Number.isFinite(cpu) || cpu <= 0 || cpu > 4) fail("worker.cpu", `must be a number of cores from 0.25 to 4, got ${JSON.stringify(worker.cpu)}`, "Use a Container Apps CPU size such as 1 or 2.");
  requireAllocation(cpu, memory);
  const maxJobsPerWorker = integer(worker.maxJobsPerWorker, "worker.maxJobsPerWorker", 1, 64, 2);
  const maxJobsPerRegion = integer(worker.maxJobsPerRegion, "worker.maxJobsPerRegion", 1, 1000, Math.max(8, maxJobsPerWorker));
  if (maxJobsPerWorker > maxJobsPerRegion) {
    fail("worker.maxJobsPerWorker", `(${maxJobsPerWorker}) is more than worker.maxJobsPerRegion (${maxJobsPerRegion})`, "A worker never runs more than the region allows: raise maxJobsPerRegion or lower maxJobsPerWorker.");
  }
  const every = backupEvery(raw);
  return {
    kind: "region",
    customer: customerName(raw),
    customerStack,
    region: region(raw.region, "region"),
    image: image(raw),
    registry: containerRegistry(raw, image(raw)),
    schedule: cron(raw, "schedule", "*/15 * * * *"),
    retention: {
      pointsDays,
      immutabilityDays,
      immutabilityLocked: boolean(retention.immutabilityLocked, "retention.immutabilityLocked", false),
      softDeleteDays: integer(retention.softDeleteDays, "retention.softDeleteDays", 1, 365, 14),
      rule: retentionRule(retention, pointsDays, every.ms),
    },
    redundancy: redundancy as Redundancy,
    worker: {
      replicaTimeoutSeconds: integer(worker.replicaTimeoutSeconds, "worker.replicaTimeoutSeconds", 60, 86400, 4 * 3600),
      replicaRetryLimit: integer(worker.replicaRetryLimit, "worker.replicaRetryLimit", 0, 10, 2),
      maxExecutions: integer(worker.maxExecutions, "worker.maxExecutions", 1, 100, 10),
      cpu,
      memory,
      maxJobsPerWorker,
      maxJobsPerRegion,
    },
    policy: { every: every.text, tag: protectTag(raw), resources: protectResources(raw) },
    sqlAdmin: sqlAdmin(raw, secretKeys),
    network: parseNetworkMode(raw.network),
    alerts: parseAlerts(raw.alerts),
    copyRegion: copyRegion(raw, region(raw.region, "region"), parseNetworkMode(raw.network)),
  };
}

/** The pure entry point: `bulwark:*` keys (without the namespace) in, typed config out. */
export function parseStackConfig(raw: Raw, secretKeys: ReadonlySet<string> = new Set()): StackConfig {
  const kind = raw.stackKind;
  if (kind === "customer") return parseCustomerConfig(raw);
  if (kind === "region") return parseRegionConfig(raw, secretKeys);
  return fail("stackKind", kind === undefined ? "is not set" : `must be "customer" or "region", got ${JSON.stringify(kind)}`, "Set `bulwark:stackKind: customer` for the customer's stack, `region` for each region's stack.");
}

/**
 * Raw `bulwark:*` values from Pulumi's flat config map (`project:key` → string, objects as JSON)
 * and the keys that were set as secrets.
 */
export function rawFromPulumiConfig(all: Record<string, string>, isSecret: (fullKey: string) => boolean): { raw: Raw; secretKeys: Set<string> } {
  const raw: Raw = {};
  const secretKeys = new Set<string>();
  const prefix = `${CONFIG_NAMESPACE}:`;
  for (const [fullKey, text] of Object.entries(all)) {
    if (!fullKey.startsWith(prefix)) continue;
    const key = fullKey.slice(prefix.length);
    let value: unknown = text;
    if (/^\s*[[{]/.test(text)) {
      try {
        value = JSON.parse(text);
      } catch {
        value = text;
      }
    }
    raw[key] = value;
    if (isSecret(fullKey)) secretKeys.add(key);
  }
  return { raw, secretKeys };
}
