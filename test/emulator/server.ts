/**
 * The local Azure emulator: one HTTPS endpoint on 127.0.0.1 serving the Entra token endpoint, Azure
 * Resource Manager (Microsoft.Compute, Microsoft.Sql, long-running operation monitors), the managed
 * disk SAS data plane and the /_emulator/ test control; plus one HTTPS endpoint per Key Vault.
 * Start it in-process with startAzureEmulator() and point the official SDK clients at it.
 */
import { ClientSecretCredential } from "@azure/identity";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { Azurite } from "../support/azurite.ts";
import { ComputeProvider } from "./arm/compute.ts";
import { ContainerAppsProvider } from "./arm/container-apps.ts";
import { ResourcesProvider } from "./arm/resources.ts";
import { SqlProvider } from "./arm/sql.ts";
import { World } from "./arm/world.ts";
import { EntraEmulator } from "./auth.ts";
import { EmulatorControl } from "./control.ts";
import { FaultInjector } from "./faults.ts";
import { type EmulatorReply, type EmulatorRequest, HttpFailure, armError, json, readBody, send } from "./http.ts";
import { KeyVaultEmulator } from "./keyvault.ts";
import { type LroOptions, OperationRegistry } from "./lro.ts";
import { PageBlobService } from "./pageblob-sas.ts";
import { type EmulatorCertificates, makeCertificates, trustEmulatorCA } from "./tls.ts";

export interface AzureEmulatorOptions {
  tenantId?: string;
  subscriptionId?: string;
  clientId?: string;
  /** Default location of resource groups made by the emulator. */
  location?: string;
  /** Also start an Azurite (transient blob storage for SQL export/import) and put it into env. */
  azurite?: boolean;
  /**
   * Long-running operation pacing. The default settles an operation on its first poll (the SDK polls
   * at once, then waits Retry-After, and treats Retry-After 0 as its 2 s default), so tests stay fast.
   */
  lro?: Partial<LroOptions>;
  /** Page-range responses list at most this many ranges, then return NextMarker (default Azure's 10,000). */
  maxRangesPerResponse?: number;
  /** Make this process trust the emulator's CA (default true). */
  trustInProcess?: boolean;
}

export interface RunningAzureEmulator {
  armEndpoint: string;
  authorityHost: string;
  tenantId: string;
  subscriptionId: string;
  clientId: string;
  clientSecret: string;
  /** PEM file of the emulator's CA (NODE_EXTRA_CA_CERTS for child processes). */
  caPath: string;
  caPem: string;
  azurite?: Azurite;
  /** The environment that points `bulwark` and the SDK clients at the emulator. */
  env: Record<string, string>;
  control: EmulatorControl;
  world: World;
  compute: ComputeProvider;
  sql: SqlProvider;
  /** Microsoft.App jobs and their executions (seeded by tests; read by the console's Agents page). */
  containerApps: ContainerAppsProvider;
  entra: EntraEmulator;
  /** A credential the emulator accepts (ClientSecretCredential against its token endpoint). */
  credential(): ClientSecretCredential;
  /** Starts a Key Vault on its own port; returns its vault URL. */
  createKeyVault(name: string): Promise<{ vaultUrl: string; vault: KeyVaultEmulator }>;
  vaults: Map<string, { vaultUrl: string; vault: KeyVaultEmulator }>;
  /** Every request served (test control excluded), in order: which calls a client really made. */
  requestLog: LoggedRequest[];
  stop(): Promise<void>;
}

export interface LoggedRequest {
  /** "main" is the ARM / Entra / disk SAS endpoint; a Key Vault is named by its vault name. */
  endpoint: string;
  method: string;
  path: string;
  status: number;
  /** The client id (appid) of the bearer token the request carried, when it carried a valid one. */
  caller?: string;
}

