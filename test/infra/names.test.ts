/**
 * Every Azure name the program sets, checked against Azure's published naming rules
 * (test/infra/data/azure-naming-rules.ts, each row citing its source): with the example config,
 * and with the longest customer name the validator accepts (20 characters) in the three longest
 * region names it accepts. A resource type without a row fails, and so does a resource Pulumi
 * would auto-name (no explicit name input): Pulumi's random suffix is what broke the 32-character
 * Container Apps limit before.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { clearRecorded, exampleConfig, resolveAll, setCustomerStackOutputs, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { AZURE_REGIONS, parseCustomerConfig, parseRegionConfig } from "../../infra/config.ts";
import { customerStack } from "../../infra/customer-stack.ts";
import { regionAbbreviation } from "../../infra/naming.ts";
import { NAMING_RULES, isAzureResourceType } from "./data/azure-naming-rules.ts";
import type { NamingRule } from "./data/azure-naming-rules.ts";

const SUB = "11111111-2222-3333-4444-555555555555";
/** 20 characters: the longest customer name the validator accepts. */
const LONGEST_CUSTOMER = "fabrikam-holdings-99";
const LONGEST_REGIONS = [...AZURE_REGIONS].sort((a, b) => b.length - a.length || a.localeCompare(b)).slice(0, 3);

interface Deployment {
  label: string;
  resources: RecordedResource[];
}

async function deployCustomer(raw: Record<string, unknown>): Promise<RecordedResource[]> {
  clearRecorded();
  const outputs = await resolveAll(customerStack(parseCustomerConfig(raw)));
  const resources = await settled();
  setCustomerStackOutputs(outputs);
  return resources;
}

/** The example customer and its two region stacks. */
async function exampleDeployments(): Promise<Deployment[]> {
  const customer = await deployExampleCustomer();
  const regions = [];
  for (const file of ["Pulumi.dev-westeurope.yaml", "Pulumi.dev-northeurope.yaml"]) {
    regions.push({ label: `example ${file}`, resources: (await deployRegion(exampleRegionConfig(file))).resources });
  }
  return [{ label: "example customer", resources: customer.resources }, ...regions];
}

/** A 20-character customer whose home and protected regions are the longest region names. */
async function longestDeployments(network: "public" | "private" = "public"): Promise<Deployment[]> {
  const raw = {
    ...exampleConfig("Pulumi.dev.yaml").raw,
    network,
    customer: LONGEST_CUSTOMER,
    homeRegion: LONGEST_REGIONS[0],
    protect: LONGEST_REGIONS.map((region, i) => ({ subscriptionId: SUB, resourceGroup: `app-${i}`, region })),
  };
  const deployments = [{ label: `${LONGEST_CUSTOMER} customer`, resources: await deployCustomer(raw) }];
  for (const region of LONGEST_REGIONS) {
    const config = parseRegionConfig({ ...exampleConfig("Pulumi.dev-westeurope.yaml").raw, network, customer: LONGEST_CUSTOMER, region });
    deployments.push({ label: `${LONGEST_CUSTOMER} ${region} (${network})`, resources: (await deployRegion(config)).resources });
  }
  return deployments;
}

/** What a rule's uniqueness scope is, for one resource: names must differ within it. */
function scopeOf(rule: NamingRule, inputs: Record<string, any>): string {
  switch (rule.scope) {
    case "global":
    case "tenant":
    case "subscription":
      return rule.scope;
    case "resource group":
      return `rg:${inputs.resourceGroupName}`;
    case "storage account":
      return `account:${inputs.accountName}`;
    case "key vault":
      return `vault:${inputs.vaultName}`;
    case "virtual network":
      return `vnet:${inputs.resourceGroupName}/${inputs.virtualNetworkName}`;
    case "private DNS zone":
      return `zone:${inputs.resourceGroupName}/${inputs.privateZoneName}`;
    case "private endpoint":
      return `endpoint:${inputs.resourceGroupName}/${inputs.privateEndpointName}`;
    case "scope of assignment":
      return `scope:${inputs.scope ?? inputs.resourceUri ?? inputs.resourceName}`;
  }
}

