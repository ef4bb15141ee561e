/**
 * Which RBAC action Azure Resource Manager (or Key Vault) checks for each request the emulator logged,
 * so tests can hold the backup role against what the runtime really calls.
 */
import type { LoggedRequest } from "../emulator/server.ts";

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
    return { actions: [`${segments[3]}/locations/${segments[6]}/read`], dataActions: [] };
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
  const types: string[] = [];
  for (let i = 0; i + 1 < rest.length; i += 2) types.push(rest[i]!);
  const trailing = rest.length % 2 === 1 ? rest.at(-1) : undefined;
  let action: string;
  if (rest.length === 1 && request.method === "GET") {
    // A listing of one type in a resource group (e.g. Snapshots_ListByResourceGroup): that type's read.
    action = `${namespace}/${rest[0]}/read`;
  } else if (trailing !== undefined) {
    if (request.method !== "POST") throw new Error(`unexpected ${request.method} on ${request.path}`);
    action = `${namespace}/${types.join("/")}/${trailing}/action`;
  } else {
    action = `${namespace}/${types.join("/")}/${verb(request.method)}`;
  }
  const actions = [action];
  // A VM is created with network interfaces: ARM also checks join on each of them (linked access check).
  if (/^Microsoft\.Compute\/virtualMachines\/write$/i.test(action)) actions.push("Microsoft.Network/networkInterfaces/join/action");
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
