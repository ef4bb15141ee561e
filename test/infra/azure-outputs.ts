/**
 * What Azure returns after a create, for the resource types Bulwark's program registers: the state
 * the Pulumi mocks hand back, so tests and the policy pack's stack policies see what they would
 * see after a real `pulumi up`, not the program's own inputs echoed back.
 *
 * - Which properties a type has as outputs comes from @pulumi/azure-native's generated resource
 *   classes (their constructors list every output with `undefined /*out*\/` when reading state;
 *   the SDK generates them from the REST specs' response schemas). Inputs that are not outputs
 *   (path parameters such as `accountName`, `resourceGroupName`, `containerName`; a Key's
 *   `properties` envelope) are dropped.
 * - Ids, names and computed values follow the REST specs' response examples
 *   (Azure/azure-rest-api-specs, specification/storage/resource-manager/Microsoft.Storage/stable/
 *   2023-05-01/examples/: BlobContainersPutObjectLevelWorm.json, BlobServicesPut.json,
 *   StorageAccountSetManagementPolicy.json, QueueOperationPut.json,
 *   StorageAccountCreateUserAssignedEncryptionIdentityWithCMK.json).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createHash } from "node:crypto";

export const SUBSCRIPTION = "11111111-2222-3333-4444-555555555555";
export const TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

const require = createRequire(import.meta.url);

export function guid(...parts: string[]): string {
  const hex = createHash("sha256").update(parts.join("/")).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

const outputNamesByType = new Map<string, Set<string> | undefined>();

/**
 * The output properties of an `azure-native:<module>:<Resource>` or `azuread:index/<x>:<Resource>`
 * type, read from the SDK class's state-reading branch; undefined for types with no SDK class
 * (components, stack references).
 */
export function outputProperties(type: string): Set<string> | undefined {
  if (outputNamesByType.has(type)) return outputNamesByType.get(type);
  const file = sdkClassFile(type);
  let names: Set<string> | undefined;
  if (file) {
    const source = readFileSync(file, "utf8");
    // The constructor's `else` branch (the resource is read by id) assigns exactly the outputs.
    const branch = source.slice(source.indexOf("\n        else {"), source.indexOf("opts = pulumi.mergeOptions(utilities.resourceOptsDefaults()"));
    names = new Set([...branch.matchAll(/resourceInputs\["(\w+)"\] = undefined/g)].map((m) => m[1]));
  }
  outputNamesByType.set(type, names);
  return names;
}

function sdkClassFile(type: string): string | undefined {
  const [pkg, module, resource] = type.split(":");
  const file = resource ? resource[0].toLowerCase() + resource.slice(1) : "";
  try {
    if (pkg === "azure-native") return require.resolve(`@pulumi/azure-native/${module}/${file}.js`);
    if (pkg === "azuread") return require.resolve(`@pulumi/azuread/${file}.js`);
  } catch {
    return undefined;
  }
  return undefined;
}

/** The input that holds a type's Azure name, where the program may set it (else auto-named). */
const NAME_INPUT: Record<string, string> = {
  "azure-native:resources:ResourceGroup": "resourceGroupName",
  "azure-native:storage:StorageAccount": "accountName",
  "azure-native:storage:BlobContainer": "containerName",
  "azure-native:storage:Queue": "queueName",
  "azure-native:storage:Table": "tableName",
  "azure-native:keyvault:Vault": "vaultName",
  "azure-native:keyvault:Key": "keyName",
  "azure-native:authorization:RoleAssignment": "roleAssignmentName",
  "azure-native:authorization:RoleDefinition": "roleDefinitionId",
  "azure-native:managedidentity:UserAssignedIdentity": "resourceName",
  "azure-native:app:Job": "jobName",
  "azure-native:app:ManagedEnvironment": "environmentName",
  "azure-native:app:ContainerAppsAuthConfig": "authConfigName",
  "azure-native:operationalinsights:Workspace": "workspaceName",
  "azure-native:monitor:DiagnosticSetting": "name",
  "azure-native:monitor:ScheduledQueryRule": "ruleName",
  "azure-native:monitor:MetricAlert": "ruleName",
};

