/**
 * The isolated storage (the vault's account) under the Pulumi SDK's mocks: WORM that Azure can
 * create and that does not cover the lock objects, a lifecycle that lets prune free space, and
 * protection against replacement and deletion. What Azure accepts is cited in
 * infra/components/isolated-storage.ts; the resource options (protect, ignoreChanges,
 * retainOnDelete) are read through a transformation, since the mock engine is not given them.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type * as pulumi from "@pulumi/pulumi";
import { clearRecorded, ofType, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { IsolatedStorage, LOCKS_CONTAINER, VAULT_CONTAINER } from "../../infra/components/isolated-storage.ts";
import { storageNetworkAccess } from "../../infra/components/network.ts";
import type { RetentionConfig } from "../../infra/config.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";

const SUB = "11111111-2222-3333-4444-555555555555";
const GROUP = "bulwark-contoso-westeurope";
const options = new Map<string, pulumi.CustomResourceOptions>();
const recordOptions: pulumi.ResourceTransformation = ({ name, opts }) => {
  options.set(name, opts);
  return undefined;
};

function retention(overrides: Partial<RetentionConfig> = {}): RetentionConfig {
  return { pointsDays: 35, immutabilityDays: 30, immutabilityLocked: false, softDeleteDays: 14, rule: { daily: 35 }, ...overrides };
}

function isolatedStorage(name: string, overrides: Partial<RetentionConfig> = {}): IsolatedStorage {
  const storage = new IsolatedStorage(
    name,
    {
      customer: name,
      region: "westeurope",
      subscriptionId: SUB,
      resourceGroupName: GROUP,
      redundancy: "Standard_ZRS",
      retention: retention(overrides),
      keyVaultUri: "https://bwkcontoso123456.vault.azure.net/",
      keyName: "bulwark-kek",
      keyResourceId: `/subscriptions/${SUB}/resourceGroups/bulwark-contoso/providers/Microsoft.KeyVault/vaults/bwkcontoso123456/keys/bulwark-kek`,
      networkAccess: storageNetworkAccess("public"),
      tags: {},
    },
    { transformations: [recordOptions] },
  );
  storage.sendLogsTo(`/subscriptions/${SUB}/resourceGroups/${GROUP}/providers/Microsoft.OperationalInsights/workspaces/logs`);
  return storage;
}

let resources: RecordedResource[];
const of = (component: string, type: string) => ofType(resources, type).filter((r) => r.name.startsWith(`${component}-`));
const one = (component: string, type: string) => {
  const found = of(component, type);
  expect(found).toHaveLength(1);
  return found[0];
};
const container = (component: string, containerName: string) => of(component, "azure-native:storage:BlobContainer").find((c) => c.inputs.containerName === containerName)!;

describe("isolated storage", () => {
  beforeAll(async () => {
    clearRecorded(); // the test files of a worker share the harness
    isolatedStorage("unlocked");
    isolatedStorage("locked", { immutabilityLocked: true, immutabilityDays: 7, pointsDays: 10 });
    resources = await settled();
  });

  it("asks Azure for no Locked policy on create: the account gets version-level immutability support and no account default policy", () => {
    for (const component of ["unlocked", "locked"]) {
      const account = one(component, "azure-native:storage:StorageAccount");
      // An account default would be inherited by every container, the locks' too.
      expect(account.inputs.immutableStorageWithVersioning).toEqual({ enabled: true });
      for (const resource of of(component, "")) expect(JSON.stringify(resource.inputs)).not.toContain('"Locked"');
    }
  });

  it("puts the WORM default policy on the vault container for retention.immutabilityDays, created unlocked", () => {
    const policy = one("unlocked", "azure-native:storage:BlobContainerImmutabilityPolicy");
    expect(policy.inputs).toEqual({
      accountName: one("unlocked", "azure-native:storage:StorageAccount").inputs.accountName,
      resourceGroupName: GROUP,
      containerName: VAULT_CONTAINER,
      immutabilityPolicyName: "default",
      immutabilityPeriodSinceCreationInDays: 30,
      allowProtectedAppendWrites: false,
    });
    expect(container("unlocked", VAULT_CONTAINER).inputs.immutableStorageWithVersioning).toEqual({ enabled: true });
    // Unlocked, the program may change the period with the config, but never delete the policy.
    expect(options.get(policy.name)?.protect).toBe(true);
    expect(options.get(policy.name)?.ignoreChanges).toBeUndefined();
    expect(options.get(policy.name)?.retainOnDelete).toBeUndefined();
  });

  it("leaves a policy the operator has locked (retention.immutabilityLocked) unchanged, and keeps it when the stack is destroyed", () => {
    const policy = one("locked", "azure-native:storage:BlobContainerImmutabilityPolicy");
    expect(policy.inputs.immutabilityPeriodSinceCreationInDays).toBe(7);
    expect(options.get(policy.name)).toMatchObject({ retainOnDelete: true, protect: true });
    expect(options.get(policy.name)?.ignoreChanges).toEqual(expect.arrayContaining(["immutabilityPeriodSinceCreationInDays", "allowProtectedAppendWrites"]));
  });

  it("keeps lock objects in a sibling container with no immutability policy", () => {
    expect(LOCKS_CONTAINER).toBe(`${VAULT_CONTAINER}-locks`);
    const locks = container("unlocked", LOCKS_CONTAINER);
    expect(locks.inputs).toMatchObject({ containerName: "vault-locks", publicAccess: "None" });
    const policies = of("unlocked", "azure-native:storage:BlobContainerImmutabilityPolicy");
    expect(policies.map((p) => p.inputs.containerName)).toEqual([VAULT_CONTAINER]);
  });

  it("deletes previous versions once their immutability has passed, so what prune deletes stops costing", () => {
    const policy = one("unlocked", "azure-native:storage:ManagementPolicy");
    const rules = policy.inputs.policy.rules as any[];
    const vault = rules.find((r) => r.definition.filters.prefixMatch.includes(`${VAULT_CONTAINER}/`));
    expect(vault).toMatchObject({ enabled: true, type: "Lifecycle", definition: { filters: { blobTypes: ["blockBlob"] } } });
    // Only previous versions: current versions are prune's.
    expect(vault.definition.actions).toEqual({ version: { delete: { daysAfterCreationGreaterThan: 31 } } });
    expect(vault.definition.actions.version.delete.daysAfterCreationGreaterThan).toBeGreaterThan(retention().immutabilityDays);
    const locked = one("locked", "azure-native:storage:ManagementPolicy").inputs.policy.rules as any[];
    expect(locked.find((r) => r.definition.filters.prefixMatch.includes(`${VAULT_CONTAINER}/`)).definition.actions.version.delete.daysAfterCreationGreaterThan).toBe(8);
    // Lock objects are rewritten every few minutes: their old versions go after a day.
    const lockRule = rules.find((r) => r.definition.filters.prefixMatch.includes(`${LOCKS_CONTAINER}/`));
    expect(lockRule.definition.actions).toEqual({ version: { delete: { daysAfterCreationGreaterThan: 1 } } });
  });

  it("protects the account, the vault container and its locks container from replacement, and the account from deletion with a CanNotDelete lock", () => {
    const account = one("unlocked", "azure-native:storage:StorageAccount");
    expect(options.get(account.name)?.protect).toBe(true);
    expect(options.get(container("unlocked", VAULT_CONTAINER).name)?.protect).toBe(true);
    expect(options.get(container("unlocked", LOCKS_CONTAINER).name)?.protect).toBe(true);
    const lock = one("unlocked", "azure-native:authorization:ManagementLockByScope");
    expect(lock.inputs).toMatchObject({ scope: account.id, level: "CanNotDelete", lockName: "bulwark-do-not-delete" });
  });

  it("sends the blob service's read, write and delete logs to the given Log Analytics workspace", () => {
    const account = one("unlocked", "azure-native:storage:StorageAccount");
    const setting = one("unlocked", "azure-native:monitor:DiagnosticSetting");
    expect(setting.inputs).toMatchObject({ resourceUri: `${account.id}/blobServices/default`, workspaceId: expect.stringMatching(/\/workspaces\/logs$/) });
    expect(setting.inputs.logs.map((l: any) => l.category).sort()).toEqual(["StorageDelete", "StorageRead", "StorageWrite"]);
  });
});

describe("region stack: the vault's locks", () => {
  let region: RecordedResource[];
  beforeAll(async () => {
    await deployExampleCustomer();
    region = (await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"))).resources;
  });

  it("grants the identity that runs backups and prune blob data rights on the locks container", () => {
    const worker = ofType(region, "azure-native:managedidentity:UserAssignedIdentity").find((i) => i.name.endsWith("-worker-identity"))!;
    const scopes = ofType(region, "azure-native:authorization:RoleAssignment")
      .filter((a) => a.inputs.principalId === worker.state.principalId)
      .map((a) => a.inputs.scope as string);
    expect(scopes.some((s) => s.endsWith(`/blobServices/default/containers/${LOCKS_CONTAINER}`))).toBe(true);
    expect(scopes.some((s) => s.endsWith(`/blobServices/default/containers/${VAULT_CONTAINER}`))).toBe(true);
  });

  it("sends both accounts' storage logs to the agents' Log Analytics workspace", () => {
    const [workspace] = ofType(region, "azure-native:operationalinsights:Workspace");
    const accounts = ofType(region, "azure-native:storage:StorageAccount");
    const isolated = accounts.find((a) => a.inputs.tags["bulwark-storage"] === "isolated")!;
    const transient = accounts.find((a) => a.inputs.tags["bulwark-storage"] === "transient")!;
    const settings = ofType(region, "azure-native:monitor:DiagnosticSetting");
    expect(settings.map((s) => s.inputs.resourceUri).sort()).toEqual(
      [`${isolated.id}/blobServices/default`, `${transient.id}/blobServices/default`, `${transient.id}/queueServices/default`, `${transient.id}/tableServices/default`].sort(),
    );
    for (const setting of settings) {
      expect(setting.inputs.workspaceId).toBe(workspace.id);
      expect(setting.inputs.logs.map((l: any) => l.category).sort()).toEqual(["StorageDelete", "StorageRead", "StorageWrite"]);
    }
  });
});
