/**
 * Which RBAC action Azure Resource Manager (or Key Vault) checks for each request the emulator logged,
 * so tests can hold each identity's role against what the runtime really calls under it.
 *
 * The URL shapes follow the REST specifications (Azure/azure-rest-api-specs), and the action names
 * Azure's published operations (test/data/azure-operations/, sources in its README):
 * - disks and snapshots (GET/PUT/DELETE, POST beginGetAccess/endGetAccess, the resource-group and
 *   subscription listings): specification/compute/resource-manager/Microsoft.Compute/DiskRP/stable/2024-03-02/DiskRP.json;
 * - virtual machines: specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2024-07-01/
 *   (VirtualMachines_Get, _CreateOrUpdate, _Delete);
 * - SQL databases (Get, CreateOrUpdate, Delete, POST export) and servers (POST import):
 *   specification/sql/resource-manager/Microsoft.Sql/stable/2021-11-01/Databases.json and its
 *   examples (ExportDatabase.json names the result type servers/databases/importExportOperationResults);
 * - resource listings: specification/resources/resource-manager/Microsoft.Resources (Resources_List,
 *   Resources_ListByResourceGroup, Resources_GetById);
 * - long-running operation monitors, which the specs leave to the Azure-AsyncOperation and Location
 *   headers: Compute's at /subscriptions/S/providers/Microsoft.Compute/locations/L/{DiskOperations|operations}/ID
 *   (the SDK's arm-compute recordings), SQL's at
 *   /subscriptions/S/resourceGroups/G/providers/Microsoft.Sql/locations/L/KIND/ID
 *   (Azure/azure-sdk-for-js sdk/sql/arm-sql/recordings/node/sql_test/recording_databases_delete_test.js);
 *   both shapes, subscription- and resource-group-scoped, map to NS/locations/KIND/read.
 */
import type { LoggedRequest } from "../emulator/server.ts";

/**
 * SQL's import/export monitors: Azure publishes no Microsoft.Sql/locations/importExport* operation,
 * only the database-scoped ones below (permissions/databases.md), so a role can hold only those. Where
 * sources disagree (Azure/azure-cli#15858 quotes ARM checking the locations/ form), the published one
 * is what a role can grant; see runtime/sources/azure-sql.ts.
 */
const SQL_IMPORT_EXPORT_MONITORS: Record<string, string> = {
  importexportazureasyncoperation: "Microsoft.Sql/servers/databases/importExportAzureAsyncOperation/read",
  importexportoperationresults: "Microsoft.Sql/servers/databases/importExportOperationResults/read",
};

/** The action for a GET of an operation monitor (NS/locations/L/KIND/ID), at either scope. */
function monitorAction(namespace: string, kind: string): string {
  if (namespace.toLowerCase() === "microsoft.sql") {
    const published = SQL_IMPORT_EXPORT_MONITORS[kind.toLowerCase()];
    if (published) return published;
  }
  return `${namespace}/locations/${kind}/read`;
}

/**
 * The RBAC action Azure checks for a request, derived from its path as ARM names operations:
 * NAMESPACE/TYPE[/SUBTYPE]/read|write|delete for GET|PUT|DELETE, NAMESPACE/TYPE/ACTION/action for
 * POST .../ACTION; an operation-status monitor (subscriptions/S/providers/NS/locations/L/KIND/ID)
 * is NS/locations/KIND/read. Key Vault key operations are data actions.
 * Returns undefined for what RBAC does not guard: Entra sign-in and the SAS-authorised disk data plane.
 */
