/**
 * Microsoft.Sql: logical servers and databases (create, copy, delete), export to a BACPAC in blob
 * storage and import of a BACPAC as a new database, with the shapes and long-running operations of
 * the Azure REST API specification (Databases_*, Servers_ImportDatabase examples). A database's
 * content is a set of tables of JSON rows; a copy is that content frozen at the time of the copy.
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
}

const SKU_TIERS: Record<string, string> = { Basic: "Basic", S0: "Standard", S1: "Standard", S2: "Standard", P1: "Premium", GP_Gen5_2: "GeneralPurpose" };

export class SqlProvider {
  readonly servers = new Map<string, SqlServerRecord>();
  readonly databases = new Map<string, DatabaseRecord>();
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
    return {
      id: server.id, name: server.name, type: "Microsoft.Sql/servers", location: server.location, kind: "v12.0",
      properties: {
        administratorLogin: server.administratorLogin, version: "12.0", state: "Ready",
        fullyQualifiedDomainName: `${server.name}.database.windows.net`, publicNetworkAccess: "Enabled", minimalTlsVersion: "1.2",
      },
    };
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

  private lroSpec(location: string, segments: "database" | "importExport", extra: Partial<OperationSpec>): OperationSpec {
    return {
      subscriptionId: this.world.subscriptionId, provider: "Microsoft.Sql", location,
      asyncSegment: segments === "database" ? "databaseAzureAsyncOperation" : "importExportAzureAsyncOperation",
      resultSegment: segments === "database" ? "databaseOperationResults" : "importExportOperationResults",
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
    const { headers } = this.operations.start(request.origin, this.lroSpec(location, "database", {
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
    const { headers } = this.operations.start(request.origin, this.lroSpec(database.location, "database", {
      injectedFailure,
      onSucceeded: () => { this.databases.delete(idKey(id)); },
    }));
    return { status: 202, headers };
  }

  private checkStorage(body: Record<string, any>, server: SqlServerRecord): { blob: BlockBlobClient; uri: string } {
    const { storageKeyType, storageKey, storageUri, administratorLogin, administratorLoginPassword } = body;
    for (const [field, value] of Object.entries({ storageKeyType, storageKey, storageUri, administratorLogin, administratorLoginPassword })) {
      if (typeof value !== "string" || !value) throw new HttpFailure(armError(400, "InvalidParameter", `${field} is required.`));
    }
    if (administratorLogin !== server.administratorLogin || administratorLoginPassword !== server.administratorLoginPassword) {
      throw new HttpFailure(armError(400, "LoginFailed", `Login failed for user '${administratorLogin}' on server '${server.name}'.`));
    }
    let url: URL;
    try {
      url = new URL(storageUri);
    } catch {
      throw new HttpFailure(armError(400, "InvalidParameter", "storageUri is not a URL."));
    }
    if (storageKeyType === "SharedAccessKey") {
      const token = storageKey.startsWith("?") ? storageKey.slice(1) : storageKey;
      return { blob: new BlockBlobClient(`${url.origin}${url.pathname}?${token}`), uri: storageUri };
    }
    if (storageKeyType === "StorageAccessKey") {
      const ipStyle = /^\d+\.\d+\.\d+\.\d+$/.test(url.hostname) || url.hostname === "localhost";
      const account = ipStyle ? url.pathname.split("/")[1] ?? "" : url.hostname.split(".")[0] ?? "";
      return { blob: new BlockBlobClient(`${url.origin}${url.pathname}`, new StorageSharedKeyCredential(account, storageKey)), uri: storageUri };
    }
    throw new HttpFailure(armError(400, "InvalidParameter", "storageKeyType must be SharedAccessKey or StorageAccessKey."));
  }

  private exportDatabase(request: EmulatorRequest, id: string): EmulatorReply {
    const database = this.databases.get(idKey(id));
    if (!database) return notFound("Microsoft.Sql/servers/databases", id);
    if (database.status !== "Online") return armError(409, "DatabaseNotOnline", `Database '${database.name}' is ${database.status}; export it once it is Online.`);
    const body = parseJson(request);
    const { blob, uri } = this.checkStorage(body, database.server);
    const content = structuredClone(database.content);
    const queuedTime = new Date().toISOString();
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { id: operationId, headers } = this.operations.start(request.origin, this.lroSpec(database.location, "importExport", {
      injectedFailure,
      work: async () => {
        const file = writeBacpac(database.name, database.server.name, content);
        try {
          await blob.uploadData(file, { blobHTTPHeaders: { blobContentType: "application/octet-stream" } });
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
    const { blob, uri } = this.checkStorage(body, server);
    const database = this.newDatabase(server, name, server.location, {});
    this.databases.set(idKey(id), database);
    const queuedTime = new Date().toISOString();
    const injectedFailure = this.faults.takeOperationFailure(request);
    const { id: operationId, headers } = this.operations.start(request.origin, this.lroSpec(server.location, "importExport", {
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

function importExportResult(operationId: string, databaseId: string, requestType: "Export" | "Import", serverName: string, databaseName: string, blobUri: string, queuedTime: string) {
  return {
    id: `${databaseId}/importExportOperationResults/${operationId}`,
    name: operationId,
    type: "Microsoft.Sql/servers/databases/importExportOperationResults",
    properties: {
      requestId: operationId, requestType, queuedTime, lastModifiedTime: new Date().toISOString(), blobUri,
      serverName, databaseName, status: "Completed", errorMessage: "", privateEndpointConnections: [],
    },
  };
}
