/**
 * Each policy with a resource that passes and one that fails, called the way the Pulumi engine
 * calls them: a type, its properties and a violation collector.
 */
import { describe, expect, it } from "vitest";
import * as rules from "../../policies/rules.ts";
import type { ResourceRule, StackResource, StackRule } from "../../policies/rules.ts";

function checkResource(rule: ResourceRule, type: string, props: Record<string, any>): string[] {
  const violations: string[] = [];
  rule.validateResource({ type, props, name: "r", urn: `urn:pulumi:t::bulwark::${type}::r` }, (message) => violations.push(message));
  return violations;
}

function checkStack(rule: StackRule, resources: StackResource[]): string[] {
  const violations: string[] = [];
  rule.validateStack({ resources }, (message) => violations.push(message));
  return violations;
}

const T = rules.TYPES;
const goodAccount = (kind: "isolated" | "transient") => ({
  accountName: `acct${kind}`,
  location: "westeurope",
  tags: { "bulwark-storage": kind, "bulwark-region": "westeurope" },
  allowBlobPublicAccess: false,
  allowSharedKeyAccess: false,
  minimumTlsVersion: "TLS1_2",
  enableHttpsTrafficOnly: true,
  identity: { type: "UserAssigned", userAssignedIdentities: ["/id/enc"] },
  encryption: { keySource: "Microsoft.Keyvault", keyVaultProperties: { keyName: "k", keyVaultUri: "https://v.vault.azure.net/" }, encryptionIdentity: { encryptionUserAssignedIdentity: "/id/enc" } },
  immutableStorageWithVersioning: { enabled: true, immutabilityPolicy: { immutabilityPeriodSinceCreationInDays: 30, state: "Unlocked" } },
});
const res = (type: string, name: string, props: Record<string, any>): StackResource => ({ type, name, urn: `urn:${name}`, props });

