/**
 * Azure SQL databases: a transactionally consistent copy on the same server (createMode Copy),
 * exported as a BACPAC into the region's transient storage, ingested into the vault through
 * content-defined chunking; the copy and the transient BACPAC are deleted afterwards, on failure
 * too. A restore stages the BACPAC in transient storage and imports it as a new database (never
 * over an existing one), then deletes the staged copy.
 *
 * Before anything is created, what Azure SQL's import/export service needs is checked (the server
 * allows Azure services; an Entra-only server is reached through its managed identity; a fresh blob
 * with an allowed name), so a refusal is one message that says what to change, with nothing left
 * behind. The Azure rules and their sources are beside each check below.
 */
import os from "node:os";
import type { Readable } from "node:stream";
import { BulwarkError, ServiceError, SourceError, UsageError, describeError } from "../errors.ts";
import { backupFileStream } from "../engine/backup.ts";
import type { CodecPool } from "../engine/codec-pool.ts";
import type { PointManifest } from "../engine/point.ts";
import { streamContent } from "../engine/restore.ts";
import type { Vault } from "../engine/vault.ts";
import type { AzureContext } from "../azure/context.ts";
import { requiresAction } from "../azure/permissions.ts";
import { derivedResourceName, parseResourceId, sameType, type ResourceId } from "../azure/resource-id.ts";
import type { Database, ExportDatabaseDefinition, FirewallRule, SqlManagementClient } from "@azure/arm-sql";
import type { TransientStorage } from "../azure/transient.ts";
import { armFailure, azureFailure, statusOf, refuseExisting } from "./azure-disk.ts";

requiresAction("Microsoft.Sql/servers/databases/read", "sql backup: read the database", { identity: "backup" });
requiresAction("Microsoft.Sql/servers/databases/read", "sql restore: refuse an existing database", { identity: "restore" });
requiresAction("Microsoft.Sql/servers/databases/write", "sql backup: create the transactionally consistent copy", { identity: "backup" });
requiresAction("Microsoft.Sql/servers/databases/delete", "sql backup: delete the copy", { identity: "backup" });
requiresAction("Microsoft.Sql/servers/databases/export/action", "sql backup: export the copy as BACPAC", { identity: "backup" });
requiresAction("Microsoft.Sql/servers/import/action", "sql restore: import a BACPAC as a new database", { identity: "restore" });
// Long-running operations are polled at the monitor URLs Azure returns, scoped to the database's
// resource group: /subscriptions/S/resourceGroups/G/providers/Microsoft.Sql/locations/L/KIND/ID
// (recorded: Azure/azure-sdk-for-js sdk/sql/arm-sql/recordings/node/sql_test/recording_databases_delete_test.js).
// Published status operations (MicrosoftDocs/azure-docs articles/role-based-access-control/permissions/databases.md,
// "Microsoft.Sql"): locations/databaseAzureAsyncOperation/read for copies and deletions; for import
// and export only servers/databases/importExportAzureAsyncOperation/read and
// .../importExportOperationResults/read (no locations/importExport* operation exists, and Azure
// refuses a custom role that names one: Azure/azure-rest-api-specs#13700).
// Sources disagree: Azure/azure-cli#15858 shows ARM checking Microsoft.Sql/locations/importExportAzureAsyncOperation/read
// on an export's monitor URL, which no custom role can grant; if Azure still does, polling an export
// or import under this role fails with AuthorizationFailed although the operation itself runs.
requiresAction("Microsoft.Sql/locations/databaseAzureAsyncOperation/read", "sql backup: poll the copy and its deletion", { identity: "backup" });
requiresAction("Microsoft.Sql/servers/databases/importExportAzureAsyncOperation/read", "sql export and import: poll the operation", { identity: ["backup", "restore"] });
requiresAction("Microsoft.Sql/servers/databases/importExportOperationResults/read", "sql export and import: read its result", { identity: ["backup", "restore"] });

