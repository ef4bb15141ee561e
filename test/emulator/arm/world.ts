/** What the emulated subscription holds that every resource provider shares: resource groups. */
export interface ResourceGroup {
  id: string;
  name: string;
  location: string;
}

export class World {
  readonly subscriptionId: string;
  readonly tenantId: string;
  private readonly groups = new Map<string, ResourceGroup>();

  constructor(subscriptionId: string, tenantId: string) {
    this.subscriptionId = subscriptionId;
    this.tenantId = tenantId;
  }

  addResourceGroup(name: string, location: string): ResourceGroup {
    const group = { id: `/subscriptions/${this.subscriptionId}/resourceGroups/${name}`, name, location };
    this.groups.set(name.toLowerCase(), group);
    return group;
  }

  resourceGroup(name: string): ResourceGroup | undefined {
    return this.groups.get(name.toLowerCase());
  }

  resourceGroups(): ResourceGroup[] {
    return [...this.groups.values()];
  }
}

/** ARM compares resource ids without regard to case. */
export function idKey(id: string): string {
  return id.toLowerCase().replace(/\/+$/, "");
}

/** Splits an ARM resource id into its resource group, provider, type and name. */
export function parseResourceId(id: string):
  | { subscriptionId: string; resourceGroup: string; provider: string; type: string; name: string }
  | undefined {
  const match = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/([^/]+)\/([^/]+)\/([^/]+)$/i.exec(id.replace(/\/+$/, ""));
  if (!match) return undefined;
  const [, subscriptionId, resourceGroup, provider, type, name] = match;
  return { subscriptionId: subscriptionId!, resourceGroup: resourceGroup!, provider: provider!, type: type!, name: name! };
}
