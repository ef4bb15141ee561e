/**
 * Each identity's role covers what the runtime really calls under it. Every request the real CLI
 * makes to Azure Resource Manager and Key Vault (as logged by the emulator) maps to the RBAC action
 * Azure checks for it (role-map.ts). The run exercises every Azure path of the runtime, grouped by
 * the identity that makes those calls in a deployment:
 * - backup (the worker's own identity): a vault under a Key Vault key; VM backups, first and
 *   incremental; an Azure SQL backup;
 * - restore (the worker's restore identity): an alternate-VM restore, one that fails midway and
 *   compensates, an Azure SQL restore (the vault key is still the worker's own identity's);
 * - bridge: its inventory of a resource group and a subscription, and snapshot hygiene (a leaked
 *   newer Bulwark snapshot makes it retire the older one);
 * - inventory (the scheduler): one tick over an explicit and a tagged policy.
 * For each identity, every action used is in its role (roleActionsFor), and every action its role
 * holds is used.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFile } from "node:fs/promises";
import { ComputeManagementClient } from "@azure/arm-compute";
import { randomBytes } from "node:crypto";
import { type AzureIdentity, roleActionsFor } from "../../runtime/azure/role.ts";
import type { LoggedRequest } from "../emulator/server.ts";
import { usedActions } from "./role-map.ts";
import { KiB, MiB, type AzureWorld, databaseIdIn, nicIdIn, pattern, startWorld, vmIdIn } from "./harness.ts";

let world: AzureWorld;
let withKey: Record<string, string>;
let osDiskId: string;

/** What the emulator logged while `run` ran. */
async function logged(run: () => Promise<void>): Promise<LoggedRequest[]> {
  const from = world.emulator.requestLog.length;
  await run();
  return world.emulator.requestLog.slice(from);
}

/**
 * Declared for an identity but called by no command this run makes: the worker's job authority
 * lists tagged resources to check a backup job's item (policy/authority.ts), which only a worker
 * does (test/fleet runs it).
 */
const NOT_CALLED_BY_THE_CLI: Partial<Record<AzureIdentity, string[]>> = {
  backup: ["microsoft.resources/subscriptions/resources/read"],
};

/** Lower-cased, sorted: Azure compares action names case-insensitively. */
const lower = (actions: Iterable<string>) => [...actions].map((a) => a.toLowerCase()).sort();

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

describe("each identity's role", () => {
  it("holds every action the runtime's calls under that identity need, and nothing they do not", async () => {
    const vault = `${world.dir}/role-vault`;
    const vmId = vmIdIn(world, world.group, "role-vm");
    let vmPoint = "";
    let sqlPoint = "";
    const backup = await logged(async () => {
      await world.json(["init", "--vault", vault], withKey);
      await world.json(["backup", vmId, "--vault", vault], withKey);
      world.emulator.control.writeDisk(osDiskId, 0, pattern(3, 512));
      vmPoint = (await world.json(["backup", vmId, "--vault", vault], withKey)).id as string;
      sqlPoint = (await world.json(["backup", world.sample.databaseId, "--vault", vault], withKey)).id as string;
    });
    const restore = await logged(async () => {
      await world.json(["restore", vmPoint, "--vault", vault, "--to", vmIdIn(world, world.group, "role-vm-2"), "--nic", nicIdIn(world, world.group, "role-vm-2-nic")], withKey);
      world.emulator.control.failOperation({ method: "PUT", path: "/virtualMachines/role-vm-3", times: 1 });
      const failed = await world.cli(["restore", vmPoint, "--vault", vault, "--to", vmIdIn(world, world.group, "role-vm-3"), "--nic", nicIdIn(world, world.group, "role-vm-3-nic")], withKey);
      expect(failed.code).toBe(8);
      await world.json(["restore", sqlPoint, "--vault", vault, "--to", databaseIdIn(world, "orders-role")], withKey);
    });
    const subscription = `/subscriptions/${world.emulator.subscriptionId}`;
    // A newer Bulwark snapshot of the OS disk (as a failed job leaves one), so the bridge retires the golden one.
    const compute = new ComputeManagementClient(world.emulator.credential(), world.emulator.subscriptionId, { endpoint: world.emulator.armEndpoint });
    await compute.snapshots.beginCreateOrUpdateAndWait(world.group, "role-vm-os-bulwark-leaked", {
      location: world.location,
      incremental: true,
      creationData: { createOption: "Copy", sourceResourceId: osDiskId },
      tags: { "bulwark-managed": "true", "bulwark-disk": osDiskId },
    });
    const bridge = await logged(async () => {
      // The bridge's inventory (a resource group scope and a subscription scope) and snapshot hygiene.
      const scopes = JSON.stringify([
        { scope: `${subscription}/resourceGroups/${world.group}`, region: world.location },
        { scope: subscription, region: world.location },
      ]);
      const report = await world.json(["agent", "bridge"], { BULWARK_PROTECTED_SCOPES: scopes, BULWARK_SNAPSHOT_GRACE_DAYS: "0" });
      expect(report.errors).toEqual([]);
    });
    const inventory = await logged(async () => {
      // One scheduler tick: an explicit VM, disk and database, and disks selected by tag.
      const explicit = `${world.dir}/role-explicit.yaml`;
      const tagged = `${world.dir}/role-tagged.yaml`;
      await writeFile(explicit, `name: role-explicit\nvault: ${vault}\nprotect:\n  resources:\n    - ${vmId}\n    - ${osDiskId}\n    - ${world.sample.databaseId}\nschedule:\n  every: 1d\nretention:\n  last: 5\n`);
      await writeFile(tagged, `name: role-tagged\nvault: ${vault}\nprotect:\n  tagged:\n    type: Microsoft.Compute/disks\n    tag: backup=gold\n    subscriptions: [${world.emulator.subscriptionId}]\nschedule:\n  every: 1d\nretention:\n  last: 5\n`);
      await world.json(["agent", "schedule", "--policies", `${explicit},${tagged}`, "--agent-regions", world.location], { BULWARK_FLEET_PREFIX: `r${randomBytes(4).toString("hex")}` });
    });

    const all = [...backup, ...restore, ...bridge, ...inventory];
    // Nothing the runtime asked for was refused for lack of a route: the map covers real calls.
    expect(all.filter((r) => r.status === 400 && /NoRegisteredProviderFound/.test(r.path))).toEqual([]);
    const used: Record<Exclude<AzureIdentity, "prune">, ReturnType<typeof usedActions>> = {
      backup: usedActions(backup),
      restore: usedActions(restore),
      bridge: usedActions(bridge),
      inventory: usedActions(inventory),
    };
    for (const identity of ["backup", "restore", "bridge", "inventory"] as const) {
      const role = roleActionsFor(identity);
      // Everything used is in the identity's role, and everything in its role is used.
      expect({ identity, missing: lower(used[identity].actions).filter((a) => !lower(role.actions).includes(a)) }).toEqual({ identity, missing: [] });
      expect({ identity, unused: lower(role.actions).filter((a) => !used[identity].actions.has(a)) }).toEqual({ identity, unused: NOT_CALLED_BY_THE_CLI[identity] ?? [] });
    }
    // The vault's key is the worker's own identity's, restores included (they open the vault as the
    // worker); the scheduler and the bridge never touch it.
    const keyUse = new Set([...used.backup.dataActions, ...used.restore.dataActions]);
    expect(lower(keyUse)).toEqual(lower(roleActionsFor("backup").dataActions));
    expect([...used.bridge.dataActions, ...used.inventory.dataActions]).toEqual([]);
  });
});
