/**
 * Adding a region: a second region stack (Pulumi.dev-northeurope.yaml) adds only region resources,
 * none of the customer's, and nothing that collides with the first region's. Azure's globally
 * unique names are compared across every stack: two customers, three regions.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { exampleConfig } from "./harness.ts";
import { NAMING_RULES } from "./data/azure-naming-rules.ts";
import type { RecordedResource } from "./harness.ts";
import { deployCustomer, deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { validatePolicy } from "../../runtime/policy/policy.ts";

/** What only a customer stack creates: the key vault and key, the roles, the enterprise app, the bridge. */
const CUSTOMER_ONLY = /^(azure-native:keyvault:|azure-native:authorization:RoleDefinition$|azuread:|bulwark:customer:)/;

/**
 * The types whose names Azure makes unique beyond a resource group, from A's table of Azure's naming
 * rules (test/infra/data/azure-naming-rules.ts, after MicrosoftDocs/azure-docs
 * articles/azure-resource-manager/management/resource-name-rules.md's "Scope" column): "global"
 * (storage accounts, key vaults) across every stack, "tenant" (role definition and assignment
 * GUIDs) across the stacks of one tenant. Entra objects are left out: Graph names them by ids
 * Graph assigns.
 */
const UNIQUE_IN = (scope: string) => Object.entries(NAMING_RULES).filter(([type, rule]) => rule.scope === scope && type.startsWith("azure-native:")).map(([type]) => type);
const GLOBALLY_UNIQUE = UNIQUE_IN("global");
const TENANT_UNIQUE = UNIQUE_IN("tenant");

/** Each Azure name (what Azure returned as `name`) of `types` held by more than one resource, with who holds it. */
function nameCollisions(stacks: Record<string, RecordedResource[]>, types: string[]): string[] {
  const holders = new Map<string, string[]>();
  for (const [stack, resources] of Object.entries(stacks)) {
    for (const r of resources.filter((r) => types.includes(r.type))) {
      // Azure's names are case-insensitive (resource-name-rules.md, opening paragraph).
      const name = `${String(r.state.name).toLowerCase()}`;
      holders.set(name, [...(holders.get(name) ?? []), `${stack}: ${r.name}`]);
    }
  }
  return [...holders].filter(([, who]) => who.length > 1).map(([name, who]) => `${name} held by ${who.join(" and ")}`);
}
const globalNameCollisions = (stacks: Record<string, RecordedResource[]>) => nameCollisions(stacks, GLOBALLY_UNIQUE);

const stacks: Record<string, RecordedResource[]> = {};
let customer: RecordedResource[];
let west: RecordedResource[];
let north: RecordedResource[];

/** A third region for contoso, and a second customer with its own subscription and tenant. */
const SWEDEN_SUBSCRIPTION = "77777777-8888-9999-0000-111111111111";
const FABRIKAM = { subscription: "22222222-3333-4444-5555-666666666666", tenant: "1b2c3d4e-5f60-7189-abcd-ef0123456780" };

