/**
 * The enterprise app: Bulwark's application registration in the customer's tenant and its
 * service principal. Operators sign in through it to the customer's subscriptions; a global
 * administrator grants tenant-wide consent to the permissions below once (see infra/README.md).
 */
import * as pulumi from "@pulumi/pulumi";
import * as azuread from "@pulumi/azuread";

/** Microsoft Graph and Azure Service Management, and the delegated scopes Bulwark asks for. */
export const REQUESTED_PERMISSIONS = [
  {
    resourceAppId: "00000003-0000-0000-c000-000000000000", // Microsoft Graph
    resourceAccesses: [{ id: "e1fe6dd8-ba31-4d61-89e7-88639da4683d", type: "Scope" }], // User.Read
  },
  {
    resourceAppId: "797f4846-ba00-4fd7-ba43-dac1f8f63013", // Azure Service Management
    resourceAccesses: [{ id: "41094075-9dad-400e-a0bd-54e686782033", type: "Scope" }], // user_impersonation
  },
];

export interface EnterpriseAppArgs {
  customer: string;
}

export class EnterpriseApp extends pulumi.ComponentResource {
  readonly clientId: pulumi.Output<string>;
  readonly servicePrincipalObjectId: pulumi.Output<string>;

  constructor(name: string, args: EnterpriseAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:customer:EnterpriseApp", name, {}, opts);
    const application = new azuread.Application(
      `${name}-app`,
      {
        displayName: `Bulwark backup (${args.customer})`,
        description: "Bulwark backs up this tenant's VMs and SQL databases into isolated, immutable storage.",
        signInAudience: "AzureADMyOrg",
        requiredResourceAccesses: REQUESTED_PERMISSIONS,
        preventDuplicateNames: true,
      },
      { parent: this },
    );
    const servicePrincipal = new azuread.ServicePrincipal(
      `${name}-sp`,
      {
        clientId: application.clientId,
        // Only users and groups assigned to the app may sign in through it.
        appRoleAssignmentRequired: true,
        notes: "Created by Bulwark's customer stack; consent once with `az ad app permission admin-consent`.",
      },
      { parent: this },
    );
    this.clientId = application.clientId;
    this.servicePrincipalObjectId = servicePrincipal.objectId;
    this.registerOutputs({ clientId: this.clientId, servicePrincipalObjectId: this.servicePrincipalObjectId });
  }
}