export function actionsFor(request: LoggedRequest): { actions: string[]; dataActions: string[] } | undefined {
  const segments = request.path.split("/").filter(Boolean);
  if (request.endpoint !== "main") {
    const [keys, , version, operation] = segments;
    if (keys !== "keys") throw new Error(`unexpected Key Vault request ${request.method} ${request.path}`);
    if (request.method === "GET" && operation === undefined) return { actions: [], dataActions: ["Microsoft.KeyVault/vaults/keys/read"] };
    const op = (operation ?? version ?? "").toLowerCase();
    if (request.method === "POST" && op === "wrapkey") return { actions: [], dataActions: ["Microsoft.KeyVault/vaults/keys/wrap/action"] };
    if (request.method === "POST" && op === "unwrapkey") return { actions: [], dataActions: ["Microsoft.KeyVault/vaults/keys/unwrap/action"] };
    throw new Error(`no data action known for Key Vault ${request.method} ${request.path}`);
  }
  if (segments[0]?.toLowerCase() !== "subscriptions") return undefined; // Entra, md-* SAS data plane
  const lower = segments.map((s) => s.toLowerCase());
  if (lower[2] === "providers" && lower[4] === "locations") {
    return { actions: [monitorAction(segments[3]!, segments[6]!)], dataActions: [] };
  }
  // Listings across a subscription: its resources (Resources_List), or one provider's type (e.g. all snapshots).
  if (segments.length === 3 && lower[2] === "resources") return { actions: ["Microsoft.Resources/subscriptions/resources/read"], dataActions: [] };
  if (segments.length === 5 && lower[2] === "providers") return { actions: [`${segments[3]}/${segments[4]}/${verb(request.method)}`], dataActions: [] };
  if (segments.length === 5 && lower[2] === "resourcegroups" && lower[4] === "resources") {
    return { actions: ["Microsoft.Resources/subscriptions/resourceGroups/resources/read"], dataActions: [] };
  }
  if (lower[2] !== "resourcegroups") throw new Error(`unexpected ARM request ${request.method} ${request.path}`);
  if (segments.length === 4) return { actions: [`Microsoft.Resources/subscriptions/resourceGroups/${verb(request.method)}`], dataActions: [] };
  if (lower[4] !== "providers") throw new Error(`unexpected ARM request ${request.method} ${request.path}`);
  const namespace = segments[5]!;
  const rest = segments.slice(6);
  // A resource-group-scoped operation monitor: .../providers/NS/locations/L/KIND/ID.
  if (rest.length === 4 && rest[0]!.toLowerCase() === "locations" && request.method === "GET") {
    return { actions: [monitorAction(namespace, rest[2]!)], dataActions: [] };
  }
  const types: string[] = [];
  for (let i = 0; i + 1 < rest.length; i += 2) types.push(rest[i]!);
  const trailing = rest.length % 2 === 1 ? rest.at(-1) : undefined;
  let action: string;
  if (rest.length === 1 && request.method === "GET") {
    // A listing of one type in a resource group (e.g. Snapshots_ListByResourceGroup): that type's read.
    action = `${namespace}/${rest[0]}/read`;
  } else if (trailing !== undefined && request.method === "GET") {
    // A listing of a child type (e.g. FirewallRules_ListByServer): that type's read.
    action = `${namespace}/${[...types, trailing].join("/")}/read`;
  } else if (trailing !== undefined) {
    if (request.method !== "POST") throw new Error(`unexpected ${request.method} on ${request.path}`);
    action = `${namespace}/${types.join("/")}/${trailing}/action`;
  } else {
    action = `${namespace}/${types.join("/")}/${verb(request.method)}`;
  }
  const actions = [action];
  // A VM is created with network interfaces: ARM also checks join on each of them (linked access check).
  if (/^Microsoft\.Compute\/virtualMachines\/write$/i.test(action)) actions.push("Microsoft.Network/networkInterfaces/join/action");
  // A snapshot is created from its source disk: ARM also checks beginGetAccess on that disk (the
  // LinkedAuthorizationFailed error quoted in Azure/OpenShift#186).
  if (/^Microsoft\.Compute\/snapshots\/write$/i.test(action)) actions.push("Microsoft.Compute/disks/beginGetAccess/action");
  return { actions, dataActions: [] };
}

function verb(method: string): string {
  if (method === "GET" || method === "HEAD") return "read";
  if (method === "PUT" || method === "PATCH") return "write";
  if (method === "DELETE") return "delete";
  throw new Error(`no RBAC verb for ${method}`);
}

/** Case-insensitive sets of what a log used. */
export function usedActions(log: LoggedRequest[]): { actions: Set<string>; dataActions: Set<string> } {
  const actions = new Set<string>();
  const dataActions = new Set<string>();
  for (const request of log) {
    const found = actionsFor(request);
    for (const a of found?.actions ?? []) actions.add(a.toLowerCase());
    for (const a of found?.dataActions ?? []) dataActions.add(a.toLowerCase());
  }
  return { actions, dataActions };
}