describe("resource policies", () => {
  const table: [ResourceRule, string, Record<string, any>, Record<string, any>, RegExp][] = [
    [rules.noPublicBlobAccess, T.storageAccount, goodAccount("transient"), { ...goodAccount("transient"), allowBlobPublicAccess: true }, /Set allowBlobPublicAccess: false/],
    [rules.noPublicBlobAccess, T.blobContainer, { publicAccess: "None" }, { publicAccess: "Blob" }, /Set publicAccess: "None"/],
    [rules.noSharedKeyAccess, T.storageAccount, goodAccount("isolated"), { ...goodAccount("isolated"), allowSharedKeyAccess: undefined }, /Set allowSharedKeyAccess: false/],
    [rules.minimumTls12, T.storageAccount, goodAccount("isolated"), { ...goodAccount("isolated"), minimumTlsVersion: "TLS1_0" }, /Minimum TLS version is TLS1_0\. Set minimumTlsVersion: "TLS1_2"/],
    [rules.storageKindDeclared, T.storageAccount, goodAccount("isolated"), { ...goodAccount("isolated"), tags: {} }, /Tag it "isolated"/],
    [rules.isolatedStorageCustomerKey, T.storageAccount, goodAccount("isolated"), { ...goodAccount("isolated"), encryption: { keySource: "Microsoft.Storage" } }, /Set encryption\.keySource: "Microsoft\.Keyvault"/],
    [rules.isolatedStorageCustomerKey, T.storageAccount, goodAccount("isolated"), { ...goodAccount("isolated"), identity: { type: "UserAssigned", userAssignedIdentities: ["/id/other"] } }, /Add it to identity\.userAssignedIdentities/],
    [rules.isolatedStorageImmutability, T.storageAccount, goodAccount("isolated"), { ...goodAccount("isolated"), immutableStorageWithVersioning: undefined }, /immutableStorageWithVersioning\.enabled: true when the account is created/],
    [rules.keyVaultProtection, T.vault, { properties: { enableRbacAuthorization: true, enablePurgeProtection: true, enableSoftDelete: true } }, { properties: { enableRbacAuthorization: true, enableSoftDelete: true } }, /Set properties\.enablePurgeProtection: true/],
    [rules.keyVaultProtection, T.vault, { properties: { enableRbacAuthorization: true, enablePurgeProtection: true } }, { properties: { enablePurgeProtection: true } }, /Set properties\.enableRbacAuthorization: true/],
    [rules.keyRotation, T.key, { properties: { rotationPolicy: { lifetimeActions: [{ action: { type: "rotate" }, trigger: { timeAfterCreate: "P90D" } }] } } }, { properties: { rotationPolicy: { lifetimeActions: [{ action: { type: "notify" }, trigger: { timeBeforeExpiry: "P30D" } }] } } }, /Add properties\.rotationPolicy\.lifetimeActions/],
    [rules.noBroadRoles, T.roleAssignment, { scope: "/subscriptions/s", roleDefinitionId: "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7" }, { scope: "/subscriptions/s", roleDefinitionId: "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c" }, /built-in Contributor role at \/subscriptions\/s\. Assign Bulwark's backup role/],
    [rules.noBroadRoles, T.roleAssignment, { roleDefinitionId: "/x/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6" }, { roleDefinitionId: "/x/roleDefinitions/8E3AF657-A8FF-443C-A75C-2FE8C4BCB635" }, /built-in Owner role/],
    [rules.noBroadRoles, T.roleAssignment, { roleDefinitionId: "/x/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6" }, { roleDefinitionId: "/x/roleDefinitions/18d7d88d-d35e-4fb5-a5c3-7773c20a72d9" }, /built-in User Access Administrator role/],
    [rules.noWildcardCustomRoles, T.roleDefinition, { permissions: [{ actions: ["Microsoft.Compute/snapshots/write"], dataActions: [] }] }, { permissions: [{ actions: ["Microsoft.Compute/snapshots/*"] }] }, /wildcard action "Microsoft\.Compute\/snapshots\/\*"\. List the exact actions/],
  ];

  for (const [rule, type, good, bad, message] of table) {
    it(`${rule.name}: passes a compliant ${type.split(":").pop()}, rejects one that is not and says how to fix it`, () => {
      expect(checkResource(rule, type, good)).toEqual([]);
      const violations = checkResource(rule, type, bad);
      expect(violations).toHaveLength(1);
      expect(violations[0]).toMatch(message);
    });
  }

  it("isolated-storage-customer-managed-key: accepts Azure's output (identity map, \"resourcegroups\" lower-cased); rejects an unassigned identity", () => {
    const id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/enc";
    const output = (assigned: string) => ({
      ...goodAccount("isolated"),
      identity: { type: "UserAssigned", userAssignedIdentities: { [assigned]: { principalId: "p", clientId: "c" } } },
      encryption: { ...goodAccount("isolated").encryption, encryptionIdentity: { encryptionUserAssignedIdentity: id.replace("/resourceGroups/", "/resourcegroups/") } },
    });
    expect(checkResource(rules.isolatedStorageCustomerKey, T.storageAccount, output(id))).toEqual([]);
    expect(checkResource(rules.isolatedStorageCustomerKey, T.storageAccount, output(id.replace(/enc$/, "other")))).toEqual(["The encryption identity is not assigned to the account. Add it to identity.userAssignedIdentities."]);
  });

  it("key-rotation-policy: reads a key's output, where the rotation policy is not nested in properties", () => {
    const rotate = { lifetimeActions: [{ action: { type: "rotate" }, trigger: { timeAfterCreate: "P90D" } }] };
    expect(checkResource(rules.keyRotation, T.key, { keyUri: "https://v.vault.azure.net/keys/k", rotationPolicy: rotate })).toEqual([]);
    expect(checkResource(rules.keyRotation, T.key, { keyUri: "https://v.vault.azure.net/keys/k" })[0]).toMatch(/Key has no automatic rotation/);
  });

  const goodJob = {
    location: "westeurope",
    identity: { type: "UserAssigned", userAssignedIdentities: ["/id/worker"] },
    configuration: { triggerType: "Event", replicaTimeout: 3600, eventTriggerConfig: { scale: { rules: [{ name: "queue", type: "azure-queue", identity: "/id/worker", metadata: {} }] } } },
    template: { containers: [{ name: "worker", env: [{ name: "BULWARK_KEY_VAULT_KEY", value: "https://v.vault.azure.net/keys/k" }, { name: "BULWARK_SQL_ADMIN_PASSWORD", secretRef: "sql-password" }] }] },
  };
  const jobWith = (change: (job: any) => void) => {
    const job = structuredClone(goodJob);
    change(job);
    return job;
  };
  const jobCases: [string, (job: any) => void, RegExp][] = [
    ["no managed identity", (j) => (j.identity = undefined), /Job has no managed identity/],
    ["no replica timeout", (j) => delete j.configuration.replicaTimeout, /Set configuration\.replicaTimeout/],
    ["a plain-text secret by name", (j) => j.template.containers[0].env.push({ name: "STORAGE_CONNECTION_STRING", value: "x" }), /STORAGE_CONNECTION_STRING of container worker holds a plain-text secret\. Store it as a job secret/],
    ["a plain-text secret by value", (j) => j.template.containers[0].env.push({ name: "BULWARK_TARGET", value: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc" }), /BULWARK_TARGET .* plain-text secret/],
    ["a SQL login as a plain value", (j) => j.template.containers[0].env.push({ name: "BULWARK_SQL_ADMIN_LOGIN", value: "admin" }), /BULWARK_SQL_ADMIN_LOGIN of container worker holds a plain-text secret/],
    ["a key-named variable that is not a key identifier", (j) => (j.template.containers[0].env[0].value = "c2VjcmV0LWtleS1tYXRlcmlhbA=="), /BULWARK_KEY_VAULT_KEY of container worker holds a plain-text secret/],
    ["a key identifier carrying a query", (j) => (j.template.containers[0].env[0].value = "https://v.vault.azure.net/keys/k?sv=1&sig=abc"), /BULWARK_KEY_VAULT_KEY .* plain-text secret/],
    ["a scale rule with a connection string", (j) => (j.configuration.eventTriggerConfig.scale.rules[0] = { name: "queue", type: "azure-queue", auth: [{ secretRef: "conn", triggerParameter: "connection" }] }), /Scale rule queue authenticates with a secret/],
  ];
  it("container-apps-job-hardening: passes a job with identity, timeout and secrets by reference", () => {
    expect(checkResource(rules.containerAppsJobHardening, T.job, goodJob)).toEqual([]);
  });
  for (const [what, change, message] of jobCases) {
    it(`container-apps-job-hardening: rejects a job with ${what}`, () => {
      const violations = checkResource(rules.containerAppsJobHardening, T.job, jobWith(change));
      expect(violations).toHaveLength(1);
      expect(violations[0]).toMatch(message);
    });
  }

  it("ignores resources of other types", () => {
    for (const rule of rules.resourcePolicies) expect(checkResource(rule, "azure-native:network:VirtualNetwork", { allowBlobPublicAccess: true })).toEqual([]);
  });
});

describe("stack policies", () => {
  const isolated = res(T.storageAccount, "vault", goodAccount("isolated"));
  const service = res(T.blobServiceProperties, "svc", { accountName: "acctisolated", isVersioningEnabled: true, deleteRetentionPolicy: { enabled: true, days: 14 }, containerDeleteRetentionPolicy: { enabled: true, days: 14 } });
  const container = res(T.blobContainer, "c", { accountName: "acctisolated", containerName: "vault", immutableStorageWithVersioning: { enabled: true } });

  it("isolated-storage-versioning: passes versioning, soft delete and immutable containers; rejects each missing", () => {
    expect(checkStack(rules.isolatedStorageVersioning, [isolated, service, container])).toEqual([]);
    expect(checkStack(rules.isolatedStorageVersioning, [isolated, res(T.blobServiceProperties, "svc", { ...service.props, isVersioningEnabled: false }), container])).toEqual([
      "Isolated storage acctisolated does not keep blob versions. Add BlobServiceProperties with isVersioningEnabled: true.",
    ]);
    expect(checkStack(rules.isolatedStorageVersioning, [isolated, res(T.blobServiceProperties, "svc", { ...service.props, containerDeleteRetentionPolicy: undefined }), container])[0]).toMatch(/lacks soft delete/);
    expect(checkStack(rules.isolatedStorageVersioning, [isolated, service, res(T.blobContainer, "c", { accountName: "acctisolated", containerName: "vault" })])[0]).toMatch(/Container vault in isolated storage acctisolated is not immutable per version/);
  });

  /** The same resources as Azure returns them after create: no accountName, ids that name the account. */
  const accountId = (name: string) => `/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/${name}`;
  const asOutput = (account: StackResource): StackResource => {
    const { accountName, ...rest } = account.props;
    return { ...account, props: { ...rest, name: accountName, id: accountId(accountName) } };
  };
  const serviceOutput = (props: Record<string, any>) => res(T.blobServiceProperties, "svc", { name: "default", id: `${accountId("acctisolated")}/blobServices/default`, ...props });
  const containerOutput = (props: Record<string, any>) => res(T.blobContainer, "c", { name: "vault", id: `${accountId("acctisolated")}/blobServices/default/containers/vault`, ...props });
  const { accountName: _a, ...serviceProps } = service.props;

  it("isolated-storage-versioning: reads Azure's outputs, finding the service and containers by their ids", () => {
    expect(checkStack(rules.isolatedStorageVersioning, [asOutput(isolated), serviceOutput(serviceProps), containerOutput({ immutableStorageWithVersioning: { enabled: true } })])).toEqual([]);
    expect(checkStack(rules.isolatedStorageVersioning, [asOutput(isolated), serviceOutput({ ...serviceProps, isVersioningEnabled: false }), containerOutput({ immutableStorageWithVersioning: { enabled: true } })])).toEqual([
      "Isolated storage acctisolated does not keep blob versions. Add BlobServiceProperties with isVersioningEnabled: true.",
    ]);
    expect(checkStack(rules.isolatedStorageVersioning, [asOutput(isolated), serviceOutput(serviceProps), containerOutput({})])).toEqual([
      "Container vault in isolated storage acctisolated is not immutable per version. Set immutableStorageWithVersioning.enabled: true.",
    ]);
  });

  const transient = res(T.storageAccount, "staging", goodAccount("transient"));
  const lifecycle = (rule: Record<string, any>) => res(T.managementPolicy, "lc", { accountName: "accttransient", policy: { rules: [{ name: "r", enabled: true, type: "Lifecycle", ...rule }] } });

  it("transient-storage-lifecycle: passes a one-day delete rule; rejects none, a longer one, or a prefix-limited one", () => {
    const oneDay = { definition: { actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 1 } } }, filters: { blobTypes: ["blockBlob"] } } };
    expect(checkStack(rules.transientStorageLifecycle, [transient, lifecycle(oneDay)])).toEqual([]);
    const expected = /Transient storage accttransient has no lifecycle rule deleting blobs after a day\. Add a ManagementPolicy rule/;
    expect(checkStack(rules.transientStorageLifecycle, [transient])[0]).toMatch(expected);
    expect(checkStack(rules.transientStorageLifecycle, [transient, lifecycle({ definition: { actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 30 } } } } })])[0]).toMatch(expected);
    expect(checkStack(rules.transientStorageLifecycle, [transient, lifecycle({ definition: { ...oneDay.definition, filters: { blobTypes: ["blockBlob"], prefixMatch: ["staging/tmp"] } } })])[0]).toMatch(expected);
    expect(checkStack(rules.transientStorageLifecycle, [transient, lifecycle({ ...oneDay, enabled: false })])[0]).toMatch(expected);
  });

  it("transient-storage-lifecycle: reads Azure's outputs (the policy named DefaultManagementPolicy, its account in its id)", () => {
    const policyOutput = (rule: Record<string, any>) =>
      res(T.managementPolicy, "lc", { name: "DefaultManagementPolicy", id: `${accountId("accttransient")}/managementPolicies/default`, policy: { rules: [{ name: "r", enabled: true, type: "Lifecycle", ...rule }] } });
    const oneDay = { definition: { actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 1 } } } } };
    expect(checkStack(rules.transientStorageLifecycle, [asOutput(transient), policyOutput(oneDay)])).toEqual([]);
    expect(checkStack(rules.transientStorageLifecycle, [asOutput(transient), policyOutput({ ...oneDay, enabled: false })])[0]).toMatch(/Transient storage accttransient has no lifecycle rule/);
  });

  const identity = res(T.userAssignedIdentity, "worker-identity", { id: "/id/worker", principalId: "p-worker", location: "westeurope", tags: { "bulwark-region": "westeurope" } });
  const job = (location: string, env: Record<string, string>) =>
    res(T.job, "worker", {
      location,
      identity: { type: "UserAssigned", userAssignedIdentities: ["/id/worker"] },
      template: { containers: [{ name: "worker", env: Object.entries(env).map(([name, value]) => ({ name, value })) }] },
    });
  const env = {
    BULWARK_REGION: "westeurope",
    BULWARK_TRANSIENT: "https://accttransient.blob.core.windows.net/staging",
    BULWARK_PROTECTED_SCOPES: "/subscriptions/s1/resourceGroups/vms",
  };
  const grant = (scope: string) => res(T.roleAssignment, `grant-${scope}`, { principalId: "p-worker", scope, roleDefinitionId: "/x/roleDefinitions/backup" });

  it("agents-storage-and-scopes-in-one-region: passes an agent with its storage and scopes in its region", () => {
    expect(checkStack(rules.sameRegion, [transient, identity, job("westeurope", env), grant("/subscriptions/s1/resourceGroups/vms"), grant("/subscriptions/s1/resourceGroups/x/providers/Microsoft.Storage/storageAccounts/a")])).toEqual([]);
  });

  it("agents-storage-and-scopes-in-one-region: rejects an agent outside its region", () => {
    expect(checkStack(rules.sameRegion, [transient, identity, job("northeurope", env)])).toEqual(["Agent worker runs in northeurope but serves westeurope. Deploy it in westeurope."]);
  });

  it("agents-storage-and-scopes-in-one-region: rejects transient storage in another region", () => {
    const elsewhere = res(T.storageAccount, "staging", { ...goodAccount("transient"), location: "eastus", tags: { "bulwark-storage": "transient" } });
    expect(checkStack(rules.sameRegion, [elsewhere, identity, job("westeurope", env)])).toEqual([
      "BULWARK_TRANSIENT of worker points at accttransient in eastus, not westeurope. Use storage in the agent's own region.",
    ]);
  });

  it("agents-storage-and-scopes-in-one-region: rejects a region-tagged resource elsewhere", () => {
    const moved = res(T.storageAccount, "staging", { ...goodAccount("transient"), location: "eastus" });
    expect(checkStack(rules.sameRegion, [moved])).toEqual(["staging is in eastus but belongs to region westeurope. Create it in westeurope."]);
  });

  it("agents-storage-and-scopes-in-one-region: accepts a region's non-regional resource in location global (an action group)", () => {
    const actionGroup = res("azure-native:monitor:ActionGroup", "receivers", { location: "Global", tags: { "bulwark-region": "westeurope" } });
    expect(checkStack(rules.sameRegion, [actionGroup])).toEqual([]);
  });

  it("agents-storage-and-scopes-in-one-region: rejects access to a scope of another region", () => {
    expect(checkStack(rules.sameRegion, [transient, identity, job("westeurope", env), grant("/subscriptions/s2")])).toEqual([
      "worker (region westeurope) is granted access at /subscriptions/s2, which is not one of its region's protected scopes. Protect it from the stack of the scope's own region.",
    ]);
  });

  const scheduler = (location: string, env: Record<string, string>) => ({ ...job(location, env), name: "scheduler", props: { ...job(location, env).props, tags: { "bulwark-region": "westeurope" } } });
  const schedulerEnv = {
    BULWARK_FLEET_TABLE_ENDPOINT: "https://accttransient.table.core.windows.net",
    BULWARK_FLEET_QUEUE_ENDPOINT: "https://accttransient.queue.core.windows.net",
    BULWARK_POLICY_JSON: JSON.stringify([{ name: "p", vault: "https://acctisolated.blob.core.windows.net/vault" }]),
    BULWARK_PROTECTED_SCOPES: "/subscriptions/s1/resourceGroups/vms",
  };

  it("agents-storage-and-scopes-in-one-region: passes a scheduler (region from its tag) whose fleet and policy vault are in its region", () => {
    expect(checkStack(rules.sameRegion, [transient, isolated, identity, scheduler("westeurope", schedulerEnv), grant("/subscriptions/s1/resourceGroups/vms")])).toEqual([]);
  });

  it("agents-storage-and-scopes-in-one-region: rejects a scheduler outside its region, its fleet or its policy's vault elsewhere, and access outside its scopes", () => {
    expect(checkStack(rules.sameRegion, [transient, isolated, identity, scheduler("northeurope", schedulerEnv)])).toEqual([
      "scheduler is in northeurope but belongs to region westeurope. Create it in westeurope.",
      "Agent scheduler runs in northeurope but serves westeurope. Deploy it in westeurope.",
    ]);
    const fleetElsewhere = res(T.storageAccount, "staging", { ...goodAccount("transient"), location: "eastus", tags: { "bulwark-storage": "transient" } });
    expect(checkStack(rules.sameRegion, [fleetElsewhere, isolated, identity, scheduler("westeurope", schedulerEnv)])).toEqual([
      "BULWARK_FLEET_TABLE_ENDPOINT of scheduler points at accttransient in eastus, not westeurope. Use storage in the agent's own region.",
      "BULWARK_FLEET_QUEUE_ENDPOINT of scheduler points at accttransient in eastus, not westeurope. Use storage in the agent's own region.",
    ]);
    const vaultElsewhere = res(T.storageAccount, "vault", { ...goodAccount("isolated"), location: "eastus", tags: { "bulwark-storage": "isolated" } });
    expect(checkStack(rules.sameRegion, [transient, vaultElsewhere, identity, scheduler("westeurope", schedulerEnv)])).toEqual([
      "The vault of BULWARK_POLICY_JSON of scheduler points at acctisolated in eastus, not westeurope. Use storage in the agent's own region.",
    ]);
    expect(checkStack(rules.sameRegion, [transient, isolated, identity, scheduler("westeurope", schedulerEnv), grant("/subscriptions/s2")])).toHaveLength(1);
  });

  it("agents-storage-and-scopes-in-one-region: reads a deployed job's identity map as well as its inputs", () => {
    const deployed = job("westeurope", env);
    deployed.props.identity = { type: "UserAssigned", userAssignedIdentities: { "/id/worker": { principalId: "p-worker", clientId: "c" } } };
    expect(checkStack(rules.sameRegion, [transient, deployed, grant("/subscriptions/s2")])).toHaveLength(1);
  });
});

