/**
 * `bulwark agent bridge`, the in-tenant agent: the inventory of each protected scope (resources
 * outside the scope's region flagged), and the retirement of Bulwark snapshots nothing needs: for
 * each disk every Bulwark snapshot but the newest, once past the grace period; others, and
 * snapshots Bulwark did not make, are left alone.
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
  const disk = world.emulator.compute.createDisk(world.group, "bridge-disk", 2 * MiB);
  diskId = disk.id;
  world.emulator.control.writeDisk(diskId, 0, pattern(7, 64 * KiB));
  world.emulator.compute.createDisk(world.group, "far-disk", 1 * MiB, { location: "eastus" });
  compute = new ComputeManagementClient(world.emulator.credential(), world.emulator.subscriptionId, { endpoint: world.emulator.armEndpoint });
});

afterAll(async () => {
  await world?.stop();
});

async function snapshot(name: string, tags: Record<string, string>): Promise<string> {
  const made = await compute.snapshots.beginCreateOrUpdateAndWait(world.group, name, {
    location: world.location,
    incremental: true,
    creationData: { createOption: "Copy", sourceResourceId: diskId },
    tags,
  });
  return made.id!;
}

describe("the bridge", () => {
  it("inventories each scope, flags resources outside its region, and retires all but the newest Bulwark snapshot per disk", async () => {
    await world.json(["backup", diskId, "--vault", vault]);
    const [golden] = bulwarkSnapshots(world).map((s) => s.id);
    // A snapshot a failed job left behind (newer), and one Bulwark did not make.
    const leaked = await snapshot("bridge-disk-bulwark-leaked", { "bulwark-managed": "true", "bulwark-disk": diskId });
    const foreign = await snapshot("someone-elses", {});
    const scopes = JSON.stringify([{ scope: `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${world.group}`, region: world.location }]);

    // Within the grace period nothing is retired.
    const waiting = await world.json(["agent", "bridge"], { BULWARK_PROTECTED_SCOPES: scopes, BULWARK_SNAPSHOT_GRACE_DAYS: "7" });
    expect(waiting.errors).toEqual([]);
    const scope = (waiting.scopes as { items: number; outOfRegion: { id: string; location: string }[] }[])[0];
    expect(scope.items).toBeGreaterThanOrEqual(2);
    expect(scope.outOfRegion).toEqual([expect.objectContaining({ location: "eastus" })]);
    expect((waiting.snapshots as { waiting: string[] }[])[0].waiting).toEqual([golden]);

    // Past it, every Bulwark snapshot of the disk but the newest goes; the foreign one stays.
    const retired = await world.json(["agent", "bridge"], { BULWARK_PROTECTED_SCOPES: scopes, BULWARK_SNAPSHOT_GRACE_DAYS: "0" });
    expect((retired.snapshots as { kept: string; retired: string[] }[])[0]).toMatchObject({ kept: leaked, retired: [golden] });
    const left = world.emulator.control.inventory().snapshots.map((s) => s.id.toLowerCase());
    expect(left.sort()).toEqual([leaked, foreign].map((id) => id.toLowerCase()).sort());

    // Retiring the golden snapshot costs only a full read on the next backup, never data.
    world.emulator.control.writeDisk(diskId, 128 * KiB, pattern(8, 4 * KiB));
    const next = await world.json(["backup", diskId, "--vault", vault]);
    expect(next.mode).toBe("full-fallback");
    const restored = await world.cli(["verify", "--vault", vault, "--read-data"]);
    expect(restored.code).toBe(0);
  });

  it("refuses scopes that are not a JSON list of {scope, region}", async () => {
    const result = await world.cli(["agent", "bridge"], { BULWARK_PROTECTED_SCOPES: "westeurope" });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/BULWARK_PROTECTED_SCOPES is not valid JSON/);
  });
});
