/**
 * A region stack (Pulumi.dev-westeurope.yaml) under mocks, reading the example customer stack's
 * real outputs through its StackReference.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { ofType } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { BUILT_IN_ROLES, FORBIDDEN_BUILT_IN_ROLES } from "../../infra/components/roles.ts";

let customer: Record<string, unknown>;
let resources: RecordedResource[];
let outputs: Record<string, unknown>;

const webhook = "https://contoso.webhook.office.com/webhookb2/abc?token=not-a-real-token";

beforeAll(async () => {
  customer = (await deployExampleCustomer()).outputs;
  ({ resources, outputs } = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml", { notificationWebhook: webhook }, ["notificationWebhook"])));
});

const account = (kind: string) => ofType(resources, "azure-native:storage:StorageAccount").find((a) => a.inputs.tags["bulwark-storage"] === kind)!;
const identity = (role: string) => ofType(resources, "azure-native:managedidentity:UserAssignedIdentity").find((i) => i.name.endsWith(`-${role}-identity`))!;
const job = (command: string) => ofType(resources, "azure-native:app:Job").find((j) => j.inputs.template.containers[0].args[1] === command)!;
const envOf = (j: RecordedResource) => Object.fromEntries(j.inputs.template.containers[0].env.map((e: any) => [e.name, e.value ?? { secretRef: e.secretRef }]));
const grantsTo = (principalId: string) => ofType(resources, "azure-native:authorization:RoleAssignment").filter((a) => a.inputs.principalId === principalId);

describe("region stack (example config, westeurope)", () => {
  it("puts every regional resource in the stack's region", () => {
    const located = resources.filter((r) => r.inputs.location !== undefined);
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
    const [queue] = ofType(resources, "azure-native:storage:Queue");
    expect(queue.inputs.accountName).toBe(transient.inputs.accountName);
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
    expect(vault.inputs.immutableStorageWithVersioning).toEqual({
      enabled: true,
      immutabilityPolicy: { immutabilityPeriodSinceCreationInDays: 30, state: "Unlocked", allowProtectedAppendWrites: false },
    });
    const [service] = ofType(resources, "azure-native:storage:BlobServiceProperties");
    expect(service.inputs).toMatchObject({ accountName: vault.inputs.accountName, isVersioningEnabled: true, deleteRetentionPolicy: { enabled: true, days: 14 }, containerDeleteRetentionPolicy: { enabled: true, days: 14 } });
    const container = ofType(resources, "azure-native:storage:BlobContainer").find((c) => c.inputs.accountName === vault.inputs.accountName)!;
    expect(container.inputs).toMatchObject({ containerName: "vault", publicAccess: "None", immutableStorageWithVersioning: { enabled: true } });
    // The encryption identity may use the key (built-in role made for exactly that), at the key only.
    const [keyGrant] = grantsTo(encryptionIdentity.state.principalId);
    expect(keyGrant.inputs.scope).toBe(customer.keyResourceId);
    expect(keyGrant.inputs.roleDefinitionId).toMatch(new RegExp(`/${BUILT_IN_ROLES.keyVaultCryptoServiceEncryptionUser}$`));
  });

  it("runs the scheduler on the configured cron and the worker on the region's queue through KEDA with managed identity", () => {
    const scheduler = job("schedule");
    expect(scheduler.inputs.configuration).toMatchObject({ triggerType: "Schedule", scheduleTriggerConfig: { cronExpression: "0 2 * * *" } });
    const worker = job("worker");
    const workerIdentity = identity("worker");
    expect(worker.inputs.configuration).toMatchObject({ triggerType: "Event", replicaTimeout: 14400, replicaRetryLimit: 2 });
    const scale = worker.inputs.configuration.eventTriggerConfig.scale;
    expect(scale.maxExecutions).toBe(10);
    expect(scale.rules).toEqual([
      { name: "queue", type: "azure-queue", metadata: { accountName: account("transient").inputs.accountName, queueName: "jobs", queueLength: "1" }, identity: workerIdentity.id },
    ]);
    expect(worker.inputs.identity).toEqual({ type: "UserAssigned", userAssignedIdentities: [workerIdentity.id] });
    expect(scheduler.inputs.identity).toEqual({ type: "UserAssigned", userAssignedIdentities: [identity("scheduler").id] });
  });

  it("tells the worker where everything is, and passes the webhook only as a secret", () => {
    const worker = job("worker");
    const transient = account("transient").inputs.accountName;
    const vault = account("isolated").inputs.accountName;
    expect(envOf(worker)).toEqual({
      BULWARK_CUSTOMER: "contoso",
      BULWARK_REGION: "westeurope",
      BULWARK_PROTECTED_SCOPES: "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/contoso-prod-vms,/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/contoso-prod-sql",
      BULWARK_QUEUE_URL: `https://${transient}.queue.core.windows.net/jobs`,
      BULWARK_TRANSIENT: `https://${transient}.blob.core.windows.net/staging`,
      BULWARK_VAULT: `https://${vault}.blob.core.windows.net/vault`,
      BULWARK_KEY_ID: customer.keyUri,
      BULWARK_RETENTION_DAYS: "35",
      AZURE_CLIENT_ID: identity("worker").state.clientId,
      BULWARK_NOTIFICATION_WEBHOOK: { secretRef: "bulwark-notification-webhook" },
    });
    expect(worker.inputs.configuration.secrets).toEqual([{ name: "bulwark-notification-webhook", value: webhook }]);
    expect(worker.secretPaths.some((p) => p.startsWith("configuration"))).toBe(true);
    expect(JSON.stringify(worker.inputs.template)).not.toContain("not-a-real-token");
  });

  it("grants each identity only the roles its part needs, at the narrowest scope", () => {
    const transientId = account("transient").id;
    const vaultId = account("isolated").id;
    const scopes = ["/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/contoso-prod-vms", "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/contoso-prod-sql"];
    const roleOf = (a: RecordedResource) => String(a.inputs.roleDefinitionId).split("/").pop();
    const summary = (principal: string) => grantsTo(principal).map((a) => `${roleOf(a)} @ ${a.inputs.scope}`).sort();
    const backupRole = String(customer.backupRoleDefinitionId).split("/").pop();
    const keyUserRole = String(customer.keyUserRoleDefinitionId).split("/").pop();
    expect(summary(identity("scheduler").state.principalId)).toEqual(
      [...scopes.map((s) => `${BUILT_IN_ROLES.reader} @ ${s}`), `${BUILT_IN_ROLES.storageQueueDataMessageSender} @ ${transientId}/queueServices/default/queues/jobs`].sort(),
    );
    expect(summary(identity("worker").state.principalId)).toEqual(
      [
        ...scopes.map((s) => `${backupRole} @ ${s}`),
        `${keyUserRole} @ ${customer.keyResourceId}`,
        `${BUILT_IN_ROLES.storageQueueDataReader} @ ${transientId}/queueServices/default/queues/jobs`,
        `${BUILT_IN_ROLES.storageQueueDataMessageProcessor} @ ${transientId}/queueServices/default/queues/jobs`,
        `${BUILT_IN_ROLES.storageBlobDataContributor} @ ${transientId}/blobServices/default/containers/staging`,
        `${BUILT_IN_ROLES.storageBlobDataContributor} @ ${vaultId}/blobServices/default/containers/vault`,
      ].sort(),
    );
    // The northeurope subscription is protected by the northeurope stack, not this one.
    const all = ofType(resources, "azure-native:authorization:RoleAssignment");
    expect(all.some((a) => String(a.inputs.scope).includes("66666666-7777-8888-9999-000000000000"))).toBe(false);
    for (const a of all) expect(Object.values(FORBIDDEN_BUILT_IN_ROLES)).not.toContain(roleOf(a));
  });

  it("names globally unique resources with a stable suffix and role assignments deterministically", async () => {
    const names = (rs: RecordedResource[]) => rs.filter((r) => ["azure-native:storage:StorageAccount", "azure-native:authorization:RoleAssignment"].includes(r.type)).map((r) => `${r.name}=${r.inputs.accountName ?? r.inputs.roleAssignmentName}`).sort();
    const first = names(resources);
    const again = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml", { notificationWebhook: webhook }, ["notificationWebhook"]));
    expect(names(again.resources)).toEqual(first);
    expect(new Set(first.map((n) => n.split("=")[1])).size).toBe(first.length);
  });

  it("exports the region's endpoints", () => {
    expect(outputs).toMatchObject({ region: "westeurope", resourceGroupName: "bulwark-contoso-westeurope" });
    expect(outputs.vaultUrl).toMatch(/^https:\/\/bwvcontoso[0-9a-f]{6}\.blob\.core\.windows\.net\/vault$/);
  });
});
