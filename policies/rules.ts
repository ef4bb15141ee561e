/**
 * Bulwark's rules as code. Each policy reads only a resource's type and properties (or, for stack
 * policies, all the stack's resources), so tests call them directly on plain objects; the
 * PolicyPack itself is constructed only in policies/index.ts.
 *
 * Every violation message says what is wrong and how to fix it.
 */
import type { Policy, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy } from "@pulumi/policy";
import { consoleResourcePolicies, consoleStackPolicies } from "./console-rules.ts";

export const TYPES = {
  storageAccount: "azure-native:storage:StorageAccount",
  blobContainer: "azure-native:storage:BlobContainer",
  blobServiceProperties: "azure-native:storage:BlobServiceProperties",
  managementPolicy: "azure-native:storage:ManagementPolicy",
  containerImmutabilityPolicy: "azure-native:storage:BlobContainerImmutabilityPolicy",
  vault: "azure-native:keyvault:Vault",
  key: "azure-native:keyvault:Key",
  job: "azure-native:app:Job",
  roleAssignment: "azure-native:authorization:RoleAssignment",
  roleDefinition: "azure-native:authorization:RoleDefinition",
  userAssignedIdentity: "azure-native:managedidentity:UserAssignedIdentity",
  lockByScope: "azure-native:authorization:ManagementLockByScope",
  lockAtResource: "azure-native:authorization:ManagementLockAtResourceLevel",
  lockAtResourceGroup: "azure-native:authorization:ManagementLockAtResourceGroupLevel",
  lockAtSubscription: "azure-native:authorization:ManagementLockAtSubscriptionLevel",
} as const;

/** The tag that says which kind of Bulwark storage an account is. */
export const STORAGE_KIND_TAG = "bulwark-storage";
/** The tag a region stack puts on everything it creates. */
export const REGION_TAG = "bulwark-region";

const FORBIDDEN_ROLES: Record<string, string> = {
  "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
  "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
  "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
};

type Props = Record<string, any>;
/** What a resource policy needs of its arguments (a subset of ResourceValidationArgs). */
export type ResourceArgs = Pick<ResourceValidationArgs, "type" | "props" | "name" | "urn">;
/** What a stack policy needs (a subset of StackValidationArgs). */
export interface StackResource {
  type: string;
  name: string;
  urn: string;
  props: Props;
}
export interface StackArgs {
  resources: StackResource[];
}

export interface ResourceRule extends Policy {
  validateResource: (args: ResourceArgs, reportViolation: ReportViolation) => void;
}
export interface StackRule extends Policy {
  validateStack: (args: StackArgs, reportViolation: ReportViolation) => void;
}

function resourceRule(rule: ResourceRule): ResourceRule & ResourceValidationPolicy {
  return rule as ResourceRule & ResourceValidationPolicy;
}
function stackRule(rule: StackRule): StackRule & StackValidationPolicy {
  return { ...rule, validateStack: (args: StackValidationArgs | StackArgs, report: ReportViolation) => rule.validateStack(args as StackArgs, report) } as StackRule & StackValidationPolicy;
}

function storageKind(props: Props): string | undefined {
  return props.tags?.[STORAGE_KIND_TAG];
}

export const noPublicBlobAccess = resourceRule({
  name: "no-public-blob-access",
  description: "Storage accounts disallow public blob access and containers are private.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type === TYPES.storageAccount && props.allowBlobPublicAccess !== false) {
      report("Public blob access is allowed on this storage account. Set allowBlobPublicAccess: false.");
    }
    if (type === TYPES.blobContainer && props.publicAccess !== undefined && props.publicAccess !== "None") {
      report(`Container has public access "${props.publicAccess}". Set publicAccess: "None".`);
    }
  },
});

export const noSharedKeyAccess = resourceRule({
  name: "no-shared-key-access",
  description: "Backup storage accepts only Entra ID (managed identity) authorization, never account keys or SAS signed with them.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type === TYPES.storageAccount && props.allowSharedKeyAccess !== false) {
      report("Shared-key access is allowed on this storage account. Set allowSharedKeyAccess: false and authorize with managed identities.");
    }
  },
});

export const minimumTls12 = resourceRule({
  name: "minimum-tls-1-2",
  description: "Storage accounts require TLS 1.2 or later over HTTPS only.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.storageAccount) return;
    if (props.minimumTlsVersion !== "TLS1_2" && props.minimumTlsVersion !== "TLS1_3") {
      report(`Minimum TLS version is ${props.minimumTlsVersion ?? "the service default"}. Set minimumTlsVersion: "TLS1_2".`);
    }
    if (props.enableHttpsTrafficOnly === false) report("Plain HTTP is allowed. Set enableHttpsTrafficOnly: true.");
  },
});

