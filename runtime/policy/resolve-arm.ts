/**
 * Resolves a policy's protect section through Azure Resource Manager:
 * - explicit ids: GET the resource by id (for its location and to prove it exists);
 * - tagged selectors: list the subscription's resources with `tagName eq 'k' and tagValue eq 'v'`
 *   and keep those of the selected type. ARM does not accept a tag filter combined with a
 *   resourceType filter, so the type is checked here.
 */
import type { TokenCredential } from "@azure/identity";
import { ResourceManagementClient } from "@azure/arm-resources";
import { NotFoundError, ServiceError } from "../errors.ts";
import { requiresAction } from "../azure/permissions.ts";
import {
  kindOfResourceId,
  kindOfResourceType,
  normalizeRegion,
  resourceTypeOf,
  subscriptionOf,
  type ItemKind,
  type ItemResolver,
  type ProtectedItem,
  type ResolveOptions,
} from "./items.ts";
import type { Policy } from "./policy.ts";

// The scheduler resolves policies to find what is due; the worker resolves them again to check a
// job's item (policy/authority.ts). A tag selector lists the subscription's resources (Resources_List);
// an explicit id is read by id (Resources_GetById), which ARM authorises as that type's read.
const RESOLVERS = ["inventory", "backup"] as const;
requiresAction("Microsoft.Resources/subscriptions/resources/read", "policy resolution: find the resources a policy protects by tag", { identity: RESOLVERS });
requiresAction("Microsoft.Compute/virtualMachines/read", "policy resolution: read a VM named by id", { identity: RESOLVERS });
requiresAction("Microsoft.Compute/disks/read", "policy resolution: read a disk named by id", { identity: RESOLVERS });
requiresAction("Microsoft.Sql/servers/databases/read", "policy resolution: read a database named by id", { identity: RESOLVERS });

export interface ArmResolverOptions {
  /** The ARM endpoint; https://management.azure.com by default (tests give the emulator's). */
  endpoint?: string;
  /** API versions used to GET each kind by id. */
  apiVersions?: Partial<Record<ItemKind, string>>;
}

const DEFAULT_API_VERSIONS: Record<ItemKind, string> = {
  vm: "2024-07-01",
  disk: "2024-03-02",
  sql: "2021-11-01",
};

function odataString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown })?.statusCode;
  return typeof status === "number" ? status : undefined;
}

export class ArmItemResolver implements ItemResolver {
  private readonly credential: TokenCredential;
  private readonly options: ArmResolverOptions;
  private readonly clients = new Map<string, ResourceManagementClient>();

  constructor(credential: TokenCredential, options: ArmResolverOptions = {}) {
    this.credential = credential;
    this.options = options;
  }

  private client(subscriptionId: string): ResourceManagementClient {
    let client = this.clients.get(subscriptionId);
    if (!client) {
      client = new ResourceManagementClient(this.credential, subscriptionId, {
        ...(this.options.endpoint ? { endpoint: this.options.endpoint } : {}),
      });
      this.clients.set(subscriptionId, client);
    }
    return client;
  }

  async resolve(policy: Policy, options: ResolveOptions = {}): Promise<ProtectedItem[]> {
    const items = new Map<string, ProtectedItem>();
    for (const id of policy.protect.resources) {
      const kind = kindOfResourceId(id);
      const subscription = subscriptionOf(id);
      if (!kind || !subscription) continue; // validated on load
      const apiVersion = this.options.apiVersions?.[kind] ?? DEFAULT_API_VERSIONS[kind];
      let resource;
      try {
        // The SDK's path is "/{resourceId}": without the id's own leading slash it is the canonical path.
        resource = await this.client(subscription).resources.getById(id.replace(/^\/+/, ""), apiVersion);
      } catch (error) {
        if (statusOf(error) === 404) {
          const reason = `policy ${policy.name} (${policy.source}) protects ${id}, which does not exist; remove it from protect.resources`;
          // One deleted resource must not stop the policy: the caller reports it and protects the rest.
          if (options.onMissing) {
            options.onMissing({ id, kind, reason });
            continue;
          }
          throw new NotFoundError(reason);
        }
        throw new ServiceError(`Azure Resource Manager could not read ${id}: ${(error as Error).message}`, {
          cause: error,
        });
      }
      if (!resource.location) throw new ServiceError(`Azure Resource Manager returned ${id} without a location`);
      items.set(id.toLowerCase(), { id: resource.id ?? id, kind, region: normalizeRegion(resource.location) });
    }
    for (const selector of policy.protect.tagged) {
      const wantedKind = kindOfResourceType(selector.type);
      const filter = `tagName eq ${odataString(selector.tagName)} and tagValue eq ${odataString(selector.tagValue)}`;
      for (const subscription of selector.subscriptions) {
        try {
          for await (const resource of this.client(subscription).resources.list({ filter })) {
            if (!resource.id || !resource.location) continue;
            const type = resource.type ?? resourceTypeOf(resource.id);
            if (!type || kindOfResourceType(type) !== wantedKind) continue;
            const kind = kindOfResourceId(resource.id);
            if (!kind) continue;
            items.set(resource.id.toLowerCase(), { id: resource.id, kind, region: normalizeRegion(resource.location) });
          }
        } catch (error) {
          throw new ServiceError(
            `Azure Resource Manager could not list resources tagged ${selector.tagName}=${selector.tagValue} ` +
              `in subscription ${subscription}: ${(error as Error).message}; check that the backup role can read it`,
            { cause: error },
          );
        }
      }
    }
    return [...items.values()];
  }
}

/** An in-memory resolver over a fixed inventory: for tests, the demo and offline runs. */
export class StaticItemResolver implements ItemResolver {
  private readonly inventory: (ProtectedItem & { tags?: Record<string, string> })[];

  constructor(inventory: (ProtectedItem & { tags?: Record<string, string> })[]) {
    this.inventory = inventory;
  }

  async resolve(policy: Policy, options: ResolveOptions = {}): Promise<ProtectedItem[]> {
    const items = new Map<string, ProtectedItem>();
    const strip = ({ id, kind, region }: ProtectedItem): ProtectedItem => ({ id, kind, region: normalizeRegion(region) });
    for (const id of policy.protect.resources) {
      const found = this.inventory.find((r) => r.id.toLowerCase() === id.toLowerCase());
      if (!found) {
        const reason = `policy ${policy.name} (${policy.source}) protects ${id}, which does not exist`;
        if (options.onMissing) {
          options.onMissing({ id, kind: kindOfResourceId(id)!, reason });
          continue;
        }
        throw new NotFoundError(reason);
      }
      items.set(id.toLowerCase(), strip(found));
    }
    for (const selector of policy.protect.tagged) {
      const wanted = kindOfResourceType(selector.type);
      for (const resource of this.inventory) {
        const subscription = subscriptionOf(resource.id)?.toLowerCase();
        if (!selector.subscriptions.some((s) => s.toLowerCase() === subscription)) continue;
        if (resource.kind !== wanted || resource.tags?.[selector.tagName] !== selector.tagValue) continue;
        items.set(resource.id.toLowerCase(), strip(resource));
      }
    }
    return [...items.values()];
  }
}