/** Every way the deployments break Azure's rules, one line each. */
function namingProblems(deployments: Deployment[]): string[] {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  for (const { label, resources } of deployments) {
    for (const r of resources.filter((x) => isAzureResourceType(x.type))) {
      const rule = NAMING_RULES[r.type];
      if (!rule) {
        problems.push(`${label}: ${r.type} (${r.name}) has no row in test/infra/data/azure-naming-rules.ts`);
        continue;
      }
      if (rule.nameProperty === null) continue;
      const name = r.inputs[rule.nameProperty];
      if (typeof name !== "string") {
        problems.push(`${label}: ${r.type} ${r.name} sets no ${rule.nameProperty}: Pulumi would auto-name it`);
        continue;
      }
      if (name.length < rule.minLength || name.length > rule.maxLength) {
        problems.push(`${label}: ${rule.azureType} "${name}" is ${name.length} characters, Azure allows ${rule.minLength}-${rule.maxLength} (${rule.source})`);
      }
      if (!rule.pattern.test(name)) problems.push(`${label}: ${rule.azureType} "${name}" breaks "${rule.rule}" (${rule.source})`);
      // Azure names compare case-insensitively (resource-name-rules.md, the note at its top).
      const key = `${rule.azureType}|${scopeOf(rule, r.inputs)}|${name.toLowerCase()}`;
      const other = seen.get(key);
      if (other !== undefined && other !== `${label}/${r.name}`) problems.push(`${label}: ${rule.azureType} "${name}" is also the name of ${other} (unique per ${rule.scope})`);
      seen.set(key, `${label}/${r.name}`);
    }
  }
  return problems;
}

let example: Deployment[];
let longest: Deployment[];
let longestPrivate: Deployment[];

beforeAll(async () => {
  example = await exampleDeployments();
  longest = await longestDeployments();
  longestPrivate = await longestDeployments("private");
});

const jobsOf = (deployments: Deployment[]) => deployments.flatMap((d) => d.resources.filter((r) => r.type === "azure-native:app:Job"));

describe("Azure names", () => {
  it("the three longest region names are what the test deploys to", () => {
    expect(LONGEST_REGIONS.map((r) => r.length)).toEqual([18, 18, 17]);
  });

  it("every resource of the example customer and its regions has an explicit name within Azure's rules, unique in its scope", () => {
    expect(namingProblems(example)).toEqual([]);
  });

  it("a 20-character customer in the three longest regions gets names within Azure's rules, unique in their scope", () => {
    expect(jobsOf(longest).length).toBeGreaterThanOrEqual(10);
    expect(namingProblems(longest)).toEqual([]);
  });

  it("with private networking too (a VNet, private endpoints and DNS zones), the 20-character customer's names are within Azure's rules", () => {
    const types = new Set(longestPrivate.flatMap((d) => d.resources.map((r) => r.type)));
    expect(types).toContain("azure-native:network:PrivateEndpoint");
    expect(namingProblems(longestPrivate)).toEqual([]);
  });

  it("names in all stacks together never repeat where Azure needs them unique (storage accounts and key vaults are global)", () => {
    expect(namingProblems([...example, ...longest])).toEqual([]);
  });

  it("job names say the customer, the region and the role", () => {
    const names = jobsOf(longest).map((j) => j.inputs.jobName).sort();
    const abbreviations = LONGEST_REGIONS.map(regionAbbreviation);
    expect(names).toEqual(
      [
        `${LONGEST_CUSTOMER}-${abbreviations[0]}-bridge`,
        ...abbreviations.flatMap((a) => ["sched", "worker", "prune"].map((role) => `${LONGEST_CUSTOMER}-${a}-${role}`)),
      ].sort(),
    );
  });

  it("every accepted region has its own abbreviation of at most 4 lowercase letters and digits", () => {
    const abbreviations = [...AZURE_REGIONS].map(regionAbbreviation);
    for (const a of abbreviations) expect(a).toMatch(/^[a-z0-9]{2,4}$/);
    expect(new Set(abbreviations).size).toBe(AZURE_REGIONS.size);
  });

  it("the same config gives the same names on the next run (a changed name would replace the resource)", async () => {
    const again = await longestDeployments();
    const names = (ds: Deployment[]) => ds.flatMap((d) => d.resources.map((r) => `${r.type} ${JSON.stringify(r.inputs[NAMING_RULES[r.type]?.nameProperty ?? ""] ?? null)}`)).sort();
    expect(names(again)).toEqual(names(longest));
  });
});
