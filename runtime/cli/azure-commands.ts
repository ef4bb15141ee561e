/** `bulwark backup` of Azure resource ids and `bulwark restore --to` Azure targets. */
import { UsageError } from "../errors.ts";
import { CodecPool } from "../engine/codec-pool.ts";
import type { PointManifest } from "../engine/point.ts";
import type { Vault } from "../engine/vault.ts";
import { azureContext } from "../azure/context.ts";
import { isResourceId, parseResourceId, sameType } from "../azure/resource-id.ts";
import { transientStorage } from "../azure/transient.ts";
import { backupManagedDisk } from "../sources/azure-disk.ts";
import { restoreToManagedDisk, restoreToPageBlob } from "../sources/azure-restore.ts";
import { backupSqlDatabase, restoreSqlDatabase, sqlCredentialsFromEnv } from "../sources/azure-sql.ts";
import { backupVirtualMachine, restoreVirtualMachine } from "../sources/azure-vm.ts";
import { formatBytes } from "./progress.ts";

type Values = Record<string, unknown>;


export async function backupAzureResource(
  vault: Vault,
  resourceId: string,
  values: Values,
  tags: Record<string, string>,
  onProgress: (n: number) => void,
): Promise<{ point: PointManifest; extra: Record<string, unknown>; text: string }> {
  const ctx = await azureContext();
  const id = parseResourceId(resourceId);
  if (sameType(id, "Microsoft.Compute/disks")) {
    const outcome = await backupManagedDisk(ctx, vault, resourceId, { tags, onProgress });
    return {
      point: outcome.point,
      extra: { mode: outcome.mode, fallbackReason: outcome.fallbackReason, changedBytes: outcome.changedBytes, bytesFetched: outcome.bytesRead },
      text: `${outcome.mode}${outcome.fallbackReason ? ` (${outcome.fallbackReason})` : ""}: ${formatBytes(outcome.changedBytes)} changed, ${formatBytes(outcome.bytesRead)} read`,
    };
  }
  if (sameType(id, "Microsoft.Compute/virtualMachines")) {
    const outcome = await backupVirtualMachine(ctx, vault, resourceId, { tags, onProgress });
    return {
      point: outcome.point,
      extra: {
        disks: outcome.disks.map((d) => ({
          id: d.point.id,
          disk: d.point.source.path,
          mode: d.mode,
          fallbackReason: d.fallbackReason,
          changedBytes: d.changedBytes,
          bytesFetched: d.bytesRead,
        })),
      },
      text: outcome.disks.map((d) => `${d.point.source.path}: ${d.mode}, ${formatBytes(d.bytesRead)} read`).join("\n  "),
    };
  }
  if (sameType(id, "Microsoft.Sql/servers/databases")) {
    const transient = transientStorage((values.transient as string | undefined) ?? process.env.BULWARK_TRANSIENT, process.env, () => ctx.credential);
    const point = await backupSqlDatabase(ctx, vault, resourceId, transient, sqlCredentialsFromEnv(process.env), { tags, onProgress });
    return { point, extra: {}, text: `BACPAC of ${formatBytes(point.size)} ingested` };
  }
  throw new UsageError(`Bulwark backs up managed disks, VMs and Azure SQL databases; ${id.type} is none of them`);
}

export async function restoreToAzure(vault: Vault, point: PointManifest, destination: string, values: Values): Promise<Record<string, unknown>> {
  const pool = new CodecPool(vault.master, { zstdLevel: vault.config.zstdLevel });
  try {
    if (!isResourceId(destination)) {
      // A page blob URL (e.g. a .vhd in a storage account).
      const { blobContainerAt } = await import("../store/azure-blob.ts");
      const credential = (await azureContext()).credential;
      const { location, container } = blobContainerAt(destination, "the restore target", {
        connectionString: process.env.AZURE_STORAGE_CONNECTION_STRING,
        credential: () => credential,
      });
      const blobName = location.prefix.replace(/\/$/, "");
      if (!blobName) throw new UsageError(`${destination} names a container, not a blob: add /NAME.vhd`);
      const client = container.getPageBlobClient(blobName);
      await restoreToPageBlob(vault, pool, point, destination, client);
      return { kind: "page-blob" };
    }
    const ctx = await azureContext();
    const target = parseResourceId(destination);
    if (sameType(target, "Microsoft.Compute/disks")) {
      const restored = await restoreToManagedDisk(ctx, vault, pool, point, destination, { location: values.location as string | undefined });
      return { kind: "managed-disk", diskSizeBytes: restored.diskSizeBytes, ...(restored.resized ? { note: restored.resized } : {}) };
    }
    if (sameType(target, "Microsoft.Compute/virtualMachines")) {
      const result = await restoreVirtualMachine(ctx, vault, pool, point, destination, {
        nicIds: (values.nic as string[] | undefined) ?? [],
        location: values.location as string | undefined,
      });
      return { kind: "virtual-machine", disks: result.diskIds };
    }
    if (sameType(target, "Microsoft.Sql/servers/databases")) {
      const transient = transientStorage((values.transient as string | undefined) ?? process.env.BULWARK_TRANSIENT, process.env, () => ctx.credential);
      await restoreSqlDatabase(ctx, vault, pool, point, destination, transient, sqlCredentialsFromEnv(process.env));
      return { kind: "sql-database" };
    }
    throw new UsageError(`cannot restore to ${target.type}: give a managed disk, VM or SQL database id, a page blob URL, or a local path`);
  } finally {
    await pool.close();
  }
}
