/**
 * The mocks' state is what Azure returns after a create (not the program's inputs echoed back):
 * computed ids and URIs, names as the program sets them, no input-only properties. The shapes
 * asserted here are the REST specs' response examples (Azure/azure-rest-api-specs,
 * specification/storage/resource-manager/Microsoft.Storage/stable/2023-05-01/examples/), cited
 * per test; the recorded inputs stay available beside the state.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { outputProperties } from "./azure-outputs.ts";

let customer: RecordedResource[];
let region: RecordedResource[];

beforeAll(async () => {
  customer = (await deployExampleCustomer()).resources;
  region = (await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"))).resources;
});

const one = (resources: RecordedResource[], type: string, where: (r: RecordedResource) => boolean = () => true) => {
  const found = resources.filter((r) => r.type === type && where(r));
  expect(found.length, type).toBeGreaterThan(0);
  return found[0];
};
const account = (kind: string) => one(region, "azure-native:storage:StorageAccount", (r) => r.inputs.tags["bulwark-storage"] === kind);

describe("mock state shaped like Azure's outputs", () => {
  it("a blob container's state has no accountName and an id under its account's blob service (BlobContainersPutObjectLevelWorm.json)", () => {
    const vault = account("isolated");
    const container = one(region, "azure-native:storage:BlobContainer", (r) => r.inputs.accountName === vault.inputs.accountName);
    expect(container.inputs.accountName).toBe(vault.state.name);
    expect(container.state).not.toHaveProperty("accountName");
    expect(container.state).not.toHaveProperty("resourceGroupName");
    expect(container.state).not.toHaveProperty("containerName");
    expect(container.state.name).toBe(container.inputs.containerName);
    expect(container.state.id).toBe(`${vault.state.id}/blobServices/default/containers/${container.inputs.containerName}`);
    expect(container.state.type).toBe("Microsoft.Storage/storageAccounts/blobServices/containers");
  });

  it("blob service properties are named default, under their account, without accountName (BlobServicesPut.json)", () => {
    const service = one(region, "azure-native:storage:BlobServiceProperties");
    expect(service.state).not.toHaveProperty("accountName");
    expect(service.state).not.toHaveProperty("blobServicesName");
    expect(service.state.name).toBe("default");
    expect(service.state.id).toBe(`${account("isolated").state.id}/blobServices/default`);
    expect(service.state.isVersioningEnabled).toBe(service.inputs.isVersioningEnabled);
  });

  it("a management policy is named DefaultManagementPolicy with id .../managementPolicies/default, without accountName (StorageAccountSetManagementPolicy.json)", () => {
    const policy = one(region, "azure-native:storage:ManagementPolicy", (r) => r.inputs.accountName === account("transient").inputs.accountName);
    expect(policy.state).not.toHaveProperty("accountName");
    expect(policy.state.name).toBe("DefaultManagementPolicy");
    expect(policy.state.id).toBe(`${account("transient").state.id}/managementPolicies/default`);
    expect(policy.state.policy).toEqual(policy.inputs.policy);
  });

  it("a storage account is named by its accountName, has its endpoints, and maps each assigned identity to its principal (CMK example)", () => {
    const vault = account("isolated");
    expect(vault.state).not.toHaveProperty("accountName");
    expect(vault.state).not.toHaveProperty("resourceGroupName");
    expect(vault.state.name).toBe(vault.inputs.accountName);
    expect(vault.state.primaryEndpoints.blob).toBe(`https://${vault.inputs.accountName}.blob.core.windows.net/`);
    const encryption = one(region, "azure-native:managedidentity:UserAssignedIdentity", (r) => vault.inputs.identity.userAssignedIdentities.includes(r.id));
    expect(vault.state.identity.userAssignedIdentities).toEqual({ [encryption.id]: { principalId: encryption.state.principalId, clientId: encryption.state.clientId } });
    // Azure lowercases "resourcegroups" in the encryption identity it returns.
    expect(vault.state.encryption.encryptionIdentity.encryptionUserAssignedIdentity.toLowerCase()).toBe(encryption.id.toLowerCase());
  });

  it("a key's properties come back flattened, with its URIs; queues and tables sit under their services (QueueOperationPut.json)", () => {
    const key = one(customer, "azure-native:keyvault:Key");
    expect(key.state).not.toHaveProperty("properties");
    expect(key.state).not.toHaveProperty("vaultName");
    expect(key.state.rotationPolicy).toEqual(key.inputs.properties.rotationPolicy);
    expect(key.state.keyUri).toBe(`https://${key.inputs.vaultName}.vault.azure.net/keys/${key.inputs.keyName}`);
    const queue = one(region, "azure-native:storage:Queue");
    expect(queue.state.id).toBe(`${account("transient").state.id}/queueServices/default/queues/${queue.inputs.queueName}`);
    expect(queue.state).not.toHaveProperty("queueName");
  });

  it("no state of an Azure resource holds a property its type does not output", () => {
    for (const r of [...customer, ...region].filter((r) => outputProperties(r.type))) {
      const outputs = outputProperties(r.type)!;
      for (const key of Object.keys(r.state)) if (key !== "id") expect(outputs.has(key), `${r.type} ${r.name}: ${key}`).toBe(true);
    }
  });
});
