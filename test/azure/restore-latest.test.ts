/**
 * `restore latest` to an Azure target (issue 8, item 12): a vault holding a VM's points has two
 * disk sources (its OS and data disk) and one VM source. A managed-disk target takes disk points
 * only, so `latest` there is ambiguous and refused with both disks listed; `--source` chooses one;
 * a VM target takes the VM's point, the only VM source, without asking.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startWorld, type AzureWorld } from "./harness.ts";

describe("restore latest to Azure targets", () => {
  let world: AzureWorld;
  let vault: string;
  let vmPoint: string;

  beforeAll(async () => {
    world = await startWorld();
    vault = await world.newVault("latest");
    vmPoint = (await world.json(["backup", world.sample.vmId, "--vault", vault])).id;
  });

  afterAll(async () => {
    await world?.stop();
  });

  test("latest to a new managed disk with two disk sources refuses, lists both, and creates nothing", async () => {
    const target = world.sample.osDiskId.replace(/\/disks\/[^/]+$/, "/disks/latest-ambiguous");
    const result = await world.cli(["restore", "latest", "--vault", vault, "--to", target]);
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split("\n");
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^bulwark restore: "latest" is ambiguous.*--source/);
    expect(lines[0].toLowerCase()).toContain(world.sample.osDiskId.toLowerCase());
    expect(lines[0].toLowerCase()).toContain(world.sample.dataDiskId.toLowerCase());
    expect(world.emulator.control.inventory().disks.filter((d) => /latest-ambiguous/i.test(d.id))).toEqual([]);
  });

  test("latest --source DISK-ID restores that disk's newest point to a new managed disk, with the disk's bytes", async () => {
    const target = world.sample.dataDiskId.replace(/\/disks\/[^/]+$/, "/disks/latest-chosen");
    const restored = await world.json(["restore", "latest", "--vault", vault, "--to", target, "--source", world.sample.dataDiskId.toUpperCase()]);
    expect(String(restored.source).toLowerCase()).toBe(world.sample.dataDiskId.toLowerCase());
    const original = world.emulator.control.readImage(world.sample.dataDiskId);
    const copy = world.emulator.control.readImage(target);
    expect(copy.subarray(0, original.length).equals(original)).toBe(true);
  });

  test("latest to a VM target takes the only VM source's point, then asks for the NIC a VM restore needs", async () => {
    const points = await world.json<{ id: string; kind: string }[]>(["points", "--vault", vault]);
    expect(points.filter((p) => p.kind === "vm").map((p) => p.id)).toEqual([vmPoint]);
    // Only a VM point gets this far: "latest" was not ambiguous among the three sources.
    const result = await world.cli(["restore", "latest", "--vault", vault, "--to", world.sample.vmId.replace(/\/virtualMachines\/[^/]+$/, "/virtualMachines/latest-vm")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^bulwark restore: an alternate VM needs its own network interface: pass --nic/);
  });
});
