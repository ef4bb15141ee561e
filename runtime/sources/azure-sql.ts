/**
 * Azure SQL databases: a transactionally consistent copy on the same server (createMode Copy),
 * exported as a BACPAC into the region's transient storage, ingested into the vault through
 * content-defined chunking; the copy and the transient BACPAC are deleted afterwards, on failure
 * too. A restore stages the BACPAC in transient storage and imports it as a new database (never
 * over an existing one), then deletes the staged copy.
 */
import os from "node:os";
import type { Readable } from "node:stream";
import { ServiceError, SourceError, UsageError } from "../errors.ts";
import { backupFileStream } from "../engine/backup.ts";
import type { CodecPool } from "../engine/codec-pool.ts";
import type { PointManifest } from "../engine/point.ts";
import { streamContent } from "../engine/restore.ts";
import type { Vault } from "../engine/vault.ts";
import type { AzureContext } from "../azure/context.ts";
import { requiresAction } from "../azure/permissions.ts";
import { parseResourceId, sameType, type ResourceId } from "../azure/resource-id.ts";
import type { Database, SqlManagementClient } from "@azure/arm-sql";
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

export interface SqlCredentials {
  administratorLogin: string;
  administratorLoginPassword: string;
}

/** The server login Azure SQL's import/export service uses; from the environment, never stored or logged. */
export function sqlCredentialsFromEnv(env: NodeJS.ProcessEnv): SqlCredentials {
  const administratorLogin = env.BULWARK_SQL_ADMIN_LOGIN;
  const administratorLoginPassword = env.BULWARK_SQL_ADMIN_PASSWORD;
  if (!administratorLogin || !administratorLoginPassword) {
    throw new UsageError("Azure SQL export and import need the server's login: set BULWARK_SQL_ADMIN_LOGIN and BULWARK_SQL_ADMIN_PASSWORD");
  }
  return { administratorLogin, administratorLoginPassword };
}

function stamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Where Azure SQL's import/export service reads or writes a BACPAC (a short-lived SAS), and as whom. */
async function bacpacAccess(transient: TransientStorage, bacpac: string, login: SqlCredentials) {
  return {
    storageKeyType: "SharedAccessKey" as const,
    storageKey: await transient.sasFor(bacpac),
    storageUri: transient.urlOf(bacpac),
    administratorLogin: login.administratorLogin,
    administratorLoginPassword: login.administratorLoginPassword,
    authenticationType: "Sql",
  };
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

/** The copy exported as a BACPAC into transient storage. */
export async function exportBacpac(
  sql: SqlManagementClient,
  db: ResourceId,
  copyName: string,
  transient: TransientStorage,
  bacpac: string,
  login: SqlCredentials,
): Promise<void> {
  await sql.databases.beginExportAndWait(db.resourceGroup, db.names[0], copyName, await bacpacAccess(transient, bacpac, login));
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
  const [serverName, databaseName] = db.names;
  const sql = await ctx.sql(db.subscriptionId);
  let source;
  try {
    source = await sql.databases.get(db.resourceGroup, serverName, databaseName);
  } catch (error) {
    if (statusOf(error) === 404) throw new SourceError(`the database ${databaseResourceId} does not exist (or the backup identity cannot see it)`);
    throw armFailure(`reading database ${databaseResourceId}`, error);
  }
  const now = new Date();
  const copyName = `${databaseName}-bulwark-${stamp(now)}`.slice(0, 128);
  const bacpac = `sql/${serverName}/${copyName}.bacpac`;
  try {
    await copyDatabase(sql, db, source, copyName, { "bulwark-copy-of": databaseResourceId.slice(0, 256) });
    await exportBacpac(sql, db, copyName, transient, bacpac, login);
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
    // Also when the copy's creation failed midway: Azure may have made it anyway.
    await sql.databases.beginDeleteAndWait(db.resourceGroup, serverName, copyName).catch(() => {});
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
  const [serverName, databaseName] = target.names;
  const sql = await ctx.sql(target.subscriptionId);
  await refuseExisting(() => sql.databases.get(target.resourceGroup, serverName, databaseName), "database", targetDatabaseId);
  const bacpac = `sql/${serverName}/${databaseName}-restore-${stamp(new Date())}.bacpac`;
  try {
    await transient.blob(bacpac).uploadStream(streamContent(vault, pool, point) as unknown as Readable, 8 * 1024 * 1024, 4, {
      conditions: { ifNoneMatch: "*" },
    });
    await sql.servers.beginImportDatabaseAndWait(target.resourceGroup, serverName, { databaseName, ...(await bacpacAccess(transient, bacpac, login)) });
    return targetDatabaseId;
  } catch (error) {
    throw azureFailure(`importing point ${point.id} as ${targetDatabaseId}`, error);
  } finally {
    await transient.blob(bacpac).deleteIfExists().catch(() => {});
  }
}
