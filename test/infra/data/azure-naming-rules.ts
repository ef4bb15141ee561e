/**
 * Azure's naming rules for every resource type the Pulumi program registers (and the networking
 * and monitoring types issue 9 adds), keyed by the Pulumi type token. Each row is copied from an
 * Azure reference, named in `source`; nothing here is taken from our own code or emulator.
 *
 * Sources (read 2026-11-30):
 * - NAMES: MicrosoftDocs/azure-docs articles/azure-resource-manager/management/resource-name-rules.md
 *   (the version dated 11/20/2023; each row below names its provider section). Older versions
 *   (01/2020) list the same values for the rows used here, except that they have no Microsoft.App
 *   section and no roleAssignments/roleDefinitions rows.
 * - KV_OBJECTS: MicrosoftDocs/azure-docs articles/key-vault/general/about-keys-secrets-certificates.md,
 *   "Objects, identifiers, and versioning": an object name is 1-127 characters, starting with a
 *   letter, containing only 0-9, a-z, A-Z and -.
 * - CONTAINER_APPS: the Microsoft.App section of NAMES lists only `containerApps` (2-32, lowercase
 *   letters, numbers and hyphens, start with a letter, end with alphanumeric). Azure's own refusal
 *   (error ContainerAppInvalidName, quoted in MicrosoftDocs/azure-docs issue 95762 and in
 *   Azure/azure-cli pull request 27933, which fixed job-name examples for the same reason) adds
 *   "cannot have '--'". The REST spec (Azure/azure-rest-api-specs
 *   specification/app/resource-manager/Microsoft.App/stable/2024-03-01/Jobs.json, JobNameParameter)
 *   only says `^[-\w\._\(\)]+$`. The sources disagree; we hold jobs AND managed environments (for
 *   which no reference gives a rule) to the strictest one: the containerApps rule plus no `--`.
 * - GRAPH_APP: microsoftgraph/microsoft-graph-docs api-reference/v1.0/resources/application.md,
 *   displayName: "Maximum length is 256 characters".
 */

export type NameScope =
  | "global"
  | "tenant"
  | "subscription"
  | "resource group"
  | "storage account"
  | "key vault"
  | "virtual network"
  | "private DNS zone"
  | "private endpoint"
  | "scope of assignment";

export interface NamingRule {
  /** The Azure resource type (provider/type), for reading alongside the docs. */
  azureType: string;
  /** The Pulumi input that sets the Azure name; null when the resource has no name of its own. */
  nameProperty: string | null;
  /** Where Azure requires the name to be unique. */
  scope: NameScope;
  minLength: number;
  maxLength: number;
  /** The characters and start/end rules, as one expression over the whole name. */
  pattern: RegExp;
  /** The rule in the source's words. */
  rule: string;
  source: string;
}

const NAMES = "MicrosoftDocs/azure-docs articles/azure-resource-manager/management/resource-name-rules.md";
const KV_OBJECTS = "MicrosoftDocs/azure-docs articles/key-vault/general/about-keys-secrets-certificates.md#objects-identifiers-and-versioning";
const GRAPH_APP = "microsoftgraph/microsoft-graph-docs api-reference/v1.0/resources/application.md (displayName)";
const CONTAINER_APPS = `${NAMES} (Microsoft.App: containerApps) + ContainerAppInvalidName ("cannot have '--'"; MicrosoftDocs/azure-docs issue 95762)`;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Alphanumerics, underscores, periods and hyphens; start alphanumeric; end alphanumeric or underscore (Microsoft.Network). */
const NETWORK_NAME = /^[a-zA-Z0-9][-\w.]*[a-zA-Z0-9_]$|^[a-zA-Z0-9]$/;
/** Lowercase letters, numbers and hyphens; start with a letter; end alphanumeric; no "--". */
const CONTAINER_APPS_NAME = /^(?!.*--)[a-z][a-z0-9-]*[a-z0-9]$/;

