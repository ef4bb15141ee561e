/**
 * The backup role covers what the runtime really calls. Every request the real CLI makes to Azure
 * Resource Manager and Key Vault (as logged by the emulator) maps to the RBAC action Azure checks for
 * it; over a run that exercises every Azure path of the runtime (a vault under a Key Vault key; VM
 * backups, first and incremental; an alternate-VM restore, and one that fails midway and compensates;
 * an Azure SQL backup and restore), each action used must be declared by backupRoleActions(), and
 * each declared action must be used.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backupRoleActions } from "../../runtime/azure/role.ts";
import { usedActions } from "./role-map.ts";
import { KiB, MiB, type AzureWorld, databaseIdIn, nicIdIn, pattern, startWorld, vmIdIn } from "./harness.ts";

let world: AzureWorld;
let withKey: Record<string, string>;
let osDiskId: string;

/** Declared but called by no command this run makes. */
const NOT_CALLED_BY_THE_CLI: string[] = [];

beforeAll(async () => {
  world = await startWorld();
  const keyUrl = `${world.sample.keyVaultUrl}/keys/${world.sample.keyName}`;
  withKey = { BULWARK_PASSPHRASE: "", BULWARK_KEY_VAULT_KEY: keyUrl };
  // A small VM of its own (the sample's disks are larger than this check needs).
  const group = world.group;
  const os = world.emulator.compute.createDisk(group, "role-vm-os", 2 * MiB, { osType: "Linux" });
  const data = world.emulator.compute.createDisk(group, "role-vm-data", 1 * MiB);
  osDiskId = os.id;
  world.emulator.control.writeDisk(os.id, 0, pattern(1, 64 * KiB));
  world.emulator.control.writeDisk(data.id, 0, pattern(2, 64 * KiB));
  const { vm } = world.emulator.compute.createVirtualMachine(group, "role-vm", {
    location: world.location,
    properties: {
      hardwareProfile: { vmSize: "Standard_B1s" },
      storageProfile: {
        osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: os.id } },
        dataDisks: [{ lun: 0, createOption: "Attach", managedDisk: { id: data.id } }],
      },
      networkProfile: { networkInterfaces: [{ id: nicIdIn(world, group, "role-vm-nic") }] },
    },
  });
  vm.provisioningState = "Succeeded";
});

afterAll(async () => {
  await world?.stop();
});

describe("the backup role", () => {
  it("holds every action the runtime's Azure calls need, and nothing they do not", async () => {
    world.emulator.requestLog.length = 0;
    const vault = `${world.dir}/role-vault`;
    const vmId = vmIdIn(world, world.group, "role-vm");
    await world.json(["init", "--vault", vault], withKey);
    await world.json(["backup", vmId, "--vault", vault], withKey);
    world.emulator.control.writeDisk(osDiskId, 0, pattern(3, 512));
    const vmPoint = (await world.json(["backup", vmId, "--vault", vault], withKey)).id as string;
    await world.json(["restore", vmPoint, "--vault", vault, "--to", vmIdIn(world, world.group, "role-vm-2"), "--nic", nicIdIn(world, world.group, "role-vm-2-nic")], withKey);
    world.emulator.control.failOperation({ method: "PUT", path: "/virtualMachines/role-vm-3", times: 1 });
    const failed = await world.cli(["restore", vmPoint, "--vault", vault, "--to", vmIdIn(world, world.group, "role-vm-3"), "--nic", nicIdIn(world, world.group, "role-vm-3-nic")], withKey);
    expect(failed.code).toBe(8);
    const sqlPoint = (await world.json(["backup", world.sample.databaseId, "--vault", vault], withKey)).id as string;
    await world.json(["restore", sqlPoint, "--vault", vault, "--to", databaseIdIn(world, "orders-role")], withKey);
    // The bridge's inventory (a resource group scope and a subscription scope) and snapshot hygiene.
    const subscription = `/subscriptions/${world.emulator.subscriptionId}`;
    const scopes = JSON.stringify([
      { scope: `${subscription}/resourceGroups/${world.group}`, region: world.location },
      { scope: subscription, region: world.location },
    ]);
    const bridge = await world.json(["agent", "bridge"], { BULWARK_PROTECTED_SCOPES: scopes, BULWARK_SNAPSHOT_GRACE_DAYS: "0" });
    expect(bridge.errors).toEqual([]);

    const log = [...world.emulator.requestLog];
    // Nothing the runtime asked for was refused for lack of a route: the map below covers real calls.
    expect(log.filter((r) => r.status === 400 && /NoRegisteredProviderFound/.test(r.path))).toEqual([]);
    const { actions, dataActions } = usedActions(log);
    const role = backupRoleActions();
    const declared = new Set(role.actions.map((a) => a.toLowerCase()));
    const declaredData = new Set(role.dataActions.map((a) => a.toLowerCase()));

    // Everything used is declared.
    expect([...actions].filter((a) => !declared.has(a)).sort()).toEqual([]);
    expect([...dataActions].filter((a) => !declaredData.has(a)).sort()).toEqual([]);
    // Everything declared is used (bar what only the scheduler calls).
    const unused = role.actions.filter((a) => !actions.has(a.toLowerCase()));
    expect(unused).toEqual(NOT_CALLED_BY_THE_CLI);
    expect(role.dataActions.filter((a) => !dataActions.has(a.toLowerCase()))).toEqual([]);
  });
});
