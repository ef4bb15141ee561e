/**
 * Issue 8, where the agents' parts meet the vault: a prune during a job's promote, a pack deleted
 * between promote and commit, and retention of a disk protected both on its own and as part of a
 * VM. The real backup machine runs in this process (scheduler ticks and a worker on an injected
 * clock), against the local Azure emulator and a vault in Azurite; the prune is the real one.
 */
import { randomBytes } from "node:crypto";
import { expect, test } from "vitest";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { VaultLock } from "../../runtime/engine/locks.ts";
import { decodeIndex } from "../../runtime/engine/index-file.ts";
import { packKey } from "../../runtime/engine/pack.ts";
import { pruneVault } from "../../runtime/engine/prune.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { VaultBusyError } from "../../runtime/errors.ts";
import { ManualClock } from "../../runtime/jobs/clock.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { parsePolicy, type Policy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { openStore } from "../../runtime/store/open.ts";
import type { ObjectStore, ObjectWriter } from "../../runtime/store/store.ts";
import { backupMachine } from "../../runtime/workloads/backup-machine.ts";
import { workloadEnvironment, type WorkloadEnvironment } from "../../runtime/workloads/environment.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { StoreView } from "../support/store-view.ts";
import { KiB, MiB, expectNothingLeaked, expectVaultVerifies, makeDisk, pattern, restoreBytes, vaultManifests, fleetWorldForFile } from "./harness.ts";

const HOUR = 3_600_000;
const world = fleetWorldForFile();

async function vaultStore(): Promise<ObjectStore> {
  return (await openStore(world().vault, { AZURE_STORAGE_CONNECTION_STRING: world().env.AZURE_STORAGE_CONNECTION_STRING })).store;
}

/** A worker environment whose vaults are opened on `wrap(store)`. */
function withVaultStore(env: WorkloadEnvironment, wrap: (store: ObjectStore) => ObjectStore): WorkloadEnvironment {
  const provider = new PassphraseProvider(PASSPHRASE);
  return { ...env, openVault: async () => Vault.open(wrap(await vaultStore()), provider) };
}

function diskPolicy(name: string, diskId: string, retention = "{ last: 5 }"): Policy {
  return parsePolicy(`name: ${name}\nvault: ${world().vault}\nprotect:\n  resources: [${diskId}]\nschedule: { every: 1d }\nretention: ${retention}\n`, `${name}.yaml`);
}

async function runRound(clock: ManualClock, policies: Policy[], env: WorkloadEnvironment, logs: Record<string, unknown>[] = []): Promise<string[]> {
  const fleet = await world().fleet(clock);
  const resolver = new ArmItemResolver(world().emulator.credential(), { endpoint: world().emulator.armEndpoint });
  const tick = await scheduleTick({ fleet, policies, resolveItems: resolver, regionsWithAgents: ["westeurope", "northeurope"] });
  expect(tick.errors).toEqual([]);
  const summary = await runWorker({
    fleet, region: "westeurope", machines: [backupMachine(env)], limits: { perWorker: 1, perRegion: 1 },
    leaseMs: 30_000, pollMs: 100, lockRetryMs: 100, untilDrained: true, log: (line) => logs.push(line),
  });
  expect(summary).toMatchObject({ failed: 0 });
  const jobs: string[] = [];
  for (const queued of tick.enqueued) {
    const job = (await fleet.jobs.get(queued.jobId))!.value;
    expect({ item: job.itemId, status: job.status, error: job.error }).toMatchObject({ status: "succeeded" });
    jobs.push(String(job.data.pointId));
  }
  return jobs;
}