beforeAll(async () => {
  customer = (await deployExampleCustomer()).resources;
  west = (await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"))).resources;
  north = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml"))).resources;
  Object.assign(stacks, { "contoso": customer, "contoso-westeurope": west, "contoso-northeurope": north });
  // contoso again, now also protecting a subscription in swedencentral, and that region's stack.
  const protect = [...(exampleConfig("Pulumi.dev.yaml").raw.protect as object[]), { subscriptionId: SWEDEN_SUBSCRIPTION, region: "swedencentral" }];
  await deployCustomer({ protect });
  stacks["contoso-swedencentral"] = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml", { region: "swedencentral" }))).resources;
  // fabrikam, in westeurope and northeurope.
  stacks.fabrikam = (
    await deployCustomer({
      customer: "fabrikam",
      tenantId: FABRIKAM.tenant,
      subscriptionId: FABRIKAM.subscription,
      protect: [
        { subscriptionId: FABRIKAM.subscription, region: "westeurope" },
        { subscriptionId: FABRIKAM.subscription, resourceGroup: "fabrikam-dr", region: "northeurope" },
      ],
    })
  ).resources;
  stacks["fabrikam-westeurope"] = (await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml", { customer: "fabrikam" }))).resources;
  stacks["fabrikam-northeurope"] = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml", { customer: "fabrikam" }))).resources;
});

describe("a second region", () => {
  it("adds only region resources, in its own region", () => {
    expect(north.length).toBeGreaterThan(10);
    for (const r of north) expect(CUSTOMER_ONLY.test(r.type), `${r.type} ${r.name}`).toBe(false);
    // Non-regional resources (action groups, DNS zones) live in location "global" in Azure's REST examples.
    const regional = north.filter((r) => r.inputs.location !== undefined && String(r.inputs.location).toLowerCase() !== "global");
    for (const r of regional) expect(r.inputs.location, r.name).toBe("northeurope");
  });

  it("creates the same kinds of resources as the first region, under Pulumi names that do not collide", () => {
    // Role assignments differ with the number of protected scopes in each region; nothing else does.
    const kinds = (rs: RecordedResource[]) => rs.map((r) => r.type).filter((t) => t !== "azure-native:authorization:RoleAssignment").sort();
    expect(kinds(north)).toEqual(kinds(west));
    const urns = new Set([...customer, ...west].map((r) => r.urn));
    for (const r of north) expect(urns.has(r.urn), r.urn).toBe(false);
  });

  it("gives every storage account and key vault a name no other stack uses: two customers, three regions", () => {
    expect(Object.keys(stacks)).toHaveLength(7);
    const counted = Object.values(stacks).flat().filter((r) => GLOBALLY_UNIQUE.includes(r.type));
    // Two accounts per region stack (transient, isolated) and one key vault per customer stack.
    expect(counted).toHaveLength(5 * 2 + 2);
    expect(globalNameCollisions(stacks)).toEqual([]);
  });

  it("gives every role definition and assignment a GUID no other stack of the same tenant uses", () => {
    expect(TENANT_UNIQUE).toEqual(expect.arrayContaining(["azure-native:authorization:RoleDefinition", "azure-native:authorization:RoleAssignment"]));
    const ofTenant = (customer: string) => Object.fromEntries(Object.entries(stacks).filter(([name]) => name.startsWith(customer)));
    for (const customer of ["contoso", "fabrikam"]) expect(nameCollisions(ofTenant(customer), TENANT_UNIQUE), customer).toEqual([]);
  });

  it("catches two vault accounts under one global name, though their ids differ by resource group", () => {
    const mutated = structuredClone(stacks);
    const vaultOf = (stack: string) => mutated[stack].find((r) => r.type === "azure-native:storage:StorageAccount" && r.inputs.tags?.["bulwark-storage"] === "isolated")!;
    const [westVault, northVault] = [vaultOf("contoso-westeurope"), vaultOf("contoso-northeurope")];
    northVault.state.name = westVault.state.name;
    northVault.state.id = northVault.state.id.replace(/[^/]+$/, westVault.state.name);
    expect(northVault.state.id).not.toBe(westVault.state.id);
    expect(globalNameCollisions(mutated)).toEqual([`${westVault.state.name} held by contoso-westeurope: ${westVault.name} and contoso-northeurope: ${northVault.name}`]);
  });

  it("protects only the northeurope scope and restores only into its restore group, with the customer's roles", () => {
    const scopes = north.filter((r) => r.type === "azure-native:authorization:RoleAssignment").map((r) => r.inputs.scope as string);
    const protectedScopes = scopes.filter((s) => /^\/subscriptions\/[^/]+(\/resourceGroups\/[^/]+)?$/.test(s));
    expect(new Set(protectedScopes)).toEqual(new Set(["/subscriptions/66666666-7777-8888-9999-000000000000", "/subscriptions/66666666-7777-8888-9999-000000000000/resourceGroups/contoso-restores-ne"]));
    expect(north.some((r) => r.type === "azure-native:authorization:RoleDefinition")).toBe(false);
  });

  it("runs its own fleet and policy: its own queue, its own vault, the whole protected subscription", () => {
    const jobs = north.filter((r) => r.type === "azure-native:app:Job");
    const env = (command: string) => Object.fromEntries(jobs.find((j) => j.inputs.template.containers[0].args[1] === command)!.inputs.template.containers[0].env.map((e: any) => [e.name, e.value]));
    const worker = jobs.find((j) => j.inputs.template.containers[0].args[1] === "worker")!;
    expect(worker.inputs.configuration.eventTriggerConfig.scale.rules[0].metadata.queueName).toBe("bulwark-work-northeurope");
    expect(env("schedule").BULWARK_AGENT_REGIONS).toBe("northeurope");
    const [policy] = (JSON.parse(env("schedule").BULWARK_POLICY_JSON) as unknown[]).map((d, i) => validatePolicy(d, `BULWARK_POLICY_JSON[${i}]`));
    const vault = north.find((r) => r.type === "azure-native:storage:StorageAccount" && r.inputs.tags["bulwark-storage"] === "isolated")!;
    expect(policy.name).toBe("contoso-northeurope");
    expect(policy.vault).toBe(`https://${vault.inputs.accountName}.blob.core.windows.net/vault`);
    expect(new Set(policy.protect.tagged.flatMap((t) => t.subscriptions))).toEqual(new Set(["66666666-7777-8888-9999-000000000000"]));
    const westTransient = west.find((r) => r.type === "azure-native:storage:StorageAccount" && r.inputs.tags["bulwark-storage"] === "transient")!;
    expect(env("worker").BULWARK_FLEET_TABLE_ENDPOINT).not.toContain(westTransient.inputs.accountName);
  });
});
