/**
 * Registry pull: an image in an Azure Container Registry is pulled by each job's own user-assigned
 * identity (configuration.registries: [{ server, identity }], MicrosoftDocs/azure-docs
 * articles/container-apps/containers.md, "Managed identity with Azure Container Registry"), which
 * holds AcrPull on that registry and nowhere else; a public image needs neither.
 */
import { describe, expect, it } from "vitest";
import { exampleConfig, ofType, resolveAll, settled, clearRecorded } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { parseCustomerConfig } from "../../infra/config.ts";
import { customerStack } from "../../infra/customer-stack.ts";

/** AcrPull (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/containers.md, "AcrPull": Microsoft.ContainerRegistry/registries/pull/read only). */
const ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
/** The example stacks' bulwark:registryId. */
const REGISTRY_ID = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/bulwark-shared/providers/Microsoft.ContainerRegistry/registries/bulwarkregistry";

const customer = () => exampleConfig("Pulumi.dev.yaml").raw;

/** The job's user-assigned identity (its first) and that identity's principal. */
function identityOf(job: RecordedResource, resources: RecordedResource[]): { id: string; principalId: string } {
  const id = job.inputs.identity.userAssignedIdentities[0] as string;
  const identity = ofType(resources, "azure-native:managedidentity:UserAssignedIdentity").find((i) => i.id.toLowerCase() === id.toLowerCase())!;
  return { id, principalId: identity.state.principalId };
}

const acrPullGrants = (resources: RecordedResource[]) =>
  ofType(resources, "azure-native:authorization:RoleAssignment").filter((a) => String(a.inputs.roleDefinitionId).endsWith(`/roleDefinitions/${ACR_PULL}`));

describe("registry pull", () => {
  it("every job pulls from the image's registry as its own identity, and that identity holds AcrPull on the registry (and only there)", async () => {
    const { resources: customerResources } = await deployExampleCustomer();
    const { resources: regionResources } = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"));
    for (const resources of [customerResources, regionResources]) {
      const jobs = ofType(resources, "azure-native:app:Job");
      expect(jobs.length).toBeGreaterThan(0);
      const grants = acrPullGrants(resources);
      for (const job of jobs) {
        const identity = identityOf(job, resources);
        expect(job.inputs.configuration.registries, job.name).toEqual([{ server: "bulwarkregistry.azurecr.io", identity: identity.id }]);
        const held = grants.filter((g) => g.inputs.principalId === identity.principalId);
        expect(held.map((g) => g.inputs.scope), job.name).toEqual([REGISTRY_ID]);
      }
      // One grant per identity, even where two jobs share one (the worker's and prune's).
      expect(new Set(grants.map((g) => g.inputs.principalId)).size).toBe(grants.length);
    }
  });

  it("a public image: no registry credentials and no AcrPull", async () => {
    clearRecorded();
    const raw: Record<string, unknown> = { ...customer(), image: "ghcr.io/example/bulwark:0.1.0" };
    delete raw.registryId;
    await resolveAll(customerStack(parseCustomerConfig(raw)));
    const resources = await settled();
    const jobs = ofType(resources, "azure-native:app:Job");
    expect(jobs.length).toBe(1);
    expect(jobs[0].inputs.configuration.registries ?? []).toEqual([]);
    expect(acrPullGrants(resources)).toEqual([]);
  });
});