/**
 * The name Azure gives the resource: the program's explicit name, a fixed one for singleton child
 * resources, else Pulumi's auto-name (the logical name plus a random suffix, here a stable one).
 */
export function azureName(type: string, logicalName: string, inputs: Record<string, any>): string {
  // Singletons: the response examples name them so (BlobServicesPut.json: "default";
  // StorageAccountSetManagementPolicy.json: "DefaultManagementPolicy").
  if (type === "azure-native:storage:BlobServiceProperties") return "default";
  if (type === "azure-native:storage:ManagementPolicy") return "DefaultManagementPolicy";
  // BlobContainersGetImmutabilityPolicy.json: "default".
  if (type === "azure-native:storage:BlobContainerImmutabilityPolicy") return "default";
  const resource = type.split(":")[2] ?? "";
  const conventional = `${resource[0]?.toLowerCase()}${resource.slice(1)}Name`;
  const explicit = inputs[NAME_INPUT[type] ?? conventional] ?? inputs.lockName ?? inputs.name;
  if (typeof explicit === "string") return explicit;
  return `${logicalName}${createHash("sha256").update(logicalName).digest("hex").slice(0, 8)}`;
}

/**
 * Azure's id for the types the program uses (the resource types' paths in their REST specs);
 * other types get a plausible id under their group.
 */