export const storageKindDeclared = resourceRule({
  name: "storage-kind-declared",
  description: `Every storage account says whether it is isolated or transient storage (tag ${STORAGE_KIND_TAG}), so the rules for each apply.`,
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.storageAccount) return;
    const kind = storageKind(props);
    if (kind !== "isolated" && kind !== "transient") {
      report(`Storage account has no valid ${STORAGE_KIND_TAG} tag (got ${JSON.stringify(kind)}). Tag it "isolated" (the customer's vault) or "transient" (staging).`);
    }
  },
});

/**
 * The user-assigned identity ids of a resource, lower-cased: inputs list them, Azure's output maps
 * each to its principal, and ARM ids compare case-insensitively (Azure returns the encryption
 * identity with "resourcegroups" in lower case: Azure/azure-rest-api-specs, Microsoft.Storage
 * stable/2023-05-01/examples/StorageAccountCreateUserAssignedEncryptionIdentityWithCMK.json).
 */
function assignedIdentities(props: Props): string[] {
  const assigned = props.identity?.userAssignedIdentities ?? [];
  return (Array.isArray(assigned) ? assigned : Object.keys(assigned)).map((id: string) => String(id).toLowerCase());
}

export const isolatedStorageCustomerKey = resourceRule({
  name: "isolated-storage-customer-managed-key",
  description: "Isolated storage is encrypted with the customer's key in Key Vault, through a user-assigned identity.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.storageAccount || storageKind(props) !== "isolated") return;
    const encryption = props.encryption ?? {};
    if (encryption.keySource !== "Microsoft.Keyvault") {
      report(`Isolated storage is encrypted with ${encryption.keySource ?? "Microsoft-managed keys"}. Set encryption.keySource: "Microsoft.Keyvault" with the customer's key in keyVaultProperties.`);
      return;
    }
    if (!encryption.keyVaultProperties?.keyName || !encryption.keyVaultProperties?.keyVaultUri) {
      report("Isolated storage names no key. Set encryption.keyVaultProperties.keyName and keyVaultUri to the customer's key.");
    }
    const identity = encryption.encryptionIdentity?.encryptionUserAssignedIdentity;
    if (!identity) {
      report("Isolated storage reaches the key without a user-assigned identity. Set encryption.encryptionIdentity.encryptionUserAssignedIdentity.");
    } else if (!assignedIdentities(props).includes(String(identity).toLowerCase())) {
      report("The encryption identity is not assigned to the account. Add it to identity.userAssignedIdentities.");
    }
  },
});

export const isolatedStorageImmutability = resourceRule({
  name: "isolated-storage-immutability",
  description: "Isolated storage has version-level immutability (WORM) with a retention period, set when the account is created.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type === TYPES.storageAccount && storageKind(props) === "isolated") {
      const immutability = props.immutableStorageWithVersioning;
      if (immutability?.enabled !== true) {
        report("Isolated storage lacks version-level immutability. Set immutableStorageWithVersioning.enabled: true when the account is created (it cannot be added later).");
      }
      // The default period is the vault container's policy (BlobContainerImmutabilityPolicy), not the
      // account's: an account default would also cover the lock objects (infra/components/isolated-storage.ts).
    }
  },
});

/**
 * The storage account a child resource (blob service, container, management policy) belongs to,
 * lower-cased: its `accountName` input (what a preview sees), else the account segment of its
 * Azure id (what Azure returns after create: the outputs have no accountName, but every child's
 * id is `.../storageAccounts/<account>/...`, as in the REST specs' examples, e.g.
 * Azure/azure-rest-api-specs .../Microsoft.Storage/stable/2023-05-01/examples/BlobServicesPut.json).
 */
function parentAccountOf(child: StackResource): string | undefined {
  const name = child.props.accountName ?? /\/storageAccounts\/([^/]+)\//i.exec(String(child.props.id ?? ""))?.[1];
  return typeof name === "string" ? name.toLowerCase() : undefined;
}

function byAccount(resources: StackResource[], type: string): Map<string, StackResource[]> {
  const map = new Map<string, StackResource[]>();
  for (const r of resources.filter((r) => r.type === type)) {
    const account = parentAccountOf(r);
    if (account === undefined) continue;
    map.set(account, [...(map.get(account) ?? []), r]);
  }
  return map;
}

