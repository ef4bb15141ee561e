/** Turns a --vault argument into a store: a folder path, or an Azure Blob container URL. */
import { DefaultAzureCredential } from "@azure/identity";
import { AzureBlobStore } from "./azure-blob.ts";
import { LocalFolderStore } from "./local.ts";
import { RetryingStore } from "./retry.ts";
import type { ObjectStore } from "./store.ts";

export interface OpenedStore {
  store: ObjectStore;
  /** Creates the container or folder if needed (init only). */
  prepare(): Promise<void>;
}

export function isUrl(location: string): boolean {
  return /^https?:\/\//i.test(location);
}

export function openStore(location: string, env: NodeJS.ProcessEnv = process.env): OpenedStore {
  if (isUrl(location)) {
    const blob = AzureBlobStore.fromUrl(location, {
      connectionString: env.AZURE_STORAGE_CONNECTION_STRING,
      credential: () => new DefaultAzureCredential(),
    });
    return { store: new RetryingStore(blob), prepare: () => blob.ensureContainer() };
  }
  const local = new LocalFolderStore(location);
  return { store: local, prepare: async () => {} };
}
