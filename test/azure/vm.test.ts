/**
 * VMs through the real CLI: all disks of a VM backed up together into one VM point, incrementals per
 * disk, and a point restored as an alternate VM in another resource group with the same disk layout
 * (OS disk, data disks at their LUNs with their caching) and each disk's bytes as at backup time.
 * Restores never overwrite, and a VM that fails midway leaves nothing behind.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { azureContext } from "../../runtime/azure/context.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import type { StepContext } from "../../runtime/jobs/machine.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { restoreVirtualMachine } from "../../runtime/sources/azure-vm.ts";
import { LocalFolderStore } from "../../runtime/store/local.ts";
import { workloadEnvironment } from "../../runtime/workloads/environment.ts";
import { restoreMachine } from "../../runtime/workloads/restore-machine.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { trackChild } from "../support/cleanup.ts";
import {
  KiB, MiB, type AzureWorld, bulwarkSnapshots, diskIdIn, expectNothingLeaked, nicIdIn, pattern, restoreToFile, startWorld, vmIdIn,
  expectCallsAllowedByRole,
} from "./harness.ts";

let world: AzureWorld;
let vault: string;
let vmId: string;
const RESTORE_GROUP = "bulwark-restore";
// Sizes restorable as they are: Azure's upload disks (the restore path) are whole MiB of at least 20 MiB.
const layout = [
  { role: "os", name: "app-vm-os", size: 22 * MiB, caching: "ReadWrite" },
  { role: "data", name: "app-vm-logs", size: 20 * MiB, lun: 2, caching: "ReadOnly" },
  { role: "data", name: "app-vm-db", size: 21 * MiB, lun: 5, caching: "None" },
] as const;
const diskIds: string[] = [];

beforeAll(async () => {
  world = await startWorld({ seed: false });
  vault = await world.newVault("vault");
  const group = world.group;
  for (const [i, disk] of layout.entries()) {
    const record = world.emulator.compute.createDisk(group, disk.name, disk.size, disk.role === "os" ? { osType: "Linux" } : {});
    diskIds.push(record.id);
    for (let offset = 0; offset < disk.size; offset += 1 * MiB) world.emulator.control.writeDisk(record.id, offset, pattern(i * 100 + offset / MiB, 96 * KiB));
  }
  // Richer than the sample VM (one data disk at LUN 0): two data disks at LUNs 2 and 5 with their own caching.
  const { vm } = world.emulator.compute.createVirtualMachine(group, "app-vm", {
    location: world.location,
    properties: {
      hardwareProfile: { vmSize: "Standard_D2s_v5" },
      storageProfile: {
        osDisk: { osType: "Linux", createOption: "Attach", caching: layout[0].caching, managedDisk: { id: diskIds[0] } },
        dataDisks: layout.slice(1).map((d, i) => ({ lun: (d as { lun: number }).lun, caching: d.caching, createOption: "Attach", managedDisk: { id: diskIds[i + 1] } })),
      },
      networkProfile: { networkInterfaces: [{ id: nicIdIn(world, group, "app-vm-nic"), properties: { primary: true } }] },
    },
  });
  vm.provisioningState = "Succeeded";
  vmId = vm.id;
  world.emulator.world.addResourceGroup(RESTORE_GROUP, world.location);
});

afterAll(async () => {
  await world?.stop();
});

function images(): Buffer[] {
  return diskIds.map((id) => world.emulator.control.readImage(id));
}

function vmRecord(id: string) {
  return [...world.emulator.compute.virtualMachines.values()].find((v) => v.id.toLowerCase() === id.toLowerCase());
}

describe("VM backups and alternate-VM restores", () => {
  let firstPoint = "";
  let firstImages: Buffer[] = [];

  it("backs up every disk of a VM into one VM point, then incrementally", async () => {
    firstImages = images();
    const first = await world.json(["backup", vmId, "--vault", vault]);
    firstPoint = first.id;
    expect(first.kind).toBe("vm");
    expect(first.disks.map((d: { disk: string }) => d.disk)).toEqual(diskIds);
    expect(first.disks.every((d: { mode: string }) => d.mode === "first")).toBe(true);
    await expectNothingLeaked(world, diskIds);

    // The VM keeps running: the log disk and the OS disk change, the database disk does not.
    world.emulator.control.writeDisk(diskIds[1]!, 512 * KiB, pattern(900, 8 * KiB));
    world.emulator.control.writeDisk(diskIds[0]!, 7 * MiB, pattern(901, 4 * KiB));
    const goldenBefore = bulwarkSnapshots(world).map((s) => s.id);
    const second = await world.json(["backup", vmId, "--vault", vault]);
    expect(second.disks.map((d: { mode: string }) => d.mode)).toEqual(["incremental", "incremental", "incremental"]);
    expect(second.disks.map((d: { changedBytes: number }) => d.changedBytes)).toEqual([4 * KiB, 8 * KiB, 0]);
    // Only the changed pages: each partly changed block is patched from the previous point (backup-blocks.ts).
    expect(second.disks.map((d: { bytesFetched: number }) => d.bytesFetched)).toEqual([4 * KiB, 8 * KiB, 0]);
    // New golden snapshots replaced the old ones, one per disk.
    expect(bulwarkSnapshots(world).map((s) => s.id).filter((id) => goldenBefore.includes(id))).toEqual([]);
    await expectNothingLeaked(world, diskIds);
  });

  it("restores the first point as an alternate VM with the same disk layout and the bytes of its time", async () => {
    const target = vmIdIn(world, RESTORE_GROUP, "app-vm-restored");
    const nic = nicIdIn(world, RESTORE_GROUP, "app-vm-restored-nic");
    const restored = await world.json(["restore", firstPoint, "--vault", vault, "--to", target, "--nic", nic]);
    expect(restored.kind).toBe("virtual-machine");
    const original = vmRecord(vmId)!.properties;
    const copy = vmRecord(target)!;
    expect(copy.provisioningState).toBe("Succeeded");
    expect(copy.location).toBe(world.location);
    expect(copy.properties.hardwareProfile).toEqual({ vmSize: "Standard_D2s_v5" });
    expect(copy.properties.networkProfile.networkInterfaces.map((n: { id: string }) => n.id)).toEqual([nic]);
    const osDisk = copy.properties.storageProfile.osDisk;
    expect({ osType: osDisk.osType, caching: osDisk.caching }).toEqual({ osType: "Linux", caching: original.storageProfile.osDisk.caching });
    const shape = (disks: Array<{ lun: number; caching: string }>) => disks.map((d) => ({ lun: d.lun, caching: d.caching }));
    expect(shape(copy.properties.storageProfile.dataDisks)).toEqual(shape(original.storageProfile.dataDisks));
    expect(shape(copy.properties.storageProfile.dataDisks)).toEqual([{ lun: 2, caching: "ReadOnly" }, { lun: 5, caching: "None" }]);

    // Each new disk lives in the target group, is attached to the new VM and holds the bytes of backup time.
    const newDisks = [osDisk.managedDisk.id, ...copy.properties.storageProfile.dataDisks.map((d: { managedDisk: { id: string } }) => d.managedDisk.id)];
    for (const [i, id] of newDisks.entries()) {
      expect(id).toContain(`/resourceGroups/${RESTORE_GROUP}/`);
      const disk = world.emulator.control.inventory().disks.find((d) => d.id === id)!;
      expect(disk).toMatchObject({ managedBy: copy.id, diskState: "Attached", sizeBytes: layout[i]!.size });
      expect(world.emulator.control.readImage(id).equals(firstImages[i]!), `disk ${i}`).toBe(true);
    }
    expect(images()[1]!.equals(firstImages[1]!)).toBe(false);
    await expectNothingLeaked(world, diskIds);
  });

  it("refuses to restore over an existing VM, with the original's NIC, or without a NIC", async () => {
    const disksBefore = world.emulator.control.inventory().disks.length;
    const over = await world.cli(["restore", firstPoint, "--vault", vault, "--to", vmId, "--nic", nicIdIn(world, RESTORE_GROUP, "other-nic")]);
    expect(over.code).toBe(2);
    expect(over.stderr).toMatch(/already exists; restores never overwrite/);
    const stolenNic = await world.cli(["restore", firstPoint, "--vault", vault, "--to", vmIdIn(world, RESTORE_GROUP, "vm-x"), "--nic", nicIdIn(world, world.group, "app-vm-nic")]);
    expect(stolenNic.code).toBe(2);
    expect(stolenNic.stderr).toMatch(/belongs to the original VM/);
    const noNic = await world.cli(["restore", firstPoint, "--vault", vault, "--to", vmIdIn(world, RESTORE_GROUP, "vm-y")]);
    expect(noNic.code).toBe(2);
    expect(noNic.stderr).toMatch(/--nic/);
    expect(world.emulator.control.inventory().disks.length).toBe(disksBefore);
    expect(vmRecord(vmIdIn(world, RESTORE_GROUP, "vm-x"))).toBeUndefined();
  });

  it("removes the VM and its new disks when creating the VM fails midway", async () => {
    const target = vmIdIn(world, RESTORE_GROUP, "app-vm-fails");
    const disksBefore = world.emulator.control.inventory().disks.map((d) => d.id).sort();
    world.emulator.control.failOperation({ method: "PUT", path: "/virtualMachines/app-vm-fails", times: 1, code: "AllocationFailed", message: "Allocation failed midway (injected)." });
    const failed = await world.cli(["restore", firstPoint, "--vault", vault, "--to", target, "--nic", nicIdIn(world, RESTORE_GROUP, "fails-nic")]);
    expect(failed.code).toBe(8);
    expect(failed.stderr).toMatch(/AllocationFailed/);
    expect(vmRecord(target)).toBeUndefined();
    expect(world.emulator.control.inventory().disks.map((d) => d.id).sort()).toEqual(disksBefore);
    await expectNothingLeaked(world, diskIds);
  });

  describe("restores delete only what they made, and resume (issue 8, item 11)", () => {
    const saved: Record<string, string | undefined> = {};
    const here = path.dirname(fileURLToPath(import.meta.url));
    beforeAll(() => {
      // In-process Azure calls take the emulator's identity from this process's environment, as the agents do.
      for (const name of ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"]) {
        saved[name] = process.env[name];
        process.env[name] = world.env[name];
      }
    });
    afterAll(() => {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    });
    const openVault = () => Vault.open(new LocalFolderStore(vault), new PassphraseProvider(PASSPHRASE));
    const diskRecord = (id: string) => world.emulator.compute.disks.get(id.toLowerCase()) ?? [...world.emulator.compute.disks.values()].find((d) => d.id.toLowerCase() === id.toLowerCase());
    const diskIdsNow = () => world.emulator.control.inventory().disks.map((d) => d.id).sort();
    /** A VM that someone else made (not a restore): its own OS disk, NIC and tags. */
    const someonesVm = (name: string) => {
      const os = world.emulator.compute.createDisk(RESTORE_GROUP, `${name}-own-os`, 1 * MiB, { osType: "Linux" });
      const { vm } = world.emulator.compute.createVirtualMachine(RESTORE_GROUP, name, {
        location: world.location,
        tags: { owner: "someone else" },
        properties: {
          hardwareProfile: { vmSize: "Standard_B1s" },
          storageProfile: { osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: os.id } } },
          networkProfile: { networkInterfaces: [{ id: nicIdIn(world, RESTORE_GROUP, `${name}-own-nic`), properties: { primary: true } }] },
        },
      });
      vm.provisioningState = "Succeeded";
      return vm;
    };

    it("a VM restore that fails after creating its disks removes exactly those and leaves a same-named pre-existing VM alone", async () => {
      const target = vmIdIn(world, RESTORE_GROUP, "app-vm-raced");
      const before = diskIdsNow();
      const opened = await openVault();
      const point = await opened.readPoint(firstPoint);
      const pool = new CodecPool(opened.master, { threads: 1 });
      let theirs: ReturnType<typeof someonesVm> | undefined;
      let theirsBefore = "";
      try {
        const attempt = restoreVirtualMachine(await azureContext(world.env), opened, pool, point, target, {
          nicIds: [nicIdIn(world, RESTORE_GROUP, "app-vm-raced-nic")],
          onProgress() {
            // While the restore writes its disks, someone creates a VM of the target's name.
            if (theirs) return;
            theirs = someonesVm("app-vm-raced");
            theirsBefore = JSON.stringify(world.emulator.compute.vmJson(theirs));
          },
        });
        await expect(attempt).rejects.toThrow(/the VM .*app-vm-raced was created by someone else while its disks were restored; restores never overwrite/);
      } finally {
        await pool.close();
      }
      // Their VM is as they made it; every disk this restore made is gone, theirs stays.
      expect(theirs).toBeDefined();
      expect(JSON.stringify(world.emulator.compute.vmJson(vmRecord(target)!))).toBe(theirsBefore);
      expect(diskIdsNow()).toEqual([...before, diskIdIn(world, RESTORE_GROUP, "app-vm-raced-own-os")].sort());
      await expectNothingLeaked(world, diskIds);
    });

    it("a worker's restore onto an existing disk it did not create is refused and leaves that disk untouched", async () => {
      const opened = await openVault();
      const vmPoint = await opened.readPoint(firstPoint);
      const logsPoint = vmPoint.members!.find((m) => m.lun === 2)!.point;
      // Someone's disk at the disk target, and someone's disk where a VM restore puts its OS disk.
      const occupied = world.emulator.compute.createDisk(RESTORE_GROUP, "occupied-disk", 4 * MiB);
      world.emulator.control.writeDisk(occupied.id, 0, pattern(777, 64 * KiB));
      occupied.tags = { owner: "someone else" };
      const occupiedOs = world.emulator.compute.createDisk(RESTORE_GROUP, "vm-occupied-osdisk", 8 * MiB, { osType: "Linux" });
      world.emulator.control.writeDisk(occupiedOs.id, 0, pattern(778, 64 * KiB));
      const snapshot = (id: string) => ({ image: world.emulator.control.readImage(id), json: JSON.stringify(diskRecord(id)!.tags), state: diskRecord(id)!.diskState });
      const beforeDisk = snapshot(occupied.id);
      const beforeOs = snapshot(occupiedOs.id);
      const before = diskIdsNow();

      const env = await workloadEnvironment({ ...world.env, BULWARK_PASSPHRASE: PASSPHRASE });
      const machine = restoreMachine(env);
      const ctx = (jobId: string) => ({ jobId, job: { jobId, runs: 1 }, signal: new AbortController().signal, clock: { now: () => Date.now() }, log: () => {} }) as unknown as StepContext;
      const onto = (target: string, pointId: string, nic: string[] = []) => machine.states.restore!.step(ctx(`9999999999999-${Math.random().toString(16).slice(2, 10)}`), machine.start({ vault, pointId, target, nicIds: nic }));

      const disk = onto(occupied.id, logsPoint);
      await expect(disk).rejects.toThrow(/the disk .*occupied-disk already exists; restores never overwrite/);
      expect(machine.retryable!(await disk.catch((e) => e))).toBe(false); // the job fails at once, no retries
      const vm = onto(vmIdIn(world, RESTORE_GROUP, "vm-occupied"), firstPoint, [nicIdIn(world, RESTORE_GROUP, "vm-occupied-nic")]);
      await expect(vm).rejects.toThrow(/the disk .*vm-occupied-osdisk already exists; restores never overwrite/);

      expect(snapshot(occupied.id)).toEqual(beforeDisk);
      expect(snapshot(occupiedOs.id)).toEqual(beforeOs);
      expect(diskIdsNow()).toEqual(before);
      expect(vmRecord(vmIdIn(world, RESTORE_GROUP, "vm-occupied"))).toBeUndefined();
      await expectNothingLeaked(world, diskIds);
    });

    it("a VM restore killed midway resumes with the same restore id and produces the right bytes", async () => {
      const target = vmIdIn(world, RESTORE_GROUP, "app-vm-resumed");
      const restoreId = `9999999999999-${Math.random().toString(16).slice(2, 14)}`;
      const childEnv = {
        ...process.env, ...world.env, BULWARK_PASSPHRASE: PASSPHRASE, BULWARK_TEST_VAULT: vault, BULWARK_TEST_POINT: firstPoint,
        BULWARK_TEST_TARGET: target, BULWARK_TEST_NIC: nicIdIn(world, RESTORE_GROUP, "app-vm-resumed-nic"), BULWARK_TEST_RESTORE_ID: restoreId,
      };
      const run = (extra: Record<string, string>) => {
        const child = spawn(process.execPath, [path.join(here, "vm-restore-child.ts")], { env: { ...childEnv, ...extra }, stdio: ["ignore", "pipe", "pipe"] });
        trackChild(child);
        let stderr = "";
        child.stderr!.on("data", (d) => (stderr += d));
        const events: Record<string, any>[] = [];
        const waitFor = (event: string) =>
          new Promise<Record<string, any>>((resolve, reject) => {
            createInterface({ input: child.stdout! }).on("line", (line) => {
              const parsed = JSON.parse(line);
              events.push(parsed);
              if (parsed.event === event) resolve(parsed);
            });
            child.once("exit", (code) => reject(new Error(`the restore exited (${code}) before ${event}: ${stderr}`)));
          });
        return { child, waitFor, exited: new Promise((resolve) => child.once("exit", resolve)) };
      };

      // The first run stops inside the second disk (LUN 2), as a killed worker would, and is killed.
      const first = run({ BULWARK_TEST_PAUSE_AT_DISK: "1" });
      await first.waitFor("test.paused");
      first.child.kill("SIGKILL");
      await first.exited;
      const osId = diskIdIn(world, RESTORE_GROUP, "app-vm-resumed-osdisk");
      const logsId = diskIdIn(world, RESTORE_GROUP, "app-vm-resumed-datadisk-lun2");
      expect(diskRecord(osId)).toMatchObject({ diskState: "Unattached", tags: expect.objectContaining({ "bulwark-restore-job": restoreId }) });
      expect(diskRecord(logsId)).toMatchObject({ diskState: "ActiveUpload", tags: expect.objectContaining({ "bulwark-restore-job": restoreId }) });
      expect(vmRecord(target)).toBeUndefined();
      const osUniqueId = diskRecord(osId)!.uniqueId;
      const logsUniqueId = diskRecord(logsId)!.uniqueId;

      // The same restore again: the finished OS disk is reused, the half-written one made again.
      const second = run({});
      const done = await second.waitFor("test.done");
      await second.exited;
      expect(done.vmId).toBe(target);
      const copy = vmRecord(target)!;
      expect(copy).toMatchObject({ provisioningState: "Succeeded", tags: expect.objectContaining({ "bulwark-restore-job": restoreId }) });
      expect(diskRecord(osId)!.uniqueId).toBe(osUniqueId);
      expect(diskRecord(logsId)!.uniqueId).not.toBe(logsUniqueId);
      const newDisks = [copy.properties.storageProfile.osDisk.managedDisk.id, ...copy.properties.storageProfile.dataDisks.map((d: { managedDisk: { id: string } }) => d.managedDisk.id)];
      expect(newDisks.map((id: string) => id.toLowerCase())).toEqual([osId, logsId, diskIdIn(world, RESTORE_GROUP, "app-vm-resumed-datadisk-lun5")].map((id) => id.toLowerCase()));
      for (const [i, id] of newDisks.entries()) expect(world.emulator.control.readImage(id).equals(firstImages[i]!), `disk ${i}`).toBe(true);
      await expectNothingLeaked(world, diskIds);
    });
  });

  it("a snapshot of one disk failing midway fails the VM backup and releases the other disks' new snapshots", async () => {
    const golden = bulwarkSnapshots(world).map((s) => s.id).sort();
    const points = await world.json<unknown[]>(["points", "--vault", vault]);
    world.emulator.control.failOperation({ method: "PUT", path: "/snapshots/app-vm-db-bulwark-", times: 1, message: "Snapshot creation failed midway (injected)." });
    const failed = await world.cli(["backup", vmId, "--vault", vault]);
    expect(failed.code).toBe(8);
    expect(failed.stderr).toMatch(/creating an incremental snapshot of .*app-vm-db failed: .*failed midway/);
    expect(bulwarkSnapshots(world).map((s) => s.id).sort()).toEqual(golden);
    expect(await world.json<unknown[]>(["points", "--vault", vault])).toEqual(points);
    await expectNothingLeaked(world, diskIds);
  });

  it("a disk failing after another disk's point was committed: still one golden snapshot per disk, and the next backup is incremental", async () => {
    world.emulator.control.writeDisk(diskIds[0]!, 3 * MiB, pattern(902, 4 * KiB));
    world.emulator.control.writeDisk(diskIds[2]!, 3 * MiB, pattern(903, 4 * KiB));
    // The OS disk's point is committed, then read access to the log disk's snapshot fails.
    world.emulator.control.failOperation({ method: "POST", path: /\/snapshots\/app-vm-logs-bulwark-[^/]+\/beginGetAccess$/i, times: 1, message: "Granting access failed midway (injected)." });
    const failed = await world.cli(["backup", vmId, "--vault", vault]);
    expect(failed.code).toBe(8);
    expect(failed.stderr).toMatch(/getting read access to snapshot .*app-vm-logs.* failed midway/);
    await expectNothingLeaked(world, diskIds);

    const images = diskIds.map((id) => world.emulator.control.readImage(id));
    const next = await world.json(["backup", vmId, "--vault", vault]);
    expect(next.disks.map((d: { mode: string }) => d.mode)).toEqual(["incremental", "incremental", "incremental"]);
    await expectNothingLeaked(world, diskIds);
    for (const [i, disk] of (next.disks as Array<{ id: string }>).entries()) {
      expect((await restoreToFile(world, vault, disk.id, `vm-next-${i}.img`)).equals(images[i]!), `disk ${i}`).toBe(true);
    }
  });

  it("made only Azure calls that the backup role allows", () => {
    expectCallsAllowedByRole(world);
  });
});
