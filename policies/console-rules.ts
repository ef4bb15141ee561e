/**
 * The policy pack's rules for the deployed console (infra/components/console-app.ts), the one
 * Container App a Bulwark stack runs. rules.ts adds them to the pack; they only import types from
 * it, so the two modules do not load each other.
 *
 * - Its ingress serves HTTPS only (Ingress.allowInsecure false; Azure/azure-rest-api-specs
 *   specification/app/resource-manager/Microsoft.App/ContainerApps/stable/2026-07-01 ContainerApps.json).
 * - Its built-in authentication is on, with an enabled Entra ID provider, and refuses unauthenticated
 *   requests (globalValidation.unauthenticatedClientAction one of RedirectToLoginPage, Return401,
 *   Return403; not AllowAnonymous, which lets every request through to the app: MicrosoftDocs/azure-docs
 *   articles/container-apps/authentication.md, "Authentication flow").
 * - Its identity holds nothing that may write or delete in a vault: at storage it holds only read
 *   roles, except at one table (restore job records) and one queue (their messages).
 */
import type { ReportViolation, ResourceValidationPolicy, StackValidationPolicy } from "@pulumi/policy";
import type { ResourceArgs, ResourceRule, StackArgs, StackResource, StackRule } from "./rules.ts";

const CONTAINER_APP = "azure-native:app:ContainerApp";
const AUTH_CONFIG = "azure-native:app:ContainerAppsAuthConfig";
const ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment";
const USER_ASSIGNED_IDENTITY = "azure-native:managedidentity:UserAssignedIdentity";

/**
 * Built-in roles that only read (MicrosoftDocs/azure-docs articles/role-based-access-control/
 * built-in-roles/general.md and storage.md): Reader, Storage Blob Data Reader, Storage Table Data
 * Reader, Storage Queue Data Reader.
 */
export const READ_ONLY_ROLES: Readonly<Record<string, string>> = {
  "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
  "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
  "76199698-9eea-4c19-bc75-cec21354c6b6": "Storage Table Data Reader",
  "19e7f393-937e-4f77-808e-94535e297925": "Storage Queue Data Reader",
};

/**
 * Scopes where the console may hold more than reading, none of which reaches a vault's blobs: one
 * table, one queue, a Key Vault key (unwrap), a container registry (pull).
 */
const NARROW_WRITE_SCOPES = [
  /\/providers\/Microsoft\.Storage\/storageAccounts\/[^/]+\/tableServices\/default\/tables\/[^/]+$/i,
  /\/providers\/Microsoft\.Storage\/storageAccounts\/[^/]+\/queueServices\/default\/queues\/[^/]+$/i,
  /\/providers\/Microsoft\.KeyVault\/vaults\/[^/]+\/keys\/[^/]+$/i,
  /\/providers\/Microsoft\.ContainerRegistry\/registries\/[^/]+$/i,
];

const REFUSING_ACTIONS = new Set(["redirecttologinpage", "return401", "return403"]);

function resourceRule(rule: ResourceRule): ResourceRule & ResourceValidationPolicy {
  return rule as ResourceRule & ResourceValidationPolicy;
}
function stackRule(rule: StackRule): StackRule & StackValidationPolicy {
  return { ...rule, validateStack: (args: StackArgs, report: ReportViolation) => rule.validateStack(args, report) } as unknown as StackRule & StackValidationPolicy;
}

/** A Container App's Azure name: its `containerAppName` input (preview) or `name` (Azure's output). */
function appName(app: StackResource): string | undefined {
  const name = app.props.containerAppName ?? app.props.name;
  return typeof name === "string" ? name.toLowerCase() : undefined;
}

/** The app an authConfig belongs to: its `containerAppName` input, else the app segment of its id. */
function authConfigApp(config: StackResource): string | undefined {
  const name = config.props.containerAppName ?? /\/containerApps\/([^/]+)\/authConfigs\//i.exec(String(config.props.id ?? ""))?.[1];
  return typeof name === "string" ? name.toLowerCase() : undefined;
}

