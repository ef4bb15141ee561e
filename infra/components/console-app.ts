/**
 * The console, deployed: `bulwark console --listen 0.0.0.0:8080 --allow-remote --auth entra` as a
 * Container App in the customer stack (in the bridge's environment, the customer's home region),
 * behind Container Apps' built-in authentication with Microsoft Entra ID, reading one region's
 * fleet (the region stack named by bulwark:console.regionStack) as its own user-assigned identity.
 *
 * - Ingress: external, HTTPS only (allowInsecure false: "If set to false HTTP connections are
 *   automatically redirected to HTTPS connections", Ingress.allowInsecure in Azure/azure-rest-api-specs
 *   specification/app/resource-manager/Microsoft.App/ContainerApps/stable/2026-07-01 ContainerApps.json),
 *   one replica at most (the console keeps its sessions in memory).
 * - Authentication (Microsoft.App/containerApps/authConfigs, named "current": AuthConfigs_CreateOrUpdate.json
 *   of the same api-version): the platform on, unauthenticated browsers redirected to sign in, the
 *   Entra ID provider with a single-tenant app registration whose redirect URI is
 *   `<app-url>/.auth/login/aad/callback` and which issues ID tokens; no client secret, so "implicit
 *   flow is used and only an ID token is returned" (MicrosoftDocs/azure-docs
 *   articles/container-apps/authentication-entra.md, "Option 2"): nothing secret to store or rotate.
 *   The service principal requires assignment: only users and groups assigned to it may sign in.
 * - Roles, each at the narrowest scope that holds what it is for (built-in role ids from
 *   MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/storage.md and
 *   general.md):
 *   - Storage Table Data Reader on the fleet account: the jobs, items, locks and reports tables;
 *   - Storage Table Data Contributor on the jobs table alone: a restore from the console is a job
 *     record written there (runtime/jobs/submit.ts). No built-in role only inserts; Contributor at
 *     that one table also lets the identity update and delete job records, never items, locks or
 *     reports (which an add-only custom role would narrow further);
 *   - Storage Queue Data Message Sender on the region's work queue alone: the restore job's message;
 *   - Storage Blob Data Reader on the vault container (points, indexes, packs; never the locks
 *     container, and no write or delete anywhere in the vault);
 *   - the customer's key user role on the key: a vault's manifests are encrypted under data keys
 *     wrapped by it, so reading a point needs unwrapKey;
 *   - Reader on the region's scheduler and worker jobs alone: the Agents page (Jobs_Get and
 *     JobsExecutions_List, runtime/console/agents.ts).
 */
import * as pulumi from "@pulumi/pulumi";
import * as app from "@pulumi/azure-native/app/index.js";
import * as managedidentity from "@pulumi/azure-native/managedidentity/index.js";
import * as azuread from "@pulumi/azuread";
import type { ContainerRegistry } from "../config.ts";
import { regionalName } from "../naming.ts";
import { grantRegistryPull } from "./agent-job.ts";
import { afterRolePropagation, builtInRoleId, grantRole, subscriptionOf } from "./roles.ts";
import { FLEET_PREFIX, fleetNames } from "./transient-storage.ts";

/** Built-in role GUIDs the console's identity holds (see above); the same in every tenant. */
export const CONSOLE_ROLES = {
  storageTableDataReader: "76199698-9eea-4c19-bc75-cec21354c6b6",
  storageTableDataContributor: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
  storageQueueDataMessageSender: "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
  storageBlobDataReader: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
  reader: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
} as const;

/** The port `bulwark console` listens on inside the container; ingress forwards to it. */
export const CONSOLE_PORT = 8080;
/** The role in the app's name: `<customer>-<region code>-web` fits Container Apps' 32 characters. */
const CONSOLE_ROLE_NAME = "web";

/**
 * Container Apps names: 2-32 lowercase letters, numbers and hyphens, starting with a letter and
 * ending with a letter or number (MicrosoftDocs/azure-docs
 * articles/azure-resource-manager/management/resource-name-rules.md, Microsoft.App containerApps),
 * and no "--" (Azure CLI reference for `az containerapp`: "cannot have '--'").
 */
