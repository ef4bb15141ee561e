/**
 * The region's transient storage: a blob container where BACPACs are staged on their way in and
 * out of the vault. Azure SQL reads and writes it through a short-lived SAS that we mint: with the
 * account key when a connection string is given (Azurite), else a user-delegation SAS from the
 * agent's identity. A lifecycle rule (infra) deletes anything left behind after a day.
 */
import {
  BlobSASPermissions,
  BlobServiceClient,
  ContainerClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type BlockBlobClient,
} from "@azure/storage-blob";
import type { TokenCredential } from "@azure/identity";
import { UsageError } from "../errors.ts";
import { blobContainerAt } from "../store/azure-blob.ts";

/** A SAS's lifetime unless the caller needs longer (an export or import: see azure-sql.ts). */
const DEFAULT_SAS_MS = 120 * 60 * 1000;

export interface TransientStorage {
  container: ContainerClient;
  prefix: string;
  blob(name: string): BlockBlobClient;
  /**
   * A SAS token (no leading "?") allowing read/create/write of one blob, for Azure SQL, valid for
   * `validForMs` (two hours by default).
   */
  sasFor(name: string, validForMs?: number): Promise<string>;
  urlOf(name: string): string;
}

export function transientStorage(location: string | undefined, env: NodeJS.ProcessEnv, credential: () => TokenCredential): TransientStorage {
  if (!location) {
    throw new UsageError("no transient storage: set BULWARK_TRANSIENT to the region's transient container URL (or pass --transient URL)");
  }
  // Exactly where the URL says, and Azure credentials only to Azure Storage hosts (blobContainerAt).
  const { location: parsed, service, container } = blobContainerAt(location, "the transient storage URL (BULWARK_TRANSIENT)", {
    connectionString: env.AZURE_STORAGE_CONNECTION_STRING,
    credential,
  });
  const sharedKey = service.credential instanceof StorageSharedKeyCredential ? service.credential : undefined;
  const blob = (name: string) => container.getBlockBlobClient(parsed.prefix + name);
  return {
    container,
    prefix: parsed.prefix,
    blob,
    urlOf: (name) => blob(name).url,
    async sasFor(name, validForMs = DEFAULT_SAS_MS) {
      const startsOn = new Date(Date.now() - 5 * 60 * 1000);
      const expiresOn = new Date(Date.now() + validForMs);
      const values = { containerName: parsed.container, blobName: parsed.prefix + name, permissions: BlobSASPermissions.parse("rcw"), startsOn, expiresOn };
      if (sharedKey) return generateBlobSASQueryParameters(values, sharedKey).toString();
      const delegationKey = await service.getUserDelegationKey(startsOn, expiresOn);
      return generateBlobSASQueryParameters(values, delegationKey, service.accountName).toString();
    },
  };
}
