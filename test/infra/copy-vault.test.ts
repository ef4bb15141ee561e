/**
 * The copy vault (bulwark:copyRegion) under the Pulumi SDK's mocks: the westeurope region stack with
 * `copyRegion: northeurope` makes isolated storage in northeurope, in a resource group of its own,
 * with the region vault's protections (the same account settings, WORM on the vault container, the
 * locks container outside it, the CanNotDelete lock, diagnostic settings), gives the worker and
 * prune identities the roles the copy needs (cited in infra/components/copy-vault.ts), names the copy
 * in the policy the agents run (copyTo), collides with no name of the northeurope region stack, and
 * passes the policy pack. A copyRegion equal to the stack's region, or with private networking, is
 * refused by the config.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { ofType, type RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { BUILT_IN_ROLES } from "../../infra/components/roles.ts";
import { LOCKS_CONTAINER, VAULT_CONTAINER } from "../../infra/components/isolated-storage.ts";
import { publishedActionsOnly, resourcePolicies, stackPolicies } from "../../policies/rules.ts";
import { publishedOperations } from "../../policies/published-operations.ts";
import { validatePolicy } from "../../runtime/policy/policy.ts";

const COPY = "contoso-westeurope-copy";
let west: RecordedResource[];
let north: RecordedResource[];
let outputs: Record<string, unknown>;

beforeAll(async () => {
  await deployExampleCustomer();
  ({ outputs, resources: west } = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml", { copyRegion: "northeurope" })));
  north = (await deployRegion(exampleRegionConfig("Pulumi.dev-northeurope.yaml"))).resources;
});

const copyOf = (type: string) => ofType(west, type).filter((r) => r.name.startsWith(`${COPY}-`));
const primaryOf = (type: string) => ofType(west, type).filter((r) => r.name.startsWith("contoso-westeurope-isolated-"));
/** An account's settings apart from what names and places it. */
const settings = (inputs: Record<string, any>) => {
  const { accountName: _name, location: _location, identity: _identity, encryption, tags: _tags, resourceGroupName: _group, ...rest } = inputs;
  const { encryptionIdentity: _id, ...protection } = encryption;
  return { ...rest, encryption: protection };
};

