/**
 * CanNotDelete management locks (Microsoft.Authorization/locks) on what holds the customer's
 * backups and their key, so a mistaken delete of the resource (or of its resource group) fails
 * instead of destroying them. From Azure's references:
 * - a lock at a scope is created with ManagementLocks_CreateOrUpdateByScope, `level` "CanNotDelete"
 *   meaning "authorized users are able to read and modify the resources, but not delete"
 *   (Azure/azure-rest-api-specs specification/resources/resource-manager/Microsoft.Authorization/
 *   stable/2020-05-01/locks.json, ManagementLockProperties.level);
 * - a lock on a storage account does not stop data inside it from being deleted, and creating or
 *   deleting locks needs Microsoft.Authorization/locks/* (Owner or User Access Administrator)
 *   (MicrosoftDocs/azure-docs articles/azure-resource-manager/management/lock-resources.md,
 *   "Considerations before applying your locks" and "Who can create or delete locks").
 * The data inside is protected by the vault container's immutability policy, not by this lock.
 */
import * as pulumi from "@pulumi/pulumi";
import * as authorization from "@pulumi/azure-native/authorization/index.js";

export const DO_NOT_DELETE_LOCK = "bulwark-do-not-delete";

export function doNotDelete(name: string, resourceId: pulumi.Input<string>, notes: string, parent: pulumi.Resource): authorization.ManagementLockByScope {
  return new authorization.ManagementLockByScope(name, { scope: resourceId, lockName: DO_NOT_DELETE_LOCK, level: "CanNotDelete", notes }, { parent });
}
