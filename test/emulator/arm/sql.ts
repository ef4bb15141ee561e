/**
 * Microsoft.Sql: logical servers and databases (create, copy, delete), export to a BACPAC in blob
 * storage and import of a BACPAC as a new database, with the shapes and long-running operations of
 * the Azure REST API specification (Databases_*, Servers_ImportDatabase, FirewallRules_ListByServer
 * examples; test/emulator/sql-conformance.test.ts replays them). A database's content is a set of
 * tables of JSON rows; a copy is that content frozen at the time of the copy.
 *
 * Import/export keeps the rules Azure documents (sources beside each rule below): a SAS storage key
 * starts with "?", the server allows Azure services, an Entra-only server takes only the
 * managed-identity variant, the BACPAC is at most 200 GB, its file name under 128 characters, and an
 * existing blob is never overwritten.
 */
import { BlockBlobClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import type { FaultInjector } from "../faults.ts";
import { type EmulatorReply, type EmulatorRequest, HttpFailure, armError, json, parseJson } from "../http.ts";
import type { OperationRegistry, OperationSpec } from "../lro.ts";
import { type DatabaseContent, readBacpac, writeBacpac } from "./bacpac.ts";
import { notFound } from "./compute.ts";
import { type World, idKey } from "./world.ts";

export interface SqlServerRecord {
  id: string;
  name: string;
  resourceGroup: string;
  location: string;
  administratorLogin: string;
  administratorLoginPassword: string;
  /** Server firewall rules by name; AllowAllWindowsAzureIps (0.0.0.0-0.0.0.0) is "Allow Azure services". */
  firewallRules: Map<string, { startIpAddress: string; endIpAddress: string }>;
  /** Microsoft Entra-only authentication: SQL logins are refused. */
  azureADOnlyAuthentication: boolean;
  /** Resource ids of the user-assigned managed identities assigned to the server. */
  userAssignedIdentities: string[];
}

export interface DatabaseRecord {
  id: string;
  name: string;
  server: SqlServerRecord;
  location: string;
  sku: { name: string; tier: string; capacity?: number };
  databaseId: string;
  creationDate: string;
  status: "Online" | "Creating" | "Copying";
  tags?: Record<string, string>;
  content: DatabaseContent;
  sourceDatabaseId?: string;
  /** Space the data takes, when a test needs a large database (its BACPAC is taken to be this big). */
  usedBytes?: number;
}

/** "Allow Azure services and resources to access this server" is this rule (Azure/azure-sdk-for-java's SqlServerImpl creates it so). */
const ALLOW_AZURE_SERVICES = "AllowAllWindowsAzureIps";

/**
 * MicrosoftDocs/sql-docs azure-sql/database/database-export.md, "Considerations" (learn.microsoft.com
 * /azure/azure-sql/database/database-export): "If you're exporting to blob storage, the maximum size
 * of a BACPAC file is 200 GB"; "The Azure Storage file name can't end with . and can't contain special
 * characters like a space character or <, >, *, %, &, :, \\, /, ?. The file name should be fewer than
 * 128 characters long."
 */
const MAX_BACPAC_BYTES = 200 * 1024 ** 3;
const MAX_FILE_NAME = 127;

const SKU_TIERS: Record<string, string> = { Basic: "Basic", S0: "Standard", S1: "Standard", S2: "Standard", P1: "Premium", GP_Gen5_2: "GeneralPurpose" };

export class SqlProvider {
  readonly servers = new Map<string, SqlServerRecord>();
  readonly databases = new Map<string, DatabaseRecord>();
  /** Every accepted export and import, as the service saw it (for tests: who it ran as, until when its SAS is valid). */
  /** Databases with an import or export running: Azure runs one at a time per database. */
  private readonly importingOrExporting = new Set<string>();
  readonly importExportRequests: Array<{ requestType: "Export" | "Import"; authenticationType: string; sasExpiresOn?: Date }> = [];
  private readonly world: World;
  private readonly operations: OperationRegistry;
  private readonly faults: FaultInjector;

  constructor(world: World, operations: OperationRegistry, faults: FaultInjector) {
    this.world = world;
    this.operations = operations;
    this.faults = faults;
  }

  // ---- direct (seeding and test-control) API ----------------------------------------------------

  createServer(group: string, name: string, login: string, password: string, location?: string): SqlServerRecord {
    const resourceGroup = this.world.resourceGroup(group);
    if (!resourceGroup) throw new Error(`no resource group ${group}`);
    const server: SqlServerRecord = {
      id: `/subscriptions/${this.world.subscriptionId}/resourceGroups/${resourceGroup.name}/providers/Microsoft.Sql/servers/${name}`,
      name, resourceGroup: resourceGroup.name, location: location ?? resourceGroup.location,
      administratorLogin: login, administratorLoginPassword: password,
      firewallRules: new Map([[ALLOW_AZURE_SERVICES, { startIpAddress: "0.0.0.0", endIpAddress: "0.0.0.0" }]]),
      azureADOnlyAuthentication: false, userAssignedIdentities: [],
    };
    this.servers.set(idKey(server.id), server);
    return server;
  }

  createDatabase(server: SqlServerRecord, name: string, content: DatabaseContent = {}): DatabaseRecord {
    const database = this.newDatabase(server, name, server.location, content);
    database.status = "Online";
    this.databases.set(idKey(database.id), database);
    return database;
  }

  /** The server by its id, or the server of a database id. */
  server(id: string): SqlServerRecord {
    const serverId = id.replace(/\/databases\/[^/]+$/i, "");
    const server = this.servers.get(idKey(serverId));
    if (!server) throw new Error(`no server ${serverId}`);
    return server;
  }

  database(id: string): DatabaseRecord {
    const database = this.databases.get(idKey(id));
    if (!database) throw new Error(`no database ${id}`);
    return database;
  }

  private newDatabase(server: SqlServerRecord, name: string, location: string, content: DatabaseContent): DatabaseRecord {
    return {
      id: `${server.id}/databases/${name}`, name, server, location, sku: { name: "S0", tier: "Standard", capacity: 10 },
      databaseId: crypto.randomUUID(), creationDate: new Date().toISOString(), status: "Creating", content: structuredClone(content),
    };
  }

  // ---- HTTP ---------------------------------------------------------------------------------------

  /** rest: after /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Sql/ */
  handle(request: EmulatorRequest, group: string, rest: string[]): EmulatorReply {
    const [type = "", serverName, sub, databaseName, action] = rest;
    if (type.toLowerCase() !== "servers" || serverName === undefined) {
      return armError(400, "InvalidResourceType", `The emulator does not serve Microsoft.Sql/${rest.join("/")}.`);
    }
    if (!this.world.resourceGroup(group)) return armError(404, "ResourceGroupNotFound", `Resource group '${group}' could not be found.`);
    const serverId = `/subscriptions/${this.world.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Sql/servers/${serverName}`;
    const server = this.servers.get(idKey(serverId));
    if (!server) return notFound("Microsoft.Sql/servers", serverId);
    if (sub === undefined) {
      if (request.method === "GET") return json(200, this.serverJson(server));
      return armError(405, "MethodNotAllowed", "The emulator serves GET on servers only.");
    }
    if (sub.toLowerCase() === "import" && databaseName === undefined && request.method === "POST") return this.importDatabase(request, server);
    if (sub.toLowerCase() === "firewallrules" && request.method === "GET") return this.firewallRules(server, databaseName);
    if (sub.toLowerCase() !== "databases") return armError(400, "InvalidResourceType", `The emulator does not serve servers/${sub}.`);
    if (databaseName === undefined) {
      if (request.method !== "GET") return armError(405, "MethodNotAllowed", `${request.method} is not allowed on a collection.`);
      const value = [...this.databases.values()].filter((d) => d.server === server).map((d) => this.databaseJson(d));
      return json(200, { value });
    }
    const id = `${server.id}/databases/${databaseName}`;
    if (action !== undefined) {
      if (action.toLowerCase() === "export" && request.method === "POST") return this.exportDatabase(request, id);
      return armError(400, "InvalidRequest", `The emulator does not serve databases/${action}.`);
    }
    if (request.method === "GET") {
      const database = this.databases.get(idKey(id));
      return database ? json(200, this.databaseJson(database)) : notFound("Microsoft.Sql/servers/databases", id);
    }
    if (request.method === "PUT") return this.putDatabase(request, server, databaseName, id);
    if (request.method === "DELETE") return this.deleteDatabase(request, id);
    return armError(405, "MethodNotAllowed", `${request.method} is not supported on databases.`);
  }

  serverJson(server: SqlServerRecord): Record<string, unknown> {
    const body: Record<string, unknown> = {
      id: server.id, name: server.name, type: "Microsoft.Sql/servers", location: server.location, kind: "v12.0",
      properties: {
        administratorLogin: server.administratorLogin, version: "12.0", state: "Ready",
        fullyQualifiedDomainName: `${server.name}.database.windows.net`, publicNetworkAccess: "Enabled", minimalTlsVersion: "1.2",
        // Servers_Get's ServerExternalAdministrator (Azure/azure-rest-api-specs Microsoft.Sql Servers.json).
        administrators: { administratorType: "ActiveDirectory", principalType: "Group", login: "sql-admins", azureADOnlyAuthentication: server.azureADOnlyAuthentication },
      },
    };
    if (server.userAssignedIdentities.length > 0) {
      body.identity = {
        type: "UserAssigned",
        userAssignedIdentities: Object.fromEntries(server.userAssignedIdentities.map((id) => [id, { principalId: crypto.randomUUID(), clientId: crypto.randomUUID() }])),
      };
    }
    return body;
  }

  /** FirewallRules_ListByServer / FirewallRules_Get. */
  private firewallRules(server: SqlServerRecord, name: string | undefined): EmulatorReply {
    const ruleJson = ([ruleName, rule]: [string, { startIpAddress: string; endIpAddress: string }]) => ({
      id: `${server.id}/firewallRules/${ruleName}`, name: ruleName, type: "Microsoft.Sql/servers/firewallRules", properties: { ...rule },
    });
    if (name === undefined) return json(200, { value: [...server.firewallRules.entries()].map(ruleJson) });
    const rule = [...server.firewallRules.entries()].find(([ruleName]) => ruleName.toLowerCase() === name.toLowerCase());
    return rule ? json(200, ruleJson(rule)) : notFound("Microsoft.Sql/servers/firewallRules", `${server.id}/firewallRules/${name}`);
  }

  databaseJson(database: DatabaseRecord): Record<string, unknown> {
    const body: Record<string, unknown> = {
      id: database.id, name: database.name, type: "Microsoft.Sql/servers/databases", location: database.location,
      kind: "v12.0,user", sku: database.sku,
      properties: {
        collation: "SQL_Latin1_General_CP1_CI_AS", catalogCollation: "SQL_Latin1_General_CP1_CI_AS",
        maxSizeBytes: 268435456000, status: database.status, databaseId: database.databaseId, creationDate: database.creationDate,
        currentServiceObjectiveName: database.sku.name, requestedServiceObjectiveName: database.sku.name, currentSku: database.sku,
        zoneRedundant: false, readScale: "Disabled", currentBackupStorageRedundancy: "Geo", requestedBackupStorageRedundancy: "Geo",
        ...(database.sourceDatabaseId ? { sourceDatabaseId: database.sourceDatabaseId } : {}),
      },
    };
    if (database.tags) body.tags = database.tags;
    return body;
  }

  /**
   * Where SQL's operations are polled. A database's copy, creation and deletion: resource-group
   * scoped .../resourceGroups/G/providers/Microsoft.Sql/locations/L/databaseAzureAsyncOperation|
   * databaseOperationResults/ID, as recorded (fixtures/specs/sql/recorded-lro-headers.json).
   * Export and import: under the database, .../servers/S/databases/D/importExportAzureAsyncOperation|
   * importExportOperationResults/ID: the result's id in the spec's ExportDatabase/ImportNewDatabase
   * examples, Az.Sql's OperationStatusLink (New-AzSqlDatabaseExport docs), and the only import/export
   * status operations Azure publishes (permissions/databases.md: servers/databases/importExport*).
   * Sources disagree: Azure/azure-cli#15858 (2020) saw an export polled at a subscription-scoped
   * locations/importExportAzureAsyncOperation URL, and ImportNewDatabase.json's 202 Location is
   * .../locations/L/operationStatus/default/operationId/ID; no recording of an export was found.
   */
  private lroSpec(location: string, scope: { group: string } | { databaseId: string }, extra: Partial<OperationSpec>): OperationSpec {
    const database = "group" in scope;
    return {
      subscriptionId: this.world.subscriptionId, provider: "Microsoft.Sql", location,
      asyncSegment: database ? "databaseAzureAsyncOperation" : "importExportAzureAsyncOperation",
      resultSegment: database ? "databaseOperationResults" : "importExportOperationResults",
      monitorScope: database
        ? `/subscriptions/${this.world.subscriptionId}/resourceGroups/${scope.group}/providers/Microsoft.Sql/locations/${location}`
        : scope.databaseId,
      ...extra,
    };
  }

  private putDatabase(request: EmulatorRequest, server: SqlServerRecord, name: string, id: string): EmulatorReply {
    const body = parseJson(request);
    const existing = this.databases.get(idKey(id));
    if (existing) {
      if (body.tags) existing.tags = body.tags;
      return json(200, this.databaseJson(existing));
    }
    const location = body.location;
    if (typeof location !== "string" || !location) return armError(400, "LocationRequired", "The location property is required for this definition.");
    const createMode = body.properties?.createMode ?? "Default";
    let content: DatabaseContent = {};
    let sourceId: string | undefined;
    if (createMode === "Copy") {
      sourceId = String(body.properties?.sourceDatabaseId ?? "");
      const source = this.databases.get(idKey(sourceId));
      if (!source) return notFound("Microsoft.Sql/servers/databases", sourceId);
      content = source.content; // frozen below by structuredClone: the copy is the source as of now
    } else if (createMode !== "Default") {
      return armError(400, "InvalidParameter", `createMode '${createMode}' is not supported by the emulator (Default, Copy are).`);
    }
    const database = this.newDatabase(server, name, location, content);
    if (sourceId) {
      database.status = "Copying";
      database.sourceDatabaseId = this.databases.get(idKey(sourceId))!.id;
    }
    if (body.sku?.name) database.sku = { name: body.sku.name, tier: body.sku.tier ?? SKU_TIERS[body.sku.name] ?? "Standard", ...(body.sku.capacity ? { capacity: body.sku.capacity } : {}) };
    if (body.tags) database.tags = body.tags;
    this.databases.set(idKey(id), database);
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.lroSpec(location, { group: server.resourceGroup }, {
      injectedFailure,
      onSucceeded: () => { database.status = "Online"; },
      // A failed create or copy leaves no database behind (the service removes it).
      onFailed: () => { this.databases.delete(idKey(id)); },
    }));
    return json(202, this.databaseJson(database), headers);
  }

  private deleteDatabase(request: EmulatorRequest, id: string): EmulatorReply {
    const database = this.databases.get(idKey(id));
    if (!database) return { status: 204 };
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { headers } = this.operations.start(request.origin, this.lroSpec(database.location, { group: database.server.resourceGroup }, {
      injectedFailure,
      onSucceeded: () => { this.databases.delete(idKey(id)); },
    }));
    return { status: 202, headers };
  }

  /**
   * Who runs the import/export. SQL authentication needs the server's login, and a server that allows
   * Microsoft Entra authentication only refuses it; the managed-identity variant names, as
   * administratorLogin, a user-assigned identity assigned to the server and sends no password
   * (ExportDatabaseDefinition / ImportNewDatabaseDefinition: "If AuthenticationType is
   * ManagedIdentity, this field should specify the Managed Identity's resource ID", learn.microsoft.com
   * /rest/api/sql/databases/export, api-version 2025-01-01; the server's UAMI: sql-docs
   * azure-sql/database/database-export.md, "Export with managed identity authentication").
   * How Azure words a refused SQL login on an Entra-only server is not documented; the message is ours.
   */
  private checkLogin(body: Record<string, any>, server: SqlServerRecord): void {
    const { administratorLogin, administratorLoginPassword } = body;
    if (typeof administratorLogin !== "string" || !administratorLogin) throw new HttpFailure(armError(400, "InvalidParameter", "administratorLogin is required."));
    if (String(body.authenticationType ?? "Sql").toLowerCase() === "managedidentity") {
      if (administratorLoginPassword !== undefined) {
        throw new HttpFailure(armError(400, "InvalidParameter", "administratorLoginPassword must not be given with authenticationType ManagedIdentity."));
      }
      if (!server.userAssignedIdentities.some((id) => id.toLowerCase() === administratorLogin.toLowerCase())) {
        throw new HttpFailure(armError(400, "InvalidParameter", `The managed identity '${administratorLogin}' is not assigned to server '${server.name}'.`));
      }
      return;
    }
    if (server.azureADOnlyAuthentication) {
      throw new HttpFailure(armError(400, "LoginFailed",
        `Login failed for user '${administratorLogin}': server '${server.name}' allows Microsoft Entra authentication only (azureADOnlyAuthentication); use authenticationType ManagedIdentity.`));
    }
    if (administratorLogin !== server.administratorLogin || administratorLoginPassword !== server.administratorLoginPassword) {
      throw new HttpFailure(armError(400, "LoginFailed", `Login failed for user '${administratorLogin}' on server '${server.name}'.`));
    }
  }

  /**
   * The BACPAC's blob and how to reach it. A SharedAccessKey must start with "?": the spec's only
   * SharedAccessKey example (2014-04-01 DatabaseExportSasKey.json) has it, and Azure CLI adds it
   * because "Import/Export API requires that "?" precede SAS key" (Azure/azure-cli#2584). What Azure
   * answers without it is not documented; the message is the one Az.Sql users reported for a
   * malformed storage key (Azure/azure-powershell#21552), the 400 and its code are assumed.
   */
  private record(requestType: "Export" | "Import", body: Record<string, any>): void {
    const expiry = body.storageKeyType === "SharedAccessKey" ? new URLSearchParams(String(body.storageKey).slice(1)).get("se") : null;
    this.importExportRequests.push({ requestType, authenticationType: String(body.authenticationType ?? "Sql"), ...(expiry ? { sasExpiresOn: new Date(expiry) } : {}) });
  }

  private checkStorage(body: Record<string, any>): { blob: BlockBlobClient; uri: string } {
    const { storageKeyType, storageKey, storageUri } = body;
    for (const [field, value] of Object.entries({ storageKeyType, storageKey, storageUri })) {
      if (typeof value !== "string" || !value) throw new HttpFailure(armError(400, "InvalidParameter", `${field} is required.`));
    }
    let url: URL;
    try {
      url = new URL(storageUri);
    } catch {
      throw new HttpFailure(armError(400, "InvalidParameter", "storageUri is not a URL."));
    }
    const fileName = decodeURIComponent(url.pathname.split("/").at(-1) ?? "");
    if (fileName.length > MAX_FILE_NAME || fileName.endsWith(".") || /[ <>*%&:\\?]/.test(fileName)) {
      throw new HttpFailure(armError(400, "ImportExportJobError",
        `The BACPAC file name '${fileName}' is not allowed: it must be fewer than 128 characters, not end with '.', and contain no space or < > * % & : \\ / ?.`));
    }
    if (storageKeyType === "SharedAccessKey") {
      if (!storageKey.startsWith("?")) throw new HttpFailure(armError(400, "ImportExportJobError", "The ImportExport operation failed because of invalid storage key format."));
      return { blob: new BlockBlobClient(`${url.origin}${url.pathname}${storageKey}`), uri: storageUri };
    }
    if (storageKeyType === "StorageAccessKey") {
      const ipStyle = /^\d+\.\d+\.\d+\.\d+$/.test(url.hostname) || url.hostname === "localhost";
      const account = ipStyle ? url.pathname.split("/")[1] ?? "" : url.hostname.split(".")[0] ?? "";
      return { blob: new BlockBlobClient(`${url.origin}${url.pathname}`, new StorageSharedKeyCredential(account, storageKey)), uri: storageUri };
    }
    throw new HttpFailure(armError(400, "InvalidParameter", "storageKeyType must be SharedAccessKey or StorageAccessKey."));
  }

  /**
   * Azure's import/export service reaches the server over its public endpoint: "the firewall on the
   * Azure SQL Server will need to be configured to "Allow Azure services and resources to access this
   * server". If this is not configured then GatewayTimeout errors will be experienced"
   * (New-AzSqlDatabaseExport, learn.microsoft.com/powershell/module/az.sql/new-azsqldatabaseexport).
   */
  private unreachable(server: SqlServerRecord): { code: string; message: string } | undefined {
    const rule = server.firewallRules.get(ALLOW_AZURE_SERVICES);
    if (rule?.startIpAddress === "0.0.0.0" && rule.endIpAddress === "0.0.0.0") return undefined;
    return { code: "GatewayTimeout", message: `The gateway did not receive a response from server '${server.name}' within the specified time period.` };
  }

  /**
   * One import or export per database at a time: "Operation failed with status: 'Conflict'. Details:
   * There is an import or export operation in progress on the database" (Azure/azure-cli#14590; the
   * error's code is not quoted there, "Conflict" is assumed).
   */
  private inProgress(database: DatabaseRecord): EmulatorReply | undefined {
    if (!this.importingOrExporting.has(idKey(database.id))) return undefined;
    return armError(409, "Conflict", `There is an import or export operation in progress on the database '${database.name}'.`);
  }

  private exportDatabase(request: EmulatorRequest, id: string): EmulatorReply {
    const database = this.databases.get(idKey(id));
    if (!database) return notFound("Microsoft.Sql/servers/databases", id);
    if (database.status !== "Online") return armError(409, "DatabaseNotOnline", `Database '${database.name}' is ${database.status}; export it once it is Online.`);
    const conflict = this.inProgress(database);
    if (conflict) return conflict;
    const body = parseJson(request);
    this.checkLogin(body, database.server);
    const { blob, uri } = this.checkStorage(body);
    this.record("Export", body);
    const content = structuredClone(database.content);
    const usedBytes = database.usedBytes ?? 0;
    const queuedTime = new Date().toISOString();
    const injectedFailure = this.faults.takeOperationFailure(request) ?? this.unreachable(database.server);
    this.importingOrExporting.add(idKey(database.id));
    const done = () => this.importingOrExporting.delete(idKey(database.id));
    const { id: operationId, headers } = this.operations.start(request.origin, this.lroSpec(database.location, { databaseId: database.id }, {
      injectedFailure,
      onSucceeded: done,
      onFailed: done,
      work: async () => {
        if (usedBytes > MAX_BACPAC_BYTES) {
          throw { code: "ImportExportJobError", message: `Export failed: the BACPAC of '${database.name}' would exceed the maximum BACPAC size of 200 GB for Azure Blob storage.` };
        }
        // An existing blob is never overwritten (Azure/azure-powershell#21267, #22048 quote the service).
        if (await blob.exists().catch(() => false)) {
          throw { code: "ImportExportJobError", message: "The ImportExport operation failed because the storage blob already exists." };
        }
        const file = writeBacpac(database.name, database.server.name, content);
        try {
          await blob.uploadData(file, { blobHTTPHeaders: { blobContentType: "application/octet-stream" }, conditions: { ifNoneMatch: "*" } });
        } catch (error) {
          throw { code: "ImportExportJobError", message: `Export failed: the BACPAC could not be written to ${uri}: ${(error as Error).message}` };
        }
        return importExportResult(operationId, database.id, "Export", database.server.name, database.name, uri, queuedTime);
      },
    }));
    return { status: 202, headers };
  }

  private importDatabase(request: EmulatorRequest, server: SqlServerRecord): EmulatorReply {
    const body = parseJson(request);
    const name = body.databaseName;
    if (typeof name !== "string" || !name) return armError(400, "InvalidParameter", "databaseName is required.");
    const id = `${server.id}/databases/${name}`;
    if (this.databases.has(idKey(id))) {
      return armError(409, "DatabaseAlreadyExists", `The database '${name}' already exists on server '${server.name}'. Import into a new database name.`);
    }
    this.checkLogin(body, server);
    const { blob, uri } = this.checkStorage(body);
    this.record("Import", body);
    const database = this.newDatabase(server, name, server.location, {});
    this.databases.set(idKey(id), database);
    const queuedTime = new Date().toISOString();
    // Import reaches the server the same way export does (assumed: the firewall note is documented for export).
    const injectedFailure = this.faults.takeOperationFailure(request) ?? this.unreachable(server);
    const { id: operationId, headers } = this.operations.start(request.origin, this.lroSpec(server.location, { databaseId: database.id }, {
      injectedFailure,
      work: async () => {
        let file: Buffer;
        try {
          file = await blob.downloadToBuffer();
        } catch (error) {
          throw { code: "ImportExportJobError", message: `Import failed: the BACPAC could not be read from ${uri}: ${(error as Error).message}` };
        }
        try {
          database.content = readBacpac(file);
        } catch (error) {
          throw { code: "ImportExportJobError", message: `Import failed: ${uri} is not a valid BACPAC: ${(error as Error).message}` };
        }
        return importExportResult(operationId, database.id, "Import", server.name, name, uri, queuedTime);
      },
      onSucceeded: () => { database.status = "Online"; },
      onFailed: () => { this.databases.delete(idKey(id)); },
    }));
    return { status: 202, headers };
  }
}

/** The shape of the spec's ExportDatabase.json / ImportNewDatabase.json result (serverName is the server's FQDN there). */
function importExportResult(operationId: string, databaseId: string, requestType: "Export" | "Import", serverName: string, databaseName: string, blobUri: string, queuedTime: string) {
  return {
    id: `${databaseId}/importExportOperationResults/${operationId}`,
    name: operationId,
    type: "Microsoft.Sql/servers/databases/importExportOperationResults",
    properties: {
      requestId: operationId, requestType, queuedTime, lastModifiedTime: new Date().toISOString(), blobUri,
      serverName: `${serverName}.database.windows.net`, databaseName, status: "Completed", errorMessage: "", privateEndpointConnections: [],
    },
  };
}
