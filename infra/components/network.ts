/**
 * How the agents reach the customer's key vault and the region's storage (`bulwark:network`).
 *
 * Public (the default). The agents run in a Consumption-only Container Apps environment without a
 * VNet, so nothing narrower than "any network, RBAC decides" lets them in:
 * - Key Vault's firewall lets through only listed IPs, VNets and trusted services. Container Apps is
 *   not a trusted service (MicrosoftDocs/azure-docs articles/key-vault/general/overview-vnet-service-endpoints.md,
 *   "Trusted services": the list has Azure Storage, not Container Apps), and a Consumption-only
 *   environment has no fixed egress to list: it "doesn't support ... egress through NAT Gateway ...
 *   or other custom egress" (articles/container-apps/networking.md, "Environment selection").
 *   So `networkAcls` Deny with `bypass: AzureServices` would refuse every wrap and unwrap.
 * - Storage IP rules "have no effect on requests originating from the same Azure region as the
 *   storage account" (articles/storage/common/storage-network-security.md, IP network rules), and
 *   the agents are in the accounts' region: an allow list could not admit them either.
 * The only default that deploys and runs is public access Enabled with defaultAction Allow, with
 * data access decided by RBAC alone: the key vault uses RBAC authorization and the key user role
 * at the key; the accounts refuse shared keys, anonymous blob access and TLS below 1.2.
 *
 * Private (`bulwark:network: private`). Each region stack gets a VNet (RegionNetwork below) with
 * a subnet delegated to Microsoft.App/environments for a workload-profiles environment (minimum
 * /27, delegation required; a Consumption-only environment needs /23 and no delegation:
 * articles/container-apps/custom-virtual-networks.md, "Subnet"), private endpoints for the
 * customer's key vault and both accounts, and the private DNS zones Azure names for them,
 * linked to the VNet. Public network access is then Disabled everywhere; Key Vault still admits
 * trusted services (Azure Storage reading the customer-managed key): with publicNetworkAccess
 * "disabled all traffic except private endpoint traffic and that that originates from trusted
 * services will be blocked" (Azure/azure-rest-api-specs specification/keyvault/resource-manager,
 * VaultProperties.publicNetworkAccess). `pulumi up` still creates the key and the accounts'
 * containers, tables and queues: those are Resource Manager (control plane) operations, which
 * firewalls do not affect ("Key Vault firewalls and virtual network rules only apply to the data
 * plane": articles/key-vault/general/overview-vnet-service-endpoints.md, "Usage scenarios").
 * Operators' own `bulwark` commands against the vault then have to run inside the VNet (or a
 * network peered with it and linked to the zones).
 */
import * as pulumi from "@pulumi/pulumi";
import * as network from "@pulumi/azure-native/network/index.js";
import * as privatedns from "@pulumi/azure-native/privatedns/index.js";
import type { NetworkMode } from "../network-and-alerts-config.ts";

/**
 * Private link sub-resources (group ids) and the private DNS zone Azure recommends for each:
 * MicrosoftDocs/azure-docs articles/private-link/private-endpoint-dns.md, "Azure services DNS zone
 * configuration" (Key Vault / vault; Storage account / blob, queue, table). Public cloud names.
 */
export const PRIVATE_DNS_ZONES = {
  vault: "privatelink.vaultcore.azure.net",
  blob: "privatelink.blob.core.windows.net",
  queue: "privatelink.queue.core.windows.net",
  table: "privatelink.table.core.windows.net",
} as const;

export type PrivateLinkGroup = keyof typeof PRIVATE_DNS_ZONES;

/** The storage account properties that decide who may connect (spread into StorageAccount args). */
export interface StorageNetworkAccess {
  publicNetworkAccess: "Enabled" | "Disabled";
  networkRuleSet: { defaultAction: "Allow" | "Deny"; bypass: "AzureServices" };
}

export function storageNetworkAccess(mode: NetworkMode): StorageNetworkAccess {
  return mode === "public"
    ? { publicNetworkAccess: "Enabled", networkRuleSet: { defaultAction: "Allow", bypass: "AzureServices" } }
    : { publicNetworkAccess: "Disabled", networkRuleSet: { defaultAction: "Deny", bypass: "AzureServices" } };
}

/** The key vault properties that decide who may connect (see the header for why public is Allow). */
export function keyVaultNetworkAccess(publicAccess: boolean): {
  publicNetworkAccess: "Enabled" | "Disabled";
  networkAcls: { bypass: "AzureServices"; defaultAction: "Allow" | "Deny" };
} {
  return {
    publicNetworkAccess: publicAccess ? "Enabled" : "Disabled",
    // Azure Storage (the isolated account's customer-managed key) is a trusted service and passes.
    networkAcls: { bypass: "AzureServices", defaultAction: publicAccess ? "Allow" : "Deny" },
  };
}

/** The VNet's address plan: room for 495 agent addresses and 251 private endpoints. */
export const ADDRESS_SPACE = "10.80.0.0/22";
export const AGENT_SUBNET = "10.80.0.0/23";
export const ENDPOINT_SUBNET = "10.80.2.0/24";

export interface RegionNetworkArgs {
  resourceGroupName: pulumi.Input<string>;
  location: string;
  tags: Record<string, string>;
}

