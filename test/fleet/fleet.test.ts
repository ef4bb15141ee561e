/**
 * A fleet across two regions, end to end with the real agents: `bulwark agent schedule` resolves
 * policies (explicit ids and a tag) through the emulator's Resource Manager, and two
 * `bulwark agent worker` processes per region run the real backup machine against the emulator's
 * disks, VM and SQL database, staging in each region's transient container (Azurite) and promoting
 * into a vault in Azurite. Then: one point per item per tick, restores identical to the disks at
 * backup time, nothing left behind, incrementals on the second tick, duplicate and poison messages,
 * and a restore job.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { readBacpac } from "../emulator/arm/bacpac.ts";
import {
  KiB, MiB, REGIONS, ageItems, blobNames, expectNothingLeaked, expectVaultVerifies, makeDisk, pattern, restoreBytes, restoreToFile,
  startFleetWorld, vaultManifests, type FleetWorld, type WorkerProcess,
} from "./harness.ts";

let world: FleetWorld;
let policies: string;
const ids = { vm: "", osDisk: "", dataDisk: "", weData: "", neLogs: "", usDisk: "", silver: "", db: "" };
const regionOf: Record<string, string> = {};
/** Disk images (and the database's rows) right before each tick. */
const before: Array<Record<string, Buffer>> = [];
const rowsBefore: unknown[] = [];
/** The job of each item in each tick. */
const jobsOf: Array<Record<string, string>> = [];

const key = (id: string) => id.toLowerCase();

beforeAll(async () => {
  world = await startFleetWorld();
  const { emulator } = world;
  emulator.world.addResourceGroup("fleet-we", "westeurope");
  emulator.world.addResourceGroup("fleet-ne", "northeurope");
  emulator.world.addResourceGroup("fleet-us", "eastus");

  // westeurope: a VM (protected by id) with an OS and a data disk, and a disk tagged gold.
  const os = makeDisk(world, "fleet-we", "web1-os", 4 * MiB, { seed: 1 });
  os.osType = "Linux";
  os.hyperVGeneration = "V2";
  const data = makeDisk(world, "fleet-we", "web1-data", 2 * MiB, { seed: 2 });
  const { vm } = emulator.compute.createVirtualMachine("fleet-we", "web1", {
    location: "westeurope",
    properties: {
      hardwareProfile: { vmSize: "Standard_B2s" },
      storageProfile: {
        osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: os.id } },
        dataDisks: [{ lun: 0, createOption: "Attach", managedDisk: { id: data.id } }],
      },
      networkProfile: { networkInterfaces: [{ id: `/subscriptions/${emulator.subscriptionId}/resourceGroups/fleet-we/providers/Microsoft.Network/networkInterfaces/web1-nic`, properties: { primary: true } }] },
    },
  });
  vm.provisioningState = "Succeeded";
  ids.vm = vm.id;
  ids.osDisk = os.id;
  ids.dataDisk = data.id;
  ids.weData = makeDisk(world, "fleet-we", "we-data", 2 * MiB, { tags: { backup: "gold" }, seed: 3 }).id;
  // A disk tagged otherwise: no policy selects it.
  ids.silver = makeDisk(world, "fleet-we", "we-silver", 1 * MiB, { tags: { backup: "silver" }, seed: 4 }).id;
  // northeurope: a disk tagged gold (in a group whose default location is northeurope) and a database.
  ids.neLogs = makeDisk(world, "fleet-ne", "ne-logs", 3 * MiB, { location: "northeurope", tags: { backup: "gold" }, seed: 5 }).id;
  const server = emulator.sql.createServer("fleet-ne", "fleet-sql", "fleetadmin", `Emu-${crypto.randomUUID()}`, "northeurope");
  ids.db = emulator.sql.createDatabase(server, "orders", {
    orders: Array.from({ length: 40 }, (_, i) => ({ id: i + 1, total: (i * 37) % 500, placedAt: new Date(Date.UTC(2026, 0, 1 + (i % 28))).toISOString() })),
  }).id;
  world.env.BULWARK_SQL_ADMIN_LOGIN = server.administratorLogin;
  world.env.BULWARK_SQL_ADMIN_PASSWORD = server.administratorLoginPassword;
  // eastus: tagged gold, but no agent runs there.
  ids.usDisk = makeDisk(world, "fleet-us", "us-disk", 1 * MiB, { location: "eastus", tags: { backup: "gold" }, seed: 6 }).id;

  Object.assign(regionOf, {
    [key(ids.vm)]: "westeurope", [key(ids.weData)]: "westeurope", [key(ids.neLogs)]: "northeurope", [key(ids.db)]: "northeurope",
  });

  const explicit = await world.policy(
    "explicit",
    `name: explicit
vault: ${world.vault}
protect:
  resources:
    - ${ids.vm}
    - ${ids.db}
schedule:
  every: 1d
retention:
  last: 5
`,
  );
  const tagged = await world.policy(
    "tagged",
    `name: gold-disks
vault: ${world.vault}
protect:
  tagged:
    type: Microsoft.Compute/disks
    tag: backup=gold
    subscriptions: [${emulator.subscriptionId}]
schedule:
  every: 1d
retention:
  last: 5
`,
  );
  policies = `${explicit},${tagged}`;
}, 180_000);

