/**
 * The console's policies on a compliant stack and on stacks that each break one rule, called the
 * way the Pulumi engine calls them (resource policies on inputs; stack policies on the stack's
 * resources, before and after Azure named them).
 */
import { describe, expect, it } from "vitest";
import { consoleAuthenticated, consoleIdentityReadOnlyOnVaults, consoleIngressHttpsOnly } from "../../policies/console-rules.ts";
import { resourcePolicies, stackPolicies } from "../../policies/rules.ts";
import type { StackResource } from "../../policies/rules.ts";

const GROUP = "/subscriptions/s/resourceGroups/bulwark-contoso-westeurope";
const FLEET = `${GROUP}/providers/Microsoft.Storage/storageAccounts/contosoweufleet`;
const VAULT = `${GROUP}/providers/Microsoft.Storage/storageAccounts/contosoweuvault`;
const IDENTITY = "/subscriptions/s/resourceGroups/bulwark-contoso/providers/Microsoft.ManagedIdentity/userAssignedIdentities/contoso-weu-console-id";
const role = (guid: string) => `/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/${guid}`;
const res = (type: string, name: string, props: Record<string, any>): StackResource => ({ type, name, urn: `urn:${name}`, props });

function grant(name: string, guid: string, scope: string): StackResource {
  return res("azure-native:authorization:RoleAssignment", name, { principalId: "console-principal", roleDefinitionId: role(guid), scope });
}

function compliantStack(): StackResource[] {
  return [
    res("azure-native:managedidentity:UserAssignedIdentity", "console-identity", { id: IDENTITY, principalId: "console-principal" }),
    res("azure-native:app:ContainerApp", "console-app", {
      containerAppName: "contoso-weu-web",
      identity: { type: "UserAssigned", userAssignedIdentities: [IDENTITY] },
      configuration: { ingress: { external: true, targetPort: 8080, allowInsecure: false } },
    }),
    res("azure-native:app:ContainerAppsAuthConfig", "console-auth", {
      containerAppName: "contoso-weu-web",
      platform: { enabled: true },
      globalValidation: { unauthenticatedClientAction: "RedirectToLoginPage" },
      identityProviders: { azureActiveDirectory: { enabled: true, registration: { clientId: "c", openIdIssuer: "https://login.microsoftonline.com/t/v2.0" } } },
    }),
    grant("tables", "76199698-9eea-4c19-bc75-cec21354c6b6", FLEET),
    grant("jobs-table", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", `${FLEET}/tableServices/default/tables/bulwarkjobs`),
    grant("work-queue", "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a", `${FLEET}/queueServices/default/queues/bulwark-work-westeurope`),
    grant("vault", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", `${VAULT}/blobServices/default/containers/vault`),
    grant("sched", "acdd72a7-3385-48ef-bd42-f606fba81ae7", `${GROUP}/providers/Microsoft.App/jobs/contoso-weu-sched`),
    grant("key", "9b0c1f2e-aaaa-bbbb-cccc-000000000001", "/subscriptions/s/resourceGroups/bulwark-contoso/providers/Microsoft.KeyVault/vaults/contosokv/keys/bulwark"),
  ];
}

/** After `pulumi up`: names and identities as Azure returns them (no containerAppName input, identities as a map). */
function asAzureReturnsIt(stack: StackResource[]): StackResource[] {
  return stack.map((r) => {
    if (r.type === "azure-native:app:ContainerApp") {
      const { containerAppName, ...rest } = r.props;
      return { ...r, props: { ...rest, name: containerAppName, identity: { type: "UserAssigned", userAssignedIdentities: { [IDENTITY]: { principalId: "console-principal", clientId: "x" } } } } };
    }
    if (r.type === "azure-native:app:ContainerAppsAuthConfig") {
      const { containerAppName, ...rest } = r.props;
      return { ...r, props: { ...rest, name: "current", id: `${GROUP}/providers/Microsoft.App/containerApps/${containerAppName}/authConfigs/current` } };
    }
    return r;
  });
}

function violations(stack: StackResource[]): string[] {
  const found: string[] = [];
  for (const r of stack) consoleIngressHttpsOnly.validateResource({ type: r.type, props: r.props, name: r.name, urn: r.urn }, (m) => found.push(m));
  for (const rule of [consoleAuthenticated, consoleIdentityReadOnlyOnVaults]) rule.validateStack({ resources: stack }, (m) => found.push(m));
  return found;
}

function replace(stack: StackResource[], name: string, props: (p: Record<string, any>) => Record<string, any>): StackResource[] {
  return stack.map((r) => (r.name === name ? { ...r, props: props(r.props) } : r));
}

describe("the console's policies", () => {
  it("are part of the pack", () => {
    expect(resourcePolicies).toContain(consoleIngressHttpsOnly);
    expect(stackPolicies.map((p) => p.name)).toEqual(expect.arrayContaining(["console-authentication-required", "console-identity-read-only-on-vaults"]));
  });

  it("pass a compliant console stack, on preview and after up", () => {
    expect(violations(compliantStack())).toEqual([]);
    expect(violations(asAzureReturnsIt(compliantStack()))).toEqual([]);
  });

  it("reject ingress that takes plain HTTP", () => {
    const stack = replace(compliantStack(), "console-app", (p) => ({ ...p, configuration: { ingress: { ...p.configuration.ingress, allowInsecure: true } } }));
    expect(violations(stack)).toEqual([expect.stringMatching(/allowInsecure is true.*Set configuration\.ingress\.allowInsecure: false/)]);
  });

  it("reject a console without an authConfig, with authentication off, or letting anonymous requests through", () => {
    const without = compliantStack().filter((r) => r.name !== "console-auth");
    expect(violations(without)).toEqual([expect.stringMatching(/contoso-weu-web has ingress but no authConfig/)]);
    const anonymous = replace(compliantStack(), "console-auth", (p) => ({ ...p, globalValidation: { unauthenticatedClientAction: "AllowAnonymous" } }));
    expect(violations(asAzureReturnsIt(anonymous))).toEqual([expect.stringMatching(/unauthenticatedClientAction is AllowAnonymous, which does not refuse/)]);
    const off = replace(compliantStack(), "console-auth", (p) => ({ ...p, platform: { enabled: false }, identityProviders: {} }));
    expect(violations(off)[0]).toMatch(/authentication is off.*no enabled Entra ID provider/);
  });

  it("do not call a console unauthenticated on a first preview, where its authConfig's app is not known yet", () => {
    const preview = replace(compliantStack(), "console-auth", ({ containerAppName: _unknown, ...p }) => p);
    expect(violations(preview)).toEqual([]);
  });

  it("reject an identity that could write or delete in a vault: a contributor role at the vault, its account or its resource group", () => {
    for (const [guid, scope] of [
      ["ba92f5b4-2d11-453d-a403-e96b0029c9fe", `${VAULT}/blobServices/default/containers/vault`], // Storage Blob Data Contributor
      ["0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", VAULT], // Table Data Contributor at the whole vault account
      ["b7e6dc6d-f1e8-4753-8033-0f276bb0955b", GROUP], // Storage Blob Data Owner at the resource group
    ]) {
      const stack = [...compliantStack(), grant("too-much", guid!, scope!)];
      const found = violations(asAzureReturnsIt(stack));
      expect(found).toHaveLength(1);
      expect(found[0]).toMatch(new RegExp(`holds role ${guid} at .*could write or delete in a vault`));
    }
  });
});
