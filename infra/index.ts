/**
 * The Pulumi program's entry: reads the stack's typed config and runs the customer or the region
 * program. Which one is `bulwark:stackKind`.
 */
import * as pulumi from "@pulumi/pulumi";
import { parseStackConfig, rawFromPulumiConfig } from "./config.ts";
import type { StackConfig } from "./config.ts";
import { customerStack } from "./customer-stack.ts";
import { refuseIgnoredKeyChanges } from "./components/customer-key.ts";
import { regionStack } from "./region-stack.ts";

/**
 * Which keys were set with `--secret`. The SDK knows (it is how `Config.getSecret` decides), but
 * does not export the check in its typings; the engine also passes the list in the environment.
 */
function isConfigSecret(fullKey: string): boolean {
  const check = (pulumi.runtime as unknown as { isConfigSecret?: (key: string) => boolean }).isConfigSecret;
  if (check) return check(fullKey);
  const keys: unknown = JSON.parse(process.env.PULUMI_CONFIG_SECRET_KEYS ?? "[]");
  return Array.isArray(keys) && keys.includes(fullKey);
}

export function readStackConfig(): StackConfig {
  const { raw, secretKeys } = rawFromPulumiConfig(pulumi.runtime.allConfig(), isConfigSecret);
  return parseStackConfig(raw, secretKeys);
}

// Pulumi calls a default-exported function and makes the properties it returns the stack's outputs.
export default async function main(): Promise<object> {
  const config = readStackConfig();
  if (config.kind === "region") return regionStack(config);
  // Before any resource: a key size or rotation change Azure would silently ignore fails the deployment.
  const self = `${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`;
  await refuseIgnoredKeyChanges(self, config.customer, config.tenantId, config.subscriptionId, config.key);
  return customerStack(config);
}