/**
 * Who Azure SQL's import/export service connects to the server as: the server's SQL login, or a
 * user-assigned managed identity assigned to the server (the only way into a server that allows
 * Microsoft Entra authentication only). From the environment, never stored or logged.
 */
export interface SqlCredentials {
  administratorLogin?: string;
  administratorLoginPassword?: string;
  /** Resource id of a user-assigned managed identity assigned to the server (BULWARK_SQL_MANAGED_IDENTITY). */
  managedIdentityId?: string;
}

export function sqlCredentialsFromEnv(env: NodeJS.ProcessEnv): SqlCredentials {
  const administratorLogin = env.BULWARK_SQL_ADMIN_LOGIN || undefined;
  const administratorLoginPassword = env.BULWARK_SQL_ADMIN_PASSWORD || undefined;
  const managedIdentityId = env.BULWARK_SQL_MANAGED_IDENTITY || undefined;
  if (!managedIdentityId && (!administratorLogin || !administratorLoginPassword)) {
    throw new UsageError(
      "Azure SQL export and import need the server's login: set BULWARK_SQL_ADMIN_LOGIN and BULWARK_SQL_ADMIN_PASSWORD " +
        "(or, for a server that allows Microsoft Entra authentication only, BULWARK_SQL_MANAGED_IDENTITY)",
    );
  }
  return { administratorLogin, administratorLoginPassword, managedIdentityId };
}

/** The tag a CLI backup's database copy carries: the source's id. */
const COPY_TAG = "bulwark-copy-of";

function stamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/**
 * How long the SAS handed to an export or import stays valid. The service writes (or reads) the
 * BACPAC until the operation ends, and a request can wait in the region's queue first: "If a request
 * is not processed within four days, the service automatically cancels the request"
 * (MicrosoftDocs/azure-docs articles/azure-sql/database/database-import-export-hang.md), and "If the
 * export operation exceeds 20 hours, it might be canceled" (sql-docs azure-sql/database/database-export.md).
 * So the SAS outlives the longest request Azure runs: 4 days + 20 hours, under the 7-day bound of a
 * user-delegation key ("Must be within 7 days of the current time", @azure/storage-blob
 * BlobGetUserDelegationKeyParameters.expiresOn). No reference documents an export throughput to size
 * it by, nor whether the service reads the SAS once at start, so the lifetime is the documented bound
 * rather than an estimate; the SAS covers one blob that is deleted when the backup or restore ends.
 */
export const IMPORT_EXPORT_SAS_MS = (4 * 24 + 20) * 60 * 60 * 1000;

/** "If you're exporting to blob storage, the maximum size of a BACPAC file is 200 GB" (sql-docs database-export.md). */
const MAX_BACPAC_BYTES = 200 * 1024 ** 3;
/** "The file name should be fewer than 128 characters long" (same section), and without space or < > * % & : \\ / ?. */
const MAX_BACPAC_FILE_NAME = 127;

/**
 * A BACPAC file name Azure SQL accepts: only letters, digits, '.', '-' and '_' (the documented
 * special characters are replaced) and fewer than 128 characters. The documentation speaks of the
 * "file name"; it is read here as the blob name's last segment (the part after the last '/').
 */
export function bacpacFileName(parts: string[]): string {
  const suffix = ".bacpac";
  const stem = parts.join("-").replace(/[^A-Za-z0-9._-]/g, "-");
  return `${stem.slice(0, MAX_BACPAC_FILE_NAME - suffix.length)}${suffix}`;
}

/** The import/export request's "who": SQL login or the server's managed identity (see accessAs). */
interface ImportExportLogin {
  authenticationType: "Sql" | "ManagedIdentity";
  administratorLogin: string;
  administratorLoginPassword?: string;
}

