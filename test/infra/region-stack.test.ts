/**
 * A region stack (Pulumi.dev-westeurope.yaml) under mocks, reading the example customer stack's
 * real outputs through its StackReference. What the agents are given is checked against what the
 * runtime reads: the fleet's names come from the runtime's FleetStorage built from the worker's own
 * environment, and the rendered policy goes through the runtime's own validator.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { AccessToken, TokenCredential } from "@azure/core-auth";
import { ofType } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { BUILT_IN_ROLES, FORBIDDEN_BUILT_IN_ROLES } from "../../infra/components/roles.ts";
import { ACR_PULL_ROLE } from "../../infra/components/agent-job.ts";
import { FleetStorage } from "../../runtime/jobs/storage.ts";
import { validatePolicy } from "../../runtime/policy/policy.ts";
import { PROTECTABLE_TYPES } from "../../runtime/policy/items.ts";
import { UsageError } from "../../runtime/errors.ts";

let customer: Record<string, unknown>;
let resources: RecordedResource[];
let outputs: Record<string, unknown>;

const SUB = "11111111-2222-3333-4444-555555555555";
const SCOPES = [`/subscriptions/${SUB}/resourceGroups/contoso-prod-vms`, `/subscriptions/${SUB}/resourceGroups/contoso-prod-sql`];
const sqlLogin = "bulwark-admin-login";
const sqlPassword = "not-a-real-password-7f3a";
const withSql = () => exampleRegionConfig("Pulumi.dev-westeurope.yaml", { sqlAdminLogin: sqlLogin, sqlAdminPassword: sqlPassword }, ["sqlAdminLogin", "sqlAdminPassword"]);

beforeAll(async () => {
  customer = (await deployExampleCustomer()).outputs;
  ({ resources, outputs } = await deployRegion(withSql()));
});

const account = (kind: string) => ofType(resources, "azure-native:storage:StorageAccount").find((a) => a.inputs.tags["bulwark-storage"] === kind)!;
const identity = (role: string) => ofType(resources, "azure-native:managedidentity:UserAssignedIdentity").find((i) => i.name.endsWith(`-${role}-identity`))!;
const job = (command: string, rs = resources) => ofType(rs, "azure-native:app:Job").find((j) => j.inputs.template.containers[0].args[1] === command)!;
const envOf = (j: RecordedResource): Record<string, any> => Object.fromEntries(j.inputs.template.containers[0].env.map((e: any) => [e.name, e.value ?? { secretRef: e.secretRef }]));
const grantsTo = (principalId: string) => ofType(resources, "azure-native:authorization:RoleAssignment").filter((a) => a.inputs.principalId === principalId);

/** The runtime's FleetStorage exactly as `bulwark agent …` builds it from a job's environment (no request is made). */
function fleetFrom(env: Record<string, any>): FleetStorage {
  const credential: TokenCredential = { getToken: async (): Promise<AccessToken> => ({ token: "unused", expiresOnTimestamp: Date.now() + 60_000 }) };
  return new FleetStorage({ tableEndpoint: env.BULWARK_FLEET_TABLE_ENDPOINT, queueEndpoint: env.BULWARK_FLEET_QUEUE_ENDPOINT, credential }, { prefix: env.BULWARK_FLEET_PREFIX || undefined });
}

/** BULWARK_POLICY_JSON read the way the scheduler reads it: a JSON array, each document through the runtime's validator. */
function policiesOf(env: Record<string, any>) {
  const documents: unknown = JSON.parse(env.BULWARK_POLICY_JSON);
  expect(Array.isArray(documents)).toBe(true);
  return (documents as unknown[]).map((document, i) => validatePolicy(document, `BULWARK_POLICY_JSON[${i}]`));
}