async function listen(server: https.Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

function serve(
  certificates: EmulatorCertificates,
  handler: (request: EmulatorRequest) => Promise<EmulatorReply> | EmulatorReply,
  log?: (request: EmulatorRequest, reply: EmulatorReply) => void,
): https.Server {
  return https.createServer({ key: certificates.keyPem, cert: certificates.certPem }, (incoming, response) => {
    void (async () => {
      let reply: EmulatorReply;
      let request: EmulatorRequest | undefined;
      try {
        const url = new URL(incoming.url ?? "/", `https://${incoming.headers.host ?? "127.0.0.1"}`);
        request = {
          method: (incoming.method ?? "GET").toUpperCase(),
          path: decodeURIComponent(url.pathname),
          query: url.searchParams,
          headers: incoming.headers,
          body: await readBody(incoming),
          origin: url.origin,
        };
        reply = await handler(request);
      } catch (error) {
        reply = error instanceof HttpFailure ? error.reply : armError(500, "InternalServerError", `Emulator error: ${(error as Error).message}`);
      }
      if (request) log?.(request, reply);
      send(response, reply);
    })();
  });
}

export async function startAzureEmulator(options: AzureEmulatorOptions = {}): Promise<RunningAzureEmulator> {
  const tenantId = options.tenantId ?? crypto.randomUUID();
  const subscriptionId = options.subscriptionId ?? crypto.randomUUID();
  const clientId = options.clientId ?? crypto.randomUUID();
  const clientSecret = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
  const certificates = await makeCertificates();
  if (options.trustInProcess !== false) trustEmulatorCA(certificates.caPem);

  const world = new World(subscriptionId, tenantId);
  const entra = new EntraEmulator(tenantId);
  entra.addServicePrincipal({ clientId, clientSecret });
  const faults = new FaultInjector();
  const operations = new OperationRegistry({ pollsBeforeDone: 0, retryAfterSeconds: 1, settleAfterMs: 3000, ...options.lro });
  let compute: ComputeProvider | undefined;
  const blobs = new PageBlobService((id) => compute?.sasTarget(id), { maxRangesPerResponse: options.maxRangesPerResponse ?? 10_000 });
  compute = new ComputeProvider(world, operations, blobs, faults);
  const sql = new SqlProvider(world, operations, faults);
  const control = new EmulatorControl(compute, sql, blobs, operations, faults);
  const resources = new ResourcesProvider(world, compute, sql);
  const containerApps = new ContainerAppsProvider(world);
  const computeProvider = compute;

  const throttled = (request: EmulatorRequest): EmulatorReply | undefined => {
    const rule = faults.takeThrottle(request);
    if (!rule) return undefined;
    const status = rule.status ?? 429;
    const headers = { "retry-after": String(rule.retryAfterSeconds ?? 1) };
    return status === 503
      ? { status, headers: { ...headers, "x-ms-error-code": "ServerBusy", "content-type": "application/xml" }, body: `<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>The server is busy.</Message></Error>` }
      : armError(status, "TooManyRequests", "The request is being throttled as the limit has been reached for operation type. Retry after the time in Retry-After.", headers);
  };

  const armRoute = (request: EmulatorRequest, segments: string[]): EmulatorReply => {
    const lower = segments.map((s) => s.toLowerCase());
    if (lower[0] !== "subscriptions" || segments.length < 2) return armError(404, "NotFound", `No route for ${request.path}.`);
    const verified = entra.verify(request);
    if ("reason" in verified) {
      return armError(401, "AuthenticationFailed", `Authentication failed. ${verified.reason}`, {
        "www-authenticate": `Bearer authorization_uri="${authorityHost}/${tenantId}", error="invalid_token", error_description="${verified.reason}"`,
      });
    }
    const operation = operations.handle(request.origin, segments, request.query);
    if (operation) return operation;
    if (segments[1]!.toLowerCase() !== subscriptionId.toLowerCase()) {
      return armError(404, "SubscriptionNotFound", `The subscription '${segments[1]}' could not be found.`);
    }
    if (lower[2] === "providers" && lower[3] === "microsoft.compute") return computeProvider.handle(request, undefined, segments.slice(4));
    if (lower[2] === "resources" && segments.length === 3) return resources.list(request, undefined);
    if (lower[2] === "resourcegroups" && segments[3]) {
      const group = segments[3];
      if (segments.length === 4) {
        if (request.method === "PUT") {
          const body = JSON.parse(request.body.toString("utf8") || "{}");
          const existing = world.resourceGroup(group);
          const created = existing ?? world.addResourceGroup(group, String(body.location ?? options.location ?? "westeurope"));
          return json(existing ? 200 : 201, groupJson(created));
        }
        if (request.method === "GET") {
          const found = world.resourceGroup(group);
          return found ? json(200, groupJson(found)) : armError(404, "ResourceGroupNotFound", `Resource group '${group}' could not be found.`);
        }
      }
      if (!world.resourceGroup(group)) return armError(404, "ResourceGroupNotFound", `Resource group '${group}' could not be found.`);
      if (lower[4] === "resources" && segments.length === 5) return resources.list(request, group);
      if (lower[4] === "providers" && lower[5] === "microsoft.compute") return computeProvider.handle(request, group, segments.slice(6));
      if (lower[4] === "providers" && lower[5] === "microsoft.sql") return sql.handle(request, group, segments.slice(6));
      if (lower[4] === "providers" && lower[5] === "microsoft.app") return containerApps.handle(request, group, segments.slice(6));
    }
    return armError(400, "NoRegisteredProviderFound", `The emulator does not serve ${request.method} ${request.path}.`);
  };

  const requestLog: LoggedRequest[] = [];
  const logTo = (endpoint: string) => (request: EmulatorRequest, reply: EmulatorReply) => {
    if (request.path.startsWith("/_emulator/")) return;
    const verified = entra.verify(request);
    const caller = "claims" in verified ? String(verified.claims.appid) : undefined;
    requestLog.push({ endpoint, method: request.method, path: request.path, status: reply.status, caller });
  };
  let authorityHost = "";
  const main = serve(certificates, (request) => {
    const segments = request.path.split("/").filter(Boolean);
    if (segments[0] === "_emulator") return control.handle(request, segments.slice(1));
    const throttle = throttled(request);
    if (throttle) return throttle;
    if (blobs.handles(segments)) return blobs.handle(request, segments);
    const entraReply = entra.handle(request);
    if (entraReply) return entraReply;
    return armRoute(request, segments);
  }, logTo("main"));
  const port = await listen(main);
  const armEndpoint = `https://127.0.0.1:${port}`;
  authorityHost = armEndpoint;

  const vaults = new Map<string, { vaultUrl: string; vault: KeyVaultEmulator; server: https.Server }>();
  const createKeyVault = async (name: string) => {
    const vault = new KeyVaultEmulator(name, entra, () => authorityHost);
    const server = serve(certificates, (request) => throttled(request) ?? vault.handle(request), logTo(name));
    const vaultPort = await listen(server);
    const entry = { vaultUrl: `https://127.0.0.1:${vaultPort}`, vault, server };
    vaults.set(name, entry);
    return { vaultUrl: entry.vaultUrl, vault };
  };

  const azurite = options.azurite ? await Azurite.start() : undefined;
  const env: Record<string, string> = {
    AZURE_TENANT_ID: tenantId,
    AZURE_CLIENT_ID: clientId,
    AZURE_CLIENT_SECRET: clientSecret,
    AZURE_AUTHORITY_HOST: authorityHost,
    AZURE_SUBSCRIPTION_ID: subscriptionId,
    BULWARK_ARM_ENDPOINT: armEndpoint,
    BULWARK_EMULATOR_CONTROL: `${armEndpoint}/_emulator`,
    NODE_EXTRA_CA_CERTS: certificates.caPath,
    // The emulator's hosts are not Azure's: MSAL must not ask login.microsoftonline.com about them
    // (pass disableInstanceDiscovery: true to the credential), and Key Vault's challenge names
    // https://vault.azure.net, not 127.0.0.1 (pass disableChallengeResourceVerification: true).
    BULWARK_DISABLE_INSTANCE_DISCOVERY: "true",
    BULWARK_KEY_VAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION: "true",
  };
  if (azurite) env.AZURE_STORAGE_CONNECTION_STRING = azurite.connectionString;

  const running: RunningAzureEmulator = {
    armEndpoint, authorityHost, tenantId, subscriptionId, clientId, clientSecret,
    caPath: certificates.caPath, caPem: certificates.caPem, azurite, env, control, world, compute: computeProvider, sql, containerApps, entra,
    credential: () => new ClientSecretCredential(tenantId, clientId, clientSecret, { authorityHost, disableInstanceDiscovery: true }),
    createKeyVault: async (name) => {
      const created = await createKeyVault(name);
      if (!running.env.BULWARK_KEY_VAULT_URL) running.env.BULWARK_KEY_VAULT_URL = created.vaultUrl;
      return created;
    },
    vaults: vaults as unknown as Map<string, { vaultUrl: string; vault: KeyVaultEmulator }>,
    requestLog,
    stop: async () => {
      operations.close();
      const close = (server: https.Server) =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      await Promise.all([close(main), ...[...vaults.values()].map((v) => close(v.server))]);
      await azurite?.stop();
      await certificates.remove();
    },
  };
  return running;
}

function groupJson(group: { id: string; name: string; location: string }) {
  return { id: group.id, name: group.name, type: "Microsoft.Resources/resourceGroups", location: group.location, properties: { provisioningState: "Succeeded" } };
}
