/**
 * The role map names, for each URL shape Azure uses, an action Azure publishes: the disk operation
 * monitors (DiskOperations), SQL's resource-group-scoped monitors, and the linked checks of
 * creating a snapshot or a VM.
 */
import { describe, expect, it } from "vitest";
import { actionsFor } from "./role-map.ts";
import { unpublishedActions } from "../support/published-operations.ts";

const S = "/subscriptions/00000000-1111-2222-3333-444444444444";
const G = `${S}/resourceGroups/rg`;
const get = (path: string) => ({ endpoint: "main", method: "GET", path, status: 200 });

describe("the role map", () => {
  it("maps a disk operation monitor (DiskOperations) to locations/diskOperations/read", () => {
    // Azure compares action names case-insensitively; the URL spells the type DiskOperations.
    const lower = (actions: string[] | undefined) => actions?.map((a) => a.toLowerCase());
    expect(lower(actionsFor(get(`${S}/providers/Microsoft.Compute/locations/westeurope/DiskOperations/0f1e`))?.actions)).toEqual([
      "microsoft.compute/locations/diskoperations/read",
    ]);
    expect(actionsFor(get(`${S}/providers/Microsoft.Compute/locations/westeurope/operations/0f1e`))?.actions).toEqual([
      "Microsoft.Compute/locations/operations/read",
    ]);
  });

  it("maps SQL's resource-group-scoped monitors to published operations", () => {
    const copy = actionsFor(get(`${G}/providers/Microsoft.Sql/locations/westeurope/databaseAzureAsyncOperation/0f1e`))!;
    expect(copy.actions).toEqual(["Microsoft.Sql/locations/databaseAzureAsyncOperation/read"]);
    const exportStatus = actionsFor(get(`${G}/providers/Microsoft.Sql/locations/westeurope/importExportAzureAsyncOperation/0f1e`))!;
    const exportResult = actionsFor(get(`${G}/providers/Microsoft.Sql/locations/westeurope/importExportOperationResults/0f1e`))!;
    expect(exportStatus.actions).toEqual(["Microsoft.Sql/servers/databases/importExportAzureAsyncOperation/read"]);
    expect(exportResult.actions).toEqual(["Microsoft.Sql/servers/databases/importExportOperationResults/read"]);
    // The subscription-scoped shape of the same monitors maps the same way.
    expect(actionsFor(get(`${S}/providers/Microsoft.Sql/locations/westeurope/importExportAzureAsyncOperation/0f1e`))!.actions).toEqual(exportStatus.actions);
  });

  it("adds the linked checks of creating a snapshot (its source disk) and a VM (its NIC)", () => {
    const put = (path: string) => ({ endpoint: "main", method: "PUT", path, status: 200 });
    expect(actionsFor(put(`${G}/providers/Microsoft.Compute/snapshots/s1`))?.actions).toEqual([
      "Microsoft.Compute/snapshots/write",
      "Microsoft.Compute/disks/beginGetAccess/action",
    ]);
    expect(actionsFor(put(`${G}/providers/Microsoft.Compute/virtualMachines/vm1`))?.actions).toEqual([
      "Microsoft.Compute/virtualMachines/write",
      "Microsoft.Network/networkInterfaces/join/action",
    ]);
  });

  it("names only published operations for every shape the runtime calls", () => {
    const paths: [string, string][] = [
      ["GET", `${G}/providers/Microsoft.Compute/disks/d1`],
      ["PUT", `${G}/providers/Microsoft.Compute/disks/d1`],
      ["DELETE", `${G}/providers/Microsoft.Compute/disks/d1`],
      ["POST", `${G}/providers/Microsoft.Compute/disks/d1/beginGetAccess`],
      ["POST", `${G}/providers/Microsoft.Compute/snapshots/s1/endGetAccess`],
      ["GET", `${G}/providers/Microsoft.Compute/snapshots`],
      ["GET", `${S}/providers/Microsoft.Compute/snapshots`],
      ["GET", `${G}/providers/Microsoft.Sql/servers/sv/databases/db`],
      ["POST", `${G}/providers/Microsoft.Sql/servers/sv/databases/db/export`],
      ["POST", `${G}/providers/Microsoft.Sql/servers/sv/import`],
      ["GET", `${S}/resources`],
      ["GET", `${G}/resources`],
    ];
    const actions = paths.flatMap(([method, path]) => actionsFor({ endpoint: "main", method, path, status: 200 })?.actions ?? []);
    expect(unpublishedActions(actions)).toEqual([]);
  });
});