describe("region stack (example config, westeurope)", () => {
  it("puts every regional resource in the stack's region", () => {
    // Global resources (action groups, metric alerts, private DNS zones) have no region.
    const located = resources.filter((r) => r.inputs.location !== undefined && r.inputs.location.toLowerCase() !== "global");
    expect(located.length).toBeGreaterThan(8);
    for (const r of located) expect(r.inputs.location, r.name).toBe("westeurope");
  });

  it("makes transient storage private, key-less, TLS 1.2, with a one-day lifecycle deletion", () => {
    const transient = account("transient");
    expect(transient.inputs).toMatchObject({ allowBlobPublicAccess: false, allowSharedKeyAccess: false, minimumTlsVersion: "TLS1_2", enableHttpsTrafficOnly: true });
    expect(transient.inputs.accountName).toMatch(/^bwtcontoso[0-9a-f]{6}$/);
    const [lifecycle] = ofType(resources, "azure-native:storage:ManagementPolicy");
    expect(lifecycle.inputs.accountName).toBe(transient.inputs.accountName);
    const rule = lifecycle.inputs.policy.rules[0];
    expect(rule.enabled).toBe(true);
    expect(rule.definition.actions.baseBlob.delete).toEqual({ daysAfterModificationGreaterThan: 1 });
    expect(rule.definition.filters.prefixMatch).toBeUndefined();
  });

  it("creates the fleet's four tables and the region's work and poison queues in the transient account, under the runtime's names", () => {
    const transient = account("transient").inputs.accountName;
    const worker = envOf(job("worker"));
    const fleet = fleetFrom(worker);
    const tables = ofType(resources, "azure-native:storage:Table");
    const queues = ofType(resources, "azure-native:storage:Queue");
    for (const r of [...tables, ...queues]) expect(r.inputs.accountName, r.name).toBe(transient);
    expect(tables.map((t) => t.inputs.tableName).sort()).toEqual([fleet.jobs, fleet.items, fleet.locks, fleet.reports].map((t) => t.tableName).sort());
    expect(queues.map((q) => q.inputs.queueName).sort()).toEqual([fleet.queueName("westeurope"), fleet.poisonQueueName("westeurope")].sort());
    expect(fleet.queueName("westeurope")).toBe("bulwark-work-westeurope");
    // The runtime's clients point at the transient account's table service.
    expect(fleet.jobs.url).toBe(`https://${transient}.table.core.windows.net`);
    // The scheduler shares the same fleet.
    const scheduler = envOf(job("schedule"));
    for (const key of ["BULWARK_FLEET_TABLE_ENDPOINT", "BULWARK_FLEET_QUEUE_ENDPOINT", "BULWARK_FLEET_PREFIX"]) expect(scheduler[key]).toBe(worker[key]);
  });

  it("makes isolated storage its own account, encrypted with the customer's key through a user-assigned identity, immutable and versioned", () => {
    const vault = account("isolated");
    expect(vault.inputs.accountName).not.toBe(account("transient").inputs.accountName);
    expect(vault.inputs).toMatchObject({ allowBlobPublicAccess: false, allowSharedKeyAccess: false, minimumTlsVersion: "TLS1_2", sku: { name: "Standard_ZRS" } });
    const encryptionIdentity = identity("encryption");
    expect(vault.inputs.identity).toEqual({ type: "UserAssigned", userAssignedIdentities: [encryptionIdentity.id] });
    expect(vault.inputs.encryption).toMatchObject({
      keySource: "Microsoft.Keyvault",
      keyVaultProperties: { keyName: customer.keyName, keyVaultUri: customer.keyVaultUri },
      encryptionIdentity: { encryptionUserAssignedIdentity: encryptionIdentity.id },
    });
    expect(vault.inputs.encryption.keyVaultProperties.keyVersion).toBeUndefined(); // follows rotation
    // Version-level immutability support; the default policy is the vault container's (test/infra/storage.test.ts).
    expect(vault.inputs.immutableStorageWithVersioning).toEqual({ enabled: true });
    const [service] = ofType(resources, "azure-native:storage:BlobServiceProperties");
    expect(service.inputs).toMatchObject({ accountName: vault.inputs.accountName, isVersioningEnabled: true, deleteRetentionPolicy: { enabled: true, days: 14 }, containerDeleteRetentionPolicy: { enabled: true, days: 14 } });
    const container = ofType(resources, "azure-native:storage:BlobContainer").find((c) => c.inputs.accountName === vault.inputs.accountName && c.inputs.containerName === "vault")!;
    expect(container.inputs).toMatchObject({ containerName: "vault", publicAccess: "None", immutableStorageWithVersioning: { enabled: true } });
    // The encryption identity may use the key (built-in role made for exactly that), at the key only.
    const [keyGrant] = grantsTo(encryptionIdentity.state.principalId);
    expect(keyGrant.inputs.scope).toBe(customer.keyResourceId);
    expect(keyGrant.inputs.roleDefinitionId).toMatch(new RegExp(`/${BUILT_IN_ROLES.keyVaultCryptoServiceEncryptionUser}$`));
  });

  it("ticks the scheduler on the configured cron and scales the worker with KEDA on the queue the runtime works from", () => {
    const scheduler = job("schedule");
    expect(scheduler.inputs.configuration).toMatchObject({ triggerType: "Schedule", scheduleTriggerConfig: { cronExpression: "*/15 * * * *" } });
    const worker = job("worker");
    const workerIdentity = identity("worker");
    expect(worker.inputs.configuration).toMatchObject({ triggerType: "Event", replicaTimeout: 14400, replicaRetryLimit: 2 });
    const scale = worker.inputs.configuration.eventTriggerConfig.scale;
    expect(scale.maxExecutions).toBe(10);
    const env = envOf(worker);
    expect(scale.rules).toEqual([
      { name: "queue", type: "azure-queue", metadata: { accountName: account("transient").inputs.accountName, queueName: fleetFrom(env).queueName(env.BULWARK_REGION), queueLength: "1" }, identity: workerIdentity.id },
    ]);
    // The worker also holds the restore identity, which its restore jobs call Azure as (test/infra/roles.test.ts).
    expect(worker.inputs.identity).toEqual({ type: "UserAssigned", userAssignedIdentities: [workerIdentity.id, identity("restore").id] });
    expect(scheduler.inputs.identity).toEqual({ type: "UserAssigned", userAssignedIdentities: [identity("scheduler").id] });
    expect(worker.inputs.template.containers[0]).toMatchObject({ args: ["agent", "worker"] });
    expect(scheduler.inputs.template.containers[0]).toMatchObject({ args: ["agent", "schedule"] });
  });

  it("gives the worker exactly what `bulwark agent worker` reads, the SQL login only as secret references", () => {
    const worker = job("worker");
    const transient = account("transient").inputs.accountName;
    expect(envOf(worker)).toEqual({
      AZURE_CLIENT_ID: identity("worker").state.clientId,
      BULWARK_FLEET_TABLE_ENDPOINT: `https://${transient}.table.core.windows.net`,
      BULWARK_FLEET_QUEUE_ENDPOINT: `https://${transient}.queue.core.windows.net`,
      BULWARK_FLEET_PREFIX: "bulwark",
      BULWARK_REGION: "westeurope",
      BULWARK_POLICY_JSON: envOf(job("schedule")).BULWARK_POLICY_JSON,
      BULWARK_TRANSIENT: `https://${transient}.blob.core.windows.net/staging`,
      BULWARK_KEY_VAULT_KEY: customer.keyUri,
      BULWARK_MAX_JOBS_PER_WORKER: "2",
      BULWARK_MAX_JOBS_PER_REGION: "8",
      BULWARK_SQL_ADMIN_LOGIN: { secretRef: "bulwark-sql-admin-login" },
      BULWARK_SQL_ADMIN_PASSWORD: { secretRef: "bulwark-sql-admin-password" },
      BULWARK_PROTECTED_SCOPES: SCOPES.join(","), // informational
      BULWARK_RESTORE_CLIENT_ID: identity("restore").state.clientId,
      BULWARK_RESTORE_SCOPES: "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/contoso-restores", // informational
    });
    // The key is named without a version, so the worker follows the key's rotation.
    expect(customer.keyUri).toMatch(/^https:\/\/[^/]+\.vault\.azure\.net\/keys\/[^/]+$/);
    expect(worker.inputs.configuration.secrets).toEqual([
      { name: "bulwark-sql-admin-login", value: sqlLogin },
      { name: "bulwark-sql-admin-password", value: sqlPassword },
    ]);
    // Sent as Pulumi secrets (the engine marks the object that holds them), so the state encrypts them.
    expect(worker.secretPaths.some((p) => p.startsWith("configuration"))).toBe(true);
    expect(JSON.stringify(worker.inputs.template)).not.toContain(sqlPassword);
    expect(JSON.stringify(worker.inputs.template)).not.toContain(sqlLogin);
  });

  it("gives the scheduler exactly what `bulwark agent schedule` reads, and no secrets", () => {
    const scheduler = job("schedule");
    const transient = account("transient").inputs.accountName;
    const env = envOf(scheduler);
    expect(Object.keys(env).sort()).toEqual(
      ["AZURE_CLIENT_ID", "BULWARK_FLEET_TABLE_ENDPOINT", "BULWARK_FLEET_QUEUE_ENDPOINT", "BULWARK_FLEET_PREFIX", "BULWARK_POLICY_JSON", "BULWARK_AGENT_REGIONS", "BULWARK_PROTECTED_SCOPES"].sort(),
    );
    expect(env).toMatchObject({
      AZURE_CLIENT_ID: identity("scheduler").state.clientId,
      BULWARK_FLEET_TABLE_ENDPOINT: `https://${transient}.table.core.windows.net`,
      BULWARK_FLEET_QUEUE_ENDPOINT: `https://${transient}.queue.core.windows.net`,
      BULWARK_FLEET_PREFIX: "bulwark",
      BULWARK_AGENT_REGIONS: "westeurope",
      BULWARK_PROTECTED_SCOPES: SCOPES.join(","),
    });
    expect(scheduler.inputs.configuration.secrets).toEqual([]);
  });

  it("runs retention and prune daily as its own identity, with the scheduler's policy and the customer's key", () => {
    const prune = job("prune");
    const env = envOf(prune);
    expect(Object.keys(env).sort()).toEqual(["AZURE_CLIENT_ID", "BULWARK_KEY_VAULT_KEY", "BULWARK_POLICY_JSON"].sort());
    expect(env.AZURE_CLIENT_ID).toBe(identity("prune").state.clientId);
    expect(env.BULWARK_POLICY_JSON).toBe(envOf(job("schedule")).BULWARK_POLICY_JSON);
    expect(env.BULWARK_KEY_VAULT_KEY).toBe(envOf(job("worker")).BULWARK_KEY_VAULT_KEY);
    expect(prune.inputs.configuration.scheduleTriggerConfig.cronExpression).toBe("30 2 * * *");
    expect(prune.inputs.configuration.replicaTimeout).toBeGreaterThan(0);
    expect(prune.inputs.configuration.secrets).toEqual([]);
  });

  it("renders BULWARK_POLICY_JSON that the runtime's validator accepts: the region's tagged VMs, disks and databases into its vault", () => {
    const [policy, ...others] = policiesOf(envOf(job("schedule")));
    expect(others).toEqual([]);
    expect(policy.name).toBe("contoso-westeurope");
    expect(policy.vault).toBe(`https://${account("isolated").inputs.accountName}.blob.core.windows.net/vault`);
    expect(policy.vault).toBe(outputs.vaultUrl);
    expect(policy.protect.resources).toEqual([]);
    expect(policy.protect.tagged.map((t) => t.type).sort()).toEqual([...PROTECTABLE_TYPES].sort());
    for (const selector of policy.protect.tagged) {
      expect(selector).toMatchObject({ tagName: "bulwark-protect", tagValue: "true", subscriptions: [SUB] });
    }
    expect(policy.schedule).toMatchObject({ kind: "every", intervalMs: 4 * 3600_000 });
    // pointsDays 35 → daily; a day of 4-hourly points → last 6; weekly and monthly as configured.
    expect(policy.retention).toEqual({ last: 6, daily: 35, weekly: 8, monthly: 12 });
    expect(policy.crossRegion).toBe(false);
    expect(outputs.policyJson).toBe(envOf(job("schedule")).BULWARK_POLICY_JSON);
  });

  it("grants each identity exactly the roles its part needs, at the narrowest scope, and nothing broader", () => {
    const transientId = account("transient").id;
    const vaultId = account("isolated").id;
    const roleOf = (a: RecordedResource) => String(a.inputs.roleDefinitionId).split("/").pop();
    const summary = (principal: string) => grantsTo(principal).map((a) => `${roleOf(a)} @ ${a.inputs.scope}`).sort();
    const backupRole = String(customer.backupRoleDefinitionId).split("/").pop();
    const inventoryRole = String(customer.inventoryRoleDefinitionId).split("/").pop();
    const keyUserRole = String(customer.keyUserRoleDefinitionId).split("/").pop();
    const fleet = [`${BUILT_IN_ROLES.storageTableDataContributor} @ ${transientId}`, `${BUILT_IN_ROLES.storageQueueDataContributor} @ ${transientId}`];
    const pull = `${ACR_PULL_ROLE} @ ${withSql().registry!.resourceId}`;
    expect(summary(identity("scheduler").state.principalId)).toEqual([...SCOPES.map((s) => `${inventoryRole} @ ${s}`), ...fleet, pull].sort());
    expect(summary(identity("worker").state.principalId)).toEqual(
      [
        ...SCOPES.map((s) => `${backupRole} @ ${s}`),
        `${keyUserRole} @ ${customer.keyResourceId}`,
        ...fleet,
        `${BUILT_IN_ROLES.storageBlobDelegator} @ ${transientId}`,
        `${BUILT_IN_ROLES.storageBlobDataContributor} @ ${transientId}/blobServices/default/containers/staging`,
        `${BUILT_IN_ROLES.storageBlobDataContributor} @ ${vaultId}/blobServices/default/containers/vault`,
        `${BUILT_IN_ROLES.storageBlobDataContributor} @ ${vaultId}/blobServices/default/containers/vault-locks`,
        pull,
      ].sort(),
    );
    const all = ofType(resources, "azure-native:authorization:RoleAssignment");
    // Scheduler, worker, its restore identity, prune, and the vault's encryption identity: nobody else
    // holds anything (restore's and prune's grants: test/infra/roles.test.ts).
    const principals = new Set(all.map((a) => a.inputs.principalId));
    expect(principals).toEqual(new Set([identity("scheduler"), identity("worker"), identity("restore"), identity("prune"), identity("encryption")].map((i) => i.state.principalId)));
    // The northeurope subscription is protected by the northeurope stack, not this one.
    expect(all.some((a) => String(a.inputs.scope).includes("66666666-7777-8888-9999-000000000000"))).toBe(false);
    for (const a of all) expect(Object.values(FORBIDDEN_BUILT_IN_ROLES)).not.toContain(roleOf(a));
    expect(all.every((a) => a.inputs.principalType === "ServicePrincipal")).toBe(true);
  });

  it("names globally unique resources with a stable suffix and role assignments deterministically", async () => {
    const names = (rs: RecordedResource[]) => rs.filter((r) => ["azure-native:storage:StorageAccount", "azure-native:authorization:RoleAssignment"].includes(r.type)).map((r) => `${r.name}=${r.inputs.accountName ?? r.inputs.roleAssignmentName}`).sort();
    const first = names(resources);
    const again = await deployRegion(withSql());
    expect(names(again.resources)).toEqual(first);
    expect(new Set(first.map((n) => n.split("=")[1])).size).toBe(first.length);
  });

  it("exports the region's endpoints", () => {
    expect(outputs).toMatchObject({ region: "westeurope", resourceGroupName: "bulwark-contoso-westeurope", workQueueName: "bulwark-work-westeurope" });
    expect(outputs.vaultUrl).toMatch(/^https:\/\/bwvcontoso[0-9a-f]{6}\.blob\.core\.windows\.net\/vault$/);
    expect(outputs.fleetTableEndpoint).toMatch(/^https:\/\/bwtcontoso[0-9a-f]{6}\.table\.core\.windows\.net$/);
  });
});