export const NAMING_RULES: Record<string, NamingRule> = {
  "azure-native:resources:ResourceGroup": {
    azureType: "Microsoft.Resources/resourcegroups",
    nameProperty: "resourceGroupName",
    scope: "subscription",
    minLength: 1,
    maxLength: 90,
    // Unicode letters are allowed too; Bulwark's names are ASCII, so the ASCII part of the rule is what is checked.
    pattern: /^[-\w.()]*[-\w()]$/,
    rule: "Alphanumerics, underscores, parentheses, hyphens, periods, and unicode characters that match the regex documentation. Can't end with period.",
    source: `${NAMES} (Microsoft.Resources: resourcegroups)`,
  },
  "azure-native:storage:StorageAccount": {
    azureType: "Microsoft.Storage/storageAccounts",
    nameProperty: "accountName",
    scope: "global",
    minLength: 3,
    maxLength: 24,
    pattern: /^[a-z0-9]+$/,
    rule: "Lowercase letters and numbers.",
    source: `${NAMES} (Microsoft.Storage: storageAccounts)`,
  },
  "azure-native:storage:BlobServiceProperties": {
    azureType: "Microsoft.Storage/storageAccounts/blobServices",
    nameProperty: "blobServicesName",
    scope: "storage account",
    minLength: 7,
    maxLength: 7,
    pattern: /^default$/,
    rule: "Must be `default`.",
    source: `${NAMES} (Microsoft.Storage: storageAccounts / blobServices)`,
  },
  "azure-native:storage:BlobContainer": {
    azureType: "Microsoft.Storage/storageAccounts/blobServices/containers",
    nameProperty: "containerName",
    scope: "storage account",
    minLength: 3,
    maxLength: 63,
    pattern: /^(?!.*--)[a-z0-9][a-z0-9-]*$/,
    rule: "Lowercase letters, numbers, and hyphens. Start with lowercase letter or number. Can't use consecutive hyphens.",
    source: `${NAMES} (Microsoft.Storage: storageAccounts / blobServices / containers)`,
  },
  "azure-native:storage:ManagementPolicy": {
    azureType: "Microsoft.Storage/storageAccounts/managementPolicies",
    nameProperty: "managementPolicyName",
    scope: "storage account",
    minLength: 7,
    maxLength: 7,
    pattern: /^default$/,
    rule: "Must be `default`.",
    source: `${NAMES} (Microsoft.Storage: storageAccounts / managementPolicies)`,
  },
  "azure-native:storage:BlobContainerImmutabilityPolicy": {
    azureType: "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies",
    nameProperty: "immutabilityPolicyName",
    scope: "storage account",
    minLength: 7,
    maxLength: 7,
    pattern: /^default$/,
    rule: "Must be `default` (NAMES has no row for it; the REST spec's immutabilityPolicyName parameter allows only \"default\").",
    source: "Azure/azure-rest-api-specs specification/storage/resource-manager/Microsoft.Storage/stable/2023-05-01/blob.json (BlobContainers_CreateOrUpdateImmutabilityPolicy, parameter immutabilityPolicyName, enum [default])",
  },
  "azure-native:storage:Queue": {
    azureType: "Microsoft.Storage/storageAccounts/queueServices/queues",
    nameProperty: "queueName",
    scope: "storage account",
    minLength: 3,
    maxLength: 63,
    pattern: /^(?!.*--)[a-z0-9][a-z0-9-]*[a-z0-9]$/,
    rule: "Lowercase letters, numbers, and hyphens. Can't start or end with hyphen. Can't use consecutive hyphens.",
    source: `${NAMES} (Microsoft.Storage: queue)`,
  },
  "azure-native:storage:Table": {
    azureType: "Microsoft.Storage/storageAccounts/tableServices/tables",
    nameProperty: "tableName",
    scope: "storage account",
    minLength: 3,
    maxLength: 63,
    pattern: /^[a-zA-Z][a-zA-Z0-9]*$/,
    rule: "Alphanumerics. Start with letter.",
    source: `${NAMES} (Microsoft.Storage: table)`,
  },
  "azure-native:keyvault:Vault": {
    azureType: "Microsoft.KeyVault/vaults",
    nameProperty: "vaultName",
    scope: "global",
    minLength: 3,
    maxLength: 24,
    pattern: /^(?!.*--)[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]$/,
    rule: "Alphanumerics and hyphens. Start with letter. End with letter or digit. Can't contain consecutive hyphens.",
    source: `${NAMES} (Microsoft.KeyVault: vaults)`,
  },
  "azure-native:keyvault:Key": {
    azureType: "Microsoft.KeyVault/vaults/keys",
    nameProperty: "keyName",
    scope: "key vault",
    minLength: 1,
    maxLength: 127,
    pattern: /^[a-zA-Z][a-zA-Z0-9-]*$/,
    rule: "A 1-127 character string, starting with a letter and containing only 0-9, a-z, A-Z, and -.",
    source: KV_OBJECTS,
  },
  "azure-native:authorization:RoleDefinition": {
    azureType: "Microsoft.Authorization/roleDefinitions",
    nameProperty: "roleDefinitionId",
    scope: "tenant",
    minLength: 36,
    maxLength: 36,
    pattern: GUID,
    rule: "Must be a globally unique identifier (GUID).",
    source: `${NAMES} (Microsoft.Authorization: roleDefinitions)`,
  },
  "azure-native:authorization:RoleAssignment": {
    azureType: "Microsoft.Authorization/roleAssignments",
    nameProperty: "roleAssignmentName",
    scope: "tenant",
    minLength: 36,
    maxLength: 36,
    pattern: GUID,
    rule: "Must be a globally unique identifier (GUID).",
    source: `${NAMES} (Microsoft.Authorization: roleAssignments)`,
  },
  "azure-native:authorization:ManagementLockAtResourceLevel": {
    azureType: "Microsoft.Authorization/locks",
    nameProperty: "lockName",
    scope: "scope of assignment",
    minLength: 1,
    maxLength: 90,
    pattern: /^[-\w.()]*[-\w()]$/,
    rule: "Alphanumerics, periods, underscores, hyphens, and parenthesis. Can't end in period.",
    source: `${NAMES} (Microsoft.Authorization: locks)`,
  },
  "azure-native:authorization:ManagementLockByScope": {
    azureType: "Microsoft.Authorization/locks",
    nameProperty: "lockName",
    scope: "scope of assignment",
    minLength: 1,
    maxLength: 90,
    pattern: /^[-\w.()]*[-\w()]$/,
    rule: "Alphanumerics, periods, underscores, hyphens, and parenthesis. Can't end in period.",
    source: `${NAMES} (Microsoft.Authorization: locks)`,
  },
  "azure-native:managedidentity:UserAssignedIdentity": {
    azureType: "Microsoft.ManagedIdentity/userAssignedIdentities",
    nameProperty: "resourceName",
    scope: "resource group",
    minLength: 3,
    maxLength: 128,
    pattern: /^[a-zA-Z0-9][-\w]*$/,
    rule: "Alphanumerics, hyphens, and underscores. Start with letter or number.",
    source: `${NAMES} (Microsoft.ManagedIdentity: userAssignedIdentities)`,
  },
  "azure-native:operationalinsights:Workspace": {
    azureType: "Microsoft.OperationalInsights/workspaces",
    nameProperty: "workspaceName",
    scope: "resource group",
    minLength: 4,
    maxLength: 63,
    pattern: /^[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]$/,
    rule: "Alphanumerics and hyphens. Start and end with alphanumeric.",
    source: `${NAMES} (Microsoft.OperationalInsights: workspaces)`,
  },
  "azure-native:app:ManagedEnvironment": {
    azureType: "Microsoft.App/managedEnvironments",
    nameProperty: "environmentName",
    scope: "resource group",
    minLength: 2,
    maxLength: 32,
    pattern: CONTAINER_APPS_NAME,
    rule: "No reference gives a rule for environments: held to the containerApps rule (2-32, lowercase letters, numbers and hyphens, start with a letter, end alphanumeric, no '--').",
    source: CONTAINER_APPS,
  },
  "azure-native:app:Job": {
    azureType: "Microsoft.App/jobs",
    nameProperty: "jobName",
    scope: "resource group",
    minLength: 2,
    maxLength: 32,
    pattern: CONTAINER_APPS_NAME,
    rule: "A name must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character and cannot have '--'. The length must be between 2 and 32 characters inclusive.",
    source: CONTAINER_APPS,
  },
  "azuread:index/application:Application": {
    azureType: "Microsoft Graph application (Entra app registration)",
    nameProperty: "displayName",
    scope: "tenant",
    minLength: 1,
    maxLength: 256,
    pattern: /^.+$/,
    rule: "The display name for the application. Maximum length is 256 characters.",
    source: GRAPH_APP,
  },
  "azuread:index/servicePrincipal:ServicePrincipal": {
    azureType: "Microsoft Graph servicePrincipal",
    // Identified by its application's client id; it has no name of its own to set.
    nameProperty: null,
    scope: "tenant",
    minLength: 0,
    maxLength: 0,
    pattern: /^$/,
    rule: "A service principal is created for an application (appId); its display name comes from the application.",
    source: "microsoftgraph/microsoft-graph-docs api-reference/v1.0/resources/serviceprincipal.md",
  },
  // Networking and monitoring (issue 9: private endpoints, alerts): rows ready for those resources.
  "azure-native:network:VirtualNetwork": {
    azureType: "Microsoft.Network/virtualNetworks",
    nameProperty: "virtualNetworkName",
    scope: "resource group",
    minLength: 2,
    maxLength: 64,
    pattern: NETWORK_NAME,
    rule: "Alphanumerics, underscores, periods, and hyphens. Start with alphanumeric. End alphanumeric or underscore.",
    source: `${NAMES} (Microsoft.Network: virtualNetworks)`,
  },
  "azure-native:network:Subnet": {
    azureType: "Microsoft.Network/virtualNetworks/subnets",
    nameProperty: "subnetName",
    scope: "virtual network",
    minLength: 1,
    maxLength: 80,
    pattern: NETWORK_NAME,
    rule: "Alphanumerics, underscores, periods, and hyphens. Start with alphanumeric. End alphanumeric or underscore.",
    source: `${NAMES} (Microsoft.Network: virtualnetworks / subnets)`,
  },
  "azure-native:network:PrivateEndpoint": {
    azureType: "Microsoft.Network/privateEndpoints",
    nameProperty: "privateEndpointName",
    scope: "resource group",
    minLength: 2,
    maxLength: 64,
    pattern: NETWORK_NAME,
    rule: "Alphanumerics, underscores, periods, and hyphens. Start with alphanumeric. End alphanumeric or underscore.",
    source: `${NAMES} (Microsoft.Network: privateEndpoints)`,
  },
  "azure-native:network:PrivateDnsZoneGroup": {
    azureType: "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
    nameProperty: "privateDnsZoneGroupName",
    scope: "private endpoint",
    minLength: 1,
    maxLength: 80,
    pattern: NETWORK_NAME,
    // resource-name-rules.md has no row for zone groups: held to the rule it gives Microsoft.Network's other child resources (subnets, virtualNetworkLinks, securityRules).
    rule: "No published rule: held to Microsoft.Network's child-resource rule (1-80; alphanumerics, underscores, periods, and hyphens; start alphanumeric; end alphanumeric or underscore).",
    source: `${NAMES} (Microsoft.Network: virtualnetworks / subnets, by analogy)`,
  },
  "azure-native:privatedns:PrivateZone": {
    azureType: "Microsoft.Network/privateDnsZones",
    nameProperty: "privateZoneName",
    scope: "resource group",
    minLength: 1,
    maxLength: 63,
    pattern: /^[\w-]+(\.[\w-]+){1,33}$/,
    rule: "1-63 characters, 2 to 34 labels; each label can contain alphanumerics, underscores, and hyphens; labels separated by a period.",
    source: `${NAMES} (Microsoft.Network: privateDnsZones)`,
  },
  "azure-native:privatedns:VirtualNetworkLink": {
    azureType: "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
    nameProperty: "virtualNetworkLinkName",
    scope: "private DNS zone",
    minLength: 1,
    maxLength: 80,
    pattern: NETWORK_NAME,
    rule: "Alphanumerics, underscores, periods, and hyphens. Start with alphanumeric. End alphanumeric or underscore.",
    source: `${NAMES} (Microsoft.Network: privateDnsZones / virtualNetworkLinks)`,
  },
  "azure-native:monitor:ActionGroup": {
    azureType: "Microsoft.Insights/actionGroups",
    nameProperty: "actionGroupName",
    scope: "resource group",
    minLength: 1,
    maxLength: 260,
    pattern: /^[^:<>+/&%\\?\x00-\x1f]*[^:<>+/&%\\?\x00-\x1f. ]$/,
    rule: "Can't use :<>+/&%\\? or control characters. Can't end with space or period.",
    source: `${NAMES} (Microsoft.Insights: actionGroups)`,
  },
  "azure-native:monitor:DiagnosticSetting": {
    azureType: "Microsoft.Insights/diagnosticSettings",
    nameProperty: "name",
    scope: "scope of assignment",
    minLength: 1,
    maxLength: 260,
    // NAMES says only "Not specified" for /diagnosticSettings; held to the scheduledQueryRules rule of the same provider.
    pattern: /^[^*<>%{}&:\\?/#\x00-\x1f]*[^*<>%{}&:\\?/#\x00-\x1f. ]$/,
    rule: "NAMES gives no rule (\"Not specified\"); held to Microsoft.Insights' scheduledQueryRules rule: can't use *<>%{}&:\\?/# or control characters, can't end with space or period.",
    source: `${NAMES} (Microsoft.Insights: diagnosticSettings, "Not specified"; scheduledQueryRules)`,
  },
  "azure-native:monitor:ScheduledQueryRule": {
    azureType: "Microsoft.Insights/scheduledQueryRules",
    nameProperty: "ruleName",
    scope: "resource group",
    minLength: 1,
    maxLength: 260,
    pattern: /^[^*<>%{}&:\\?/#\x00-\x1f]*[^*<>%{}&:\\?/#\x00-\x1f. ]$/,
    rule: "Can't use *<>%{}&:\\?/# or control characters. Can't end with space or period.",
    source: `${NAMES} (Microsoft.Insights: scheduledQueryRules)`,
  },
  "azure-native:monitor:MetricAlert": {
    azureType: "Microsoft.Insights/metricAlerts",
    nameProperty: "ruleName",
    scope: "resource group",
    minLength: 1,
    maxLength: 260,
    pattern: /^[^*#&+:<>?@%{}\\/\x00-\x1f]*[^*#&+:<>?@%{}\\/\x00-\x1f. ]$/,
    rule: "Can't use *#&+:<>?@%{}\\/ or control characters. Can't end with space or period.",
    source: `${NAMES} (Microsoft.Insights: metricAlerts)`,
  },
};

/** Pulumi types that are not Azure resources (Bulwark's own components, stack references, dynamic resources such as the RBAC propagation wait). */
export function isAzureResourceType(type: string): boolean {
  return !type.startsWith("bulwark:") && !type.startsWith("pulumi:") && !type.startsWith("pulumi-nodejs:");
}