describe("rules for the isolated account, the key vault and the roles", () => {
  const isolated = res(T.storageAccount, "vault", goodAccount("isolated"));
  const accountId = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acctisolated";
  const vaultId = "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv1";
  const keyVault = res(T.vault, "kv", { vaultName: "kv1", resourceGroupName: "g", properties: {} });
  const lockOn = (scope: string, level = "CanNotDelete") => res(T.lockByScope, `lock-${scope}`, { scope, lockName: "bulwark-do-not-delete", level });
  const withAccountIn = (account: StackResource) => ({ ...account, props: { ...account.props, resourceGroupName: "g" } });

  it("isolated-storage-immutability-locked: warns (advisory) while the account's or the vault container's policy is Unlocked, not once Locked", () => {
    expect(rules.isolatedStorageImmutabilityLocked.enforcementLevel).toBe("advisory");
    const warning = /^Isolated storage acctisolated's immutability policy is Unlocked: anyone with account write can shorten it\. .*retention\.immutabilityLocked: true/;
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [isolated])).toEqual([expect.stringMatching(warning)]);
    const locked = goodAccount("isolated");
    locked.immutableStorageWithVersioning.immutabilityPolicy.state = "Locked";
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [res(T.storageAccount, "vault", locked)])).toEqual([]);
    // The default on the vault container instead: its state is output only (absent on preview).
    const supportOnly = res(T.storageAccount, "vault", { ...goodAccount("isolated"), immutableStorageWithVersioning: { enabled: true } });
    const containerPolicy = (props: Record<string, any>) => res(T.containerImmutabilityPolicy, "p", { accountName: "acctisolated", containerName: "vault", immutabilityPeriodSinceCreationInDays: 30, ...props });
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [supportOnly, containerPolicy({})])).toEqual([expect.stringMatching(warning)]);
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [supportOnly, containerPolicy({ state: "Locked" })])).toEqual([]);
    // Azure's output: the account and the policy found by their ids, the policy's state as reported.
    const accountOut = res(T.storageAccount, "vault", { ...supportOnly.props, accountName: undefined, name: "acctisolated", id: accountId });
    const policyOut = (state: string) => res(T.containerImmutabilityPolicy, "p", { name: "default", id: `${accountId}/blobServices/default/containers/vault/immutabilityPolicies/default`, immutabilityPeriodSinceCreationInDays: 30, state });
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [accountOut, policyOut("Unlocked")])).toEqual([expect.stringMatching(warning)]);
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [accountOut, policyOut("Locked")])).toEqual([]);
    expect(checkStack(rules.isolatedStorageImmutabilityLocked, [res(T.storageAccount, "staging", goodAccount("transient"))])).toEqual([]);
  });

  it("isolated-storage-versioning: the default immutability period may sit on the account or on a container policy; none fails", () => {
    const service = res(T.blobServiceProperties, "svc", { accountName: "acctisolated", isVersioningEnabled: true, deleteRetentionPolicy: { enabled: true }, containerDeleteRetentionPolicy: { enabled: true } });
    const supportOnly = res(T.storageAccount, "vault", { ...goodAccount("isolated"), immutableStorageWithVersioning: { enabled: true } });
    const containerPolicy = res(T.containerImmutabilityPolicy, "p", { name: "default", id: `${accountId}/blobServices/default/containers/vault/immutabilityPolicies/default`, immutabilityPeriodSinceCreationInDays: 30, state: "Unlocked" });
    expect(checkStack(rules.isolatedStorageVersioning, [supportOnly, service, containerPolicy])).toEqual([]);
    expect(checkStack(rules.isolatedStorageVersioning, [supportOnly, service])).toEqual([
      "Isolated storage acctisolated has no default immutability period, so its blobs are written without WORM. Set immutabilityPeriodSinceCreationInDays on the vault container's BlobContainerImmutabilityPolicy (or the account's immutableStorageWithVersioning.immutabilityPolicy).",
    ]);
  });

  it("isolated-storage-previous-versions-expire: passes a version delete rule, as input or output; rejects none or a disabled one", () => {
    const versions = (enabled: boolean) => ({ policy: { rules: [{ name: "v", enabled, type: "Lifecycle", definition: { actions: { version: { delete: { daysAfterCreationGreaterThan: 31 } } }, filters: { blobTypes: ["blockBlob"] } } }] } });
    const asInput = res(T.managementPolicy, "lc", { accountName: "acctisolated", ...versions(true) });
    const asOutput = res(T.managementPolicy, "lc", { name: "DefaultManagementPolicy", id: `${accountId}/managementPolicies/default`, ...versions(true) });
    expect(checkStack(rules.isolatedStorageVersionCleanup, [isolated, asInput])).toEqual([]);
    expect(checkStack(rules.isolatedStorageVersionCleanup, [{ ...isolated, props: { ...isolated.props, accountName: undefined, name: "acctisolated", id: accountId } }, asOutput])).toEqual([]);
    const expected = ["Isolated storage acctisolated keeps previous blob versions for ever: packs prune deletes still cost. Add a ManagementPolicy rule with actions.version.delete.daysAfterCreationGreaterThan at least the immutability period."];
    expect(checkStack(rules.isolatedStorageVersionCleanup, [isolated])).toEqual(expected);
    expect(checkStack(rules.isolatedStorageVersionCleanup, [isolated, res(T.managementPolicy, "lc", { accountName: "acctisolated", ...versions(false) })])).toEqual(expected);
  });

  it("isolated-storage-and-key-vault-delete-locks: passes locks by scope (inputs) or by id (Azure's output), or on the resource group", () => {
    expect(checkStack(rules.deleteLocks, [withAccountIn(isolated), keyVault, lockOn(accountId), lockOn(vaultId)])).toEqual([]);
    const output = (scope: string) => res(T.lockByScope, "l", { name: "bulwark-do-not-delete", level: "CanNotDelete", id: `${scope}/providers/Microsoft.Authorization/locks/bulwark-do-not-delete` });
    const accountOut = res(T.storageAccount, "vault", { ...goodAccount("isolated"), accountName: undefined, name: "acctisolated", id: accountId });
    const vaultOut = res(T.vault, "kv", { name: "kv1", id: vaultId, properties: {} });
    expect(checkStack(rules.deleteLocks, [accountOut, vaultOut, output(accountId), output(vaultId)])).toEqual([]);
    expect(checkStack(rules.deleteLocks, [withAccountIn(isolated), keyVault, res(T.lockAtResourceGroup, "rg", { resourceGroupName: "g", lockName: "l", level: "CanNotDelete" })])).toEqual([]);
  });

  it("isolated-storage-and-key-vault-delete-locks: rejects a missing lock, a lock on something else, a lock of no level", () => {
    expect(checkStack(rules.deleteLocks, [withAccountIn(isolated), keyVault, lockOn(vaultId)])).toEqual([
      'Isolated storage acctisolated has no CanNotDelete lock. Add a ManagementLockByScope with level "CanNotDelete" and scope set to its id.',
    ]);
    expect(checkStack(rules.deleteLocks, [withAccountIn(isolated), keyVault, lockOn(accountId), lockOn(`${vaultId}x`)])).toEqual([
      'Key vault kv1 has no CanNotDelete lock. Add a ManagementLockByScope with level "CanNotDelete" and scope set to its id.',
    ]);
    expect(checkStack(rules.deleteLocks, [withAccountIn(isolated), keyVault, lockOn(accountId, "NotSpecified"), lockOn(vaultId)])).toHaveLength(1);
  });

  const role = (assignableScopes: string[], actions: string[]) => ({ roleName: "r", roleDefinitionId: "0000-restore", assignableScopes, permissions: [{ actions, notActions: [], dataActions: [], notDataActions: [] }] });

  it("restore-rights-only-in-restore-groups: passes a restore role assignable only at resource groups and a backup role without restore rights", () => {
    expect(checkResource(rules.restoreRightsOnlyInRestoreGroups, T.roleDefinition, role(["/subscriptions/s/resourceGroups/restores"], ["Microsoft.Compute/disks/write", "Microsoft.Compute/virtualMachines/write"]))).toEqual([]);
    expect(checkResource(rules.restoreRightsOnlyInRestoreGroups, T.roleDefinition, role(["/subscriptions/s"], ["Microsoft.Compute/snapshots/write", "Microsoft.Compute/disks/read"]))).toEqual([]);
    // A backup copies a database before exporting it, and drops the copy: not a restore right.
    expect(checkResource(rules.restoreRightsOnlyInRestoreGroups, T.roleDefinition, role(["/subscriptions/s"], ["Microsoft.Sql/servers/databases/write", "Microsoft.Sql/servers/databases/delete"]))).toEqual([]);
  });

  it("restore-rights-only-in-restore-groups: rejects VM or disk write/delete assignable at a subscription", () => {
    for (const action of ["Microsoft.Compute/virtualMachines/delete", "Microsoft.Compute/virtualMachines/write", "Microsoft.Compute/disks/write", "Microsoft.Compute/disks/delete"]) {
      expect(checkResource(rules.restoreRightsOnlyInRestoreGroups, T.roleDefinition, role(["/subscriptions/s/resourceGroups/restores", "/subscriptions/s"], [action]))).toEqual([
        `Custom role r grants ${action} and is assignable at /subscriptions/s. Only the restore role may hold these, assignable only at the restore resource groups named in config; take them out of every other role.`,
      ]);
    }
  });

  it("restore-rights-not-on-scheduled-agents: rejects a scheduled job's identity holding a restore-capable role; a queue-triggered or manual job may", () => {
    const definition = res(T.roleDefinition, "restore-role", role(["/subscriptions/s/resourceGroups/restores"], ["Microsoft.Compute/disks/write"]));
    const identity = res(T.userAssignedIdentity, "id", { id: "/id/agent", principalId: "p-agent" });
    const job = (triggerType: string) => res(T.job, `${triggerType}-job`, { configuration: { triggerType }, identity: { type: "UserAssigned", userAssignedIdentities: ["/id/agent"] } });
    const grant = res(T.roleAssignment, "grant", { principalId: "p-agent", scope: "/subscriptions/s/resourceGroups/restores", roleDefinitionId: "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/0000-restore" });
    expect(checkStack(rules.restoreRightsNotOnAgents, [definition, identity, job("Schedule"), grant])).toEqual([
      "Schedule-job (triggered by Schedule) holds r, which may Microsoft.Compute/disks/write. Give these rights only to the restore identity, in the restore resource groups.",
    ]);
    expect(checkStack(rules.restoreRightsNotOnAgents, [definition, identity, job("Manual"), grant])).toEqual([]);
    expect(checkStack(rules.restoreRightsNotOnAgents, [definition, identity, job("Event"), grant])).toEqual([]);
    // Azure's output: the definition named by its GUID, the job's identities mapped to principals.
    const definitionOut = res(T.roleDefinition, "restore-role", { name: "0000-restore", roleName: "r", permissions: definition.props.permissions, assignableScopes: definition.props.assignableScopes });
    const jobOut = res(T.job, "Schedule-job", { configuration: { triggerType: "Schedule" }, identity: { type: "UserAssigned", userAssignedIdentities: { "/id/agent": { principalId: "p-agent", clientId: "c" } } } });
    expect(checkStack(rules.restoreRightsNotOnAgents, [definitionOut, jobOut, grant])).toHaveLength(1);
  });

  it("custom-role-actions-published: rejects an action Azure does not publish, whatever its case", () => {
    const rule = rules.publishedActionsOnly(new Set(["microsoft.compute/snapshots/write", "microsoft.sql/servers/databases/export/action"]));
    expect(checkResource(rule, T.roleDefinition, role(["/subscriptions/s"], ["Microsoft.Compute/snapshots/write", "Microsoft.Sql/servers/databases/export/action"]))).toEqual([]);
    expect(checkResource(rule, T.roleDefinition, role(["/subscriptions/s"], ["Microsoft.Sql/locations/importExportAzureAsyncOperation/read"]))).toEqual([
      'Custom role names "Microsoft.Sql/locations/importExportAzureAsyncOperation/read", which is not in Azure\'s published operations (role-based-access-control/permissions). Azure refuses the whole role: use the published name, or drop the action.',
    ]);
  });
});

describe("the pack", () => {
  it("gives every policy a name, an enforcement level and a description; only the lock reminder is advisory", () => {
    const names = rules.allPolicies.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    for (const policy of rules.allPolicies) {
      expect(policy.enforcementLevel).toBe(policy === rules.isolatedStorageImmutabilityLocked ? "advisory" : "mandatory");
      expect(policy.description.length).toBeGreaterThan(20);
    }
  });
});
