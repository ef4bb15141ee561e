/**
 * How the runtime reaches Azure: the default credential chain (a managed identity in Container
 * Apps, environment variables or the developer's login elsewhere) and Resource Manager's endpoint
 * (BULWARK_ARM_ENDPOINT for sovereign clouds and the local emulator). SDK clients load lazily.
 *
 * A worker holds two identities (infra/components/region-agent.ts): its own, which backs up, and a
 * restore identity (BULWARK_RESTORE_CLIENT_ID) whose role lets it create disks, VMs and databases
 * in the restore resource groups only. Restore jobs call Resource Manager as the latter
 * (`restoreAzureContext`); everything else as the former.
 */
import type { TokenCredential } from "@azure/identity";
import type { ComputeManagementClient } from "@azure/arm-compute";
import type { SqlManagementClient } from "@azure/arm-sql";
import { abortScopePolicy } from "./abort-scope.ts";
import { UsageError } from "../errors.ts";

export interface AzureContext {
  credential: TokenCredential;
  armEndpoint: string | undefined;
  compute(subscriptionId: string): Promise<ComputeManagementClient>;
  sql(subscriptionId: string): Promise<SqlManagementClient>;
  /** Options for Key Vault clients (challenge verification can be relaxed for the local emulator only). */
  keyVaultOptions: { disableChallengeResourceVerification?: boolean };
}

const ARM_RETRY = {
  retryOptions: { maxRetries: 6, retryDelayInMs: 500, maxRetryDelayInMs: 30_000 },
  // Requests abort with the job step that makes them (see abort-scope.ts).
  additionalPolicies: [{ policy: abortScopePolicy, position: "perCall" as const }],
};

export async function azureContext(env: NodeJS.ProcessEnv = process.env, credential?: TokenCredential): Promise<AzureContext> {
  if (!credential) {
    const { DefaultAzureCredential } = await import("@azure/identity");
    credential = new DefaultAzureCredential({ disableInstanceDiscovery: env.BULWARK_DISABLE_INSTANCE_DISCOVERY === "true" });
  }
  return contextWith(credential, env);
}

/**
 * The context restore jobs run under: the restore identity named by BULWARK_RESTORE_CLIENT_ID (a
 * user-assigned managed identity of the job; or, with BULWARK_RESTORE_CLIENT_SECRET, a service
 * principal of AZURE_TENANT_ID, for workers outside Azure), or the worker's own identity when none
 * is named (one identity that holds both roles, as a person running `bulwark restore` does).
 */
export async function restoreAzureContext(env: NodeJS.ProcessEnv = process.env): Promise<AzureContext> {
  const clientId = env.BULWARK_RESTORE_CLIENT_ID;
  if (!clientId) return azureContext(env);
  const identity = await import("@azure/identity");
  const secret = env.BULWARK_RESTORE_CLIENT_SECRET;
  if (secret) {
    if (!env.AZURE_TENANT_ID) throw new UsageError("BULWARK_RESTORE_CLIENT_SECRET is set but AZURE_TENANT_ID is not: set the restore service principal's tenant id");
    const credential = new identity.ClientSecretCredential(env.AZURE_TENANT_ID, clientId, secret, {
      authorityHost: env.AZURE_AUTHORITY_HOST || undefined,
      disableInstanceDiscovery: env.BULWARK_DISABLE_INSTANCE_DISCOVERY === "true",
    });
    return azureContext(env, credential);
  }
  return azureContext(env, new identity.ManagedIdentityCredential({ clientId }));
}

function contextWith(credential: TokenCredential, env: NodeJS.ProcessEnv): AzureContext {
  const armEndpoint = env.BULWARK_ARM_ENDPOINT || undefined;
  const computeClients = new Map<string, ComputeManagementClient>();
  const sqlClients = new Map<string, SqlManagementClient>();
  return {
    credential,
    armEndpoint,
    async compute(subscriptionId) {
      let client = computeClients.get(subscriptionId);
      if (!client) {
        const { ComputeManagementClient } = await import("@azure/arm-compute");
        client = new ComputeManagementClient(credential, subscriptionId, { endpoint: armEndpoint, ...ARM_RETRY });
        computeClients.set(subscriptionId, client);
      }
      return client;
    },
    async sql(subscriptionId) {
      let client = sqlClients.get(subscriptionId);
      if (!client) {
        const { SqlManagementClient } = await import("@azure/arm-sql");
        client = new SqlManagementClient(credential, subscriptionId, { endpoint: armEndpoint, ...ARM_RETRY });
        sqlClients.set(subscriptionId, client);
      }
      return client;
    },
    keyVaultOptions: {
      disableChallengeResourceVerification: env.BULWARK_KEY_VAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION === "true",
    },
  };
}
