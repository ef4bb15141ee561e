/**
 * Adding a region: a second region stack (Pulumi.dev-northeurope.yaml) adds only region resources,
 * none of the customer's, and nothing that collides with the first region's.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { validatePolicy } from "../../runtime/policy/policy.ts";

const REGION_TYPES = new Set([
  "pulumi:pulumi:StackReference",
  "azure-native:resources:ResourceGroup",
  "azure-native:storage:StorageAccount",
  "azure-native:storage:ManagementPolicy",
  "azure-native:storage:BlobContainer",
  "azure-native:storage:BlobServiceProperties",
  "azure-native:storage:Queue",
  "azure-native:storage:Table",
  "azure-native:managedidentity:UserAssignedIdentity",
  "azure-native:authorization:RoleAssignment",
  "azure-native:operationalinsights:Workspace",
  "azure-native:app:ManagedEnvironment",
  "azure-native:app:Job",
  "bulwark:region:TransientStorage",
  "bulwark:region:IsolatedStorage",
  "bulwark:region:RegionAgent",
  "bulwark:agent:AgentEnvironment",
]);

let customer: RecordedResource[];
let west: RecordedResource[];
let north: RecordedResource[];

beforeAll(async () => {
  customer = (await deployExampleCustomer()).resources;
  west = (await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"))).resources;
  north = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml"))).resources;
});

describe("a second region", () => {
  it("adds only region resources, in its own region", () => {
    expect(north.length).toBeGreaterThan(10);
    for (const r of north) expect(REGION_TYPES.has(r.type), `${r.type} ${r.name}`).toBe(true);
    for (const r of north.filter((r) => r.inputs.location !== undefined)) expect(r.inputs.location, r.name).toBe("northeurope");
  });

  it("creates the same kinds of resources as the first region, under names that do not collide", () => {
    // Role assignments differ with the number of protected scopes in each region; nothing else does.
    const kinds = (rs: RecordedResource[]) => rs.map((r) => r.type).filter((t) => t !== "azure-native:authorization:RoleAssignment").sort();
    expect(kinds(north)).toEqual(kinds(west));
    const urns = new Set([...customer, ...west].map((r) => r.urn));
    for (const r of north) expect(urns.has(r.urn), r.urn).toBe(false);
    const azureNames = (rs: RecordedResource[]) => new Set(rs.map((r) => r.id));
    const earlier = azureNames([...customer, ...west]);
    for (const r of north) expect(earlier.has(r.id), r.id).toBe(false);
  });

  it("protects only the northeurope scope, with the customer's single backup role", () => {
    const scopes = north.filter((r) => r.type === "azure-native:authorization:RoleAssignment").map((r) => r.inputs.scope as string);
    const protectedScopes = scopes.filter((s) => /^\/subscriptions\/[^/]+(\/resourceGroups\/[^/]+)?$/.test(s));
    expect(new Set(protectedScopes)).toEqual(new Set(["/subscriptions/66666666-7777-8888-9999-000000000000"]));
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
