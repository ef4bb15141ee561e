/**
 * The customer stack under the Pulumi SDK's mocks, with the example config (Pulumi.dev.yaml).
 */
import { describe, expect, it, beforeAll } from "vitest";
import { clearRecorded, exampleConfig, ofType, resolveAll, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { parseCustomerConfig, scopeId } from "../../infra/config.ts";
import type { CustomerConfig } from "../../infra/config.ts";
import { customerStack } from "../../infra/customer-stack.ts";
import { roleActionsFor } from "../../runtime/azure/role.ts";
import { keyUserPermissions } from "../../infra/components/backup-role.ts";
import { ACR_PULL_ROLE } from "../../infra/components/agent-job.ts";

let config: CustomerConfig;
let resources: RecordedResource[];
let outputs: Record<string, unknown>;

beforeAll(async () => {
  clearRecorded(); // the test files of a worker share the harness
  config = parseCustomerConfig(exampleConfig("Pulumi.dev.yaml").raw);
  outputs = await resolveAll(customerStack(config));
  resources = await settled();
});

describe("customer stack (example config)", () => {
  it("registers the enterprise app: an application and its service principal", () => {
    const [app] = ofType(resources, "azuread:index/application:Application");
    expect(app.inputs.signInAudience).toBe("AzureADMyOrg");
    expect(app.inputs.displayName).toContain("contoso");
    const [sp] = ofType(resources, "azuread:index/servicePrincipal:ServicePrincipal");
    expect(sp.inputs.clientId).toBe(app.state.clientId);
    expect(outputs.enterpriseAppClientId).toBe(app.state.clientId);
  });

  it("defines the backup role with exactly the runtime's actions, no wildcard, assignable at the protected scopes only", () => {
    const definitions = ofType(resources, "azure-native:authorization:RoleDefinition");
    const backup = definitions.find((d) => String(d.inputs.roleName).startsWith("Bulwark backup"))!;
    const keyUser = definitions.find((d) => String(d.inputs.roleName).startsWith("Bulwark key user"))!;
    // The worker's role and key; the other identities' roles: test/infra/roles.test.ts.
    const expected = { actions: roleActionsFor("backup").actions, dataActions: keyUserPermissions().dataActions };
    const granted = {
      actions: [...backup.inputs.permissions[0].actions, ...keyUser.inputs.permissions[0].actions].sort(),
      dataActions: [...backup.inputs.permissions[0].dataActions, ...keyUser.inputs.permissions[0].dataActions].sort(),
    };
    expect(granted).toEqual({ actions: [...expected.actions].sort(), dataActions: [...expected.dataActions].sort() });
    expect(expected.actions.length).toBeGreaterThan(0);
    for (const action of [...granted.actions, ...granted.dataActions]) expect(action).not.toContain("*");
    // Control-plane actions at the protected scopes; key data actions only where the key lives.
    expect(backup.inputs.permissions[0].dataActions).toEqual([]);
    expect(keyUser.inputs.permissions[0].actions).toEqual([]);
    expect(backup.inputs.assignableScopes).toEqual(config.protect.map(scopeId).sort());
    expect(keyUser.inputs.assignableScopes).toEqual([`/subscriptions/${config.subscriptionId}/resourceGroups/bulwark-contoso`]);
  });

  it("assigns the bridge role to the bridge at each protected scope, under deterministic names", () => {
    const assignments = ofType(resources, "azure-native:authorization:RoleAssignment");
    const bridgeRole = ofType(resources, "azure-native:authorization:RoleDefinition").find((d) => String(d.inputs.roleName).startsWith("Bulwark bridge"))!;
    const backupRoleId = `/providers/Microsoft.Authorization/roleDefinitions/${bridgeRole.inputs.roleDefinitionId}`;
    const bridge = ofType(resources, "azure-native:managedidentity:UserAssignedIdentity")[0];
    // Besides AcrPull at the image's registry (registry-pull.test.ts).
    const toBridge = assignments.filter((a) => a.inputs.principalId === bridge.state.principalId && !String(a.inputs.roleDefinitionId).endsWith(`/${ACR_PULL_ROLE}`));
    expect(toBridge.map((a) => a.inputs.scope).sort()).toEqual(config.protect.map(scopeId).sort());
    for (const a of toBridge) {
      expect(a.inputs.roleDefinitionId).toBe(backupRoleId);
      expect(a.inputs.roleAssignmentName).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
    expect(new Set(toBridge.map((a) => a.inputs.roleAssignmentName)).size).toBe(toBridge.length);
  });

  it("creates a key vault with RBAC, soft delete, purge protection and an RSA key that rotates", () => {
    const [vault] = ofType(resources, "azure-native:keyvault:Vault");
    expect(vault.inputs.properties).toMatchObject({
      tenantId: config.tenantId,
      enableRbacAuthorization: true,
      enableSoftDelete: true,
      enablePurgeProtection: true,
      publicNetworkAccess: "Enabled", // bulwark:network public, the default (test/infra/network.test.ts)
    });
    expect(vault.inputs.vaultName).toMatch(/^bwkcontoso[0-9a-f]{6}$/);
    expect(vault.inputs.vaultName.length).toBeLessThanOrEqual(24);
    const [key] = ofType(resources, "azure-native:keyvault:Key");
    expect(key.inputs.properties).toMatchObject({ kty: "RSA", keySize: 3072, keyOps: ["wrapKey", "unwrapKey"] });
    expect(key.inputs.properties.rotationPolicy.lifetimeActions).toContainEqual({ action: { type: "rotate" }, trigger: { timeAfterCreate: "P90D" } });
    expect(key.inputs.properties.rotationPolicy.attributes.expiryTime).toBe("P1Y");
    expect(outputs.keyUri).toBe(`https://${vault.inputs.vaultName}.vault.azure.net/keys/bulwark-kek`);
  });

  it("runs the bridge as a scheduled Container Apps job under its user-assigned identity", () => {
    const [job] = ofType(resources, "azure-native:app:Job");
    const [identity] = ofType(resources, "azure-native:managedidentity:UserAssignedIdentity");
    expect(job.inputs.location).toBe("westeurope");
    expect(job.inputs.identity).toEqual({ type: "UserAssigned", userAssignedIdentities: [identity.id] });
    expect(job.inputs.configuration).toMatchObject({ triggerType: "Schedule", scheduleTriggerConfig: { cronExpression: "0 * * * *" } });
    expect(job.inputs.configuration.replicaTimeout).toBeGreaterThan(0);
    const container = job.inputs.template.containers[0];
    expect(container).toMatchObject({ image: config.image, args: ["agent", "bridge"] });
    expect(container.env).toContainEqual({ name: "AZURE_CLIENT_ID", value: identity.state.clientId });
    // An ACR image is pulled with the job's identity, not a password.
    expect(job.inputs.configuration.registries).toEqual([{ server: "bulwarkregistry.azurecr.io", identity: identity.id }]);
    const [environment] = ofType(resources, "azure-native:app:ManagedEnvironment");
    expect(job.inputs.environmentId).toBe(environment.id);
    expect(environment.inputs.appLogsConfiguration.destination).toBe("log-analytics");
    // The workspace's shared key reaches the environment only as a Pulumi secret.
    expect(environment.secretPaths).toContain("appLogsConfiguration");
  });

  it("exports what region stacks read", () => {
    expect(outputs.customer).toBe("contoso");
    expect(outputs.protectedScopes).toEqual(config.protect.map((s) => ({ scope: scopeId(s), region: s.region })));
    for (const key of ["backupRoleDefinitionId", "keyUserRoleDefinitionId", "keyVaultUri", "keyName", "keyResourceId", "keyUri"]) {
      expect(outputs[key], key).toEqual(expect.any(String));
    }
  });

  it("creates no region resources", () => {
    expect(ofType(resources, "azure-native:storage:StorageAccount")).toEqual([]);
    expect(ofType(resources, "azure-native:storage:Queue")).toEqual([]);
  });
});
