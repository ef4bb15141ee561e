/**
 * Azure SQL through the real CLI: a backup exports a transactionally consistent copy as a BACPAC
 * through transient storage, a restore imports the point as a new database with the rows of backup
 * time; the copy and every transient BACPAC are gone afterwards, on failure too, and restores never
 * overwrite an existing database.
 */
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqlManagementClient } from "@azure/arm-sql";
import { ServiceError } from "../../runtime/errors.ts";
import { transientStorage } from "../../runtime/azure/transient.ts";
import { parseResourceId } from "../../runtime/azure/resource-id.ts";
import { exportBacpac } from "../../runtime/sources/azure-sql.ts";
import { type AzureWorld, databaseIdIn, startWorld, transientBlobs, expectCallsAllowedByRole } from "./harness.ts";

let world: AzureWorld;
let vault: string;

beforeAll(async () => {
  world = await startWorld();
  vault = await world.newVault("vault");
});

afterAll(async () => {
  await world?.stop();
});

function databases(): string[] {
  return world.emulator.control.inventory().databases.map((d) => d.id.split("/").at(-1)!).sort();
}

async function expectNoLeftovers(expected: string[]): Promise<void> {
  expect(databases()).toEqual([...expected].sort());
  expect(await transientBlobs(world)).toEqual([]);
}

