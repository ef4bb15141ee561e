/**
 * Role assignments with deterministic names, and the built-in roles Bulwark uses. Names come from
 * (scope, role, principal), so a re-run computes the same name; `deleteBeforeReplace` makes a
 * replacement remove the old assignment before the new one claims the name.
 */
import * as pulumi from "@pulumi/pulumi";
import * as authorization from "@pulumi/azure-native/authorization/index.js";
import { deterministicGuid } from "../naming.ts";

/** Built-in role definition GUIDs (the same in every tenant). */
export const BUILT_IN_ROLES = {
  storageBlobDataContributor: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
  /** generateUserDelegationKey only: lets an identity sign user-delegation SAS (for Azure SQL's import/export). */
  storageBlobDelegator: "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
  storageTableDataContributor: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
  storageQueueDataContributor: "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
  /** get, wrapKey, unwrapKey on a key: exactly what a storage account's customer-managed key needs. */
  keyVaultCryptoServiceEncryptionUser: "e147488a-f6f5-4113-8e2d-b22465e65bf6",
} as const;

/** The broad built-in roles Bulwark never assigns (the policy pack rejects them). */
export const FORBIDDEN_BUILT_IN_ROLES = {
  owner: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
  contributor: "b24988ac-6180-42a0-ab88-20f7382dd24c",
  userAccessAdministrator: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
} as const;

/** A built-in role's definition id as seen from a subscription. */
export function builtInRoleId(subscriptionId: pulumi.Input<string>, guid: string): pulumi.Output<string> {
  return pulumi.interpolate`/subscriptions/${subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${guid}`;
}

/** The subscription id at the start of an ARM scope. */
export function subscriptionOf(scope: string): string {
  const match = /^\/subscriptions\/([^/]+)/i.exec(scope);
  if (!match) throw new Error(`scope ${scope} does not start with /subscriptions/<id>`);
  return match[1];
}

export interface GrantArgs {
  principalId: pulumi.Input<string>;
  roleDefinitionId: pulumi.Input<string>;
  scope: pulumi.Input<string>;
  description: string;
}

export function grantRole(name: string, args: GrantArgs, parent: pulumi.Resource): authorization.RoleAssignment {
  const roleAssignmentName = pulumi
    .all([args.scope, args.roleDefinitionId, args.principalId])
    .apply(([scope, role, principal]) => deterministicGuid("role-assignment", scope.toLowerCase(), role.toLowerCase(), principal));
  return new authorization.RoleAssignment(
    name,
    {
      roleAssignmentName,
      scope: args.scope,
      roleDefinitionId: args.roleDefinitionId,
      principalId: args.principalId,
      principalType: "ServicePrincipal",
      description: args.description,
    },
    { parent, deleteBeforeReplace: true },
  );
}
