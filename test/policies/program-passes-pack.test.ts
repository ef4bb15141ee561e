/**
 * Every policy over every resource the program registers under mocks (the example config's customer
 * stack and two region stacks, and a second customer in a third region): the program passes its
 * own pack, on preview and after up. And a change that weakens the program's output is caught.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { RecordedResource } from "../infra/harness.ts";
import { deployCustomer, deployExampleCustomer, deployRegion, exampleRegionConfig } from "../infra/region-fixture.ts";
import { publishedActionsOnly, resourcePolicies as packResourcePolicies, stackPolicies } from "../../policies/rules.ts";
import { publishedOperations } from "../../policies/published-operations.ts";

/** The resource policies as policies/index.ts builds the pack: the rules plus the published-operations check. */
const resourcePolicies = [...packResourcePolicies, publishedActionsOnly(publishedOperations())];

const stacks: Record<string, RecordedResource[]> = {};

beforeAll(async () => {
  stacks.customer = (await deployExampleCustomer()).resources;
  stacks.westeurope = (await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml", { sqlAdminLogin: "admin", sqlAdminPassword: "p" }, ["sqlAdminLogin", "sqlAdminPassword"]))).resources;
  stacks.northeurope = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml"))).resources;
  const fabrikam = "22222222-3333-4444-5555-666666666666";
  stacks.fabrikam = (await deployCustomer({ customer: "fabrikam", subscriptionId: fabrikam, protect: [{ subscriptionId: fabrikam, region: "swedencentral" }] })).resources;
  stacks["fabrikam-swedencentral"] = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml", { customer: "fabrikam", region: "swedencentral" }))).resources;
});

/**
 * How the engine runs the pack. Resource policies always see a resource's inputs. Stack policies
 * see the stack's state: on `pulumi preview` a new resource's state is its inputs (Azure has not
 * computed anything yet); after `pulumi up` it is what Azure returned (the mocks' Azure-shaped
 * state: no accountName on a container, ids instead). The rules must hold in both.
 */
type Run = "preview" | "up";
/** The mandatory violations (an advisory policy only warns; see `warnings`). */
function runPack(resources: RecordedResource[], run: Run = "up"): string[] {
  return runPolicies(resources, run, "mandatory");
}
function warnings(resources: RecordedResource[]): string[] {
  return runPolicies(resources, "up", "advisory");
}
function runPolicies(resources: RecordedResource[], run: Run, level: "mandatory" | "advisory"): string[] {
  const violations: string[] = [];
  for (const r of resources) {
    for (const policy of resourcePolicies.filter((p) => p.enforcementLevel === level)) {
      policy.validateResource({ type: r.type, props: r.inputs, name: r.name, urn: r.urn }, (message) => violations.push(`${policy.name} on ${r.name}: ${message}`));
    }
  }
  const stack = resources.map((r) => ({ type: r.type, name: r.name, urn: r.urn, props: run === "up" ? r.state : r.inputs }));
  for (const policy of stackPolicies.filter((p) => p.enforcementLevel === level)) policy.validateStack({ resources: stack }, (message) => violations.push(`${policy.name}: ${message}`));
  return violations;
}

/** The resource policies over Azure's output shape (a stack's state, e.g. after `pulumi refresh`). */
function runResourcePoliciesOnState(resources: RecordedResource[]): string[] {
  const violations: string[] = [];
  for (const r of resources.filter((r) => r.type.startsWith("azure-native:"))) {
    for (const policy of resourcePolicies.filter((p) => p.enforcementLevel === "mandatory")) {
      policy.validateResource({ type: r.type, props: r.state, name: r.name, urn: r.urn }, (message) => violations.push(`${policy.name} on ${r.name}: ${message}`));
    }
  }
  return violations;
}

describe("the program against its own policy pack", () => {
  for (const name of ["customer", "westeurope", "northeurope", "fabrikam", "fabrikam-swedencentral"]) {
    for (const run of ["preview", "up"] as const) {
      it(`${name} stack passes every policy on ${run} (stack policies over ${run === "up" ? "Azure's outputs" : "the inputs"})`, () => {
        const resources = stacks[name];
        expect(resources.filter((r) => r.type.startsWith("azure-native:")).length).toBeGreaterThan(5);
        expect(runPack(resources, run)).toEqual([]);
      });
    }
    it(`${name} stack passes the resource policies read over Azure's outputs too`, () => {
      expect(runResourcePoliciesOnState(stacks[name])).toEqual([]);
    });
  }

  it("warns, and only warns, that each region's vault immutability is still unlocked (the example deploys it Unlocked)", () => {
    expect(warnings(stacks.customer)).toEqual([]);
    for (const region of ["westeurope", "northeurope", "fabrikam-swedencentral"]) {
      expect(warnings(stacks[region])).toEqual([expect.stringMatching(/^isolated-storage-immutability-locked: Isolated storage bwv\w+'s immutability policy is Unlocked/)]);
    }
  });

  it("catches a custom role naming an action Azure does not publish (one that entered the backup role once)", () => {
    const weakened = structuredClone(stacks.customer);
    const role = weakened.find((r) => r.type === "azure-native:authorization:RoleDefinition" && r.inputs.permissions[0].actions.length > 0)!;
    role.inputs.permissions[0].actions.push("Microsoft.Sql/locations/importExportAzureAsyncOperation/read");
    expect(runPack(weakened)).toEqual([expect.stringMatching(/^custom-role-actions-published on .*: Custom role names "Microsoft\.Sql\/locations\/importExportAzureAsyncOperation\/read", which is not in Azure's published operations/)]);
  });

  it("catches the vault's lifecycle rule for previous versions removed, on preview and after up", () => {
    const weakened = structuredClone(stacks.westeurope);
    const vault = weakened.find((r) => r.type === "azure-native:storage:StorageAccount" && r.inputs.tags?.["bulwark-storage"] === "isolated")!;
    const lifecycle = weakened.find((r) => r.type === "azure-native:storage:ManagementPolicy" && r.inputs.accountName === vault.inputs.accountName)!;
    const withoutVersions = (policy: any) => ({ rules: policy.rules.filter((rule: any) => !rule.definition?.actions?.version) });
    lifecycle.inputs.policy = withoutVersions(lifecycle.inputs.policy);
    lifecycle.state.policy = withoutVersions(lifecycle.state.policy);
    for (const run of ["preview", "up"] as const) {
      expect(runPack(weakened, run), run).toEqual([expect.stringMatching(new RegExp(`^isolated-storage-previous-versions-expire: Isolated storage ${vault.inputs.accountName} keeps previous blob versions for ever`))]);
    }
  });

  it("catches the key vault's and the vault account's CanNotDelete locks removed, on preview and after up", () => {
    const unlocked = (stack: RecordedResource[]) => stack.filter((r) => !r.type.startsWith("azure-native:authorization:ManagementLock"));
    for (const run of ["preview", "up"] as const) {
      expect(runPack(unlocked(stacks.customer), run), run).toEqual([expect.stringMatching(/^isolated-storage-and-key-vault-delete-locks: Key vault bwkcontoso\w+ has no CanNotDelete lock/)]);
      expect(runPack(unlocked(stacks.westeurope), run), run).toEqual([expect.stringMatching(/^isolated-storage-and-key-vault-delete-locks: Isolated storage bwvcontoso\w+ has no CanNotDelete lock/)]);
    }
  });

  it("catches restore rights outside the restore role: VM delete in a role assignable at a protected subscription, the restore role on the scheduled bridge", () => {
    const weakened = structuredClone(stacks.customer);
    const definitions = weakened.filter((r) => r.type === "azure-native:authorization:RoleDefinition");
    const restore = definitions.find((d) => d.inputs.permissions[0].actions.some((a: string) => /^Microsoft\.Compute\/disks\/write$/i.test(a)))!;
    const wide = definitions.find((d) => d !== restore && d.inputs.assignableScopes.some((s: string) => /^\/subscriptions\/[^/]+$/.test(s)))!;
    wide.inputs.permissions[0].actions.push("Microsoft.Compute/virtualMachines/delete");
    expect(runPack(weakened)).toEqual([expect.stringMatching(new RegExp(`^restore-rights-only-in-restore-groups on ${wide.name}: Custom role .* grants Microsoft\\.Compute/virtualMachines/delete and is assignable at /subscriptions/`))]);

    const bridgeGrants = structuredClone(stacks.customer);
    const bridge = bridgeGrants.find((r) => r.type === "azure-native:app:Job")!;
    const principal = Object.values(bridge.state.identity.userAssignedIdentities as Record<string, { principalId: string }>)[0].principalId;
    const grant = bridgeGrants.find((r) => r.type === "azure-native:authorization:RoleAssignment" && r.state.principalId === principal)!;
    grant.state.roleDefinitionId = grant.state.roleDefinitionId.replace(/[^/]+$/, restore.state.name);
    expect(runPack(bridgeGrants)).toEqual([expect.stringMatching(/^restore-rights-not-on-scheduled-agents: .*bridge.* \(triggered by Schedule\) holds Bulwark restore/)]);
  });

  it("the per-container immutability check runs over Azure's outputs: a vault container without it fails on preview and after up", () => {
    const weakened = structuredClone(stacks.westeurope);
    const vault = weakened.find((r) => r.type === "azure-native:storage:StorageAccount" && r.inputs.tags?.["bulwark-storage"] === "isolated")!;
    const container = weakened.find((r) => r.type === "azure-native:storage:BlobContainer" && r.inputs.accountName === vault.inputs.accountName)!;
    delete container.inputs.immutableStorageWithVersioning;
    delete container.state.immutableStorageWithVersioning;
    const message = new RegExp(`^isolated-storage-versioning: Container ${container.inputs.containerName} in isolated storage ${vault.inputs.accountName} is not immutable per version`);
    for (const run of ["preview", "up"] as const) expect(runPack(weakened, run), run).toEqual([expect.stringMatching(message)]);
  });

  it("the pack sees the resources it guards (so passing means something)", () => {
    const types = new Set(Object.values(stacks).flat().map((r) => r.type));
    for (const t of ["azure-native:storage:StorageAccount", "azure-native:storage:ManagementPolicy", "azure-native:storage:BlobServiceProperties", "azure-native:keyvault:Vault", "azure-native:keyvault:Key", "azure-native:app:Job", "azure-native:authorization:RoleAssignment", "azure-native:authorization:RoleDefinition"]) {
      expect(types.has(t), t).toBe(true);
    }
  });

  it("catches a weakened program: shared keys on, versioning off, the worker moved, a broad role added", () => {
    const weakened = structuredClone(stacks.westeurope);
    const account = weakened.find((r) => r.inputs.tags?.["bulwark-storage"] === "isolated")!;
    account.inputs.allowSharedKeyAccess = true;
    weakened.find((r) => r.type === "azure-native:storage:BlobServiceProperties")!.state.isVersioningEnabled = false;
    const worker = weakened.find((r) => r.type === "azure-native:app:Job" && r.inputs.template.containers[0].args[1] === "worker")!;
    worker.state.location = "eastus";
    const assignment = weakened.find((r) => r.type === "azure-native:authorization:RoleAssignment")!;
    assignment.inputs.roleDefinitionId = assignment.inputs.roleDefinitionId.replace(/[^/]+$/, "8e3af657-a8ff-443c-a75c-2fe8c4bcb635");
    const violations = runPack(weakened);
    expect(violations.some((v) => v.startsWith("no-shared-key-access"))).toBe(true);
    expect(violations.some((v) => v.startsWith("isolated-storage-versioning"))).toBe(true);
    expect(violations.some((v) => v.startsWith("agents-storage-and-scopes-in-one-region"))).toBe(true);
    expect(violations.some((v) => v.startsWith("no-broad-role-assignments"))).toBe(true);
  });

  it("catches the scheduler's policy pointing at a vault outside its region, and a SQL password set as a plain value", () => {
    const weakened = structuredClone(stacks.westeurope);
    const vault = weakened.find((r) => r.inputs.tags?.["bulwark-storage"] === "isolated")!;
    vault.state.location = "eastus";
    const worker = weakened.find((r) => r.type === "azure-native:app:Job" && r.inputs.template.containers[0].args[1] === "worker")!;
    const env = worker.inputs.template.containers[0].env.find((e: any) => e.name === "BULWARK_SQL_ADMIN_PASSWORD");
    env.value = "hunter2";
    delete env.secretRef;
    const violations = runPack(weakened);
    const regional = violations.filter((v) => v.startsWith("agents-storage-and-scopes-in-one-region"));
    expect(regional).toHaveLength(4);
    expect(regional).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/isolated-account is in eastus but belongs to region westeurope/),
        expect.stringMatching(/The vault of BULWARK_POLICY_JSON of .*-scheduler points at bwvcontoso[0-9a-f]{6} in eastus, not westeurope/),
        expect.stringMatching(/The vault of BULWARK_POLICY_JSON of .*-prune points at bwvcontoso[0-9a-f]{6} in eastus, not westeurope/),
        expect.stringMatching(/The vault of BULWARK_POLICY_JSON of .*-worker points at bwvcontoso[0-9a-f]{6} in eastus, not westeurope/),
      ]),
    );
    expect(violations).toEqual(expect.arrayContaining([expect.stringMatching(/^container-apps-job-hardening on .*-worker: Environment variable BULWARK_SQL_ADMIN_PASSWORD .* plain-text secret/)]));
  });
});