export function containerAppName(customer: string, region: string): string {
  const name = regionalName(customer, region, CONSOLE_ROLE_NAME);
  if (name.length < 2 || name.length > 32 || !/^[a-z][a-z0-9-]*[a-z0-9]$/.test(name) || name.includes("--")) {
    throw new Error(`console app name ${name} breaks Container Apps' naming rules (2-32 lowercase letters, digits and single hyphens, starting with a letter): shorten bulwark:customer`);
  }
  return name;
}

/** What the console reads of its region stack's outputs (infra/region-stack.ts RegionStackOutputs). */
export interface ConsoleRegion {
  region: pulumi.Input<string>;
  /** The subscription the region stack deploys into (that of its first protected scope). */
  subscriptionId: pulumi.Input<string>;
  resourceGroupName: pulumi.Input<string>;
  transientAccountName: pulumi.Input<string>;
  fleetTableEndpoint: pulumi.Input<string>;
  fleetQueueEndpoint: pulumi.Input<string>;
  workQueueName: pulumi.Input<string>;
  policyJson: pulumi.Input<string>;
  vaultAccountName: pulumi.Input<string>;
  vaultUrl: pulumi.Input<string>;
  schedulerJobName: pulumi.Input<string>;
  workerJobName: pulumi.Input<string>;
}

export interface ConsoleAppArgs {
  customer: string;
  tenantId: string;
  /** The customer's home region, where the bridge's environment is. */
  location: string;
  resourceGroupName: pulumi.Input<string>;
  environmentId: pulumi.Input<string>;
  image: string;
  registry?: ContainerRegistry;
  key: { resourceId: pulumi.Input<string>; uri: pulumi.Input<string>; userRoleDefinitionId: pulumi.Input<string> };
  region: ConsoleRegion;
  tags: Record<string, string>;
}

/** ARM ids of what the console is granted on, derived from the region stack's names. */
function regionScopes(region: ConsoleRegion) {
  const group = pulumi.interpolate`/subscriptions/${region.subscriptionId}/resourceGroups/${region.resourceGroupName}`;
  const fleetAccount = pulumi.interpolate`${group}/providers/Microsoft.Storage/storageAccounts/${region.transientAccountName}`;
  const vaultContainer = pulumi.output(region.vaultUrl).apply((url) => new URL(url).pathname.split("/").filter(Boolean)[0] ?? "");
  return {
    fleetAccount,
    jobsTable: pulumi.interpolate`${fleetAccount}/tableServices/default/tables/${pulumi.output(region.region).apply((r) => fleetNames(FLEET_PREFIX, r).tables[0])}`,
    workQueue: pulumi.interpolate`${fleetAccount}/queueServices/default/queues/${region.workQueueName}`,
    vaultContainer: pulumi.interpolate`${group}/providers/Microsoft.Storage/storageAccounts/${region.vaultAccountName}/blobServices/default/containers/${vaultContainer}`,
    schedulerJob: pulumi.interpolate`${group}/providers/Microsoft.App/jobs/${region.schedulerJobName}`,
    workerJob: pulumi.interpolate`${group}/providers/Microsoft.App/jobs/${region.workerJobName}`,
  };
}

export class ConsoleApp extends pulumi.ComponentResource {
  /** The console's address (https://<app>.<environment domain>). */
  readonly url: pulumi.Output<string>;
  readonly principalId: pulumi.Output<string>;
  readonly appName: string;