/** An account's Azure name: its `accountName` input, or `name` in Azure's output. */
function accountName(account: StackResource): string {
  return account.props.accountName ?? account.props.name ?? account.name;
}

export const isolatedStorageVersioning = stackRule({
  name: "isolated-storage-versioning",
  description: "Isolated storage keeps blob versions, soft-deletes blobs and containers, has a default immutability period, and its containers are immutable per version.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    const services = byAccount(resources, TYPES.blobServiceProperties);
    const containers = byAccount(resources, TYPES.blobContainer);
    const containerPolicies = byAccount(resources, TYPES.containerImmutabilityPolicy);
    for (const account of resources.filter((r) => r.type === TYPES.storageAccount && storageKind(r.props) === "isolated")) {
      const name = accountName(account);
      const service = services.get(name.toLowerCase())?.[0]?.props;
      if (!service || service.isVersioningEnabled !== true) {
        report(`Isolated storage ${name} does not keep blob versions. Add BlobServiceProperties with isVersioningEnabled: true.`, account.urn);
      }
      if (!service || service.deleteRetentionPolicy?.enabled !== true || service.containerDeleteRetentionPolicy?.enabled !== true) {
        report(`Isolated storage ${name} lacks soft delete. Enable deleteRetentionPolicy and containerDeleteRetentionPolicy in its BlobServiceProperties.`, account.urn);
      }
      if (!immutabilityPolicies(account, containerPolicies).some((p) => p.immutabilityPeriodSinceCreationInDays >= 1)) {
        report(`Isolated storage ${name} has no default immutability period, so its blobs are written without WORM. Set immutabilityPeriodSinceCreationInDays on the vault container's BlobContainerImmutabilityPolicy (or the account's immutableStorageWithVersioning.immutabilityPolicy).`, account.urn);
      }
      for (const container of containers.get(name.toLowerCase()) ?? []) {
        if (container.props.immutableStorageWithVersioning?.enabled !== true) {
          report(`Container ${container.props.containerName ?? container.props.name ?? container.name} in isolated storage ${name} is not immutable per version. Set immutableStorageWithVersioning.enabled: true.`, container.urn);
        }
      }
    }
  },
});

export const transientStorageLifecycle = stackRule({
  name: "transient-storage-lifecycle",
  description: "Transient storage deletes every blob older than a day with a lifecycle rule.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    const policies = byAccount(resources, TYPES.managementPolicy);
    for (const account of resources.filter((r) => r.type === TYPES.storageAccount && storageKind(r.props) === "transient")) {
      const name = accountName(account);
      const rules: Props[] = (policies.get(name.toLowerCase()) ?? []).flatMap((p) => p.props.policy?.rules ?? []);
      const deletes = rules.some((rule) => {
        const days = rule.definition?.actions?.baseBlob?.delete;
        const age = days?.daysAfterModificationGreaterThan ?? days?.daysAfterCreationGreaterThan;
        const unfiltered = !(rule.definition?.filters?.prefixMatch?.length) && !(rule.definition?.filters?.blobIndexMatch?.length);
        return rule.enabled !== false && typeof age === "number" && age <= 1 && unfiltered;
      });
      if (!deletes) {
        report(`Transient storage ${name} has no lifecycle rule deleting blobs after a day. Add a ManagementPolicy rule with actions.baseBlob.delete.daysAfterModificationGreaterThan: 1 and no prefix filter.`, account.urn);
      }
    }
  },
});

export const keyVaultProtection = resourceRule({
  name: "key-vault-purge-protection-and-rbac",
  description: "Key vaults use RBAC authorization, soft delete and purge protection.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.vault) return;
    const p = props.properties ?? {};
    if (p.enableRbacAuthorization !== true) report("Key vault uses access policies. Set properties.enableRbacAuthorization: true and grant roles instead.");
    if (p.enablePurgeProtection !== true) report("Key vault can be purged, destroying the key and with it every backup. Set properties.enablePurgeProtection: true.");
    if (p.enableSoftDelete === false) report("Key vault has soft delete off. Set properties.enableSoftDelete: true.");
  },
});

