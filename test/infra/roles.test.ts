/**
 * Least privilege per identity, under the Pulumi mocks: one custom role per identity that calls
 * Resource Manager, holding exactly what the runtime declares for that identity, assigned only
 * where that identity works, by tenant-scoped ids, with a home that does not move when
 * bulwark:protect is reordered; every action of every custom role is one Azure publishes.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { ofType } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { exampleConfig } from "./harness.ts";
import { parseCustomerConfig } from "../../infra/config.ts";
import { roleActionsFor } from "../../runtime/azure/role.ts";
import { ARM_IDENTITIES, type ArmIdentity } from "../../infra/components/backup-role.ts";
import { BUILT_IN_ROLES, ROLE_PROPAGATION_SECONDS } from "../../infra/components/roles.ts";
import { ACR_PULL_ROLE as ACR_PULL } from "../../infra/components/agent-job.ts";
import { unpublishedActions } from "../support/published-operations.ts";

const SUB = "11111111-2222-3333-4444-555555555555";
const OTHER_SUB = "66666666-7777-8888-9999-000000000000";
const WESTEUROPE_SCOPES = [`/subscriptions/${SUB}/resourceGroups/contoso-prod-vms`, `/subscriptions/${SUB}/resourceGroups/contoso-prod-sql`];
const RESTORE_WE = `/subscriptions/${SUB}/resourceGroups/contoso-restores`;
const RESTORE_NE = `/subscriptions/${OTHER_SUB}/resourceGroups/contoso-restores-ne`;

let customer: { outputs: Record<string, unknown>; resources: RecordedResource[] };
let region: { outputs: Record<string, unknown>; resources: RecordedResource[] };

beforeAll(async () => {
  customer = await deployCustomer();
  region = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"));
});

const definitions = () => ofType(customer.resources, "azure-native:authorization:RoleDefinition");
const roleOf = (identity: ArmIdentity) => definitions().find((d) => d.inputs.roleName === `Bulwark ${identity} (contoso)`)!;
const guidOf = (id: unknown) => String(id).split("/").pop()!;
const identity = (role: string) => ofType(region.resources, "azure-native:managedidentity:UserAssignedIdentity").find((i) => i.name.endsWith(`-${role}-identity`))!;
const assignmentsTo = (resources: RecordedResource[], principalId: string) =>
  ofType(resources, "azure-native:authorization:RoleAssignment").filter((a) => a.inputs.principalId === principalId);
const job = (command: string) => ofType(region.resources, "azure-native:app:Job").find((j) => j.inputs.template.containers[0].args[1] === command)!;
const envOf = (j: RecordedResource): Record<string, any> => Object.fromEntries(j.inputs.template.containers[0].env.map((e: any) => [e.name, e.value]));
const sorted = (actions: string[]) => [...actions].sort();

describe("the custom roles", () => {
  it("hold, per identity, exactly the actions the runtime declares for that identity", () => {
    for (const id of ARM_IDENTITIES) {
      const role = roleOf(id);
      expect(role, id).toBeDefined();
      expect({ id, actions: sorted(role.inputs.permissions[0].actions) }).toEqual({ id, actions: sorted(roleActionsFor(id).actions) });
      expect(role.inputs.permissions[0].dataActions).toEqual([]);
    }
    // Prune holds no Resource Manager role; no other custom role exists but the key user role.
    expect(definitions().map((d) => d.inputs.roleName).sort()).toEqual(
      ["Bulwark backup (contoso)", "Bulwark bridge (contoso)", "Bulwark inventory (contoso)", "Bulwark key user (contoso)", "Bulwark restore (contoso)"],
    );
  });

  it("name only actions Azure publishes", () => {
    for (const d of definitions()) {
      const permission = d.inputs.permissions[0];
      expect({ role: d.inputs.roleName, unknown: unpublishedActions([...permission.actions, ...permission.dataActions]) }).toEqual({ role: d.inputs.roleName, unknown: [] });
    }
  });

  it("give the scheduler reads only, and nobody but restore create or delete VMs, disks or databases", () => {
    expect(roleOf("inventory").inputs.permissions[0].actions.filter((a: string) => !/\/read$/i.test(a))).toEqual([]);
    const vmsAndDisks = /^Microsoft\.Compute\/(virtualMachines|disks)\/(write|delete)$/i;
    const databases = /^Microsoft\.Sql\/servers\/databases\/(write|delete)$|^Microsoft\.Sql\/servers\/import\/action$/i;
    const holding = (id: ArmIdentity, pattern: RegExp) => roleOf(id).inputs.permissions[0].actions.filter((a: string) => pattern.test(a)).sort();
    for (const id of ARM_IDENTITIES.filter((i) => i !== "restore")) expect({ id, vmsAndDisks: holding(id, vmsAndDisks) }).toEqual({ id, vmsAndDisks: [] });
    expect(holding("restore", vmsAndDisks)).toEqual(["Microsoft.Compute/disks/delete", "Microsoft.Compute/disks/write", "Microsoft.Compute/virtualMachines/delete", "Microsoft.Compute/virtualMachines/write"]);
    // One exception, by design: a SQL backup exports a copy of the database (Azure's way to a
    // transactionally consistent BACPAC: MicrosoftDocs/azure-docs articles/azure-sql/database/database-export.md,
    // "Considerations"), which it creates beside the source and deletes. RBAC cannot confine that to
    // the copy; the runtime deletes only the copy it named.
    expect(holding("backup", databases)).toEqual(["Microsoft.Sql/servers/databases/delete", "Microsoft.Sql/servers/databases/write"]);
    for (const id of ["inventory", "bridge"] as const) expect({ id, databases: holding(id, databases) }).toEqual({ id, databases: [] });
    expect(holding("restore", databases)).toContain("Microsoft.Sql/servers/import/action");
  });

  it("make the restore role assignable only at the restore resource groups, the others at the protected scopes", () => {
    expect(roleOf("restore").inputs.assignableScopes).toEqual([RESTORE_WE, RESTORE_NE].sort());
    for (const id of ["inventory", "backup", "bridge"] as const) {
      expect(roleOf(id).inputs.assignableScopes).toEqual([...WESTEUROPE_SCOPES, `/subscriptions/${OTHER_SUB}`].sort());
    }
  });

  it("keep their home and ids when bulwark:protect is reordered, and give tenant-scoped ids", async () => {
    const before = Object.fromEntries(definitions().map((d) => [d.inputs.roleName, { scope: d.inputs.scope, id: d.inputs.roleDefinitionId, assignable: d.inputs.assignableScopes }]));
    const reordered = await deployCustomer({ protect: [...(exampleConfig("Pulumi.dev.yaml").raw.protect as unknown[])].reverse() });
    const after = Object.fromEntries(ofType(reordered.resources, "azure-native:authorization:RoleDefinition").map((d) => [d.inputs.roleName, { scope: d.inputs.scope, id: d.inputs.roleDefinitionId, assignable: d.inputs.assignableScopes }]));
    expect(after).toEqual(before);
    for (const key of ["inventoryRoleDefinitionId", "backupRoleDefinitionId", "restoreRoleDefinitionId"]) {
      expect(reordered.outputs[key]).toMatch(/^\/providers\/Microsoft\.Authorization\/roleDefinitions\/[0-9a-f-]{36}$/);
    }
    // Put the example's order back for the region stack's StackReference (deployCustomer hands its outputs on).
    customer = await deployCustomer();
  });
});

describe("the identities' assignments", () => {
  it("give the scheduler the inventory role and the worker the backup role at the region's protected scopes", () => {
    const inventory = guidOf(customer.outputs.inventoryRoleDefinitionId);
    const backup = guidOf(customer.outputs.backupRoleDefinitionId);
    const custom = (principal: string) =>
      assignmentsTo(region.resources, principal)
        .filter((a) => ![BUILT_IN_ROLES.storageBlobDataContributor, BUILT_IN_ROLES.storageBlobDelegator, BUILT_IN_ROLES.storageQueueDataContributor, BUILT_IN_ROLES.storageTableDataContributor].includes(guidOf(a.inputs.roleDefinitionId) as never))
        .filter((a) => ![guidOf(customer.outputs.keyUserRoleDefinitionId), ACR_PULL].includes(guidOf(a.inputs.roleDefinitionId)))
        .map((a) => `${guidOf(a.inputs.roleDefinitionId)} @ ${a.inputs.scope}`)
        .sort();
    expect(custom(identity("scheduler").state.principalId)).toEqual(WESTEUROPE_SCOPES.map((s) => `${inventory} @ ${s}`).sort());
    expect(custom(identity("worker").state.principalId)).toEqual(WESTEUROPE_SCOPES.map((s) => `${backup} @ ${s}`).sort());
    // Every custom role is assigned by its tenant-scoped id, usable in any subscription of the tenant.
    for (const a of ofType(region.resources, "azure-native:authorization:RoleAssignment")) {
      if ([inventory, backup, guidOf(customer.outputs.restoreRoleDefinitionId)].includes(guidOf(a.inputs.roleDefinitionId))) {
        expect(a.inputs.roleDefinitionId).toMatch(/^\/providers\/Microsoft\.Authorization\/roleDefinitions\//);
      }
    }
  });

  it("give the restore identity the restore role at its region's restore groups only, and the worker job both identities", () => {
    const restore = identity("restore");
    expect(assignmentsTo(region.resources, restore.state.principalId).map((a) => `${guidOf(a.inputs.roleDefinitionId)} @ ${a.inputs.scope}`)).toEqual([
      `${guidOf(customer.outputs.restoreRoleDefinitionId)} @ ${RESTORE_WE}`,
    ]);
    const worker = job("worker");
    expect(worker.inputs.identity.userAssignedIdentities).toEqual([identity("worker").id, restore.id]);
    expect(envOf(worker)).toMatchObject({ AZURE_CLIENT_ID: identity("worker").state.clientId, BULWARK_RESTORE_CLIENT_ID: restore.state.clientId, BULWARK_RESTORE_SCOPES: RESTORE_WE });
  });

  it("give prune its own identity: the vault and the key, no Resource Manager role", () => {
    const prune = identity("prune");
    const pruneJob = job("prune");
    expect(pruneJob.inputs.identity.userAssignedIdentities).toEqual([prune.id]);
    const roles = assignmentsTo(region.resources, prune.state.principalId).map((a) => guidOf(a.inputs.roleDefinitionId)).filter((r) => r !== ACR_PULL).sort();
    expect(roles).toEqual([BUILT_IN_ROLES.storageBlobDataContributor, BUILT_IN_ROLES.storageBlobDataContributor, guidOf(customer.outputs.keyUserRoleDefinitionId)].sort());
    expect(envOf(pruneJob).BULWARK_PROTECTED_SCOPES).toBeUndefined();
  });

  it("give the bridge the bridge role at every protected scope, then wait for it to propagate", () => {
    const bridgeIdentity = ofType(customer.resources, "azure-native:managedidentity:UserAssignedIdentity")[0]!;
    const grants = assignmentsTo(customer.resources, bridgeIdentity.state.principalId).filter((a) => guidOf(a.inputs.roleDefinitionId) !== ACR_PULL);
    expect(grants.map((a) => guidOf(a.inputs.roleDefinitionId))).toEqual(grants.map(() => guidOf(roleOf("bridge").inputs.roleDefinitionId)));
    expect(grants.map((a) => a.inputs.scope).sort()).toEqual([...WESTEUROPE_SCOPES, `/subscriptions/${OTHER_SUB}`].sort());
    const wait = customer.resources.find((r) => r.type === "pulumi-nodejs:dynamic:Resource" && r.name.endsWith("-roles-propagated"))!;
    expect(wait).toBeDefined();
    expect(wait.inputs.seconds).toBe(ROLE_PROPAGATION_SECONDS);
    // Everything the bridge's identity is granted (its roles, and AcrPull to pull its image) propagates first.
    expect([...wait.inputs.assignmentIds].sort()).toEqual(assignmentsTo(customer.resources, bridgeIdentity.state.principalId).map((a) => a.id).sort());
  });
});

describe("the customer-managed key's account", () => {
  it("waits for its encryption identity's key grant to propagate before the account is created", () => {
    const encryption = identity("encryption");
    const grants = assignmentsTo(region.resources, encryption.state.principalId);
    expect(grants.length).toBe(1);
    const wait = region.resources.find((r) => r.type === "pulumi-nodejs:dynamic:Resource" && r.name.endsWith("-key-access-propagated"))!;
    expect(wait).toBeDefined();
    expect(wait.inputs.assignmentIds).toEqual([grants[0]!.id]);
  });
});

describe("bulwark:restoreResourceGroups", () => {
  it("refuses a restore group without a resource group, naming the key and the fix", () => {
    const raw = { ...exampleConfig("Pulumi.dev.yaml").raw, restoreResourceGroups: [{ subscriptionId: SUB, region: "westeurope" }] };
    expect(() => parseCustomerConfig(raw)).toThrow(/^bulwark:restoreResourceGroups\[0\]\.resourceGroup is not a valid resource group name: undefined\. Name an existing resource group/);
  });

  it("refuses a restore group that is also a protected resource group: the restore role could delete what is protected", () => {
    const raw = { ...exampleConfig("Pulumi.dev.yaml").raw, restoreResourceGroups: [{ subscriptionId: SUB, resourceGroup: "Contoso-Prod-VMs", region: "westeurope" }] };
    expect(() => parseCustomerConfig(raw)).toThrow(/^bulwark:restoreResourceGroups\[0\] \/subscriptions\/.*\/resourceGroups\/Contoso-Prod-VMs is also a protected resource group \(bulwark:protect\)\. Restores may create and delete there/);
  });

  it("without restore groups defines no restore role, so no restore identity can create anything", async () => {
    const { resources, outputs } = await deployCustomer({ restoreResourceGroups: [] });
    expect(ofType(resources, "azure-native:authorization:RoleDefinition").map((d) => d.inputs.roleName)).not.toContain("Bulwark restore (contoso)");
    expect(outputs.restoreRoleDefinitionId).toBe("");
    customer = await deployCustomer();
  });
});

