/**
 * Microsoft.Resources: listing a subscription's (or a resource group's) resources, as the
 * scheduler's tag resolution calls it (Resources_List, Resources_ListByResourceGroup). Shapes follow
 * the REST specification: `{ value: GenericResourceExpanded[], nextLink? }`, paged by `$top`, and
 * `$filter` with `tagName eq 'k' [and tagValue eq 'v']`, `resourceType eq 't'`, `location eq 'l'`,
 * `resourceGroup eq 'g'` or `name eq 'n'`. As in Azure, a list filtered by tag does not return the
 * resources' tags, and a tag filter cannot be combined with other properties.
 */
import { type EmulatorReply, type EmulatorRequest, armError, json } from "../http.ts";
import type { ComputeProvider } from "./compute.ts";
import type { SqlProvider } from "./sql.ts";
import type { World } from "./world.ts";

interface Listed {
  id: string;
  name: string;
  type: string;
  location: string;
  resourceGroup: string;
  tags?: Record<string, string>;
  sku?: unknown;
  kind?: string;
  managedBy?: string;
}

type Clause = { property: string; value: string };

const FILTERABLE = ["tagname", "tagvalue", "resourcetype", "location", "resourcegroup", "name"];

/** Parses `a eq 'x' and b eq 'y'` (OData strings, '' escapes a quote); undefined if not that form. */
function parseFilter(filter: string): Clause[] | undefined {
  const clauses: Clause[] = [];
  const pattern = /^\s*([A-Za-z]+)\s+eq\s+'((?:[^']|'')*)'\s*(?:and\b|$)/;
  let rest = filter;
  while (rest.trim() !== "") {
    const match = pattern.exec(rest);
    if (!match) return undefined;
    clauses.push({ property: match[1]!.toLowerCase(), value: match[2]!.replace(/''/g, "'") });
    rest = rest.slice(match[0].length);
  }
  return clauses;
}

export class ResourcesProvider {
  private readonly world: World;
  private readonly compute: ComputeProvider;
  private readonly sql: SqlProvider;

  constructor(world: World, compute: ComputeProvider, sql: SqlProvider) {
    this.world = world;
    this.compute = compute;
    this.sql = sql;
  }

  private all(): Listed[] {
    const out: Listed[] = [];
    for (const d of this.compute.disks.values()) {
      out.push({ id: d.id, name: d.name, type: "Microsoft.Compute/disks", location: d.location, resourceGroup: d.resourceGroup, tags: d.tags, sku: d.sku, ...(d.managedBy ? { managedBy: d.managedBy } : {}) });
    }
    for (const s of this.compute.snapshots.values()) {
      out.push({ id: s.id, name: s.name, type: "Microsoft.Compute/snapshots", location: s.location, resourceGroup: s.resourceGroup, tags: s.tags, sku: s.sku });
    }
    for (const v of this.compute.virtualMachines.values()) {
      out.push({ id: v.id, name: v.name, type: "Microsoft.Compute/virtualMachines", location: v.location, resourceGroup: v.resourceGroup, tags: v.tags });
    }
    for (const s of this.sql.servers.values()) {
      out.push({ id: s.id, name: s.name, type: "Microsoft.Sql/servers", location: s.location, resourceGroup: s.resourceGroup, kind: "v12.0" });
    }
    for (const d of this.sql.databases.values()) {
      out.push({ id: d.id, name: `${d.server.name}/${d.name}`, type: "Microsoft.Sql/servers/databases", location: d.location, resourceGroup: d.server.resourceGroup, tags: d.tags, sku: d.sku, kind: "v12.0,user" });
    }
    return out;
  }

  /** GET /subscriptions/{sub}/resources or /subscriptions/{sub}/resourceGroups/{rg}/resources. */
  list(request: EmulatorRequest, group: string | undefined): EmulatorReply {
    if (request.method !== "GET") return armError(405, "MethodNotAllowed", `${request.method} is not allowed on a resource list.`);
    if (group !== undefined && !this.world.resourceGroup(group)) {
      return armError(404, "ResourceGroupNotFound", `Resource group '${group}' could not be found.`);
    }
    const filter = request.query.get("$filter");
    const clauses = filter ? parseFilter(filter) : [];
    if (!clauses || clauses.some((c) => !FILTERABLE.includes(c.property))) {
      return armError(400, "InvalidFilterInQueryString", `The $filter '${filter}' is not valid or uses a property the emulator does not filter on.`);
    }
    const byTag = clauses.some((c) => c.property === "tagname" || c.property === "tagvalue");
    if (byTag && clauses.some((c) => c.property !== "tagname" && c.property !== "tagvalue")) {
      return armError(400, "InvalidFilterInQueryString", "A tag filter cannot be combined with filters on other properties.");
    }
    if (clauses.some((c) => c.property === "tagvalue") && !clauses.some((c) => c.property === "tagname")) {
      return armError(400, "InvalidFilterInQueryString", "A tagValue filter needs a tagName filter.");
    }
    const value = (c: string) => clauses.find((clause) => clause.property === c)?.value;
    const tagName = value("tagname");
    const tagValue = value("tagvalue");
    let resources = this.all().filter((r) => group === undefined || r.resourceGroup.toLowerCase() === group.toLowerCase());
    if (tagName !== undefined) {
      resources = resources.filter((r) => {
        const key = Object.keys(r.tags ?? {}).find((k) => k.toLowerCase() === tagName.toLowerCase());
        return key !== undefined && (tagValue === undefined || r.tags![key] === tagValue);
      });
    }
    const equalsIgnoringCase = (a: string, b: string | undefined) => b === undefined || a.toLowerCase() === b.toLowerCase();
    resources = resources.filter(
      (r) =>
        equalsIgnoringCase(r.type, value("resourcetype")) &&
        equalsIgnoringCase(r.location.replace(/\s+/g, ""), value("location")?.replace(/\s+/g, "")) &&
        equalsIgnoringCase(r.resourceGroup, value("resourcegroup")) &&
        equalsIgnoringCase(r.name, value("name")),
    );
    resources.sort((a, b) => a.id.toLowerCase().localeCompare(b.id.toLowerCase()));

    // Paging: $top per page, the rest behind nextLink (a skip token, as ARM's are opaque).
    const top = Number(request.query.get("$top") ?? "0") || 1000;
    const skip = Number(request.query.get("$skiptoken") ?? "0") || 0;
    const page = resources.slice(skip, skip + top);
    const body: Record<string, unknown> = {
      value: page.map((r) => {
        const { resourceGroup: _group, tags, ...rest } = r;
        // "when resources are filtered by tag name and value, the original tags are not returned"
        return { ...rest, ...(tags && !byTag ? { tags } : {}) };
      }),
    };
    if (skip + top < resources.length) {
      const next = new URL(`${request.origin}${request.path}`);
      for (const [k, v] of request.query) if (k !== "$skiptoken") next.searchParams.set(k, v);
      next.searchParams.set("$skiptoken", String(skip + top));
      body.nextLink = next.toString();
    }
    return json(200, body);
  }
}