export const keyRotation = resourceRule({
  name: "key-rotation-policy",
  description: "Keys have a rotation policy that rotates them automatically.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.key) return;
    // Inputs nest the policy in `properties`; Azure's output (and the SDK's) has it at the top.
    const policy = props.properties?.rotationPolicy ?? props.rotationPolicy;
    const actions: Props[] = policy?.lifetimeActions ?? [];
    const rotates = actions.some((a) => String(a.action?.type).toLowerCase() === "rotate" && (a.trigger?.timeAfterCreate || a.trigger?.timeBeforeExpiry));
    if (!rotates) report('Key has no automatic rotation. Add properties.rotationPolicy.lifetimeActions with { action: { type: "rotate" }, trigger: { timeAfterCreate: "P90D" } }.');
  },
});

/** Environment names that hold credentials, and values that look like one. */
const SECRET_NAME = /(SECRET|PASSWORD|PASSWD|TOKEN|CONNECTION_?STRING|WEBHOOK|_KEY|^KEY|SAS|LOGIN)$/i;
const SECRET_VALUE = /(AccountKey=|SharedAccessSignature=|SharedAccessKey=|[?&]sig=|password=)/i;
/** A Key Vault key's identifier (e.g. BULWARK_KEY_VAULT_KEY) names a key; it is not key material. */
const KEY_REFERENCE = /^https:\/\/[a-z0-9-]+\.(vault|managedhsm)\.[a-z0-9.-]+\/keys\/[A-Za-z0-9-]+(\/[0-9a-f]{32})?\/?$/i;

export const containerAppsJobHardening = resourceRule({
  name: "container-apps-job-hardening",
  description: "Container Apps jobs run under a managed identity, have a replica timeout, and carry no plain-text secrets.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.job) return;
    const identityType = String(props.identity?.type ?? "None");
    if (!/UserAssigned|SystemAssigned/.test(identityType)) {
      report("Job has no managed identity. Set identity: { type: \"UserAssigned\", userAssignedIdentities: [<identity id>] }.");
    }
    const configuration = props.configuration ?? {};
    if (!(configuration.replicaTimeout > 0)) report("Job has no replica timeout, so a stuck run holds resources forever. Set configuration.replicaTimeout (seconds).");
    for (const container of props.template?.containers ?? []) {
      for (const env of container.env ?? []) {
        if (env.value === undefined) continue;
        const value = String(env.value);
        const namedSecret = SECRET_NAME.test(env.name ?? "") && !KEY_REFERENCE.test(value);
        if (namedSecret || SECRET_VALUE.test(value)) {
          report(`Environment variable ${env.name} of container ${container.name} holds a plain-text secret. Store it as a job secret (configuration.secrets) and reference it with secretRef.`);
        }
      }
    }
    for (const rule of configuration.eventTriggerConfig?.scale?.rules ?? []) {
      if ((rule.auth ?? []).length > 0 || !rule.identity) {
        report(`Scale rule ${rule.name} authenticates with a secret. Remove auth and set identity to the job's user-assigned identity.`);
      }
    }
  },
});

export const noBroadRoles = resourceRule({
  name: "no-broad-role-assignments",
  description: "No Owner, Contributor or User Access Administrator assignments: Bulwark's identities get only their own least-privilege roles.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.roleAssignment) return;
    const guid = String(props.roleDefinitionId ?? "").split("/").pop()?.toLowerCase() ?? "";
    const role = FORBIDDEN_ROLES[guid];
    if (role) report(`Assigns the built-in ${role} role at ${props.scope}. Assign Bulwark's backup role or a narrow data role instead.`);
  },
});

export const noWildcardCustomRoles = resourceRule({
  name: "no-wildcard-custom-roles",
  description: "Custom roles list exact actions, never `*`.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.roleDefinition) return;
    for (const permission of props.permissions ?? []) {
      for (const action of [...(permission.actions ?? []), ...(permission.dataActions ?? [])]) {
        if (String(action).includes("*")) report(`Custom role grants the wildcard action "${action}". List the exact actions the runtime calls (runtime/azure/permissions.ts).`);
      }
    }
  },
});


function locationOf(r: StackResource): string | undefined {
  return typeof r.props.location === "string" ? r.props.location.toLowerCase().replace(/\s+/g, "") : undefined;
}

/** The vault URLs of the policies a scheduler runs (BULWARK_POLICY_JSON); none if it is not JSON. */
function policyVaults(env: Map<string, string>): string[] {
  try {
    const documents: unknown = JSON.parse(env.get("BULWARK_POLICY_JSON") ?? "[]");
    if (!Array.isArray(documents)) return [];
    return documents.map((d) => (d as { vault?: unknown })?.vault).filter((v): v is string => typeof v === "string");
  } catch {
    return [];
  }
}