export const consoleIngressHttpsOnly = resourceRule({
  name: "console-ingress-https-only",
  description: "A Container App's ingress refuses plain HTTP (allowInsecure false).",
  enforcementLevel: "mandatory",
  validateResource: ({ type, props }: ResourceArgs, report: ReportViolation) => {
    if (type !== CONTAINER_APP) return;
    const ingress = props.configuration?.ingress;
    if (ingress && ingress.allowInsecure !== false) {
      report(`Ingress allowInsecure is ${JSON.stringify(ingress.allowInsecure)}: the console would take plain HTTP. Set configuration.ingress.allowInsecure: false (HTTP is then redirected to HTTPS).`);
    }
  },
});

export const consoleAuthenticated = stackRule({
  name: "console-authentication-required",
  description: "A Container App with ingress has built-in authentication on, with an enabled Entra ID provider, and never lets unauthenticated requests through.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    const configs = resources.filter((r) => r.type === AUTH_CONFIG);
    for (const app of resources.filter((r) => r.type === CONTAINER_APP && r.props.configuration?.ingress)) {
      const name = appName(app);
      const config = configs.find((c) => authConfigApp(c) === name);
      // On a first preview an authConfig's app may be unknown yet: only a stack with none is judged.
      if (!config && configs.some((c) => authConfigApp(c) === undefined)) continue;
      if (!config) {
        report(`Container App ${name ?? app.name} has ingress but no authConfig: anyone who finds its address reaches the console. Add a ContainerAppsAuthConfig "current" with the Entra ID provider (infra/components/console-app.ts).`, app.urn);
        continue;
      }
      const problems = authProblems(config.props);
      if (problems.length > 0) report(`The authConfig of Container App ${name}: ${problems.join("; ")}.`, config.urn);
    }
  },
});

function authProblems(props: Record<string, any>): string[] {
  const problems: string[] = [];
  if (props.platform?.enabled !== true) problems.push("authentication is off; set platform.enabled: true");
  const action = String(props.globalValidation?.unauthenticatedClientAction ?? "");
  if (!REFUSING_ACTIONS.has(action.toLowerCase())) {
    problems.push(`unauthenticatedClientAction is ${action === "" ? "not set" : action}, which does not refuse unauthenticated requests; set globalValidation.unauthenticatedClientAction: RedirectToLoginPage (or Return401)`);
  }
  const entra = props.identityProviders?.azureActiveDirectory;
  if (!entra || entra.enabled === false || !entra.registration?.clientId) {
    problems.push("no enabled Entra ID provider with a client id; set identityProviders.azureActiveDirectory {enabled: true, registration: {clientId, openIdIssuer}}");
  }
  return problems;
}

export const consoleIdentityReadOnlyOnVaults = stackRule({
  name: "console-identity-read-only-on-vaults",
  description: "A Container App's identities hold only read roles, except at one table, one queue, a key or a registry: nothing that may write or delete in a vault.",
  enforcementLevel: "mandatory",
  validateStack: ({ resources }, report) => {
    const principals = new Map(resources.filter((r) => r.type === USER_ASSIGNED_IDENTITY).map((r) => [String(r.props.id ?? "").toLowerCase(), r.props.principalId]));
    for (const app of resources.filter((r) => r.type === CONTAINER_APP)) {
      const assigned = app.props.identity?.userAssignedIdentities ?? [];
      // Inputs list the identities' ids; Azure's output maps each id to its principal.
      const appPrincipals = new Set(
        Array.isArray(assigned) ? assigned.map((id: string) => principals.get(String(id).toLowerCase())) : Object.values(assigned as Record<string, { principalId?: string }>).map((v) => v.principalId),
      );
      appPrincipals.delete(undefined);
      for (const assignment of resources.filter((r) => r.type === ROLE_ASSIGNMENT && appPrincipals.has(r.props.principalId))) {
        const guid = String(assignment.props.roleDefinitionId ?? "").split("/").pop()!.toLowerCase();
        const scope = String(assignment.props.scope ?? "");
        if (READ_ONLY_ROLES[guid] || NARROW_WRITE_SCOPES.some((s) => s.test(scope))) continue;
        report(`Container App ${appName(app) ?? app.name}'s identity holds role ${guid} at ${scope}, which is not a read-only role and could write or delete in a vault there. Grant Storage Blob Data Reader on the vault container (reads), and write only at the jobs table and the work queue.`, assignment.urn);
      }
    }
  },
});

export const consoleResourcePolicies = [consoleIngressHttpsOnly];
export const consoleStackPolicies = [consoleAuthenticated, consoleIdentityReadOnlyOnVaults];