describe("copy vault in the paired region", () => {
  it("is isolated storage in northeurope, in its own resource group there, with the region vault's account settings", () => {
    const group = ofType(west, "azure-native:resources:ResourceGroup").find((g) => g.name === `${COPY}-group`)!;
    expect(group.inputs).toMatchObject({ resourceGroupName: "bulwark-contoso-westeurope-copy", location: "northeurope" });
    const [account] = copyOf("azure-native:storage:StorageAccount");
    const [primary] = primaryOf("azure-native:storage:StorageAccount");
    expect(account!.inputs).toMatchObject({ location: "northeurope", resourceGroupName: "bulwark-contoso-westeurope-copy" });
    expect(account!.inputs.accountName).not.toBe(primary!.inputs.accountName);
    expect(settings(account!.inputs)).toEqual(settings(primary!.inputs));
    expect(account!.inputs).toMatchObject({ allowBlobPublicAccess: false, allowSharedKeyAccess: false, minimumTlsVersion: "TLS1_2", immutableStorageWithVersioning: { enabled: true } });
  });

  it("has WORM on its vault container, its locks container outside it, versioning and soft delete, a CanNotDelete lock and diagnostic settings", () => {
    const containers = copyOf("azure-native:storage:BlobContainer").map((c) => c.inputs.containerName).sort();
    expect(containers).toEqual([LOCKS_CONTAINER, VAULT_CONTAINER].sort());
    const [worm] = copyOf("azure-native:storage:BlobContainerImmutabilityPolicy");
    expect(worm!.inputs).toMatchObject({ containerName: VAULT_CONTAINER, immutabilityPeriodSinceCreationInDays: primaryOf("azure-native:storage:BlobContainerImmutabilityPolicy")[0]!.inputs.immutabilityPeriodSinceCreationInDays });
    expect(copyOf("azure-native:storage:BlobServiceProperties")[0]!.inputs).toMatchObject({ isVersioningEnabled: true, deleteRetentionPolicy: { enabled: true } });
    expect(copyOf("azure-native:authorization:ManagementLockByScope").map((l) => l.inputs.level)).toEqual(["CanNotDelete"]);
    expect(copyOf("azure-native:monitor:DiagnosticSetting")).toHaveLength(1);
  });

  it("gives the worker and prune blob data rights on both copy containers, and the worker SAS signing on the region's vault account", () => {
    const grants = copyOf("azure-native:authorization:RoleAssignment").map((g) => ({ name: g.name.slice(COPY.length + 1), role: String(g.inputs.roleDefinitionId).split("/").at(-1), scope: String(g.inputs.scope) }));
    const contributor = BUILT_IN_ROLES.storageBlobDataContributor;
    const primaryAccount = String(primaryOf("azure-native:storage:StorageAccount")[0]!.state.id);
    expect(grants.filter((g) => g.role === contributor).map((g) => [g.name, g.scope.split("/").at(-1)]).sort()).toEqual(
      [
        ["prune-vault", VAULT_CONTAINER],
        ["prune-vault-locks", LOCKS_CONTAINER],
        ["worker-vault", VAULT_CONTAINER],
        ["worker-vault-locks", LOCKS_CONTAINER],
      ].sort(),
    );
    // The contributor grants are on the copy account's containers, not the region's own.
    for (const g of grants.filter((g) => g.role === contributor)) expect(g.scope.startsWith(primaryAccount)).toBe(false);
    expect(grants.filter((g) => g.role === BUILT_IN_ROLES.storageBlobDelegator)).toEqual([{ name: "worker-source-delegator", role: BUILT_IN_ROLES.storageBlobDelegator, scope: primaryAccount }]);
  });

  it("is named in the agents' policy as copyTo, and among the stack's outputs", () => {
    const documents = JSON.parse(String(outputs.policyJson));
    expect(documents[0].copyTo).toEqual([outputs.copyVaultUrl]);
    expect(String(outputs.copyVaultUrl)).toMatch(/^https:\/\/bwccontoso[a-z0-9]+\.blob\.core\.windows\.net\/vault$/);
    const policy = validatePolicy(documents[0], "BULWARK_POLICY_JSON[0]");
    expect(policy.copyTo).toEqual([outputs.copyVaultUrl]);
  });

  it("collides with no storage account, identity or group name of the northeurope region stack", () => {
    const names = (resources: RecordedResource[], type: string) => ofType(resources, type).map((r) => String(r.inputs.accountName ?? r.inputs.resourceName ?? r.inputs.resourceGroupName).toLowerCase());
    for (const type of ["azure-native:storage:StorageAccount", "azure-native:managedidentity:UserAssignedIdentity", "azure-native:resources:ResourceGroup"]) {
      const taken = new Set(names(north, type));
      expect(names(west, type).filter((n) => taken.has(n))).toEqual([]);
    }
  });

  it("passes the policy pack", () => {
    const violations: string[] = [];
    for (const r of west) {
      for (const policy of [...resourcePolicies, publishedActionsOnly(publishedOperations())].filter((p) => p.enforcementLevel === "mandatory")) {
        policy.validateResource({ type: r.type, props: r.inputs, name: r.name, urn: r.urn }, (message) => violations.push(`${policy.name} on ${r.name}: ${message}`));
      }
    }
    const stack = west.map((r) => ({ type: r.type, name: r.name, urn: r.urn, props: r.state }));
    for (const policy of stackPolicies.filter((p) => p.enforcementLevel === "mandatory")) policy.validateStack({ resources: stack }, (message) => violations.push(`${policy.name}: ${message}`));
    expect(violations).toEqual([]);
  });

  it("is refused in the stack's own region, and with private networking", () => {
    expect(() => exampleRegionConfig("Pulumi.dev-westeurope.yaml", { copyRegion: "westeurope" })).toThrow(/copyRegion.*own region westeurope/);
    expect(() => exampleRegionConfig("Pulumi.dev-westeurope.yaml", { copyRegion: "northeurope", network: "private" })).toThrow(/copyRegion.*private/);
  });
});