function accountOfUrl(url: string): string | undefined {
  try {
    return new URL(url).hostname.split(".")[0];
  } catch {
    return undefined;
  }
}

function envOf(job: StackResource): Map<string, string> {
  const env = new Map<string, string>();
  for (const container of job.props.template?.containers ?? []) {
    for (const e of container.env ?? []) if (typeof e.value === "string") env.set(e.name, e.value);
  }
  return env;
}

export const sameRegion = stackRule({
  name: "agents-storage-and-scopes-in-one-region",
  description: "A region's agents, its transient and isolated storage and the scopes it protects are all in the same region.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    // Everything a region stack tags with its region is in that region.
    for (const r of resources) {
      const region = r.props.tags?.[REGION_TAG];
      const location = locationOf(r);
      // Non-regional resources (action groups, DNS zones, activity log alerts) are in location
      // "global" (e.g. Azure/azure-rest-api-specs, Microsoft.Network dnszones examples).
      if (region && location && location !== "global" && location !== region) {
        report(`${r.name} is in ${location} but belongs to region ${region}. Create it in ${region}.`, r.urn);
      }
    }
    const accounts = new Map(resources.filter((r) => r.type === TYPES.storageAccount).map((r) => [accountName(r), r]));
    const principals = new Map(resources.filter((r) => r.type === TYPES.userAssignedIdentity).map((r) => [r.props.id ?? r.urn, r.props.principalId]));
    for (const job of resources.filter((r) => r.type === TYPES.job)) {
      const env = envOf(job);
      // A worker names its region; a scheduler is tagged with it like everything of a region stack.
      const region = env.get("BULWARK_REGION") ?? job.props.tags?.[REGION_TAG];
      if (!region) continue; // the bridge serves every region; it moves no data
      if (locationOf(job) !== region) report(`Agent ${job.name} runs in ${locationOf(job)} but serves ${region}. Deploy it in ${region}.`, job.urn);
      // Transient storage, the fleet's tables and queues (which live there) and the vaults its
      // policies write to must be in the agent's region.
      const urls: [string, string][] = ["BULWARK_TRANSIENT", "BULWARK_FLEET_TABLE_ENDPOINT", "BULWARK_FLEET_QUEUE_ENDPOINT"]
        .filter((variable) => env.has(variable))
        .map((variable) => [variable, env.get(variable)!]);
      for (const vault of policyVaults(env)) urls.push(["The vault of BULWARK_POLICY_JSON", vault]);
      for (const [what, url] of urls) {
        const name = accountOfUrl(url);
        const account = name === undefined ? undefined : accounts.get(name);
        if (account && locationOf(account) !== region) {
          report(`${what} of ${job.name} points at ${accountName(account)} in ${locationOf(account)}, not ${region}. Use storage in the agent's own region.`, job.urn);
        }
      }
      // Its identity is granted access only at the protected scopes it was given for its region.
      const declared = new Set([env.get("BULWARK_PROTECTED_SCOPES"), env.get("BULWARK_RESTORE_SCOPES")].join(",").split(",").filter(Boolean).map((s) => s.toLowerCase()));
      // Inputs list identity ids; a deployed job's outputs map each id to its principal.
      const assigned = job.props.identity?.userAssignedIdentities ?? [];
      const principalIds = new Set<string>(
        Array.isArray(assigned)
          ? assigned.map((id: string) => principals.get(id)).filter(Boolean)
          : Object.values(assigned as Record<string, { principalId?: string }>).map((v) => v.principalId ?? "").filter(Boolean),
      );
      for (const assignment of resources.filter((r) => r.type === TYPES.roleAssignment && principalIds.has(r.props.principalId))) {
        const scope = String(assignment.props.scope ?? "");
        const isProtectedScope = /^\/subscriptions\/[^/]+(\/resourceGroups\/[^/]+)?$/i.test(scope);
        if (isProtectedScope && !declared.has(scope.toLowerCase())) {
          report(`${job.name} (region ${region}) is granted access at ${scope}, which is not one of its region's protected scopes. Protect it from the stack of the scope's own region.`, assignment.urn);
        }
      }
    }
  },
});

/**
 * The isolated account's default immutability policies: the account's own, and the container
 * policies (BlobContainerImmutabilityPolicy) under it. Where the default sits is the program's
 * choice; Azure applies blob > container > account (MicrosoftDocs/azure-docs
 * articles/storage/blobs/immutable-version-level-worm-policies.md).
 */