/** A region's VNet in private mode: the agents' subnet, the endpoints' subnet and the linked zones. */
export class RegionNetwork extends pulumi.ComponentResource {
  /** The subnet the Container Apps environment runs in (vnetConfiguration.infrastructureSubnetId). */
  readonly agentSubnetId: pulumi.Output<string>;
  readonly vnetId: pulumi.Output<string>;
  /** The private endpoints with their zone groups: agents wait for them before their first run. */
  readonly endpoints: pulumi.Resource[] = [];
  private readonly endpointSubnetId: pulumi.Output<string>;
  private readonly zoneIds: Record<PrivateLinkGroup, pulumi.Output<string>>;
  private readonly resourceGroupName: pulumi.Input<string>;
  private readonly location: string;
  private readonly tags: Record<string, string>;
  private readonly baseName: string;

  constructor(name: string, args: RegionNetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:RegionNetwork", name, {}, opts);
    this.baseName = name;
    this.resourceGroupName = args.resourceGroupName;
    this.location = args.location;
    this.tags = args.tags;
    const vnet = new network.VirtualNetwork(
      `${name}-vnet`,
      {
        virtualNetworkName: "bulwark-vnet",
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        tags: args.tags,
        addressSpace: { addressPrefixes: [ADDRESS_SPACE] },
      },
      { parent: this, ignoreChanges: ["subnets"] },
    );
    const agents = new network.Subnet(
      `${name}-agents`,
      {
        subnetName: "agents",
        resourceGroupName: args.resourceGroupName,
        virtualNetworkName: vnet.name,
        addressPrefix: AGENT_SUBNET,
        delegations: [{ name: "container-apps", serviceName: "Microsoft.App/environments" }],
      },
      { parent: this },
    );
    // Subnets of one VNet are written one at a time: ARM refuses concurrent subnet updates.
    const endpoints = new network.Subnet(
      `${name}-endpoints`,
      {
        subnetName: "private-endpoints",
        resourceGroupName: args.resourceGroupName,
        virtualNetworkName: vnet.name,
        addressPrefix: ENDPOINT_SUBNET,
        privateEndpointNetworkPolicies: "Disabled",
      },
      { parent: this, dependsOn: [agents] },
    );
    const zoneIds = {} as Record<PrivateLinkGroup, pulumi.Output<string>>;
    for (const [group, zoneName] of Object.entries(PRIVATE_DNS_ZONES) as [PrivateLinkGroup, string][]) {
      const zone = new privatedns.PrivateZone(
        `${name}-zone-${group}`,
        { privateZoneName: zoneName, resourceGroupName: args.resourceGroupName, location: "global", tags: args.tags },
        { parent: this },
      );
      new privatedns.VirtualNetworkLink(
        `${name}-zone-${group}-link`,
        {
          virtualNetworkLinkName: "bulwark-vnet",
          privateZoneName: zone.name,
          resourceGroupName: args.resourceGroupName,
          location: "global",
          tags: args.tags,
          virtualNetwork: { id: vnet.id },
          registrationEnabled: false,
        },
        { parent: this },
      );
      zoneIds[group] = zone.id;
    }
    this.zoneIds = zoneIds;
    this.vnetId = vnet.id;
    this.agentSubnetId = agents.id;
    this.endpointSubnetId = endpoints.id;
    this.registerOutputs({ vnetId: this.vnetId, agentSubnetId: this.agentSubnetId });
  }

  /**
   * The endpoints the agents use: the customer's key vault (shared by every region: each region
   * stack makes its own endpoint to it, by id), the vault account's blobs, and the transient
   * account's staging blobs and the fleet's queues and tables.
   */
  connectStores(stores: { keyVaultId: pulumi.Input<string>; vaultAccountId: pulumi.Input<string>; transientAccountId: pulumi.Input<string> }): void {
    this.connect("vault", stores.keyVaultId, "vault");
    this.connect("isolated", stores.vaultAccountId, "blob");
    for (const group of ["blob", "queue", "table"] as const) this.connect("transient", stores.transientAccountId, group);
  }

  /** A private endpoint to one sub-resource of a resource (a vault, an account's blob service), registered in its zone. */
  connect(target: string, resourceId: pulumi.Input<string>, group: PrivateLinkGroup): network.PrivateEndpoint {
    const endpointName = `pe-${target}-${group}`;
    const endpoint = new network.PrivateEndpoint(
      `${this.baseName}-${endpointName}`,
      {
        privateEndpointName: endpointName,
        resourceGroupName: this.resourceGroupName,
        location: this.location,
        tags: this.tags,
        subnet: { id: this.endpointSubnetId },
        privateLinkServiceConnections: [{ name: endpointName, privateLinkServiceId: resourceId, groupIds: [group] }],
      },
      { parent: this },
    );
    const zoneGroup = new network.PrivateDnsZoneGroup(
      `${this.baseName}-${endpointName}-dns`,
      {
        privateDnsZoneGroupName: "default",
        privateEndpointName: endpoint.name,
        resourceGroupName: this.resourceGroupName,
        privateDnsZoneConfigs: [{ name: group, privateDnsZoneId: this.zoneIds[group] }],
      },
      { parent: this },
    );
    this.endpoints.push(endpoint, zoneGroup);
    return endpoint;
  }
}