/** Where Azure SQL's import/export service reads or writes a BACPAC (a SAS for that one blob), and as whom. */
async function bacpacAccess(transient: TransientStorage, bacpac: string, login: ImportExportLogin): Promise<ExportDatabaseDefinition> {
  return {
    storageKeyType: "SharedAccessKey" as const,
    // The Import/Export API wants the SAS with its leading "?": the spec's SharedAccessKey example
    // (Azure/azure-rest-api-specs specification/sql/resource-manager/Microsoft.Sql/stable/2014-04-01/
    // examples/DatabaseExportSasKey.json) has it, and Azure CLI adds it because "Import/Export API
    // requires that "?" precede SAS key" (Azure/azure-cli#2584).
    storageKey: `?${await transient.sasFor(bacpac, IMPORT_EXPORT_SAS_MS)}`,
    storageUri: transient.urlOf(bacpac),
    ...login,
    // The SDK's model (api-version 2022-08-01-preview) requires a password, which the managed-identity
    // variant must not send ("If AuthenticationType is ManagedIdentity, this field should not be
    // specified", learn.microsoft.com/rest/api/sql/databases/export): a placeholder passes the SDK's
    // check and sendingNoPasswordForManagedIdentity takes it off the wire.
    administratorLoginPassword: login.administratorLoginPassword ?? "",
  };
}

const NO_PASSWORD_POLICY = "bulwarkManagedIdentityImportExport";

/** Makes the client send a managed-identity export or import without administratorLoginPassword (see bacpacAccess). */
function sendingNoPasswordForManagedIdentity(sql: SqlManagementClient): SqlManagementClient {
  if (sql.pipeline.getOrderedPolicies().some((policy) => policy.name === NO_PASSWORD_POLICY)) return sql;
  sql.pipeline.addPolicy({
    name: NO_PASSWORD_POLICY,
    sendRequest(request, next) {
      if (request.method === "POST" && typeof request.body === "string" && /\/(export|import)\?/i.test(request.url)) {
        const body = JSON.parse(request.body) as Record<string, unknown>;
        if (body.authenticationType === "ManagedIdentity") {
          delete body.administratorLoginPassword;
          request.body = JSON.stringify(body);
        }
      }
      return next(request);
    },
  });
  return sql;
}

/** Where a failed import/export precondition is reported: the backup's source, or the restore's target. */
type Side = "source" | "target";

function refused(side: Side, message: string): Error {
  return side === "source" ? new SourceError(message) : new UsageError(message);
}

requiresAction("Microsoft.Sql/servers/read", "sql export and import: check the server's authentication and network access first", { identity: ["backup", "restore"] });
requiresAction("Microsoft.Sql/servers/firewallRules/read", "sql export and import: check that the server allows Azure services", { identity: ["backup", "restore"] });

/**
 * What Azure SQL's import/export service needs of the server, checked before anything is created,
 * so a refusal leaves nothing behind and says what to change:
 * - the server allows Azure services (the firewall rule 0.0.0.0, AllowAllWindowsAzureIps): "In order
 *   to make use of this cmdlet the firewall on the Azure SQL Server will need to be configured to
 *   "Allow Azure services and resources to access this server". If this is not configured then
 *   GatewayTimeout errors will be experienced" (New-AzSqlDatabaseExport, learn.microsoft.com/powershell
 *   /module/az.sql/new-azsqldatabaseexport); the same is assumed for import;
 * - on a server that allows Microsoft Entra authentication only, the managed-identity variant:
 *   authenticationType ManagedIdentity with administratorLogin the identity's resource id and no
 *   password (ExportDatabaseDefinition / ImportNewDatabaseDefinition, learn.microsoft.com/rest/api/sql
 *   /databases/export, api-version 2025-01-01), an identity assigned to the server (sql-docs
 *   azure-sql/database/database-export.md, "Export with managed identity authentication").
 * Returns who the request runs as.
 */