afterAll(async () => {
  await world?.stop();
});

function capture(): void {
  const images: Record<string, Buffer> = {};
  for (const id of [ids.osDisk, ids.dataDisk, ids.weData, ids.neLogs]) images[key(id)] = world.emulator.control.readImage(id);
  before.push(images);
  rowsBefore.push(world.emulator.control.databaseContent(ids.db));
}

async function tick(): Promise<{ enqueued: { item: string; region: string; queueRegion: string; jobId: string }[]; unprotected: { item: string; region: string; reason: string }[]; notDue: string[]; errors: unknown[] }> {
  const result = await world.json(["agent", "schedule", "--policies", policies, "--agent-regions", REGIONS.join(",")]);
  jobsOf.push(Object.fromEntries(result.enqueued.map((e: { item: string; jobId: string }) => [key(e.item), e.jobId])));
  return result;
}

/** Two workers per region, all at once, until every queue is drained. */
async function runWorkers(): Promise<Record<string, { workers: WorkerProcess[]; summaries: Record<string, any>[] }>> {
  const started = Object.fromEntries(REGIONS.map((r) => [r, [world.worker(r), world.worker(r)]]));
  const out: Record<string, { workers: WorkerProcess[]; summaries: Record<string, any>[] }> = {};
  for (const region of REGIONS) out[region] = { workers: started[region]!, summaries: await Promise.all(started[region]!.map((w) => w.summary())) };
  // FLEET_DEBUG=1 prints each worker's step timeline.
  if (process.env.FLEET_DEBUG) {
    for (const region of REGIONS) {
      for (const w of out[region]!.workers) {
        console.log(w.lines.filter((l) => l.event === "step.start").map((l) => `${String(l.time).slice(11, 23)} ${String(l.item).split("/").at(-1)} ${l.state}`).join("\n"));
      }
    }
  }
  return out;
}

const sum = (summaries: Record<string, any>[], field: string) => summaries.reduce((s, x) => s + Number(x[field] ?? 0), 0);

/** The points of a job (by the job id the machine records in every manifest). */
function pointsOfJob(manifests: PointManifest[], jobId: string): PointManifest[] {
  return manifests.filter((p) => p.details?.job === jobId);
}