function immutabilityPolicies(account: StackResource, containerPolicies: Map<string, StackResource[]>): Props[] {
  const own = account.props.immutableStorageWithVersioning?.immutabilityPolicy;
  return [...(own ? [own] : []), ...(containerPolicies.get(accountName(account).toLowerCase()) ?? []).map((p) => p.props)];
}

export const isolatedStorageImmutabilityLocked = stackRule({
  name: "isolated-storage-immutability-locked",
  description: "Warns while the isolated storage's immutability policy is not locked: unlocked, anyone with account write can shorten or remove it.",
  enforcementLevel: "advisory",
  validateStack: ({ resources }, report) => {
    const containerPolicies = byAccount(resources, TYPES.containerImmutabilityPolicy);
    for (const account of resources.filter((r) => r.type === TYPES.storageAccount && storageKind(r.props) === "isolated")) {
      // Azure/azure-rest-api-specs Microsoft.Storage storage.json, AccountImmutabilityPolicyProperties.state:
      // a policy "can only be created in a Disabled or Unlocked state"; "Only a policy in an Unlocked
      // state can transition to a Locked state which cannot be reverted". A container policy's
      // `state` is output only (blob.json ImmutabilityPolicyProperty), so before Azure reports one
      // (a preview, a new policy) it is Unlocked.
      const states = immutabilityPolicies(account, containerPolicies).map((p) => p.state ?? "Unlocked");
      if (!states.includes("Locked")) {
        report(`Isolated storage ${accountName(account)}'s immutability policy is ${states[0] ?? "Unlocked"}: anyone with account write can shorten it. Once the first backups are verified, lock it as infra/README.md's deploy checklist says (then set retention.immutabilityLocked: true).`, account.urn);
      }
    }
  },
});

export const isolatedStorageVersionCleanup = stackRule({
  name: "isolated-storage-previous-versions-expire",
  description: "Isolated storage deletes previous blob versions with a lifecycle rule, so what prune removes stops costing once its immutability has passed.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    const policies = byAccount(resources, TYPES.managementPolicy);
    for (const account of resources.filter((r) => r.type === TYPES.storageAccount && storageKind(r.props) === "isolated")) {
      const name = accountName(account);
      const rules: Props[] = (policies.get(name.toLowerCase()) ?? []).flatMap((p) => p.props.policy?.rules ?? []);
      // A lifecycle rule's `version.delete.daysAfterCreationGreaterThan` deletes previous versions
      // (MicrosoftDocs/azure-docs articles/storage/blobs/lifecycle-management-overview.md, "Rule actions").
      const deletesVersions = rules.some((rule) => rule.enabled !== false && typeof rule.definition?.actions?.version?.delete?.daysAfterCreationGreaterThan === "number");
      if (!deletesVersions) {
        report(`Isolated storage ${name} keeps previous blob versions for ever: packs prune deletes still cost. Add a ManagementPolicy rule with actions.version.delete.daysAfterCreationGreaterThan at least the immutability period.`, account.urn);
      }
    }
  },
});

/**
 * The scope a management lock applies to, without its subscription, lower-cased: from its id where
 * Azure returned one (`<scope>/providers/Microsoft.Authorization/locks/<name>`; the by-scope lock's
 * outputs have no `scope`), else from its inputs. "" for a subscription-wide lock.
 */
function lockedScope(lock: StackResource): string | undefined {
  const p = lock.props;
  let scope: string | undefined;
  if (typeof p.id === "string") scope = p.id.replace(/\/providers\/Microsoft\.Authorization\/locks\/[^/]+$/i, "");
  else if (lock.type === TYPES.lockByScope) scope = p.scope;
  else if (lock.type === TYPES.lockAtResourceGroup) scope = `/resourceGroups/${p.resourceGroupName}`;
  else if (lock.type === TYPES.lockAtSubscription) scope = "";
  else if (lock.type === TYPES.lockAtResource) {
    const parent = p.parentResourcePath ? `${p.parentResourcePath}/` : "";
    scope = `/resourceGroups/${p.resourceGroupName}/providers/${p.resourceProviderNamespace}/${parent}${p.resourceType}/${p.resourceName}`;
  }
  return typeof scope === "string" ? withoutSubscription(scope) : undefined;
}

function withoutSubscription(id: string): string {
  return id.replace(/^\/subscriptions\/[^/]+/i, "").toLowerCase();
}

