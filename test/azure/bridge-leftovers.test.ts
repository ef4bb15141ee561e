/**
 * `bulwark agent bridge` retires what a killed backup left (issue 8, item 15): a Bulwark snapshot a
 * killed run still had read access to (its SAS grant never revoked) is revoked, then deleted, once
 * past the grace period; Azure refuses to delete a snapshot with an active SAS, so without the
 * revocation the leftover would stay forever.
 */
import { ComputeManagementClient } from "@azure/arm-compute";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KiB, MiB, type AzureWorld, bulwarkSnapshots, pattern, startWorld } from "./harness.ts";

let world: AzureWorld;
let vault: string;
let diskId: string;
let compute: ComputeManagementClient;

beforeAll(async () => {
  world = await startWorld({ seed: false });
  vault = await world.newVault("vault");
  const disk = world.emulator.compute.createDisk(world.group, "leftover-disk", 2 * MiB);
  diskId = disk.id;
  world.emulator.control.writeDisk(diskId, 0, pattern(3, 64 * KiB));
  compute = new ComputeManagementClient(world.emulator.credential(), world.emulator.subscriptionId, { endpoint: world.emulator.armEndpoint });
});

afterAll(async () => {
  await world?.stop();
});

describe("the bridge and a killed backup's leftovers", () => {
  it("revokes the open read grant of a snapshot it retires, then deletes it", async () => {
    await world.json(["backup", diskId, "--vault", vault]);
    const [golden] = bulwarkSnapshots(world).map((s) => s.id);
    const goldenName = golden.split("/").at(-1)!;
    // A killed run: its new snapshot stays, and the read grants it took (on both) were never revoked.
    const leaked = await compute.snapshots.beginCreateOrUpdateAndWait(world.group, "leftover-disk-bulwark-killed", {
      location: world.location,
      incremental: true,
      creationData: { createOption: "Copy", sourceResourceId: diskId },
      tags: { "bulwark-managed": "true", "bulwark-disk": diskId },
    });
    await compute.snapshots.beginGrantAccessAndWait(world.group, goldenName, { access: "Read", durationInSeconds: 3600 });
    expect(world.emulator.control.inventory().activeSasGrants.filter((g) => g.resourceId.toLowerCase() === golden.toLowerCase())).toHaveLength(1);

    const scopes = JSON.stringify([{ scope: `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${world.group}`, region: world.location }]);
    const report = await world.json(["agent", "bridge"], { BULWARK_PROTECTED_SCOPES: scopes, BULWARK_SNAPSHOT_GRACE_DAYS: "0" });
    expect(report.errors).toEqual([]);
    expect((report.snapshots as { kept: string; retired: string[] }[])[0]).toMatchObject({ kept: leaked.id, retired: [golden] });
    expect(bulwarkSnapshots(world).map((s) => s.id.toLowerCase())).toEqual([leaked.id!.toLowerCase()]);
    expect(world.emulator.control.inventory().activeSasGrants.filter((g) => g.resourceId.toLowerCase() === golden.toLowerCase())).toEqual([]);
  });
});
