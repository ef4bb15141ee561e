/** Turns a --vault argument into a store: a folder path, or an Azure Blob container URL. */
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

export async function openStore(location: string, env: NodeJS.ProcessEnv = process.env): Promise<OpenedStore> {
  if (isUrl(location)) {
    // The Azure SDK loads only when a vault lives in Azure (it costs start-up time otherwise).
    const { AzureBlobStore } = await import("./azure-blob.ts");
    const { DefaultAzureCredential } = await import("@azure/identity");
    const blob = AzureBlobStore.fromUrl(location, {
      connectionString: env.AZURE_STORAGE_CONNECTION_STRING,
      credential: () => new DefaultAzureCredential({ disableInstanceDiscovery: env.BULWARK_DISABLE_INSTANCE_DISCOVERY === "true" }),
    });
    return { store: new RetryingStore(blob), prepare: () => blob.ensureContainer() };
  }
  return { store: new LocalFolderStore(location), prepare: async () => {} };
}