/** A resource's id without its subscription: Azure's id, else built from its name inputs. */
function resourcePath(r: StackResource, provider: string, nameInput: string): string | undefined {
  if (typeof r.props.id === "string") return withoutSubscription(r.props.id);
  const name = r.props[nameInput];
  return typeof name === "string" ? `/resourcegroups/${String(r.props.resourceGroupName).toLowerCase()}/providers/${provider.toLowerCase()}/${name.toLowerCase()}` : undefined;
}

const LOCK_TYPES = new Set<string>([TYPES.lockByScope, TYPES.lockAtResource, TYPES.lockAtResourceGroup, TYPES.lockAtSubscription]);

export const deleteLocks = stackRule({
  name: "isolated-storage-and-key-vault-delete-locks",
  description: "The isolated storage account and the key vault carry a CanNotDelete (or ReadOnly) management lock, so a mistaken delete of them or their resource group fails.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    // Lock levels: Azure/azure-rest-api-specs specification/resources/resource-manager/
    // Microsoft.Authorization/stable/2020-05-01/locks.json, ManagementLockProperties.level
    // (CanNotDelete: "authorized users are able to read and modify the resources, but not delete";
    // ReadOnly forbids deletes too). A lock applies to its scope and everything under it.
    const locked = resources
      .filter((r) => LOCK_TYPES.has(r.type) && (r.props.level === "CanNotDelete" || r.props.level === "ReadOnly"))
      .map(lockedScope)
      .filter((s): s is string => s !== undefined);
    const covered = (path: string) => locked.some((scope) => path === scope || path.startsWith(`${scope}/`) || scope === "");
    const guarded: [StackResource, string][] = [
      ...resources.filter((r) => r.type === TYPES.storageAccount && storageKind(r.props) === "isolated").map((r) => [r, resourcePath(r, "Microsoft.Storage/storageAccounts", "accountName")] as [StackResource, string | undefined]),
      ...resources.filter((r) => r.type === TYPES.vault).map((r) => [r, resourcePath(r, "Microsoft.KeyVault/vaults", "vaultName")] as [StackResource, string | undefined]),
    ].filter((entry): entry is [StackResource, string] => entry[1] !== undefined);
    for (const [resource, path] of guarded) {
      if (!covered(path)) {
        const what = resource.type === TYPES.vault ? "Key vault" : "Isolated storage";
        report(`${what} ${resource.props.accountName ?? resource.props.vaultName ?? resource.props.name ?? resource.name} has no CanNotDelete lock. Add a ManagementLockByScope with level "CanNotDelete" and scope set to its id.`, resource.urn);
      }
    }
  },
});

/**
 * Write and delete on VMs and managed disks: what only a restore needs (names from MicrosoftDocs/
 * azure-docs articles/role-based-access-control/permissions/compute.md, Microsoft.Compute table).
 * Azure SQL databases are left out on purpose: a consistent backup copies the database first
 * (Databases - Create Or Update with createMode "Copy", Azure/azure-rest-api-specs
 * specification/sql/resource-manager, a PUT on Microsoft.Sql/servers/databases) and drops the copy
 * after the export, so the backup identity needs databases/write and /delete on the servers it
 * protects; no role property tells that copy from a restore.
 */
const RESTORE_ACTIONS = /^microsoft\.compute\/(virtualmachines|disks)\/(write|delete)$/;

function restoreActionsOf(definition: Props): string[] {
  const permissions: Props[] = definition.permissions ?? definition.properties?.permissions ?? [];
  return permissions.flatMap((p) => (p.actions ?? []) as string[]).filter((a) => RESTORE_ACTIONS.test(String(a).toLowerCase()));
}

/** `/subscriptions/S/resourceGroups/G` exactly: a resource group, not a subscription or wider. */
const RESOURCE_GROUP_SCOPE = /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+$/i;

export const restoreRightsOnlyInRestoreGroups = resourceRule({
  name: "restore-rights-only-in-restore-groups",
  description: "A custom role that may write or delete VMs or disks (the restore role) is assignable only at resource groups, never at a protected subscription.",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }, report) => {
    if (type !== TYPES.roleDefinition) return;
    const actions = restoreActionsOf(props);
    if (actions.length === 0) return;
    // Azure lets a role be assigned only within its assignableScopes (MicrosoftDocs/azure-docs
    // articles/role-based-access-control/role-definitions.md, "AssignableScopes").
    const wide = ((props.assignableScopes ?? []) as string[]).filter((scope) => !RESOURCE_GROUP_SCOPE.test(scope));
    if (wide.length > 0) {
      report(`Custom role ${props.roleName ?? ""} grants ${actions.join(", ")} and is assignable at ${wide.join(", ")}. Only the restore role may hold these, assignable only at the restore resource groups named in config; take them out of every other role.`);
    }
  },
});