export function azureId(type: string, name: string, inputs: Record<string, any>): string {
  const group = `/subscriptions/${SUBSCRIPTION}/resourceGroups/${inputs.resourceGroupName ?? "unknown"}`;
  const account = `${group}/providers/Microsoft.Storage/storageAccounts/${inputs.accountName}`;
  switch (type) {
    case "azure-native:resources:ResourceGroup":
      return `/subscriptions/${SUBSCRIPTION}/resourceGroups/${name}`;
    case "azure-native:storage:StorageAccount":
      return `${group}/providers/Microsoft.Storage/storageAccounts/${name}`;
    case "azure-native:storage:BlobServiceProperties":
      return `${account}/blobServices/default`;
    case "azure-native:storage:BlobContainer":
      return `${account}/blobServices/default/containers/${name}`;
    case "azure-native:storage:BlobContainerImmutabilityPolicy":
      return `${account}/blobServices/default/containers/${inputs.containerName}/immutabilityPolicies/default`;
    case "azure-native:storage:ManagementPolicy":
      return `${account}/managementPolicies/default`;
    case "azure-native:storage:Queue":
      return `${account}/queueServices/default/queues/${name}`;
    case "azure-native:storage:Table":
      return `${account}/tableServices/default/tables/${name}`;
    case "azure-native:keyvault:Vault":
      return `${group}/providers/Microsoft.KeyVault/vaults/${name}`;
    case "azure-native:keyvault:Key":
      return `${group}/providers/Microsoft.KeyVault/vaults/${inputs.vaultName}/keys/${name}`;
    case "azure-native:managedidentity:UserAssignedIdentity":
      return `${group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`;
    case "azure-native:authorization:RoleDefinition":
      return `${inputs.scope}/providers/Microsoft.Authorization/roleDefinitions/${name}`;
    case "azure-native:authorization:RoleAssignment":
      return `${inputs.scope}/providers/Microsoft.Authorization/roleAssignments/${name}`;
    case "azure-native:authorization:ManagementLockByScope":
      return `${inputs.scope}/providers/Microsoft.Authorization/locks/${name}`;
    case "azure-native:authorization:ManagementLockAtResourceLevel": {
      const parent = inputs.parentResourcePath ? `${inputs.parentResourcePath}/` : "";
      return `${group}/providers/${inputs.resourceProviderNamespace}/${parent}${inputs.resourceType}/${inputs.resourceName}/providers/Microsoft.Authorization/locks/${name}`;
    }
    case "azure-native:authorization:ManagementLockAtResourceGroupLevel":
      return `${group}/providers/Microsoft.Authorization/locks/${name}`;
    case "azure-native:authorization:ManagementLockAtSubscriptionLevel":
      return `/subscriptions/${SUBSCRIPTION}/providers/Microsoft.Authorization/locks/${name}`;
    case "azure-native:monitor:ActionGroup":
      return `${group}/providers/Microsoft.Insights/actionGroups/${name}`;
    case "azure-native:monitor:MetricAlert":
      return `${group}/providers/Microsoft.Insights/metricAlerts/${name}`;
    case "azure-native:monitor:ScheduledQueryRule":
      return `${group}/providers/Microsoft.Insights/scheduledQueryRules/${name}`;
    case "azure-native:network:VirtualNetwork":
      return `${group}/providers/Microsoft.Network/virtualNetworks/${name}`;
    case "azure-native:network:Subnet":
      return `${group}/providers/Microsoft.Network/virtualNetworks/${inputs.virtualNetworkName}/subnets/${name}`;
    case "azure-native:network:PrivateEndpoint":
      return `${group}/providers/Microsoft.Network/privateEndpoints/${name}`;
    case "azure-native:network:PrivateDnsZoneGroup":
      return `${group}/providers/Microsoft.Network/privateEndpoints/${inputs.privateEndpointName}/privateDnsZoneGroups/${name}`;
    case "azure-native:privatedns:PrivateZone":
      return `${group}/providers/Microsoft.Network/privateDnsZones/${name}`;
    case "azure-native:privatedns:VirtualNetworkLink":
      return `${group}/providers/Microsoft.Network/privateDnsZones/${inputs.privateZoneName}/virtualNetworkLinks/${name}`;
    case "azure-native:monitor:DiagnosticSetting":
      return `${inputs.resourceUri}/providers/Microsoft.Insights/diagnosticSettings/${name}`;
    case "azure-native:app:Job":
      return `${group}/providers/Microsoft.App/jobs/${name}`;
    case "azure-native:app:ManagedEnvironment":
      return `${group}/providers/Microsoft.App/managedEnvironments/${name}`;
    case "azure-native:app:ContainerApp":
      return `${group}/providers/Microsoft.App/containerApps/${name}`;
    // An app's authConfig is its child "current" (AuthConfigs_CreateOrUpdate.json, Azure/azure-rest-api-specs
    // specification/app/resource-manager/Microsoft.App/ContainerApps/examples/2026-07-01).
    case "azure-native:app:ContainerAppsAuthConfig":
      return `${group}/providers/Microsoft.App/containerApps/${inputs.containerAppName}/authConfigs/${name}`;
    case "azure-native:operationalinsights:Workspace":
      return `${group}/providers/Microsoft.OperationalInsights/workspaces/${name}`;
    default:
      return type.startsWith("azuread:") ? guid(type, name) : `${group}/providers/${type}/${name}`;
  }
}

/** The ARM resource type an id names (e.g. Microsoft.Storage/storageAccounts/blobServices/containers). */
export function armType(id: string): string | undefined {
  const parts = id.split("/providers/").pop()!.split("/");
  if (!id.includes("/providers/")) return id.includes("/resourceGroups/") ? "Microsoft.Resources/resourceGroups" : undefined;
  const types = [parts[0]];
  for (let i = 1; i < parts.length; i += 2) types.push(parts[i]);
  return types.join("/");
}

/** The recorded identities' computed values, so an `identity` output can name each one's principal. */
export type IdentityLookup = (id: string) => { principalId: string; clientId: string } | undefined;

/**
 * A managed identity block as Azure returns it: user-assigned identities as a map from id to
 * { principalId, clientId } (the CMK example's response), where the program sends a list of ids.
 */
