/**
 * Names Bulwark derives from the customer's: Azure allows 128 characters for a database and 80 for
 * a disk or snapshot (MicrosoftDocs/azure-docs articles/azure-resource-manager/management/
 * resource-name-rules.md). A copy's name cut to 128 characters used to be the source's own name,
 * and the backup's cleanup deleted the customer's database (found by review, issue 10).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { derivedResourceName } from "../../runtime/azure/resource-id.ts";
import { type AzureWorld, databaseIdIn, startWorld } from "./harness.ts";

describe("derived resource names", () => {
  it("keep the tag and differ from the base and from each other at every length up to the limit", () => {
    for (const length of [1, 60, 70, 71, 79, 80, 119, 127, 128]) {
      const base = "d".repeat(length);
      for (const max of [80, 128]) {
        if (length > max) continue;
        const a = derivedResourceName(base, "job000000001", max);
        const b = derivedResourceName(base, "job000000002", max);
        expect(a.length).toBeLessThanOrEqual(max);
        expect(a).not.toBe(base);
        expect(a).not.toBe(b);
        expect(a.endsWith("-bulwark-job000000001")).toBe(true);
      }
    }
    // Two long names that share their first 70 characters do not meet.
    const shared = "x".repeat(70);
    expect(derivedResourceName(`${shared}-os-disk`, "t", 80)).not.toBe(derivedResourceName(`${shared}-data-disk`, "t", 80));
  });
});

describe("a SQL backup of a database whose name has Azure's 128 characters", () => {
  let world: AzureWorld;
  let vault: string;
  beforeAll(async () => {
    world = await startWorld();
    vault = await world.newVault("long-names");
  });
  afterAll(async () => {
    await world?.stop();
  });

  it("backs it up and leaves the source database in place, with no copy behind", async () => {
    const name = "d".repeat(128);
    const server = world.emulator.sql.server(world.sample.databaseId);
    const rows = { t: [{ id: 1, note: "keep me" }] };
    world.emulator.sql.createDatabase(server, name, rows);
    const id = databaseIdIn(world, name);
    const backup = await world.cli(["backup", id, "--vault", vault, "--json"]);
    expect(backup.code, backup.stderr).toBe(0);
    const databases = world.emulator.control.inventory().databases.map((d) => d.id.split("/").at(-1));
    expect(databases).toContain(name);
    expect(databases.filter((d) => d!.includes("-bulwark-"))).toEqual([]);
    expect(world.emulator.control.databaseContent(id)).toEqual(rows);
  });
});
