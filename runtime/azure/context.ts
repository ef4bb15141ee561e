/**
 * How the runtime reaches Azure: the default credential chain (a managed identity in Container
 * Apps, environment variables or the developer's login elsewhere) and Resource Manager's endpoint
 * (BULWARK_ARM_ENDPOINT for sovereign clouds and the local emulator). SDK clients load lazily.
 */
import type { TokenCredential } from "@azure/identity";
import type { ComputeManagementClient } from "@azure/arm-compute";
import type { SqlManagementClient } from "@azure/arm-sql";
import { abortScopePolicy } from "./abort-scope.ts";

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

export async function azureContext(env: NodeJS.ProcessEnv = process.env): Promise<AzureContext> {
  const { DefaultAzureCredential } = await import("@azure/identity");
  const credential = new DefaultAzureCredential({
    disableInstanceDiscovery: env.BULWARK_DISABLE_INSTANCE_DISCOVERY === "true",
  });
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