export async function checkImportExportAccess(sql: SqlManagementClient, resourceGroup: string, serverName: string, login: SqlCredentials, side: Side): Promise<ImportExportLogin> {
  let server;
  const rules: FirewallRule[] = [];
  try {
    server = await sql.servers.get(resourceGroup, serverName);
    for await (const rule of sql.firewallRules.listByServer(resourceGroup, serverName)) rules.push(rule);
  } catch (error) {
    throw armFailure(`reading server ${serverName}'s access settings`, error);
  }
  const allowsAzure = rules.some((rule) => rule.startIpAddress === "0.0.0.0" && rule.endIpAddress === "0.0.0.0");
  if (server.publicNetworkAccess === "Disabled" || !allowsAzure) {
    throw refused(side,
      `Azure SQL's import/export service cannot reach server ${serverName}: it does not allow Azure services (public network access ` +
        `${server.publicNetworkAccess === "Disabled" ? "is disabled" : "has no firewall rule 0.0.0.0, AllowAllWindowsAzureIps"}), and the export or import ` +
        `would end in a gateway timeout. Turn on "Allow Azure services and resources to access this server" on the server ` +
        `(az sql server firewall-rule create -g ${resourceGroup} -s ${serverName} -n AllowAllWindowsAzureIps --start-ip-address 0.0.0.0 --end-ip-address 0.0.0.0), then run again`);
  }
  const assigned = Object.keys(server.identity?.userAssignedIdentities ?? {}).map((id) => id.toLowerCase());
  const asIdentity = (): ImportExportLogin => {
    if (!assigned.includes(login.managedIdentityId!.toLowerCase())) {
      throw refused(side,
        `the managed identity ${login.managedIdentityId} (BULWARK_SQL_MANAGED_IDENTITY) is not assigned to server ${serverName}; ` +
          "assign it to the server as a user-assigned identity and make it the server's Microsoft Entra admin (or a member of that group), then run again");
    }
    return { authenticationType: "ManagedIdentity", administratorLogin: login.managedIdentityId! };
  };
  if (server.administrators?.azureADOnlyAuthentication) {
    if (!login.managedIdentityId) {
      throw refused(side,
        `server ${serverName} allows Microsoft Entra authentication only, so Azure SQL's import/export service cannot sign in with a SQL login. ` +
          "Assign a user-assigned managed identity to the server, make it the server's Microsoft Entra admin (or a member of that group), " +
          "and set BULWARK_SQL_MANAGED_IDENTITY to its resource id");
    }
    return asIdentity();
  }
  if (login.administratorLogin && login.administratorLoginPassword) {
    return { authenticationType: "Sql", administratorLogin: login.administratorLogin, administratorLoginPassword: login.administratorLoginPassword };
  }
  return asIdentity();
}

/** Refuses a BACPAC blob that exists: Azure fails an export onto one ("the storage blob already exists", Azure/azure-powershell#21267). */
async function refuseExistingBlob(transient: TransientStorage, bacpac: string): Promise<void> {
  if (await transient.blob(bacpac).exists()) {
    throw new ServiceError(`the transient BACPAC ${transient.urlOf(bacpac)} already exists and an export never overwrites a blob; delete it (or wait for transient storage's lifecycle rule), then run again`);
  }
}

/** An export's or import's failure, said so a person can act on it: Azure's own words, plus what is known to cause it. */
function importExportFailure(what: string, error: unknown): Error {
  if (error instanceof BulwarkError) return error;
  const message = describeError(error);
  if (/GatewayTimeout/i.test(`${(error as { code?: string })?.code} ${message}`)) {
    return new ServiceError(`${what}: Azure SQL's import/export service timed out reaching the server (${message.split("\n")[0]}); make sure the server allows Azure services, then run again`, { cause: error });
  }
  if (statusOf(error) === 409 && /import or export operation in progress/i.test(message)) {
    // Azure runs one import or export per database at a time (Azure/azure-cli#14590).
    return new ServiceError(`${what}: another import or export of this database is still running in Azure SQL; wait for it to finish, then run again`, { cause: error });
  }
  if (/200 GB/.test(message)) {
    return new SourceError(`${what}: the BACPAC would exceed the 200 GB Azure SQL allows an export to blob storage (${message.split("\n")[0]}); this database is too large for a BACPAC backup`, { cause: error });
  }
  return armFailure(what, error);
}

