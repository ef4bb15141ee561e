/**
 * Placeholder until the Azure sources exist: the actions they are planned to call. Each line moves
 * next to its call as the Azure modules are written, and this file goes away.
 */
import { requiresAction } from "./permissions.ts";

requiresAction("Microsoft.Compute/disks/read", "disk source: read disk");
requiresAction("Microsoft.Compute/disks/write", "disk restore: create upload disk");
requiresAction("Microsoft.Compute/disks/beginGetAccess/action", "disk restore: write access to upload disk");
requiresAction("Microsoft.Compute/disks/endGetAccess/action", "disk restore: revoke write access");
requiresAction("Microsoft.Compute/snapshots/read", "disk source: read snapshot");
requiresAction("Microsoft.Compute/snapshots/write", "disk source: create incremental snapshot");
requiresAction("Microsoft.Compute/snapshots/delete", "disk source: retire previous snapshot");
requiresAction("Microsoft.Compute/snapshots/beginGetAccess/action", "disk source: SAS read access to snapshot");
requiresAction("Microsoft.Compute/snapshots/endGetAccess/action", "disk source: revoke SAS");
requiresAction("Microsoft.Compute/virtualMachines/read", "vm source: read VM configuration");
requiresAction("Microsoft.Compute/virtualMachines/write", "vm restore: create alternate VM");
requiresAction("Microsoft.Network/networkInterfaces/read", "vm source: record network interfaces");
requiresAction("Microsoft.Sql/servers/databases/read", "sql source: read database");
requiresAction("Microsoft.Sql/servers/databases/write", "sql source: create transactionally consistent copy");
requiresAction("Microsoft.Sql/servers/databases/delete", "sql source: delete the copy");
requiresAction("Microsoft.Sql/servers/databases/export/action", "sql source: export BACPAC");
requiresAction("Microsoft.Sql/servers/import/action", "sql restore: import BACPAC as new database");
requiresAction("Microsoft.Resources/subscriptions/resources/read", "scheduler: find tagged resources");
requiresAction("Microsoft.KeyVault/vaults/keys/read", "key vault provider: read key", { dataAction: true });
requiresAction("Microsoft.KeyVault/vaults/keys/wrap/action", "key vault provider: wrap data key", {
  dataAction: true,
});
requiresAction("Microsoft.KeyVault/vaults/keys/unwrap/action", "key vault provider: unwrap data key", {
  dataAction: true,
});
