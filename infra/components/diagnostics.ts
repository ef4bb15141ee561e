/**
 * Diagnostic settings (Microsoft.Insights/diagnosticSettings) that send a resource's audit logs to
 * a Log Analytics workspace, so who read, wrote, deleted or used a key is on record outside the
 * resource itself.
 *
 * Categories, from Microsoft's docs (MicrosoftDocs/azure-docs):
 * - Blob storage logs are emitted by the account's blob service, `<account id>/blobServices/default`,
 *   in the categories StorageRead, StorageWrite and StorageDelete; transaction metrics as
 *   "Transaction" (articles/storage/blobs/monitor-blob-storage-reference.md, "Resource logs": the
 *   example record's resourceId and category);
 * - Key Vault's audit log is the category AuditEvent
 *   (articles/key-vault/general/logging.md, "Interpret your Key Vault logs").
 */
import * as pulumi from "@pulumi/pulumi";
import * as monitor from "@pulumi/azure-native/monitor/index.js";

export const DIAGNOSTIC_SETTING_NAME = "bulwark-audit";
export const STORAGE_LOG_CATEGORIES = ["StorageRead", "StorageWrite", "StorageDelete"] as const;
export const KEY_VAULT_LOG_CATEGORIES = ["AuditEvent"] as const;

function diagnosticSetting(name: string, resourceUri: pulumi.Input<string>, categories: readonly string[], metrics: readonly string[], workspaceId: pulumi.Input<string>, parent: pulumi.Resource): monitor.DiagnosticSetting {
  return new monitor.DiagnosticSetting(
    name,
    {
      name: DIAGNOSTIC_SETTING_NAME,
      resourceUri,
      workspaceId,
      logs: categories.map((category) => ({ category, enabled: true })),
      metrics: metrics.map((category) => ({ category, enabled: true })),
    },
    { parent },
  );
}

/**
 * A storage service's read, write and delete logs and its transaction metrics: `blobServices`,
 * `queueServices` or `tableServices` (the same categories: the article above, "Resource logs").
 */
export function storageDiagnostics(name: string, accountId: pulumi.Input<string>, service: "blobServices" | "queueServices" | "tableServices", workspaceId: pulumi.Input<string>, parent: pulumi.Resource): monitor.DiagnosticSetting {
  return diagnosticSetting(name, pulumi.interpolate`${accountId}/${service}/default`, STORAGE_LOG_CATEGORIES, ["Transaction"], workspaceId, parent);
}

/** Every request made to the key vault (AuditEvent). */
export function keyVaultDiagnostics(name: string, vaultId: pulumi.Input<string>, workspaceId: pulumi.Input<string>, parent: pulumi.Resource): monitor.DiagnosticSetting {
  return diagnosticSetting(name, vaultId, KEY_VAULT_LOG_CATEGORIES, [], workspaceId, parent);
}