  constructor(name: string, args: ConsoleAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:ConsoleApp", name, {}, opts);
    this.appName = containerAppName(args.customer, args.location);
    const identity = new managedidentity.UserAssignedIdentity(
      `${name}-identity`,
      { resourceName: regionalName(args.customer, args.location, "console-id"), resourceGroupName: args.resourceGroupName, location: args.location, tags: args.tags },
      { parent: this },
    );
    const grants = this.grants(name, args, identity.principalId);
    const rolesHonoured = afterRolePropagation(`${name}-roles-propagated`, grants, this);
    const region = args.region;
    const agents = pulumi
      .all([region.region, region.subscriptionId, region.resourceGroupName, region.schedulerJobName, region.workerJobName])
      .apply(([regionName, subscriptionId, resourceGroup, schedulerJob, workerJob]) => JSON.stringify([{ region: regionName, subscriptionId, resourceGroup, schedulerJob, workerJob }]));
    const env: Record<string, pulumi.Input<string>> = {
      AZURE_CLIENT_ID: identity.clientId,
      BULWARK_FLEET_TABLE_ENDPOINT: region.fleetTableEndpoint,
      BULWARK_FLEET_QUEUE_ENDPOINT: region.fleetQueueEndpoint,
      BULWARK_FLEET_PREFIX: FLEET_PREFIX,
      BULWARK_POLICY_JSON: region.policyJson,
      BULWARK_KEY_VAULT_KEY: args.key.uri,
      BULWARK_CONSOLE_AGENTS: agents,
    };
    const containerApp = new app.ContainerApp(
      `${name}-app`,
      {
        containerAppName: this.appName,
        resourceGroupName: args.resourceGroupName,
        location: args.location,
        environmentId: args.environmentId,
        tags: args.tags,
        identity: { type: "UserAssigned", userAssignedIdentities: [identity.id] },
        configuration: {
          activeRevisionsMode: "Single",
          ingress: { external: true, targetPort: CONSOLE_PORT, transport: "http", allowInsecure: false },
          registries: args.registry === undefined ? [] : [{ server: args.registry.server, identity: identity.id }],
        },
        template: {
          containers: [
            {
              name: "console",
              image: args.image,
              // args only: the image's ENTRYPOINT runs the CLI (see agent-job.ts).
              args: ["console", "--listen", `0.0.0.0:${CONSOLE_PORT}`, "--allow-remote", "--auth", "entra"],
              env: Object.entries(env).map(([envName, value]) => ({ name: envName, value })),
              resources: { cpu: 0.5, memory: "1Gi" },
            },
          ],
          scale: { minReplicas: 0, maxReplicas: 1 },
        },
      },
      { parent: this, dependsOn: [rolesHonoured] },
    );
    const fqdn = containerApp.configuration.apply((c) => c?.ingress?.fqdn ?? "");
    this.url = pulumi.interpolate`https://${fqdn}`;
    this.signIn(name, args, containerApp);
    this.principalId = identity.principalId;
    this.registerOutputs({ url: this.url, principalId: this.principalId });
  }

  private grants(name: string, args: ConsoleAppArgs, principalId: pulumi.Output<string>) {
    const scopes = regionScopes(args.region);
    const builtIn = (guid: string) => builtInRoleId(args.region.subscriptionId, guid);
    const grant = (suffix: string, role: string, scope: pulumi.Input<string>, description: string) =>
      grantRole(`${name}-${suffix}`, { principalId, roleDefinitionId: builtIn(role), scope, description }, this);
    return [
      grant("fleet-tables", CONSOLE_ROLES.storageTableDataReader, scopes.fleetAccount, "Bulwark console: read the fleet's jobs, items, locks and reports"),
      grant("jobs-table", CONSOLE_ROLES.storageTableDataContributor, scopes.jobsTable, "Bulwark console: write restore job records (the jobs table only)"),
      grant("work-queue", CONSOLE_ROLES.storageQueueDataMessageSender, scopes.workQueue, "Bulwark console: send restore jobs to the region's work queue"),
      grant("vault", CONSOLE_ROLES.storageBlobDataReader, scopes.vaultContainer, "Bulwark console: read the vault (points, sizes, folders); no write or delete"),
      grant("scheduler-job", CONSOLE_ROLES.reader, scopes.schedulerJob, "Bulwark console: the scheduler's executions (Agents page)"),
      grant("worker-job", CONSOLE_ROLES.reader, scopes.workerJob, "Bulwark console: the worker's executions (Agents page)"),
      grantRole(`${name}-key`, { principalId, roleDefinitionId: args.key.userRoleDefinitionId, scope: args.key.resourceId, description: "Bulwark console: unwrap the vault's data keys to read points" }, this),
      ...grantRegistryPull(name, args.registry, principalId, this),
    ];
  }

