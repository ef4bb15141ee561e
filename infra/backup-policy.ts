/**
 * The backup policy a region's scheduler runs. Container Apps jobs have no policy files, so the
 * region stack renders one policy document from its config, in the runtime's own format
 * (runtime/policy/README.md), and hands it to `bulwark agent schedule` as BULWARK_POLICY_JSON.
 * The document is checked with the runtime's validator before it is deployed, so a config the
 * scheduler would refuse stops `pulumi up` instead of every tick.
 */
import { UsageError } from "../runtime/errors.ts";
import { PROTECTABLE_TYPES } from "../runtime/policy/items.ts";
import { validatePolicy } from "../runtime/policy/policy.ts";
import type { RetentionRule } from "../runtime/retention/gfs.ts";
import type { BackupPolicyConfig } from "./config.ts";
import { CONFIG_NAMESPACE } from "./config.ts";
import { subscriptionOf } from "./components/roles.ts";

/** One policy document as the runtime reads it (JSON form of a policy file). */
export interface PolicyDocument {
  name: string;
  vault: string;
  protect: {
    resources?: string[];
    tagged: { type: string; tag: string; subscriptions: string[] }[];
  };
  schedule: { every: string };
  retention: RetentionRule;
  /** The copy vault (bulwark:copyRegion) every point is copied to. */
  copyTo?: string[];
}

export interface RegionPolicyArgs {
  customer: string;
  region: string;
  /** The isolated storage's vault container URL. */
  vaultUrl: string;
  /** ARM ids of the region's protected scopes (subscriptions or resource groups). */
  protectedScopes: string[];
  policy: BackupPolicyConfig;
  retention: RetentionRule;
  /** The copy vault's container URL, when the stack has a copyRegion. */
  copyVaultUrl?: string;
}

/**
 * The region's one policy: every protectable type carrying the protect tag in the subscriptions of
 * the region's protected scopes, plus the explicit resources. Where a scope is a resource group,
 * the scheduler still lists the whole subscription, and Resource Manager returns only what its
 * identity may read: the resource groups it holds the backup role on.
 */
export function regionPolicyDocument(args: RegionPolicyArgs): PolicyDocument {
  const subscriptions = [...new Set(args.protectedScopes.map((scope) => subscriptionOf(scope).toLowerCase()))];
  const document: PolicyDocument = {
    name: `${args.customer}-${args.region}`,
    vault: args.vaultUrl,
    protect: {
      tagged: PROTECTABLE_TYPES.map((type) => ({ type, tag: args.policy.tag, subscriptions })),
    },
    schedule: { every: args.policy.every },
    retention: { ...args.retention },
  };
  if (args.policy.resources.length > 0) document.protect.resources = [...args.policy.resources];
  if (args.copyVaultUrl !== undefined) document.copyTo = [args.copyVaultUrl];
  return document;
}

/** BULWARK_POLICY_JSON: the documents as a JSON array, each accepted by the runtime's validator first. */
export function policyJson(documents: PolicyDocument[]): string {
  documents.forEach((document, i) => validatePolicy(document, `BULWARK_POLICY_JSON[${i}]`));
  return JSON.stringify(documents);
}

function within(id: string, scope: string): boolean {
  const a = id.toLowerCase();
  const b = scope.toLowerCase();
  return a === b || a.startsWith(`${b}/`);
}

/** Explicit resources must lie in the region's protected scopes: elsewhere the agents hold no role. */
export function requireResourcesInScopes(resources: string[], scopes: string[], region: string): void {
  resources.forEach((id, i) => {
    if (!scopes.some((scope) => within(id, scope))) {
      throw new UsageError(
        `${CONFIG_NAMESPACE}:protectResources[${i}] ${id} is outside ${region}'s protected scopes (${scopes.join(", ")}), so the agents could not back it up. ` +
          `Protect its subscription or resource group in the customer stack's bulwark:protect (in the resource's region), or remove it here.`,
      );
    }
  });
}