/** A transactionally consistent copy of the database on its own server. */
export async function copyDatabase(sql: SqlManagementClient, db: ResourceId, source: Database, copyName: string, tags: Record<string, string>): Promise<void> {
  await sql.databases.beginCreateOrUpdateAndWait(db.resourceGroup, db.names[0], copyName, {
    location: source.location,
    createMode: "Copy",
    sourceDatabaseId: source.id,
    tags,
  });
}

/**
 * Deletes the copy `copyName` only if it carries Bulwark's tag `tag` with `value`: a database of
 * that name that Bulwark did not make (the source itself, under a name that collided, or a
 * customer's database) is never deleted. A copy that is gone already is fine; a failure to delete
 * is thrown, naming the copy, so it is reported and retried rather than left billed and unseen.
 */
export async function dropCopy(sql: SqlManagementClient, db: ResourceId, copyName: string, tag: string, value: string): Promise<void> {
  const [server, sourceName] = db.names as [string, string];
  if (copyName.toLowerCase() === sourceName.toLowerCase()) throw new Error(`refusing to delete ${copyName}: it is the database being backed up, not its copy`);
  let copy: Database;
  try {
    copy = await sql.databases.get(db.resourceGroup, server, copyName);
  } catch (error) {
    if (statusOf(error) === 404) return;
    throw armFailure(`reading the copy ${copyName} on server ${server} before deleting it; delete it by hand if it stays`, error);
  }
  if (copy.tags?.[tag] !== value) throw new Error(`the database ${copyName} on server ${server} is not the copy this backup made (its tag ${tag} is ${JSON.stringify(copy.tags?.[tag] ?? null)}): it was left alone`);
  try {
    await sql.databases.beginDeleteAndWait(db.resourceGroup, server, copyName);
  } catch (error) {
    if (statusOf(error) === 404) return;
    throw armFailure(`deleting the copy ${copyName} on server ${server}; delete it by hand if it stays (it is billed like any database)`, error);
  }
}

/**
 * The copy exported as a BACPAC into transient storage. The server's access is checked first (see
 * checkImportExportAccess) unless the caller already did (`access`).
 */
export async function exportBacpac(
  sql: SqlManagementClient,
  db: ResourceId,
  copyName: string,
  transient: TransientStorage,
  bacpac: string,
  login: SqlCredentials,
  access?: ImportExportLogin,
): Promise<void> {
  const as = access ?? (await checkImportExportAccess(sql, db.resourceGroup, db.names[0]!, login, "source"));
  await refuseExistingBlob(transient, bacpac);
  try {
    await sendingNoPasswordForManagedIdentity(sql).databases.beginExportAndWait(db.resourceGroup, db.names[0]!, copyName, await bacpacAccess(transient, bacpac, as));
  } catch (error) {
    throw importExportFailure(`exporting ${copyName} as a BACPAC`, error);
  }
}

