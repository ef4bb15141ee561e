/**
 * The environment README's examples run in, against a running emulator with Azurite and the sample
 * world: every variable they use (`npm run emulator` prints these as `export` lines), and the
 * transient container that SQL backups and restores export through (BULWARK_TRANSIENT), created
 * here so the examples work as written.
 */
import { BlobServiceClient } from "@azure/storage-blob";
import type { SampleWorld } from "./seed.ts";
import type { RunningAzureEmulator } from "./server.ts";

export const TRANSIENT_CONTAINER = "transient";

export async function exampleEnvironment(emulator: RunningAzureEmulator, sample: SampleWorld): Promise<Record<string, string>> {
  const azurite = emulator.azurite;
  if (!azurite) throw new Error("README's examples need Azurite: start the emulator with { azurite: true }");
  await BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(TRANSIENT_CONTAINER).createIfNotExists();
  return {
    ...emulator.env,
    AZURE_LOCATION: sample.location,
    BULWARK_RESOURCE_GROUP: sample.resourceGroup,
    BULWARK_SAMPLE_VM: sample.vmName,
    BULWARK_SAMPLE_VM_ID: sample.vmId,
    BULWARK_SAMPLE_OS_DISK_ID: sample.osDiskId,
    BULWARK_SAMPLE_DATA_DISK_ID: sample.dataDiskId,
    BULWARK_SAMPLE_DATABASE_ID: sample.databaseId,
    BULWARK_SQL_SERVER: sample.sqlServerName,
    BULWARK_SQL_DATABASE: sample.databaseName,
    BULWARK_SQL_ADMIN_LOGIN: sample.sqlAdministratorLogin,
    BULWARK_SQL_ADMIN_PASSWORD: sample.sqlAdministratorPassword,
    BULWARK_KEY_VAULT_URL: sample.keyVaultUrl,
    BULWARK_KEY_NAME: sample.keyName,
    // Azurite's blob endpoint: a vault or a container URL is this plus /CONTAINER[/PREFIX].
    BULWARK_BLOB_ENDPOINT: azurite.blobEndpoint,
    BULWARK_TRANSIENT: `${azurite.blobEndpoint}/${TRANSIENT_CONTAINER}`,
  };
}