  /** The app registration users sign in through, and the authConfig that puts it in front of the app. */
  private signIn(name: string, args: ConsoleAppArgs, containerApp: app.ContainerApp): void {
    const registration = new azuread.Application(
      `${name}-signin`,
      {
        displayName: `Bulwark console (${args.customer})`,
        signInAudience: "AzureADMyOrg",
        // ID tokens for the platform's OpenID Connect sign-in; no access tokens, no secret.
        web: { implicitGrant: { idTokenIssuanceEnabled: true, accessTokenIssuanceEnabled: false } },
        preventDuplicateNames: true,
      },
      { parent: this },
    );
    new azuread.ServicePrincipal(
      `${name}-signin-sp`,
      { clientId: registration.clientId, appRoleAssignmentRequired: true, notes: "Bulwark console sign-in: assign the operators (users or groups) who may use the console." },
      { parent: this },
    );
    // The redirect URI needs the app's address, known once the app exists: its own resource, no cycle.
    new azuread.ApplicationRedirectUris(
      `${name}-signin-redirect`,
      { applicationId: registration.id, type: "Web", redirectUris: [pulumi.interpolate`${this.url}/.auth/login/aad/callback`] },
      { parent: this },
    );
    new app.ContainerAppsAuthConfig(
      `${name}-auth`,
      {
        authConfigName: "current",
        // The plain name, known on a first preview, so the policy pack can pair the two there.
        containerAppName: this.appName,
        resourceGroupName: args.resourceGroupName,
        platform: { enabled: true },
        globalValidation: { unauthenticatedClientAction: "RedirectToLoginPage", redirectToProvider: "azureactivedirectory" },
        httpSettings: { requireHttps: true },
        identityProviders: {
          azureActiveDirectory: {
            enabled: true,
            // The issuer of the customer's tenant (authentication-entra.md, "Issuer Url"); the client id is the audience.
            registration: { clientId: registration.clientId, openIdIssuer: `https://login.microsoftonline.com/${args.tenantId}/v2.0` },
          },
        },
      },
      { parent: this, dependsOn: [containerApp] },
    );
  }
}

/**
 * The console over the fleet of the region stack `regionStack` (organization/project/stack), read
 * through a StackReference: the customer stack is deployed first, the region stacks next, then the
 * customer stack again with bulwark:console.regionStack set (README.md, "The console, deployed").
 */
export function consoleForRegionStack(name: string, args: Omit<ConsoleAppArgs, "region"> & { regionStack: string }, opts?: pulumi.ComponentResourceOptions): ConsoleApp {
  const { regionStack, ...rest } = args;
  const ref = new pulumi.StackReference(`${name}-region-stack`, { name: regionStack }, opts);
  const output = (key: string) => ref.requireOutput(key) as pulumi.Output<string>;
  const region: ConsoleRegion = {
    region: output("region"),
    subscriptionId: (ref.requireOutput("protectedScopes") as pulumi.Output<string[]>).apply((scopes) => subscriptionOf(scopes[0] ?? "")),
    resourceGroupName: output("resourceGroupName"),
    transientAccountName: output("transientAccountName"),
    fleetTableEndpoint: output("fleetTableEndpoint"),
    fleetQueueEndpoint: output("fleetQueueEndpoint"),
    workQueueName: output("workQueueName"),
    policyJson: output("policyJson"),
    vaultAccountName: output("vaultAccountName"),
    vaultUrl: output("vaultUrl"),
    schedulerJobName: output("schedulerJobName"),
    workerJobName: output("workerJobName"),
  };
  return new ConsoleApp(name, { ...rest, region }, opts);
}
