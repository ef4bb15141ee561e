/**
 * The customer's key vault and key through their lifecycle, under the Pulumi SDK's mocks: a vault
 * name still soft-deleted is recovered on request, nothing that holds the key can be replaced or
 * deleted by mistake, every use of the key is logged, and a change to the key that Azure's key PUT
 * would silently ignore fails the deployment (infra/components/customer-key.ts cites the specs).
 */
import { beforeAll, describe, expect, it } from "vitest";
import type * as pulumi from "@pulumi/pulumi";
import { clearRecorded, exampleConfig, ofType, resolveAll, setCustomerStackOutputs, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { parseCustomerConfig } from "../../infra/config.ts";
import type { CustomerConfig, KeyConfig } from "../../infra/config.ts";
import { customerStack } from "../../infra/customer-stack.ts";
import { CustomerKey, KEY_NAME, keyVaultName, refuseIgnoredKeyChanges } from "../../infra/components/customer-key.ts";
import { UsageError } from "../../runtime/errors.ts";

const options = new Map<string, pulumi.CustomResourceOptions>();
const recordOptions: pulumi.ResourceTransformation = ({ name, opts }) => {
  options.set(name, opts);
  return undefined;
};

const example = (overrides: Record<string, unknown> = {}): CustomerConfig => parseCustomerConfig({ ...exampleConfig("Pulumi.dev.yaml").raw, ...overrides });

function customerKey(name: string, config: CustomerConfig): CustomerKey {
  return new CustomerKey(
    name,
    {
      customer: name,
      tenantId: config.tenantId,
      subscriptionId: config.subscriptionId,
      resourceGroupName: `bulwark-${name}`,
      resourceGroupId: `/subscriptions/${config.subscriptionId}/resourceGroups/bulwark-${name}`,
      location: config.homeRegion,
      key: config.key,
      recoverVault: config.keyVaultRecover,
      tags: {},
    },
    { transformations: [recordOptions] },
  );
}

let resources: RecordedResource[];
const of = (component: string, type: string) => ofType(resources, type).filter((r) => r.name.startsWith(`${component}-`));

describe("the key vault and key", () => {
  let stackOutputs: Record<string, unknown>;
  beforeAll(async () => {
    clearRecorded(); // the test files of a worker share the harness
    setCustomerStackOutputs({});
    stackOutputs = await resolveAll(customerStack(example()));
    customerKey("fresh", example());
    customerKey("recovered", example({ keyVaultRecover: true }));
    resources = await settled();
  });

  it("creates the vault normally, and recovers a soft-deleted vault of the same name with bulwark:keyVaultRecover: true", () => {
    expect(of("fresh", "azure-native:keyvault:Vault")[0].inputs.properties.createMode).toBeUndefined();
    expect(of("recovered", "azure-native:keyvault:Vault")[0].inputs.properties.createMode).toBe("recover");
    expect(example().keyVaultRecover).toBe(false);
    expect(() => example({ keyVaultRecover: "yes" })).toThrow(/^bulwark:keyVaultRecover must be true or false/);
  });

  it("protects the vault and the key from replacement, and the vault from deletion with a CanNotDelete lock", () => {
    const [vault] = of("fresh", "azure-native:keyvault:Vault");
    const [key] = of("fresh", "azure-native:keyvault:Key");
    expect(options.get(vault.name)?.protect).toBe(true);
    expect(options.get(key.name)?.protect).toBe(true);
    const [lock] = of("fresh", "azure-native:authorization:ManagementLockByScope");
    expect(lock.inputs).toMatchObject({ scope: vault.id, level: "CanNotDelete", lockName: "bulwark-do-not-delete" });
  });

  it("sends the key vault's audit log (AuditEvent) to a Log Analytics workspace of the customer stack", () => {
    const [vault] = of("fresh", "azure-native:keyvault:Vault");
    const [workspace] = of("fresh", "azure-native:operationalinsights:Workspace");
    expect(workspace.inputs).toMatchObject({ workspaceName: "bulwark-fresh-audit", resourceGroupName: "bulwark-fresh" });
    const [setting] = of("fresh", "azure-native:monitor:DiagnosticSetting");
    expect(setting.inputs).toMatchObject({ resourceUri: vault.id, workspaceId: workspace.id, logs: [{ category: "AuditEvent", enabled: true }] });
  });

  it("records what the key's first deployment fixed as the stack output keySpec", () => {
    const config = example();
    expect(stackOutputs.keySpec).toEqual({
      vaultName: keyVaultName(config.customer, config.tenantId, config.subscriptionId),
      keyName: KEY_NAME,
      size: 3072,
      rotationPeriod: "P90D",
      expiresAfter: "P1Y",
    });
  });
});

describe("a key change Azure would ignore", () => {
  const config = example();
  const deployed = { vaultName: keyVaultName(config.customer, config.tenantId, config.subscriptionId), keyName: KEY_NAME, size: 3072, rotationPeriod: "P90D", expiresAfter: "P1Y" };
  const check = (key: Partial<KeyConfig>) => refuseIgnoredKeyChanges("organization/bulwark/dev", config.customer, config.tenantId, config.subscriptionId, { ...config.key, ...key });

  it("refuses a new key size after the first deployment, naming the config key and the way out", async () => {
    setCustomerStackOutputs({ keySpec: deployed });
    const refusal = check({ size: 4096 });
    await expect(refusal).rejects.toBeInstanceOf(UsageError);
    await expect(check({ size: 4096 })).rejects.toThrow(/^bulwark:key\.size changed from 3072 to 4096 after the key bulwark-kek in bwkcontoso[0-9a-f]+ was created, and Azure would silently keep 3072\. .*set it back to 3072/);
  });

  it("refuses a new rotation period or expiry, and says how to change the policy in Key Vault", async () => {
    setCustomerStackOutputs({ keySpec: deployed });
    await expect(check({ rotationPeriod: "P60D" })).rejects.toThrow(/^bulwark:key\.rotationPeriod changed from "P90D" to "P60D".*az keyvault key rotation-policy update/);
    await expect(check({ expiresAfter: "P2Y" })).rejects.toThrow(/^bulwark:key\.expiresAfter changed from "P1Y" to "P2Y"/);
  });

  it("lets the same key, a first deployment, or another vault's key through", async () => {
    setCustomerStackOutputs({ keySpec: deployed });
    await expect(check({})).resolves.toBeUndefined();
    setCustomerStackOutputs({});
    await expect(check({ size: 4096 })).resolves.toBeUndefined();
    setCustomerStackOutputs({ keySpec: { ...deployed, vaultName: "bwkcontosoother" } });
    await expect(check({ size: 4096 })).resolves.toBeUndefined();
  });
});