describe("region stack variations", () => {
  it("without a SQL login the worker gets no SQL variables and no secrets", async () => {
    const { resources: rs } = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"));
    const worker = job("worker", rs);
    expect(Object.keys(envOf(worker)).filter((k) => k.startsWith("BULWARK_SQL"))).toEqual([]);
    expect(worker.inputs.configuration.secrets).toEqual([]);
  });

  it("adds explicit resources in the region's scopes to the policy, and the defaults where the config is silent", async () => {
    const vm = `/subscriptions/${SUB}/resourceGroups/contoso-prod-vms/providers/Microsoft.Compute/virtualMachines/web1`;
    const config = exampleRegionConfig("Pulumi.dev-westeurope.yaml", {
      protectResources: [vm],
      protectTag: "backup=gold",
      backupEvery: "1d",
      retention: { pointsDays: 14, immutabilityDays: 7 },
      worker: { maxJobsPerWorker: 3, maxJobsPerRegion: 12 },
    });
    const { resources: rs } = await deployRegion(config);
    const env = envOf(job("schedule", rs));
    const [policy] = policiesOf(env);
    expect(policy.protect.resources).toEqual([vm]);
    expect(policy.protect.tagged.every((t) => t.tagName === "backup" && t.tagValue === "gold")).toBe(true);
    expect(policy.schedule).toMatchObject({ kind: "every", intervalMs: 86_400_000 });
    expect(policy.retention).toEqual({ last: 1, daily: 14 });
    expect(envOf(job("worker", rs))).toMatchObject({ BULWARK_MAX_JOBS_PER_WORKER: "3", BULWARK_MAX_JOBS_PER_REGION: "12" });
  });

  it("refuses an explicit resource outside the region's protected scopes", async () => {
    const elsewhere = `/subscriptions/${SUB}/resourceGroups/contoso-test/providers/Microsoft.Sql/servers/s1/databases/orders`;
    const config = exampleRegionConfig("Pulumi.dev-westeurope.yaml", { protectResources: [elsewhere] });
    const failure = deployRegion(config);
    await expect(failure).rejects.toBeInstanceOf(UsageError);
    await expect(failure).rejects.toThrow(/^bulwark:protectResources\[0\] .*contoso-test.* is outside westeurope's protected scopes .*Protect its subscription or resource group/);
  });
});
