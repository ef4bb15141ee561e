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

/**
 * A custom role's definition id in its tenant-scoped form. A custom role is defined once per tenant
 * (its `scope` is only where it is created) and is assignable wherever its assignableScopes allow;
 * the authorization API accepts "/providers/Microsoft.Authorization/roleDefinitions/{roleDefinitionId}
 * for tenant level role definitions" beside the subscription form
 * (Azure/azure-rest-api-specs specification/authorization/resource-manager/Microsoft.Authorization/
 * stable/2022-04-01/authorization-RoleDefinitionsCalls.json, RoleDefinitions_GetById's roleDefinitionId).
 * The subscription form built from the subscription the role was created in names a definition
 * that an assignment in another subscription cannot use.
 */
export function tenantRoleDefinitionId(guid: string): string {
  return `/providers/Microsoft.Authorization/roleDefinitions/${guid}`;
}

/**
 * Where a custom role is created: the subscription of the first of its assignable scopes in sorted
 * order, so reordering bulwark:protect never moves (and so replaces) the role.
 */
export function stableRoleHome(assignableScopes: string[]): string {
  if (assignableScopes.length === 0) throw new Error("a custom role needs at least one assignable scope");
  const first = [...assignableScopes].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()))[0]!;
  return `/subscriptions/${subscriptionOf(first)}`;
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

/**
 * How long a new role assignment may take to be honoured: "When you assign roles or remove role
 * assignments, it can take up to 10 minutes for changes to take effect" (MicrosoftDocs/azure-docs
 * articles/role-based-access-control/troubleshooting.md, "Symptom - Role assignment changes are not
 * being detected"; earlier versions of that page said 30 minutes, for Resource Manager's cache).
 */
export const ROLE_PROPAGATION_SECONDS = 600;

/**
 * Waits once, after its assignments are created (and again whenever they are replaced), so what
 * depends on it starts only when Azure honours them. Pulumi's dynamic provider serializes these
 * functions: they capture nothing, and read the wait from their inputs.
 */
const propagationWaitProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs) {
    await new Promise((resolve) => setTimeout(resolve, Number(inputs.seconds) * 1000));
    return { id: `rbac-propagation-${Date.now()}`, outs: inputs };
  },
  async diff(_id, olds, news) {
    const changed = JSON.stringify(olds.assignmentIds) !== JSON.stringify(news.assignmentIds);
    return { changes: changed, replaces: changed ? ["assignmentIds"] : [], deleteBeforeReplace: false };
  },
};

class RolePropagationWait extends pulumi.dynamic.Resource {
  constructor(name: string, assignments: authorization.RoleAssignment[], opts: pulumi.CustomResourceOptions) {
    super(propagationWaitProvider, name, { seconds: ROLE_PROPAGATION_SECONDS, assignmentIds: assignments.map((a) => a.id) }, { ...opts, dependsOn: assignments });
  }
}

/**
 * A resource that exists once `assignments` have had time to propagate: put it in the dependsOn of
 * whatever needs them (a job that calls Azure as the identity, an account encrypted with a key its
 * identity may only now use).
 */
export function afterRolePropagation(name: string, assignments: authorization.RoleAssignment[], parent: pulumi.Resource): pulumi.Resource {
  return new RolePropagationWait(name, assignments, { parent });
}