function identityOutput(identity: Record<string, any>, lookup: IdentityLookup): Record<string, any> {
  const assigned = identity.userAssignedIdentities;
  if (!Array.isArray(assigned)) return identity;
  const map = Object.fromEntries(assigned.map((id: string) => [id, lookup(id) ?? { principalId: guid("principal", id), clientId: guid("client", id) }]));
  return { ...identity, userAssignedIdentities: map };
}

/** What Azure computes on create, for the types whose computed values the program or tests read. */
function computed(type: string, name: string, id: string, inputs: Record<string, any>): Record<string, any> {
  switch (type) {
    case "azure-native:managedidentity:UserAssignedIdentity":
      return { principalId: guid("principal", id), clientId: guid("client", id), tenantId: TENANT };
    case "azure-native:storage:StorageAccount": {
      const endpoint = (service: string) => `https://${name}.${service}.core.windows.net/`;
      return {
        provisioningState: "Succeeded",
        primaryLocation: inputs.location,
        primaryEndpoints: Object.fromEntries(["blob", "dfs", "file", "queue", "table", "web"].map((s) => [s, endpoint(s)])),
      };
    }
    case "azure-native:keyvault:Vault":
      return { properties: { ...inputs.properties, vaultUri: `https://${name}.vault.azure.net/`, provisioningState: "Succeeded" } };
    case "azure-native:keyvault:Key": {
      const keyUri = `https://${inputs.vaultName}.vault.azure.net/keys/${name}`;
      // A Key's `properties` input is flattened in the output (kty, keySize, keyOps, rotationPolicy...).
      return { ...inputs.properties, keyUri, keyUriWithVersion: `${keyUri}/0123456789abcdef0123456789abcdef` };
    }
    case "azure-native:storage:BlobContainerImmutabilityPolicy":
      // Created Unlocked (BlobContainersGetImmutabilityPolicy.json; locking is a separate call).
      return { state: "Unlocked" };
    case "azure-native:operationalinsights:Workspace":
      return { customerId: guid("workspace", id) };
    case "azuread:index/application:Application":
      return { clientId: guid("client", id), objectId: id };
    case "azuread:index/servicePrincipal:ServicePrincipal":
      return { objectId: id };
    default:
      return {};
  }
}

/**
 * The state Azure returns after creating a resource of `type` from `inputs`: the inputs that are
 * outputs of the type, with identities and computed values as Azure shapes them, and the id,
 * name and ARM type. Types without an SDK class (components) keep their inputs.
 */
export function azureState(type: string, logicalName: string, inputs: Record<string, any>, lookup: IdentityLookup): { id: string; name: string; state: Record<string, any> } {
  const name = azureName(type, logicalName, inputs);
  const id = azureId(type, name, inputs);
  const outputs = outputProperties(type);
  if (!outputs) return { id, name, state: { ...inputs, name, id } };
  const state: Record<string, any> = {};
  for (const [key, value] of Object.entries({ ...inputs, ...computed(type, name, id, inputs) })) {
    if (outputs.has(key)) state[key] = value;
  }
  if (state.identity) state.identity = identityOutput(state.identity, lookup);
  if (type === "azure-native:storage:StorageAccount" && state.encryption?.encryptionIdentity?.encryptionUserAssignedIdentity) {
    // Azure returns the encryption identity's id with "resourcegroups" in lower case while the
    // identity map keeps the id as sent (CMK example's response): ARM ids compare case-insensitively.
    const identity = state.encryption.encryptionIdentity.encryptionUserAssignedIdentity.replace("/resourceGroups/", "/resourcegroups/");
    state.encryption = { ...state.encryption, encryptionIdentity: { ...state.encryption.encryptionIdentity, encryptionUserAssignedIdentity: identity } };
  }
  const resourceType = type.startsWith("azure-native:") ? armType(id) : undefined;
  if (outputs.has("name")) state.name = name;
  if (resourceType && outputs.has("type")) state.type = resourceType;
  return { id, name, state: { ...state, id } };
}
