/**
 * Names Azure needs to be globally unique (storage accounts, key vaults) and names that must not
 * change between runs (role definitions and assignments). Both are derived from stable inputs
 * only, so a second `pulumi up` computes the same names and a replacement reuses them.
 */
import { createHash } from "node:crypto";

/** Lowercase letters and digits only: what storage account and key vault names accept. */
export function alphanumeric(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]/g, "");
}

/** A short suffix that is the same every run for the same inputs (6 hex digits). */
export function stableSuffix(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\u0000")).digest("hex").slice(0, 6);
}

/**
 * A globally unique resource name within `maxLength`: a readable prefix, cut to fit, then the
 * stable suffix. Storage accounts allow 24 lowercase alphanumerics; key vaults 24 characters.
 */
export function globalName(prefix: string, maxLength: number, ...uniqueBy: string[]): string {
  const suffix = stableSuffix(prefix, ...uniqueBy);
  const head = alphanumeric(prefix).slice(0, maxLength - suffix.length);
  return `${head}${suffix}`;
}

/** Name-based UUID (RFC 9562 version 5): role definitions and assignments need GUID names. */
export function deterministicGuid(...parts: string[]): string {
  // The URL namespace from the RFC; any fixed namespace would do, this one is recognisable.
  const namespace = Buffer.from("6ba7b8119dad11d180b400c04fd430c8", "hex");
  const hash = createHash("sha1").update(namespace).update(parts.join("\u0000")).digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Short region codes for names with tight limits (Container Apps jobs: 32 characters). Bulwark's
 * own codes, not Azure's (Azure publishes none): at most 4 characters, one per region in
 * AZURE_REGIONS (test/infra/names.test.ts checks both). Changing one renames, and so replaces,
 * that region's resources.
 */
const REGION_ABBREVIATIONS: Readonly<Record<string, string>> = {
  australiacentral: "auc", australiacentral2: "auc2", australiaeast: "aue", australiasoutheast: "ause",
  austriaeast: "ate", belgiumcentral: "bec", brazilsouth: "brs", brazilsoutheast: "brse",
  canadacentral: "cac", canadaeast: "cae", centralindia: "inc", centralus: "cus", chilecentral: "clc",
  eastasia: "ea", eastus: "eus", eastus2: "eus2", francecentral: "frc", francesouth: "frs",
  germanynorth: "gn", germanywestcentral: "gwc", indonesiacentral: "idc", israelcentral: "ilc",
  italynorth: "itn", japaneast: "jpe", japanwest: "jpw", jioindiacentral: "jic", jioindiawest: "jiw",
  koreacentral: "krc", koreasouth: "krs", malaysiawest: "myw", mexicocentral: "mxc",
  newzealandnorth: "nzn", northcentralus: "ncus", northeurope: "neu", norwayeast: "noe",
  norwaywest: "now", polandcentral: "plc", qatarcentral: "qac", southafricanorth: "san",
  southafricawest: "saw", southcentralus: "scus", southeastasia: "sea", southindia: "ins",
  spaincentral: "esc", swedencentral: "sec", swedensouth: "ses", switzerlandnorth: "chn",
  switzerlandwest: "chw", uaecentral: "uaec", uaenorth: "uaen", uksouth: "uks", ukwest: "ukw",
  westcentralus: "wcus", westeurope: "weu", westindia: "inw", westus: "wus", westus2: "wus2",
  westus3: "wus3",
};

export function regionAbbreviation(region: string): string {
  const abbreviation = REGION_ABBREVIATIONS[region];
  if (abbreviation === undefined) throw new Error(`no abbreviation for region ${region}: add one to REGION_ABBREVIATIONS in infra/naming.ts`);
  return abbreviation;
}

/**
 * `<customer>-<region code>-<role>`: the Azure name of a resource that exists once per customer,
 * region and role. With a 20-character customer and a 4-character code, a role of up to 6
 * characters fits Container Apps' 32 (jobs: sched, worker, prune, bridge); the validator refuses
 * "--" in customer names, which Container Apps names may not contain.
 */
export function regionalName(customer: string, region: string, role: string): string {
  return `${customer}-${regionAbbreviation(region)}-${role}`;
}
