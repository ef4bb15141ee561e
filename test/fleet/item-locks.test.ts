/**
 * Issue 8, item 7: a disk protected on its own (a tag policy) and as a member of a VM (a policy
 * naming the VM) gets two jobs per tick, a disk job and a VM job. They must never work on the disk
 * at once: a VM job's disk locks and a disk job's lock are one lock whatever the case ARM spells
 * the id in (the VM's storage profile names its data disk with the resource group in capitals, as
 * ARM does for ids it stores: resource ids are case-insensitive), and a VM job holds its disks'
 * locks before it snapshots them, on its first run too. Real `bulwark agent worker` processes,
 * Azurite and the Azure emulator; three rounds.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { KiB, MiB, expectVaultVerifies, makeDisk, pattern, restoreBytes, startFleetWorld, vaultManifests, type FleetWorld, type WorkerProcess } from "./harness.ts";

const REGION = "westeurope";
let world: FleetWorld;
let policies: string;
const ids = { vm: "", osDisk: "", dataDisk: "" };
const children: WorkerProcess[] = [];
const key = (id: string) => id.toLowerCase();

beforeAll(async () => {
  world = await startFleetWorld();
  const { emulator } = world;
  emulator.world.addResourceGroup("locks-rg", REGION);
  const os = makeDisk(world, "locks-rg", "lk-os", 2 * MiB, { seed: 21 });
  os.osType = "Linux";
  os.hyperVGeneration = "V2";
  const data = makeDisk(world, "locks-rg", "lk-data", 2 * MiB, { seed: 22, tags: { solo: "yes" } });
  const { vm } = emulator.compute.createVirtualMachine("locks-rg", "lk-vm", {
    location: REGION,
    properties: {
      hardwareProfile: { vmSize: "Standard_B2s" },
      storageProfile: {
        osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: os.id } },
        // The same disk, spelled otherwise: "LOCKS-RG", as ARM often returns a VM's disk ids.
        dataDisks: [{ lun: 0, createOption: "Attach", managedDisk: { id: data.id.replace("/resourceGroups/locks-rg/", "/resourceGroups/LOCKS-RG/") } }],
      },
      networkProfile: { networkInterfaces: [{ id: `/subscriptions/${emulator.subscriptionId}/resourceGroups/locks-rg/providers/Microsoft.Network/networkInterfaces/lk-nic`, properties: { primary: true } }] },
    },
  });
  vm.provisioningState = "Succeeded";
  Object.assign(ids, { vm: vm.id, osDisk: os.id, dataDisk: data.id });
  const vms = await world.policy(
    "vms",
    `name: vms
vault: ${world.vault}
protect:
  resources: [${vm.id}]
schedule: { every: 1d }
retention: { last: 10 }
`,
  );
  const disks = await world.policy(
    "solo-disks",
    `name: solo-disks
vault: ${world.vault}
protect:
  tagged: { type: Microsoft.Compute/disks, tag: solo=yes, subscriptions: [${emulator.subscriptionId}] }
schedule: { every: 1d }
retention: { last: 10 }
`,
  );
  policies = `${vms},${disks}`;
}, 60_000);

afterAll(async () => {
  for (const child of children) if (child.child.exitCode === null) child.child.kill("SIGKILL");
  await world?.stop();
});

/** Every `-bulwark-` snapshot of a disk. */
function snapshotsOf(diskId: string): string[] {
  return world.emulator.control
    .inventory()
    .snapshots.filter((s) => /-bulwark-/i.test(s.id) && key(s.sourceResourceId) === key(diskId))
    .map((s) => s.id);
}

/** From a job's first step that touches its disks (acquire) to its report, in the worker's log. */
function diskSpan(lines: Record<string, any>[], jobId: string): { start: number; end: number } {
  const mine = lines.filter((l) => l.jobId === jobId);
  const start = mine.find((l) => l.event === "step.start" && l.state === "acquire");
  const end = mine.find((l) => l.event === "job.report");
  if (!start || !end) throw new Error(`job ${jobId} did not run acquire and finish: ${JSON.stringify(mine.slice(-5))}`);
  return { start: Date.parse(start.time), end: Date.parse(end.time) };
}

test("a disk job and a VM job of the same disk never run at once, and neither deletes the other's golden snapshot", async () => {
  for (let round = 0; round < 3; round++) {
    // The data disk changes before each round; the images are what both jobs must restore.
    world.emulator.control.writeDisk(ids.dataDisk, (round + 1) * 256 * KiB, pattern(700 + round, 64 * KiB));
    const dataImage = world.emulator.control.readImage(ids.dataDisk);
    const osImage = world.emulator.control.readImage(ids.osDisk);

    const tick = await world.json(["agent", "schedule", "--policies", policies, "--agent-regions", REGION]);
    expect(tick.errors).toEqual([]);
    const jobs: Record<string, string> = Object.fromEntries(tick.enqueued.map((e: { item: string; jobId: string }) => [key(e.item), e.jobId]));
    expect(Object.keys(jobs).sort()).toEqual([key(ids.dataDisk), key(ids.vm)].sort());

    // One worker that takes both jobs at once, and a second one beside it.
    const workers = [0, 1].map(() => world.worker(REGION, { BULWARK_POLICIES: policies, BULWARK_MAX_JOBS_PER_WORKER: "2", BULWARK_LOCK_RETRY_MS: "500" }));
    children.push(...workers);
    const summaries = await Promise.all(workers.map((w) => w.summary()));
    expect(summaries.reduce((n, s) => n + s.succeeded, 0)).toBe(2);
    expect(summaries.reduce((n, s) => n + s.failed, 0)).toBe(0);

    // Never at once: one job's disk work ends before the other's begins.
    const lines = workers.flatMap((w) => w.lines);
    const [a, b] = [diskSpan(lines, jobs[key(ids.vm)]!), diskSpan(lines, jobs[key(ids.dataDisk)]!)].sort((x, y) => x.start - y.start);
    expect({ round, overlapMs: Math.max(0, a!.end - b!.start) }).toEqual({ round, overlapMs: 0 });

    // Neither retired the other's golden snapshot: each disk keeps exactly one.
    expect({ round, data: snapshotsOf(ids.dataDisk).length, os: snapshotsOf(ids.osDisk).length }).toEqual({ round, data: 1, os: 1 });

    // Every point of both jobs restores the disk as it was.
    const manifests = await vaultManifests(world);
    const ofJob = (jobId: string): PointManifest[] => manifests.filter((p) => p.details?.job === jobId);
    const diskPoints = ofJob(jobs[key(ids.dataDisk)]!);
    expect(diskPoints.map((p) => p.kind)).toEqual(["disk"]);
    expect((await restoreBytes(world, diskPoints[0]!.id)).equals(dataImage)).toBe(true);
    const vmPoints = ofJob(jobs[key(ids.vm)]!);
    expect(vmPoints.map((p) => p.kind).sort()).toEqual(["disk", "disk", "vm"]);
    for (const member of vmPoints.find((p) => p.kind === "vm")!.members!) {
      const expected = key(String(member.diskId)) === key(ids.osDisk) ? osImage : dataImage;
      expect({ round, member: member.diskId, equal: (await restoreBytes(world, member.point)).equals(expected) }).toEqual({ round, member: member.diskId, equal: true });
    }

    // The next round is due at once.
    const fleet = await world.fleet();
    for await (const item of fleet.items.list()) {
      await fleet.items.update(item.itemId, () => item, (current) => ({ ...current, lastGoodAt: current.lastGoodAt - 86_400_000 - 60_000 }));
    }
  }
  await expectVaultVerifies(world);
}, 240_000);