// Each step waits on the workers' own events (their summaries, log lines); the limit only bounds a
// hang. Quiet, a tick takes 30-60 s; with the machine's cores busy elsewhere it took over 120 s.
describe("a fleet in two regions, with the real agents", { timeout: 360_000 }, () => {
  it("first tick: every protected item gets exactly one point, in its own region, restorable, with nothing left behind", async () => {
    capture();
    const result = await tick();
    expect(result.errors).toEqual([]);
    expect(result.enqueued.map((e) => [key(e.item), e.queueRegion]).sort()).toEqual(Object.entries(regionOf).sort());
    expect(result.unprotected).toEqual([expect.objectContaining({ item: ids.usDisk, region: "eastus", reason: expect.stringMatching(/no agent in region eastus/) })]);

    const ran = await runWorkers();
    for (const region of REGIONS) {
      const { summaries, workers } = ran[region]!;
      expect({ region, succeeded: sum(summaries, "succeeded"), failed: sum(summaries, "failed"), poisoned: sum(summaries, "poisoned") }).toEqual({ region, succeeded: 2, failed: 0, poisoned: 0 });
      // Regional matching: a region's workers claimed only that region's jobs.
      const claimed = workers.flatMap((w) => w.lines.filter((l) => l.event === "job.claimed").map((l) => regionOf[key(l.item)]));
      expect(new Set(claimed)).toEqual(new Set([region]));
    }

    const manifests = await vaultManifests(world);
    const jobs = jobsOf[0]!;
    const vmPoints = pointsOfJob(manifests, jobs[key(ids.vm)]!);
    expect(vmPoints.map((p) => p.kind).sort()).toEqual(["disk", "disk", "vm"]);
    const vmPoint = vmPoints.find((p) => p.kind === "vm")!;
    expect(vmPoint.members!.map((m) => key(String(m.diskId))).sort()).toEqual([key(ids.osDisk), key(ids.dataDisk)].sort());
    for (const item of [ids.weData, ids.neLogs, ids.db]) expect(pointsOfJob(manifests, jobs[key(item)]!)).toHaveLength(1);
    // Nothing else: 3 VM points, 2 disk points, 1 database point.
    expect(manifests).toHaveLength(6);

    await expectVaultVerifies(world);
    for (const disk of [ids.osDisk, ids.dataDisk, ids.weData, ids.neLogs]) {
      const point = manifests.find((p) => p.kind === "disk" && key(p.source.path) === key(disk))!;
      expect(point.details?.mode).toBe("first");
      // One through the CLI, the others in this process (same engine call, without a process start each).
      const restored = disk === ids.weData ? await restoreToFile(world, point.id) : await restoreBytes(world, point.id);
      expect(restored.equals(before[0]![key(disk)]!)).toBe(true);
    }
    const dbPoint = manifests.find((p) => p.kind === "sql")!;
    expect(readBacpac(await restoreBytes(world, dbPoint.id))).toEqual(rowsBefore[0]);
    await expectNothingLeaked(world, [ids.osDisk, ids.dataDisk, ids.weData, ids.neLogs]);

    const jobsList = await world.json<any[]>(["jobs"]);
    expect(jobsList.map((j) => [key(j.item), j.machine, j.status, j.region]).sort()).toEqual(
      Object.entries(regionOf).map(([item, region]) => [item, "backup", "succeeded", region]).sort(),
    );
    const status = await world.json<any[]>(["status", "--policies", policies]);
    const byItem = Object.fromEntries(status.map((s) => [key(s.item), s]));
    for (const item of [ids.vm, ids.weData, ids.neLogs, ids.db]) {
      const expectedPoint = item === ids.vm ? vmPoint.id : pointsOfJob(manifests, jobs[key(item)]!)[0]!.id;
      expect(byItem[key(item)]).toMatchObject({ state: "idle", lastOutcome: "succeeded", lastGoodPoint: expectedPoint, meetsRpo: true, unprotected: "" });
    }
    expect(byItem[key(ids.usDisk)]).toMatchObject({ meetsRpo: false, unprotected: expect.stringMatching(/no agent in region eastus/) });
    expect(byItem[key(ids.silver)]).toBeUndefined();
  });

  it("second tick a day later: incremental points reading only what changed, despite duplicate and poison messages", async () => {
    const control = world.emulator.control;
    control.writeDisk(ids.weData, 512 * KiB, pattern(901, 64 * KiB)); // one block
    control.writeDisk(ids.dataDisk, MiB + 8 * KiB, pattern(902, 4 * KiB)); // inside one block
    control.setTableRows(ids.db, "orders", [{ id: 1, total: 1, placedAt: "2026-02-01T00:00:00.000Z" }]);
    capture();

    // Right after the first tick nothing is due.
    const early = await tick();
    expect(early.enqueued).toEqual([]);
    expect(early.notDue.map(key).sort()).toEqual(Object.keys(regionOf).sort());
    jobsOf.pop();

    await ageItems(world, 86_400_000 + 60_000);
    const fleet = await world.fleet();
    // A message that is not a work message, and a duplicate of a finished job's message.
    await (await fleet.storage.queue("westeurope")).sendMessage("hello, this is not work");
    const finished = (await fleet.jobs.get(jobsOf[0]![key(ids.neLogs)]!))!.value;
    await (await fleet.storage.queue("northeurope")).sendMessage(JSON.stringify({ v: 1, jobId: finished.jobId, machine: "backup", item: finished.itemId }));

    const result = await tick();
    expect(result.enqueued.map((e) => key(e.item)).sort()).toEqual(Object.keys(regionOf).sort());
    // And a duplicate of a job that is about to run.
    const pending = jobsOf[1]![key(ids.weData)]!;
    await (await fleet.storage.queue("westeurope")).sendMessage(JSON.stringify({ v: 1, jobId: pending, machine: "backup", item: ids.weData }));

    const ran = await runWorkers();
    const all = REGIONS.flatMap((r) => ran[r]!.summaries);
    expect({ succeeded: sum(all, "succeeded"), failed: sum(all, "failed"), poisoned: sum(all, "poisoned") }).toEqual({ succeeded: 4, failed: 0, poisoned: 1 });
    // At least the duplicate each region was sent: on a loaded machine a heartbeat can come late, the
    // message of a running job reappear and reach the other worker, which finds the job owned and
    // counts one more (at-least-once delivery). That no job ran twice is the 12 points below.
    expect(sum(ran.northeurope!.summaries, "duplicates")).toBeGreaterThanOrEqual(1);
    expect(sum(ran.westeurope!.summaries, "duplicates")).toBeGreaterThanOrEqual(1);
    const poison = await fleet.storage.poisonQueue("westeurope");
    const poisoned = (await poison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.map((m) => JSON.parse(m.messageText));
    expect(poisoned).toEqual([expect.objectContaining({ error: "not a Bulwark work message", message: "hello, this is not work" })]);

    const manifests = await vaultManifests(world);
    // Exactly one more point set per item: 2 VM group points, 4 VM disk points, 2 + 2 disk points, 2 database points.
    expect(manifests).toHaveLength(12);
    const jobs = jobsOf[1]!;
    const changed: Record<string, number> = { [key(ids.weData)]: 64 * KiB, [key(ids.dataDisk)]: 4 * KiB, [key(ids.osDisk)]: 0, [key(ids.neLogs)]: 0 };
    for (const disk of [ids.osDisk, ids.dataDisk, ids.weData, ids.neLogs]) {
      const job = disk === ids.osDisk || disk === ids.dataDisk ? jobs[key(ids.vm)]! : jobs[key(disk)]!;
      const [point] = pointsOfJob(manifests, job).filter((p) => p.kind === "disk" && key(p.source.path) === key(disk));
      expect({ disk, mode: point!.details?.mode, bytesRead: point!.stats.bytesRead }).toEqual({ disk, mode: "incremental", bytesRead: changed[key(disk)] });
      expect((await restoreBytes(world, point!.id)).equals(before[1]![key(disk)]!)).toBe(true);
      // The first tick's point still restores the first tick's bytes.
      const old = manifests.find((p) => p.kind === "disk" && key(p.source.path) === key(disk) && p.details?.job !== job)!;
      expect((await restoreBytes(world, old.id)).equals(before[0]![key(disk)]!)).toBe(true);
    }
    const [dbPoint] = pointsOfJob(manifests, jobs[key(ids.db)]!);
    expect(readBacpac(await restoreBytes(world, dbPoint!.id))).toEqual(rowsBefore[1]);
    await expectVaultVerifies(world);
    await expectNothingLeaked(world, [ids.osDisk, ids.dataDisk, ids.weData, ids.neLogs]);
    for (const region of REGIONS) expect(await (await (await fleet.storage.queue(region)).getProperties()).approximateMessagesCount).toBe(0);
  });

  it("a restore job run by a worker makes a new disk holding the point's bytes", async () => {
    const fleet = await world.fleet();
    const manifests = await vaultManifests(world);
    const point = pointsOfJob(manifests, jobsOf[1]![key(ids.weData)]!)[0]!;
    const target = `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/fleet-we/providers/Microsoft.Compute/disks/we-data-restored`;
    const submitted = await submitJob(fleet, {
      machine: "restore",
      item: { id: ids.weData, kind: "disk", region: "westeurope" },
      queueRegion: "westeurope",
      input: { vault: world.vault, pointId: point.id, target },
    });
    if (!submitted.submitted) throw new Error(submitted.reason);
    const worker = world.worker("westeurope");
    expect(await worker.summary()).toMatchObject({ succeeded: 1, failed: 0 });
    const job = (await fleet.jobs.get(submitted.job.jobId))!.value;
    expect(job).toMatchObject({ status: "succeeded", machine: "restore" });
    expect(job.data.restored).toEqual([target]);
    // Azure's upload disks are whole MiB of at least 20 MiB: the restored disk is the image, then zeros.
    const restoredImage = world.emulator.control.readImage(target);
    expect(restoredImage.subarray(0, before[1]![key(ids.weData)]!.length).equals(before[1]![key(ids.weData)]!)).toBe(true);
    expect(restoredImage.subarray(before[1]![key(ids.weData)]!.length).every((b) => b === 0)).toBe(true);
    const inventory = world.emulator.control.inventory();
    expect(inventory.activeSasGrants).toEqual([]);
    expect(inventory.disks.find((d) => key(d.id) === key(target))).toMatchObject({ diskState: "Unattached", provisioningState: "Succeeded" });
    expect(await blobNames(world.transient("westeurope"))).toEqual([]);
  });

  it("a job whose disk was deleted after the tick fails, leaves nothing behind, and its message goes to the poison queue", async () => {
    const doomed = makeDisk(world, "fleet-we", "we-doomed", 1 * MiB, { tags: { backup: "gold" }, seed: 9 }).id;
    const result = await tick();
    // Only the new disk is due; the others were backed up less than a day ago.
    expect(result.enqueued.map((e) => key(e.item))).toEqual([key(doomed)]);
    const jobId = result.enqueued[0]!.jobId;
    world.emulator.compute.disks.delete(key(doomed));

    const worker = world.worker("westeurope");
    expect(await worker.summary()).toMatchObject({ succeeded: 0, failed: 1, poisoned: 1 });
    const fleet = await world.fleet();
    const job = (await fleet.jobs.get(jobId))!.value;
    // Refused before it runs (the policy no longer selects a disk that does not exist): not retried.
    expect(job).toMatchObject({ status: "failed", pendingCompensations: [], runs: 0, failures: 0 });
    expect(job.error).toMatch(/^refused: job .*we-doomed.* is not among the resources policy gold-disks protects now: it does not exist/);
    const poison = await fleet.storage.poisonQueue("westeurope");
    const poisoned = (await poison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.map((m) => JSON.parse(m.messageText));
    expect(poisoned.filter((m) => String(m.message).includes(jobId))).toEqual([expect.objectContaining({ error: expect.stringContaining(`job ${jobId} failed`) })]);
    const status = await world.json<any[]>(["status", "--policies", policies]);
    expect(status.find((s) => key(s.item) === key(doomed))).toMatchObject({ state: "idle", lastOutcome: "failed", lastGoodPoint: null, meetsRpo: false, lastError: expect.stringMatching(/we-doomed/) });
    expect((await vaultManifests(world)).filter((p) => key(p.source.path) === key(doomed))).toEqual([]);
    await expectNothingLeaked(world, [ids.osDisk, ids.dataDisk, ids.weData, ids.neLogs]);
  });
});
