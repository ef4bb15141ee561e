/**
 * Every action the runtime declares (and so every action of every custom role built from those
 * declarations) is one Azure publishes: Azure refuses a whole custom role that names an unknown
 * action. The list is test/data/azure-operations/ (sources in its README).
 */
import { describe, expect, it } from "vitest";
import { declaredActionUses } from "../../runtime/azure/role.ts";
import { publishedOperations, unpublishedActions } from "../support/published-operations.ts";

describe("the runtime's declared Azure actions", () => {
  it("are all in Azure's published provider operations", () => {
    const declared = declaredActionUses().map((use) => use.action);
    expect(declared.length).toBeGreaterThan(0);
    expect(unpublishedActions(declared)).toEqual([]);
  });

  it("an action Azure does not publish is named by the check", () => {
    const published = publishedOperations();
    expect(published.has("microsoft.compute/locations/diskoperations/read")).toBe(true);
    expect(unpublishedActions(["Microsoft.Compute/disks/read", "Microsoft.Sql/locations/importExportAzureAsyncOperation/read"], published)).toEqual([
      "Microsoft.Sql/locations/importExportAzureAsyncOperation/read",
    ]);
  });
});
