/**
 * Issue 9, "networking that works by default": with the example config the agents can reach the
 * key vault and the storage accounts (public endpoints, data access by RBAC only: why that is the
 * only working default is in infra/components/network.ts, with its sources), and with
 * `bulwark:network: private` nothing is publicly reachable: a VNet, a delegated subnet for an
 * internal VNet-integrated Container Apps environment, private endpoints for the key vault and
 * both accounts, and the private DNS zones Azure names for them, linked to the VNet.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { clearRecorded, exampleConfig, ofType, resolveAll, setCustomerStackOutputs, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { parseCustomerConfig } from "../../infra/config.ts";
import { customerStack } from "../../infra/customer-stack.ts";
import { UsageError } from "../../runtime/errors.ts";

const WESTEUROPE = "Pulumi.dev-westeurope.yaml";

/** The example customer stack, with config overrides; its outputs become the region stacks' StackReference. */
async function deployCustomer(overrides: (raw: Record<string, unknown>) => Record<string, unknown> = (raw) => raw): Promise<RecordedResource[]> {
  clearRecorded();
  const outputs = await resolveAll(customerStack(parseCustomerConfig(overrides({ ...exampleConfig("Pulumi.dev.yaml").raw }))));
  const resources = await settled();
  setCustomerStackOutputs(outputs);
  return resources;
}

function withoutKeyNetworkSetting(raw: Record<string, unknown>): Record<string, unknown> {
  const { publicNetworkAccess: _ignored, ...key } = raw.key as Record<string, unknown>;
  return { ...raw, key };
}

const vaultOf = (resources: RecordedResource[]) => ofType(resources, "azure-native:keyvault:Vault")[0];
const accounts = (resources: RecordedResource[]) => ofType(resources, "azure-native:storage:StorageAccount");

describe("the default (public) network", () => {
  it("a customer config that says nothing about networking gets a key vault the agents can reach, RBAC deciding who may use the key", async () => {
    const vault = vaultOf(await deployCustomer(withoutKeyNetworkSetting));
    expect(vault.inputs.properties).toMatchObject({
      enableRbacAuthorization: true,
      publicNetworkAccess: "Enabled",
      networkAcls: { defaultAction: "Allow", bypass: "AzureServices" },
    });
  });

  it("refuses key.publicNetworkAccess false without private networking: no worker could wrap or unwrap", () => {
    const raw = { ...exampleConfig("Pulumi.dev.yaml").raw, key: { publicNetworkAccess: false } };
    expect(() => parseCustomerConfig(raw)).toThrow(UsageError);
    expect(() => parseCustomerConfig(raw)).toThrow(/bulwark:key\.publicNetworkAccess is false under public networking.*bulwark:network: private/);
    expect(() => parseCustomerConfig({ ...raw, network: "vpn" })).toThrow(/bulwark:network must be "public" or "private"/);
  });

  it("the example region stack's accounts take only TLS 1.2+, Entra ID and no anonymous reads, from the agents' (any) network; no VNet is made", async () => {
    await deployCustomer();
    const { resources } = await deployRegion(exampleRegionConfig(WESTEUROPE));
    expect(accounts(resources)).toHaveLength(2);
    for (const account of accounts(resources)) {
      expect(account.inputs).toMatchObject({
        allowSharedKeyAccess: false,
        allowBlobPublicAccess: false,
        minimumTlsVersion: "TLS1_2",
        publicNetworkAccess: "Enabled",
        networkRuleSet: { defaultAction: "Allow", bypass: "AzureServices" },
      });
    }
    expect(ofType(resources, "azure-native:network:VirtualNetwork")).toEqual([]);
    expect(ofType(resources, "azure-native:network:PrivateEndpoint")).toEqual([]);
    expect(ofType(resources, "azure-native:app:ManagedEnvironment")[0].inputs.vnetConfiguration).toBeUndefined();
    for (const job of ofType(resources, "azure-native:app:Job")) expect(job.inputs.workloadProfileName).toBeUndefined();
  });
});