describe("Azure SQL backups and restores", () => {
  let point = "";
  let rowsAtBackup: Record<string, unknown> = {};

  it("backs up the database through a consistent copy and leaves no copy or BACPAC behind", async () => {
    const { databaseId } = world.sample;
    rowsAtBackup = world.emulator.control.databaseContent(databaseId);
    const backup = await world.json(["backup", databaseId, "--vault", vault]);
    point = backup.id;
    expect(backup.kind).toBe("sql");
    expect(backup.source).toBe(databaseId);
    expect(backup.size).toBeGreaterThan(0);
    await expectNoLeftovers(["orders"]);

    // The point is the BACPAC itself: restored to a file it is a zip with the schema in it.
    const file = path.join(world.dir, "orders.bacpac");
    await world.json(["restore", point, "--vault", vault, "--to", file]);
    const bacpac = await readFile(file);
    await rm(file);
    expect(bacpac.length).toBe(backup.size);
    expect(bacpac.subarray(0, 4).toString("latin1")).toBe("PK\u0003\u0004");
    expect(bacpac.includes(Buffer.from("model.xml"))).toBe(true);
  });

  it("restores the point as a new database with the rows of backup time", async () => {
    const { databaseId } = world.sample;
    world.emulator.control.setTableRows(databaseId, "customers", [{ id: 1, name: "Changed after the backup", country: "NL" }]);
    world.emulator.control.setTableRows(databaseId, "orders", []);
    const target = databaseIdIn(world, "orders-restored");
    const restored = await world.json(["restore", point, "--vault", vault, "--to", target]);
    expect(restored.kind).toBe("sql-database");
    expect(world.emulator.control.databaseContent(target)).toEqual(rowsAtBackup);
    expect(world.emulator.control.databaseContent(databaseId)).not.toEqual(rowsAtBackup);
    await expectNoLeftovers(["orders", "orders-restored"]);
  });

  it("refuses to restore over an existing database and changes nothing", async () => {
    const before = world.emulator.control.databaseContent(world.sample.databaseId);
    const refused = await world.cli(["restore", point, "--vault", vault, "--to", world.sample.databaseId]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/already exists; restores never overwrite/);
    expect(world.emulator.control.databaseContent(world.sample.databaseId)).toEqual(before);
    await expectNoLeftovers(["orders", "orders-restored"]);
  });

  it("an export that fails midway ends the backup with a clear error and deletes the copy and the BACPAC", async () => {
    const pointsBefore = await world.json<unknown[]>(["points", "--vault", vault]);
    world.emulator.control.failOperation({ method: "POST", path: /\/databases\/orders-bulwark-[^/]+\/export$/i, times: 1, code: "ImportExportJobError", message: "The export failed midway (injected)." });
    const failed = await world.cli(["backup", world.sample.databaseId, "--vault", vault]);
    expect(failed.code).toBe(8);
    expect(failed.stderr).toMatch(/backing up database .*orders.*ImportExportJobError|export failed midway/);
    expect(await world.json<unknown[]>(["points", "--vault", vault])).toEqual(pointsBefore);
    await expectNoLeftovers(["orders", "orders-restored"]);
  });

  it("an import that fails midway ends the restore with a clear error and leaves no database or BACPAC", async () => {
    world.emulator.control.failOperation({ method: "POST", path: "/import", times: 1, code: "ImportExportJobError", message: "The import failed midway (injected)." });
    const failed = await world.cli(["restore", point, "--vault", vault, "--to", databaseIdIn(world, "orders-failed")]);
    expect(failed.code).toBe(8);
    expect(failed.stderr).toMatch(/import failed midway/);
    await expectNoLeftovers(["orders", "orders-restored"]);
  });

  it("needs the server login and transient storage, and says so", async () => {
    const noLogin = await world.cli(["backup", world.sample.databaseId, "--vault", vault], { BULWARK_SQL_ADMIN_LOGIN: "" });
    expect(noLogin.code).toBe(2);
    expect(noLogin.stderr).toMatch(/BULWARK_SQL_ADMIN_LOGIN/);
    const noTransient = await world.cli(["backup", world.sample.databaseId, "--vault", vault], { BULWARK_TRANSIENT: "" });
    expect(noTransient.code).toBe(2);
    expect(noTransient.stderr).toMatch(/BULWARK_TRANSIENT/);
    await expectNoLeftovers(["orders", "orders-restored"]);
  });

  it("hands export and import the SAS key with its leading '?', valid longer than the longest request Azure runs", () => {
    // The Import/Export API wants "?" before the SAS (the spec's DatabaseExportSasKey.json example;
    // Azure/azure-cli#2584): the emulator refuses a key without it, so every request it accepted had one.
    // A request can wait four days in the queue and an export run 20 hours (database-import-export-hang.md,
    // database-export.md): the SAS outlives both.
    const requests = world.emulator.sql.importExportRequests;
    expect(requests.map((r) => r.requestType)).toEqual(expect.arrayContaining(["Export", "Import"]));
    const floor = Date.now() + (4 * 24 + 19) * 3600_000;
    for (const request of requests) expect(request.sasExpiresOn!.getTime()).toBeGreaterThan(floor);
  });

  it("refuses a backup from a server that does not allow Azure services before making anything, and says what to change", async () => {
    const server = world.emulator.sql.server(world.sample.databaseId);
    const rules = new Map(server.firewallRules);
    server.firewallRules.delete("AllowAllWindowsAzureIps");
    try {
      const refused = await world.cli(["backup", world.sample.databaseId, "--vault", vault]);
      expect(refused.code).toBe(6);
      expect(refused.stderr).toMatch(/does not allow Azure services/);
      expect(refused.stderr).toMatch(/AllowAllWindowsAzureIps --start-ip-address 0\.0\.0\.0 --end-ip-address 0\.0\.0\.0/);
      expect(refused.stderr.trim().split("\n")).toHaveLength(1);
      const restore = await world.cli(["restore", point, "--vault", vault, "--to", databaseIdIn(world, "orders-firewalled")]);
      expect(restore.code).toBe(2);
      expect(restore.stderr).toMatch(/does not allow Azure services/);
      await expectNoLeftovers(["orders", "orders-restored"]);
    } finally {
      server.firewallRules = rules;
    }
  });

  it("an Entra-only server refuses a SQL login with what to do, and backs up through the server's managed identity", async () => {
    const server = world.emulator.sql.server(world.sample.databaseId);
    const identity = `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${world.sample.resourceGroup}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bulwark-sql-export`;
    server.azureADOnlyAuthentication = true;
    try {
      const sqlLogin = await world.cli(["backup", world.sample.databaseId, "--vault", vault]);
      expect(sqlLogin.code).toBe(6);
      expect(sqlLogin.stderr).toMatch(/allows Microsoft Entra authentication only.*BULWARK_SQL_MANAGED_IDENTITY/);
      await expectNoLeftovers(["orders", "orders-restored"]);

      const withIdentity = { BULWARK_SQL_MANAGED_IDENTITY: identity, BULWARK_SQL_ADMIN_LOGIN: "", BULWARK_SQL_ADMIN_PASSWORD: "" };
      const unassigned = await world.cli(["backup", world.sample.databaseId, "--vault", vault], withIdentity);
      expect(unassigned.code).toBe(6);
      expect(unassigned.stderr).toMatch(/is not assigned to server/);
      await expectNoLeftovers(["orders", "orders-restored"]);

      server.userAssignedIdentities = [identity];
      const backup = await world.json(["backup", world.sample.databaseId, "--vault", vault], withIdentity);
      expect(backup.kind).toBe("sql");
      expect(world.emulator.sql.importExportRequests.at(-1)).toMatchObject({ requestType: "Export", authenticationType: "ManagedIdentity" });
      await expectNoLeftovers(["orders", "orders-restored"]);
    } finally {
      server.azureADOnlyAuthentication = false;
      server.userAssignedIdentities = [];
    }
  });

  it("an export while another import or export of the database is running ends in one message saying to wait", async () => {
    const { databaseId, resourceGroup, sqlServerName, databaseName } = world.sample;
    const sql = new SqlManagementClient(world.emulator.credential(), world.emulator.subscriptionId, { endpoint: world.emulator.armEndpoint });
    const transient = transientStorage(world.transient.url, world.env, () => world.emulator.credential());
    const login = { administratorLogin: world.sample.sqlAdministratorLogin, administratorLoginPassword: world.sample.sqlAdministratorPassword };
    const running = await sql.databases.beginExport(resourceGroup, sqlServerName, databaseName, {
      storageKeyType: "SharedAccessKey", storageKey: `?${await transient.sasFor("running.bacpac")}`, storageUri: transient.urlOf("running.bacpac"), ...login,
    });
    const refused = await exportBacpac(sql, parseResourceId(databaseId), databaseName, transient, "second.bacpac", login).then(() => undefined, (error: Error) => error);
    expect(refused).toBeInstanceOf(ServiceError);
    expect(refused!.message).toMatch(/another import or export of this database is still running.*wait for it to finish/);
    await running.pollUntilDone();
    await transient.blob("running.bacpac").deleteIfExists();
    await expectNoLeftovers(["orders", "orders-restored"]);
  });

  it("made only Azure calls that the backup role allows", () => {
    expectCallsAllowedByRole(world);
  });
});
