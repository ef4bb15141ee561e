/**
 * The deployed console under the Pulumi SDK's mocks: the example customer, its westeurope region
 * stack, then the customer stack again with bulwark:console naming that region stack (the order an
 * operator deploys in). The console's roles are checked against the ids of what the region stack
 * really created.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { ofType, setCustomerStackOutputs } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { exampleConfig } from "./harness.ts";
import { parseCustomerConfig } from "../../infra/config.ts";
import { CONSOLE_ROLES, containerAppName } from "../../infra/components/console-app.ts";
import { agentJobsFromEnv } from "../../runtime/console/agents.ts";
import { UsageError } from "../../runtime/errors.ts";
import { consoleResourcePolicies, consoleStackPolicies } from "../../policies/console-rules.ts";
import { commands } from "../../runtime/cli/commands.ts";
import { consoleSettings } from "../../runtime/console/command.ts";

const REGION_STACK = "organization/bulwark/dev-westeurope";
let region: { outputs: Record<string, unknown>; resources: RecordedResource[] };
let withConsole: { outputs: Record<string, unknown>; resources: RecordedResource[] };
let withoutConsole: { outputs: Record<string, unknown>; resources: RecordedResource[] };

beforeAll(async () => {
  withoutConsole = await deployCustomer();
  region = await deployRegion(exampleRegionConfig("Pulumi.dev-westeurope.yaml"));
  // The console's StackReference reads the region stack's outputs.
  setCustomerStackOutputs(region.outputs);
  withConsole = await deployCustomer({ console: { regionStack: REGION_STACK } });
});

const app = () => ofType(withConsole.resources, "azure-native:app:ContainerApp")[0]!;
const envOf = (r: RecordedResource) => Object.fromEntries((r.inputs.template.containers[0].env as { name: string; value: string }[]).map((e) => [e.name, e.value]));
const idOf = (resources: RecordedResource[], type: string, name: (r: RecordedResource) => boolean) => resources.find((r) => r.type === type && name(r))!.id;

describe("the console as a Container App in the customer stack", () => {
  it("runs `bulwark console` on 0.0.0.0:8080 with Entra auth, external ingress over HTTPS only, one replica at most", () => {
    const console = app();
    expect(console.inputs.containerAppName).toBe("contoso-weu-web");
    expect(console.inputs.template.containers[0].args).toEqual(["console", "--listen", "0.0.0.0:8080", "--allow-remote", "--auth", "entra"]);
    expect(console.inputs.configuration.ingress).toMatchObject({ external: true, targetPort: 8080, allowInsecure: false });
    expect(console.inputs.template.scale.maxReplicas).toBe(1);
    const [bridgeEnvironment] = ofType(withConsole.resources, "azure-native:app:ManagedEnvironment");
    expect(console.inputs.environmentId).toBe(bridgeEnvironment!.id);
    expect(console.inputs.identity.type).toBe("UserAssigned");
  });

  it("passes arguments the CLI's console command accepts: remote listening allowed, Entra headers trusted", () => {
    const [name, ...options] = app().inputs.template.containers[0].args as string[];
    // As runtime/cli/run.ts parses a command's arguments, then as the command checks them.
    const parsed = parseArgs({ args: options, options: commands[name!]!.options, allowPositionals: true, strict: true } as ParseArgsConfig);
    expect(consoleSettings(parsed.values)).toEqual({ listen: { host: "0.0.0.0", port: 8080, loopback: false }, auth: "entra" });
  });

  it("reads the named region stack's fleet, policies and agents from its environment", () => {
    const env = envOf(app());
    expect(env.BULWARK_FLEET_TABLE_ENDPOINT).toBe(region.outputs.fleetTableEndpoint);
    expect(env.BULWARK_FLEET_QUEUE_ENDPOINT).toBe(region.outputs.fleetQueueEndpoint);
    expect(env.BULWARK_POLICY_JSON).toBe(region.outputs.policyJson);
    expect(agentJobsFromEnv(env)).toEqual([
      { region: "westeurope", subscriptionId: "11111111-2222-3333-4444-555555555555", resourceGroup: region.outputs.resourceGroupName, schedulerJob: region.outputs.schedulerJobName, workerJob: region.outputs.workerJobName },
    ]);
  });

  it("puts Entra ID sign-in in front of it: unauthenticated browsers redirected, HTTPS required, the customer's tenant, no client secret", () => {
    const [auth] = ofType(withConsole.resources, "azure-native:app:ContainerAppsAuthConfig");
    expect(auth!.inputs).toMatchObject({
      authConfigName: "current",
      containerAppName: "contoso-weu-web",
      platform: { enabled: true },
      globalValidation: { unauthenticatedClientAction: "RedirectToLoginPage" },
      httpSettings: { requireHttps: true },
      identityProviders: { azureActiveDirectory: { enabled: true, registration: { openIdIssuer: "https://login.microsoftonline.com/0a1b2c3d-4e5f-6789-abcd-ef0123456789/v2.0" } } },
    });
    expect(auth!.inputs.identityProviders.azureActiveDirectory.registration.clientSecretSettingName).toBeUndefined();
    const signIn = ofType(withConsole.resources, "azuread:index/application:Application").find((a) => String(a.inputs.displayName).startsWith("Bulwark console"))!;
    expect(auth!.inputs.identityProviders.azureActiveDirectory.registration.clientId).toBe(signIn.state.clientId);
    expect(signIn.inputs).toMatchObject({ signInAudience: "AzureADMyOrg", web: { implicitGrant: { idTokenIssuanceEnabled: true, accessTokenIssuanceEnabled: false } } });
    const [redirect] = ofType(withConsole.resources, "azuread:index/applicationRedirectUris:ApplicationRedirectUris");
    expect(redirect!.inputs.type).toBe("Web");
    expect(redirect!.inputs.redirectUris[0]).toMatch(/\/\.auth\/login\/aad\/callback$/);
    const sp = ofType(withConsole.resources, "azuread:index/servicePrincipal:ServicePrincipal").find((p) => p.inputs.clientId === signIn.state.clientId)!;
    expect(sp.inputs.appRoleAssignmentRequired).toBe(true);
  });

  it("its identity holds exactly the read roles, the jobs table, the work queue and the key, at the region's real resources", () => {
    const identity = ofType(withConsole.resources, "azure-native:managedidentity:UserAssignedIdentity").find((i) => String(i.inputs.resourceName).endsWith("-console-id"))!;
    const granted = ofType(withConsole.resources, "azure-native:authorization:RoleAssignment")
      .filter((a) => a.inputs.principalId === identity.state.principalId)
      .map((a) => `${String(a.inputs.roleDefinitionId).split("/").pop()} @ ${a.inputs.scope}`)
      .sort();
    const r = region.resources;
    const transient = idOf(r, "azure-native:storage:StorageAccount", (a) => a.inputs.accountName === region.outputs.transientAccountName);
    const vaultContainer = idOf(r, "azure-native:storage:BlobContainer", (c) => c.inputs.accountName === region.outputs.vaultAccountName && c.inputs.containerName === "vault");
    const [keyUser] = ofType(withConsole.resources, "azure-native:authorization:RoleDefinition").filter((d) => String(d.inputs.roleName).startsWith("Bulwark key user"));
    const [key] = ofType(withConsole.resources, "azure-native:keyvault:Key");
    const expected = [
      `${CONSOLE_ROLES.storageTableDataReader} @ ${transient}`,
      `${CONSOLE_ROLES.storageTableDataContributor} @ ${idOf(r, "azure-native:storage:Table", (t) => t.inputs.tableName === "bulwarkjobs")}`,
      `${CONSOLE_ROLES.storageQueueDataMessageSender} @ ${idOf(r, "azure-native:storage:Queue", (q) => q.inputs.queueName === region.outputs.workQueueName)}`,
      `${CONSOLE_ROLES.storageBlobDataReader} @ ${vaultContainer}`,
      `${CONSOLE_ROLES.reader} @ ${idOf(r, "azure-native:app:Job", (j) => j.inputs.jobName === region.outputs.schedulerJobName)}`,
      `${CONSOLE_ROLES.reader} @ ${idOf(r, "azure-native:app:Job", (j) => j.inputs.jobName === region.outputs.workerJobName)}`,
      `${keyUser!.id.split("/").pop()} @ ${key!.id}`,
      `7f951dda-4ed3-4680-a7ca-43fe172d538d @ ${parseCustomerConfig(exampleConfig("Pulumi.dev.yaml").raw).registry!.resourceId}`,
    ].sort();
    expect(granted).toEqual(expected);
    expect(withConsole.outputs.consoleUrl).toMatch(/^https:\/\//);
  });

  it("passes the console's policies on preview and after up, and a weakened copy does not", () => {
    const check = (resources: RecordedResource[], view: "inputs" | "state") => {
      const found: string[] = [];
      const stack = resources.map((r) => ({ type: r.type, name: r.name, urn: r.urn, props: r[view] }));
      for (const r of stack) for (const rule of consoleResourcePolicies) rule.validateResource(r, (m) => found.push(m));
      for (const rule of consoleStackPolicies) rule.validateStack({ resources: stack }, (m) => found.push(m));
      return found;
    };
    expect(check(withConsole.resources, "inputs")).toEqual([]);
    expect(check(withConsole.resources, "state")).toEqual([]);
    const anonymous = withConsole.resources.map((r) =>
      r.type === "azure-native:app:ContainerAppsAuthConfig" ? { ...r, state: { ...r.state, globalValidation: { unauthenticatedClientAction: "AllowAnonymous" } } } : r,
    );
    expect(check(anonymous, "state")).toEqual([expect.stringMatching(/AllowAnonymous/)]);
  });

  it("is off unless bulwark:console names a region stack", () => {
    expect(ofType(withoutConsole.resources, "azure-native:app:ContainerApp")).toEqual([]);
    expect(ofType(withoutConsole.resources, "azure-native:app:ContainerAppsAuthConfig")).toEqual([]);
    expect(withoutConsole.outputs.consoleUrl).toBe("");
  });
});

describe("bulwark:console and the app's name", () => {
  const raw = () => exampleConfig("Pulumi.dev.yaml").raw;

  it("false or enabled: false turns it off; a stack that is not organization/project/stack is refused with what to write", () => {
    expect(parseCustomerConfig({ ...raw(), console: false }).console).toBeUndefined();
    expect(parseCustomerConfig({ ...raw(), console: { enabled: false, regionStack: REGION_STACK } }).console).toBeUndefined();
    expect(parseCustomerConfig({ ...raw(), console: { regionStack: REGION_STACK } }).console).toEqual({ regionStack: REGION_STACK });
    expect(() => parseCustomerConfig({ ...raw(), console: { regionStack: "dev-westeurope" } })).toThrow(/bulwark:console\.regionStack "dev-westeurope" is not a fully qualified stack name\. Write/);
    expect(() => parseCustomerConfig({ ...raw(), console: "yes" })).toThrow(UsageError);
  });

  it("is refused with private networking, which its environment cannot reach", () => {
    expect(() => parseCustomerConfig({ ...raw(), network: "private", console: { regionStack: REGION_STACK } })).toThrow(/bulwark:console is not available with bulwark:network private/);
  });

  it("the longest customer name in the longest region code still makes a valid Container Apps name", () => {
    const name = containerAppName("a2345678901234567890", "australiacentral2");
    expect(name).toBe("a2345678901234567890-auc2-web");
    expect(name.length).toBeLessThanOrEqual(32);
  });
});