describe("bulwark:network: private", () => {
  let deployed: { customer: RecordedResource[]; region: RecordedResource[] };
  beforeAll(async () => {
    const customer = await deployCustomer((raw) => ({ ...withoutKeyNetworkSetting(raw), network: "private" }));
    const { resources } = await deployRegion(exampleRegionConfig(WESTEUROPE, { network: "private" }));
    deployed = { customer, region: resources };
  });

  it("closes the customer's key vault to the public network (trusted services still pass, for the storage key)", async () => {
    const { customer } = deployed;
    expect(vaultOf(customer).inputs.properties).toMatchObject({ publicNetworkAccess: "Disabled", networkAcls: { defaultAction: "Deny", bypass: "AzureServices" } });
  });

  it("runs the agents in an internal environment on a subnet delegated to Container Apps", async () => {
    const { region } = deployed;
    const [vnet] = ofType(region, "azure-native:network:VirtualNetwork");
    const subnets = ofType(region, "azure-native:network:Subnet");
    const agents = subnets.find((s) => s.inputs.delegations?.length)!;
    expect(agents.inputs.virtualNetworkName).toBe(vnet.inputs.virtualNetworkName);
    expect(agents.inputs.delegations).toEqual([expect.objectContaining({ serviceName: "Microsoft.App/environments" })]);
    // Workload-profiles environments need at least a /27 (articles/container-apps/custom-virtual-networks.md).
    expect(Number(agents.inputs.addressPrefix.split("/")[1])).toBeLessThanOrEqual(27);
    const [environment] = ofType(region, "azure-native:app:ManagedEnvironment");
    expect(environment.inputs.vnetConfiguration).toEqual({ infrastructureSubnetId: agents.id, internal: true });
    expect(environment.inputs.workloadProfiles).toEqual([{ name: "Consumption", workloadProfileType: "Consumption" }]);
    const jobs = ofType(region, "azure-native:app:Job");
    expect(jobs.length).toBeGreaterThanOrEqual(3);
    for (const job of jobs) expect(job.inputs).toMatchObject({ environmentId: environment.id, workloadProfileName: "Consumption" });
  });

  it("gives the key vault, the vault account's blobs and the transient account's blobs, queues and tables a private endpoint each, in their Azure-named zones linked to the VNet", async () => {
    const { customer, region } = deployed;
    const [vnet] = ofType(region, "azure-native:network:VirtualNetwork");
    const endpointSubnet = ofType(region, "azure-native:network:Subnet").find((s) => !s.inputs.delegations?.length)!;
    const vault = vaultOf(customer);
    const account = (kind: string) => accounts(region).find((a) => a.inputs.tags["bulwark-storage"] === kind)!;
    const expected = [
      [vault.id, "vault", "privatelink.vaultcore.azure.net"],
      [account("isolated").id, "blob", "privatelink.blob.core.windows.net"],
      [account("transient").id, "blob", "privatelink.blob.core.windows.net"],
      [account("transient").id, "queue", "privatelink.queue.core.windows.net"],
      [account("transient").id, "table", "privatelink.table.core.windows.net"],
    ];
    const endpoints = ofType(region, "azure-native:network:PrivateEndpoint");
    const zones = ofType(region, "azure-native:privatedns:PrivateZone");
    const links = ofType(region, "azure-native:privatedns:VirtualNetworkLink");
    const zoneGroups = ofType(region, "azure-native:network:PrivateDnsZoneGroup");
    const found = endpoints.map((endpoint) => {
      expect(endpoint.inputs.subnet).toMatchObject({ id: endpointSubnet.id });
      expect(endpoint.inputs.location).toBe("westeurope");
      const [connection] = endpoint.inputs.privateLinkServiceConnections;
      const zoneGroup = zoneGroups.find((g) => g.inputs.privateEndpointName === endpoint.inputs.privateEndpointName)!;
      const zone = zones.find((z) => z.id === zoneGroup.inputs.privateDnsZoneConfigs[0].privateDnsZoneId)!;
      return [connection.privateLinkServiceId, ...connection.groupIds, zone.inputs.privateZoneName];
    });
    expect(found.sort()).toEqual(expected.sort());
    for (const zone of zones) {
      expect(zone.inputs.location).toBe("global");
      const link = links.find((l) => l.inputs.privateZoneName === zone.inputs.privateZoneName)!;
      expect(link.inputs).toMatchObject({ virtualNetwork: { id: vnet.id }, registrationEnabled: false });
    }
  });

  it("leaves nothing publicly reachable: both accounts and the key vault refuse public traffic, the environment is internal", async () => {
    const { customer, region } = deployed;
    for (const account of accounts(region)) {
      expect(account.inputs).toMatchObject({ publicNetworkAccess: "Disabled", networkRuleSet: { defaultAction: "Deny" }, allowBlobPublicAccess: false, allowSharedKeyAccess: false });
    }
    expect(vaultOf(customer).inputs.properties.publicNetworkAccess).toBe("Disabled");
    expect(ofType(region, "azure-native:app:ManagedEnvironment")[0].inputs.vnetConfiguration.internal).toBe(true);
  });

  it("refuses a public region stack for a customer whose key vault is private", async () => {
    await deployCustomer((raw) => ({ ...withoutKeyNetworkSetting(raw), network: "private" }));
    await expect(deployRegion(exampleRegionConfig(WESTEUROPE))).rejects.toThrow(/bulwark:network is public, but customer contoso's key vault takes private endpoint traffic only/);
  });
});