export const restoreRightsNotOnAgents = stackRule({
  name: "restore-rights-not-on-scheduled-agents",
  description: "No scheduled job's identity (scheduler, bridge, prune) holds a role that may write or delete VMs or disks.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    // Role definitions are named by their GUID (`roleDefinitionId` input, `name` output); an
    // assignment names its role by an id that ends in that GUID.
    const restoreRoles = new Map<string, StackResource>();
    for (const d of resources.filter((r) => r.type === TYPES.roleDefinition && restoreActionsOf(r.props).length > 0)) {
      restoreRoles.set(String(d.props.roleDefinitionId ?? d.props.name).toLowerCase(), d);
    }
    if (restoreRoles.size === 0) return;
    const principals = new Map(resources.filter((r) => r.type === TYPES.userAssignedIdentity).map((r) => [String(r.props.id ?? "").toLowerCase(), r.props.principalId]));
    for (const job of resources.filter((r) => r.type === TYPES.job)) {
      // Container Apps job trigger types: Manual, Schedule, Event (Azure/azure-rest-api-specs
      // specification/app/resource-manager/Microsoft.App, Jobs.json, JobConfiguration.triggerType).
      // Restores run on demand (a queue message or a manual start); a scheduled job (the scheduler,
      // the bridge, prune) only lists, inventories or prunes, and never needs these rights.
      if (String(job.props.configuration?.triggerType ?? "").toLowerCase() !== "schedule") continue;
      const assigned = job.props.identity?.userAssignedIdentities ?? [];
      const jobPrincipals = new Set(
        Array.isArray(assigned) ? assigned.map((id: string) => principals.get(id.toLowerCase())) : Object.values(assigned as Record<string, { principalId?: string }>).map((v) => v.principalId),
      );
      for (const assignment of resources.filter((r) => r.type === TYPES.roleAssignment && jobPrincipals.has(r.props.principalId))) {
        const role = restoreRoles.get(String(assignment.props.roleDefinitionId ?? "").split("/").pop()!.toLowerCase());
        if (role) {
          report(`${job.name} (triggered by ${job.props.configuration?.triggerType}) holds ${role.props.roleName ?? role.name}, which may ${restoreActionsOf(role.props).join(", ")}. Give these rights only to the restore identity, in the restore resource groups.`, assignment.urn);
        }
      }
    }
  },
});

/**
 * No custom role names an action outside Azure's published operations: Azure refuses the whole
 * role. `published` holds the list (lower-cased); policies/index.ts reads it from
 * test/data/azure-operations (transcribed from MicrosoftDocs/azure-docs
 * articles/role-based-access-control/permissions/*.md, see its README).
 */
export function publishedActionsOnly(published: ReadonlySet<string>): ResourceRule & ResourceValidationPolicy {
  return resourceRule({
    name: "custom-role-actions-published",
    description: "Every action of a custom role is one Azure publishes for its provider; Azure refuses a role that names any other.",
    enforcementLevel: "mandatory",
    validateResource: ({ type, props }, report) => {
      if (type !== TYPES.roleDefinition || published.size === 0) return;
      const permissions: Props[] = props.permissions ?? [];
      for (const action of permissions.flatMap((p) => [...(p.actions ?? []), ...(p.dataActions ?? [])] as string[])) {
        if (!action.includes("*") && !published.has(action.toLowerCase())) {
          report(`Custom role names "${action}", which is not in Azure's published operations (role-based-access-control/permissions). Azure refuses the whole role: use the published name, or drop the action.`);
        }
      }
    },
  });
}

export const resourcePolicies = [
  noPublicBlobAccess,
  noSharedKeyAccess,
  minimumTls12,
  storageKindDeclared,
  isolatedStorageCustomerKey,
  isolatedStorageImmutability,
  keyVaultProtection,
  keyRotation,
  containerAppsJobHardening,
  noBroadRoles,
  noWildcardCustomRoles,
  restoreRightsOnlyInRestoreGroups,
  ...consoleResourcePolicies,
];

export const stackPolicies = [isolatedStorageVersioning, transientStorageLifecycle, sameRegion, isolatedStorageImmutabilityLocked, isolatedStorageVersionCleanup, deleteLocks, restoreRightsNotOnAgents, ...consoleStackPolicies];

export const allPolicies: (ResourceValidationPolicy | StackValidationPolicy)[] = [...resourcePolicies, ...stackPolicies];