export async function backupSqlDatabase(
  ctx: AzureContext,
  vault: Vault,
  databaseResourceId: string,
  transient: TransientStorage,
  login: SqlCredentials,
  options: { tags?: Record<string, string>; onProgress?: (n: number) => void } = {},
): Promise<PointManifest> {
  const db = parseResourceId(databaseResourceId);
  if (!sameType(db, "Microsoft.Sql/servers/databases")) throw new UsageError(`${databaseResourceId} is not an Azure SQL database id`);
  const [serverName, databaseName] = db.names as [string, string];
  const sql = await ctx.sql(db.subscriptionId);
  let source;
  try {
    source = await sql.databases.get(db.resourceGroup, serverName, databaseName);
  } catch (error) {
    if (statusOf(error) === 404) throw new SourceError(`the database ${databaseResourceId} does not exist (or the backup identity cannot see it)`);
    throw armFailure(`reading database ${databaseResourceId}`, error);
  }
  const now = new Date();
  const copyName = derivedResourceName(databaseName, stamp(now), 128);
  const copyTagValue = databaseResourceId.slice(0, 256);
  const bacpac = bacpacFileName([serverName, copyName]);
  // Everything Azure SQL's import/export service needs is checked before the copy is made.
  const access = await checkImportExportAccess(sql, db.resourceGroup, serverName, login, "source");
  await refuseExistingBlob(transient, bacpac);
  try {
    await copyDatabase(sql, db, source, copyName, { [COPY_TAG]: copyTagValue });
    await exportBacpac(sql, db, copyName, transient, bacpac, login, access);
    const download = await transient.blob(bacpac).download(0);
    if (!download.readableStreamBody) throw new ServiceError(`the exported BACPAC ${bacpac} could not be read back from transient storage`);
    return await backupFileStream(
      vault,
      download.readableStreamBody as Readable,
      {
        kind: "sql",
        source: { type: "azure-sql-database", path: databaseResourceId, host: os.hostname(), location: source.location },
        tags: options.tags,
        details: {
          server: serverName,
          database: databaseName,
          location: source.location,
          sku: source.sku,
          collation: source.collation,
          maxSizeBytes: source.maxSizeBytes,
          format: "bacpac",
          consistentCopy: copyName,
        },
      },
      { onProgress: options.onProgress },
    );
  } catch (error) {
    throw azureFailure(`backing up database ${databaseResourceId}`, error);
  } finally {
    // Also when the copy's creation failed midway: Azure may have made it anyway. A copy that
    // cannot be deleted is said, not swallowed: it is a billed database nobody else will see.
    await dropCopy(sql, db, copyName, COPY_TAG, copyTagValue).catch((error: unknown) => {
      process.stderr.write(`bulwark: warning: ${(error as Error).message}\n`);
    });
    await transient.blob(bacpac).deleteIfExists().catch(() => {});
  }
}

export async function restoreSqlDatabase(
  ctx: AzureContext,
  vault: Vault,
  pool: CodecPool,
  point: PointManifest,
  targetDatabaseId: string,
  transient: TransientStorage,
  login: SqlCredentials,
): Promise<string> {
  if (point.kind !== "sql") throw new UsageError(`point ${point.id} is a ${point.kind} point, not an Azure SQL point`);
  const target = parseResourceId(targetDatabaseId);
  if (!sameType(target, "Microsoft.Sql/servers/databases")) throw new UsageError(`${targetDatabaseId} is not an Azure SQL database id`);
  const [serverName, databaseName] = target.names as [string, string];
  const sql = await ctx.sql(target.subscriptionId);
  await refuseExisting(() => sql.databases.get(target.resourceGroup, serverName, databaseName), "database", targetDatabaseId);
  const access = await checkImportExportAccess(sql, target.resourceGroup, serverName, login, "target");
  const bacpac = bacpacFileName([serverName, databaseName, "restore", stamp(new Date())]);
  try {
    await transient.blob(bacpac).uploadStream(streamContent(vault, pool, point) as unknown as Readable, 8 * 1024 * 1024, 4, {
      conditions: { ifNoneMatch: "*" },
    });
    await sendingNoPasswordForManagedIdentity(sql)
      .servers.beginImportDatabaseAndWait(target.resourceGroup, serverName, { databaseName, ...(await bacpacAccess(transient, bacpac, access)) })
      .catch((error) => {
        throw importExportFailure(`importing point ${point.id} as ${targetDatabaseId}`, error);
      });
    return targetDatabaseId;
  } catch (error) {
    throw azureFailure(`importing point ${point.id} as ${targetDatabaseId}`, error);
  } finally {
    await transient.blob(bacpac).deleteIfExists().catch(() => {});
  }
}
