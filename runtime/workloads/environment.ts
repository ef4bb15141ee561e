/**
 * What a worker's jobs need from their surroundings, built once per worker process from its
 * environment: Azure clients, the key that opens vaults, the region's transient storage (staging
 * and BACPACs), and the SQL login for export and import.
 */
import type { TokenCredential } from "@azure/identity";
import { azureContext, type AzureContext } from "../azure/context.ts";
import { transientStorage, type TransientStorage } from "../azure/transient.ts";
import { Vault } from "../engine/vault.ts";
import { AzureKeyVaultProvider } from "../keys/azure-key-vault.ts";
import { PassphraseProvider } from "../keys/passphrase.ts";
import type { KeyEncryptionKeyProvider } from "../keys/provider.ts";
import type { JobAuthority } from "../policy/authority.ts";
import { UsageError } from "../errors.ts";
import { AzureBlobStore, blobContainerAt } from "../store/azure-blob.ts";
import { openStore } from "../store/open.ts";
import { RetryingStore } from "../store/retry.ts";
import type { ObjectStore } from "../store/store.ts";
import { sqlCredentialsFromEnv, type SqlCredentials } from "../sources/azure-sql.ts";

export interface WorkloadEnvironment {
  azure: AzureContext;
  openVault(location: string): Promise<Vault>;
  /** The job's own staging area in transient storage (everything under jobs/<jobId>/stage/). */
  staging(jobId: string): ObjectStore;
  transient: TransientStorage;
  sqlLogin(): SqlCredentials;
  /** The worker's policies: what a job may touch (set by `agent worker`, see policy/authority.ts). */
  authority?: JobAuthority;
}

/** The key an agent opens vaults with: the customer's Key Vault key, or a passphrase (tests, on-premises). */
export function agentKeyProvider(env: NodeJS.ProcessEnv, azure: AzureContext): KeyEncryptionKeyProvider {
  if (env.BULWARK_PASSPHRASE) return new PassphraseProvider(env.BULWARK_PASSPHRASE);
  if (env.BULWARK_KEY_VAULT_KEY) return new AzureKeyVaultProvider(env.BULWARK_KEY_VAULT_KEY, azure.credential, azure.keyVaultOptions);
  throw new UsageError("the agent has no vault key: set BULWARK_KEY_VAULT_KEY (the customer's key) or BULWARK_PASSPHRASE");
}

export async function workloadEnvironment(env: NodeJS.ProcessEnv = process.env): Promise<WorkloadEnvironment> {
  const azure = await azureContext(env);
  const transientUrl = env.BULWARK_TRANSIENT;
  const transient = transientStorage(transientUrl, env, () => azure.credential);
  let keys: KeyEncryptionKeyProvider | undefined;
  const provider = (): KeyEncryptionKeyProvider => {
    if (keys) return keys;
    if (env.BULWARK_PASSPHRASE) return (keys = rememberingProvider(new PassphraseProvider(env.BULWARK_PASSPHRASE)));
    if (env.BULWARK_KEY_VAULT_KEY) return (keys = rememberingProvider(new AzureKeyVaultProvider(env.BULWARK_KEY_VAULT_KEY, azure.credential, azure.keyVaultOptions)));
    throw new UsageError("the worker has no vault key: set BULWARK_KEY_VAULT_KEY (the customer's key) or BULWARK_PASSPHRASE");
  };
  const { location, container } = blobContainerAt(transientUrl!, "BULWARK_TRANSIENT", {
    connectionString: env.AZURE_STORAGE_CONNECTION_STRING,
    credential: () => azure.credential as TokenCredential,
  });
  return {
    azure,
    transient,
    async openVault(vaultLocation) {
      return Vault.open((await openStore(vaultLocation, env)).store, provider());
    },
    staging(jobId) {
      const prefix = `${location.prefix}jobs/${jobId}/stage/`;
      return new RetryingStore(new AzureBlobStore(container, prefix, `${location.containerUrl}/${prefix}`));
    },
    sqlLogin: () => sqlCredentialsFromEnv(env),
  };
}

/**
 * Recovers each key-encryption key once per worker process. Every step of a job opens its vault
 * again (so it sees what other writers added); without this each of them ran the passphrase KDF
 * (scrypt, 128 MiB, about a second of CPU) or a Key Vault unwrap. Only successes are remembered,
 * and callers get a copy, so a KEK zeroed after use does not wipe the remembered one.
 */
function rememberingProvider(inner: KeyEncryptionKeyProvider): KeyEncryptionKeyProvider {
  const recovered = new Map<string, Promise<Buffer>>();
  return {
    kind: inner.kind,
    create: () => inner.create(),
    describe: (params) => inner.describe(params),
    async recover(params) {
      const key = JSON.stringify(params);
      let kek = recovered.get(key);
      if (!kek) {
        kek = inner.recover(params);
        recovered.set(key, kek);
        kek.catch(() => recovered.delete(key));
      }
      return Buffer.from(await kek);
    },
  };
}