test("a prune that runs between promote's copies and its index write, with the pack ages made old, deletes nothing the job needs", async () => {
  world().emulator.world.addResourceGroup("meet", "westeurope");
  const disk = makeDisk(world(), "meet", "promote-disk", 8 * MiB, { seed: 81 });
  const image = world().emulator.control.readImage(disk.id);
  const env = await workloadEnvironment({ ...world().workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  let pruneOutcome: unknown;
  let packsBefore = 0;
  const hooked = withVaultStore(env, (store) =>
    new StoreView(store, { beforeCreate: async (key) => {
      if (!key.startsWith("index/job-") || pruneOutcome !== undefined) return;
      // Promote has copied every pack and is about to name them: a prune runs now, on a store where
      // those packs look two hours old (a long promote).
      const aged = new StoreView(store, { ageOf: (k) => (k.startsWith("data/") ? 2 * HOUR : 0) });
      for await (const _ of store.list("data/")) packsBefore++;
      try {
        const lock = await VaultLock.acquire(aged, "exclusive", "agent prune");
        try {
          const vault = await Vault.open(aged, new PassphraseProvider(PASSPHRASE));
          const pool = new CodecPool(vault.master, { threads: 1 });
          try {
            pruneOutcome = await pruneVault(vault, pool, { lock });
          } finally {
            await pool.close();
          }
        } finally {
          await lock.release();
        }
      } catch (error) {
        pruneOutcome = error;
      }
    } }),
  );
  const clock = new ManualClock(Date.UTC(2026, 5, 1, 1));
  const [pointId] = await runRound(clock, [diskPolicy("promote", disk.id)], hooked);
  // The job held the vault while in flight: the prune was refused, and deleted nothing.
  expect(pruneOutcome).toBeInstanceOf(VaultBusyError);
  expect(packsBefore).toBeGreaterThan(0);
  expect((await restoreBytes(world(), pointId!)).equals(image)).toBe(true);
  await expectVaultVerifies(world());
  await expectNothingLeaked(world(), [disk.id]);
}, 180_000);

test("a pack deleted between promote and commit: the commit writes no point with missing data, the job stages again, and its point restores", async () => {
  const disk = makeDisk(world(), "meet", "commit-disk", 8 * MiB, { seed: 82 });
  const image = world().emulator.control.readImage(disk.id);
  const env = await workloadEnvironment({ ...world().workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const deleted: string[] = [];
  const hooked = withVaultStore(env, (store) =>
    new StoreView(store, {
      afterCreate: async (key) => {
        if (!key.startsWith("index/job-") || deleted.length > 0) return;
        // Someone with write access to the vault deletes one of the packs the job just promoted.
        const vault = await Vault.open(store, new PassphraseProvider(PASSPHRASE), { loadIndex: false });
        const [pack] = decodeIndex(vault.master.dataKey, key, await store.get(key));
        await store.delete(packKey(pack!.packId));
        deleted.push(pack!.packId);
      },
    }),
  );
  const clock = new ManualClock(Date.UTC(2026, 5, 2, 1));
  const logs: Record<string, unknown>[] = [];
  const [pointId] = await runRound(clock, [diskPolicy("commit", disk.id)], hooked, logs);
  expect(deleted).toHaveLength(1);
  // The first commit found the pack gone and wrote nothing; the job staged again (keeping what was
  // staged) and promoted the lost pack once more from its staging.
  expect(logs.filter((l) => l.event === "restage")).toHaveLength(1);
  expect(logs.filter((l) => l.event === "point").map((l) => l.outcome)).toEqual(["committed"]);
  expect((await restoreBytes(world(), pointId!)).equals(image)).toBe(true);
  await expectVaultVerifies(world());
  const manifests = await vaultManifests(world());
  expect(manifests.filter((p) => p.source.path === disk.id)).toHaveLength(1);
}, 180_000);

test("a VM and its data disk under two policies with last: 1, three rounds of backups: every VM point restores", async () => {
  world().emulator.world.addResourceGroup("both", "westeurope");
  const osDisk = makeDisk(world(), "both", "both-os", 2 * MiB, { seed: 91 });
  osDisk.osType = "Linux";
  osDisk.hyperVGeneration = "V2";
  const dataDisk = makeDisk(world(), "both", "both-data", 2 * MiB, { seed: 92 });
  const { vm } = world().emulator.compute.createVirtualMachine("both", "both-vm", {
    location: "westeurope",
    properties: {
      hardwareProfile: { vmSize: "Standard_B2s" },
      storageProfile: {
        osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: osDisk.id } },
        dataDisks: [{ lun: 0, createOption: "Attach", managedDisk: { id: dataDisk.id } }],
      },
      networkProfile: { networkInterfaces: [{ id: `/subscriptions/${world().emulator.subscriptionId}/resourceGroups/both/providers/Microsoft.Network/networkInterfaces/both-nic`, properties: { primary: true } }] },
    },
  });
  vm.provisioningState = "Succeeded";
  const vmPolicy = parsePolicy(`name: vms\nvault: ${world().vault}\nprotect:\n  resources: [${vm.id}]\nschedule: { every: 1d }\nretention: { last: 1 }\n`, "vms.yaml");
  const env = await workloadEnvironment({ ...world().workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const clock = new ManualClock(Date.UTC(2026, 6, 1, 1));
  const images = new Map<string, Buffer>();
  for (let round = 0; round < 3; round++) {
    world().emulator.control.writeDisk(osDisk.id, round * 64 * KiB, pattern(9100 + round, 64 * KiB));
    world().emulator.control.writeDisk(dataDisk.id, round * 64 * KiB, pattern(9200 + round, 64 * KiB));
    const osImage = world().emulator.control.readImage(osDisk.id);
    const dataImage = world().emulator.control.readImage(dataDisk.id);
    await runRound(clock, [vmPolicy, diskPolicy("disks", dataDisk.id, "{ last: 1 }")], env);
    for (const p of await vaultManifests(world())) {
      if (images.has(p.id)) continue;
      if (p.kind === "disk") images.set(p.id, p.source.path.toLowerCase() === osDisk.id.toLowerCase() ? osImage : dataImage);
    }
    clock.advance(24 * HOUR);
  }
  const points = await vaultManifests(world());
  const vmPoints = points.filter((p) => p.kind === "vm" && p.source.path === vm.id);
  const ownDiskPoints = points.filter((p) => p.kind === "disk" && p.tags.policy === "disks");
  expect(vmPoints).toHaveLength(1);
  expect(ownDiskPoints).toHaveLength(1);
  const ids = new Set(points.map((p) => p.id));
  for (const vmPoint of vmPoints) {
    expect(vmPoint.members).toHaveLength(2);
    for (const member of vmPoint.members!) {
      expect(ids.has(member.point)).toBe(true);
      expect((await restoreBytes(world(), member.point)).equals(images.get(member.point)!)).toBe(true);
    }
  }
  expect((await restoreBytes(world(), ownDiskPoints[0]!.id)).equals(images.get(ownDiskPoints[0]!.id)!)).toBe(true);
  await expectVaultVerifies(world());
}, 300_000);

test("a stage step that fails midway (its storage credentials lapsed) resumes from the packs already staged on retry", async () => {
  // A vault of its own with 1 MiB packs, so a small disk stages many.
  const container = world().blobs.getContainerClient("vault-small-packs");
  await container.createIfNotExists();
  const location = container.url;
  const store = (await openStore(location, { AZURE_STORAGE_CONNECTION_STRING: world().env.AZURE_STORAGE_CONNECTION_STRING })).store;
  await Vault.init(store, new PassphraseProvider(PASSPHRASE), { packSize: 1024 * 1024 });
  world().emulator.world.addResourceGroup("resume", "westeurope");
  const disk = makeDisk(world(), "resume", "resume-disk", 16 * MiB, { seed: 83 });
  world().emulator.control.writeDisk(disk.id, 0, randomBytes(12 * MiB)); // incompressible: about 12 packs
  const image = world().emulator.control.readImage(disk.id);
  const env = await workloadEnvironment({ ...world().workerEnv("westeurope"), BULWARK_PASSPHRASE: PASSPHRASE });
  const commits: string[] = [];
  let failed = false;
  const flaky: WorkloadEnvironment = {
    ...env,
    staging(jobId) {
      const inner = env.staging(jobId);
      return Object.assign(Object.create(inner) as ObjectStore, {
        createWriter(key: string): ObjectWriter {
          const writer = inner.createWriter(key);
          return {
            write: (data: Uint8Array) => writer.write(data),
            abort: () => writer.abort(),
            async commit() {
              if (!failed && commits.length === 4) {
                failed = true;
                throw new Error("simulated: the staging credential expired (403 AuthenticationFailed)");
              }
              await writer.commit();
              commits.push(key);
            },
          };
        },
      });
    },
  };
  const policy = parsePolicy(`name: resume\nvault: ${location}\nprotect:\n  resources: [${disk.id}]\nschedule: { every: 1d }\nretention: { last: 5 }\n`, "resume.yaml");
  const clock = new ManualClock(Date.UTC(2026, 7, 1, 1));
  const fleet = await world().fleet(clock);
  const resolver = new ArmItemResolver(world().emulator.credential(), { endpoint: world().emulator.armEndpoint });
  const tick = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope"] });
  const logs: Record<string, unknown>[] = [];
  const summary = await runWorker({
    fleet, region: "westeurope", machines: [backupMachine(flaky)], limits: { perWorker: 1, perRegion: 1 },
    leaseMs: 30_000, pollMs: 100, retryDelayMs: 100, untilDrained: true, log: (line) => logs.push(line),
  });
  expect(failed).toBe(true);
  expect(summary).toMatchObject({ succeeded: 1, failed: 0 });
  const job = (await fleet.jobs.get(tick.enqueued[0]!.jobId))!.value;
  expect(job.status).toBe("succeeded");
  // Every staged pack was written once: the retry kept the four staged before the failure.
  expect(new Set(commits).size).toBe(commits.length);
  expect(logs.some((l) => l.event === "stage-resumed")).toBe(true);
  const vault = await Vault.open(store, new PassphraseProvider(PASSPHRASE));
  const point = await vault.readPoint(String(job.data.pointId));
  const out = Buffer.alloc(point.size);
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    await restoreContent(vault, pool, point, { needsZeros: true, write: async (offset, data) => void data.copy(out, offset) });
  } finally {
    await pool.close();
  }
  expect(out.equals(image)).toBe(true);
}, 240_000);
