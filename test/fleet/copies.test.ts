/**
 * Cross-region copies in the fleet, with the real agents: a policy names a copy vault (`copyTo`, a
 * second container of the world's Azurite standing for the paired region's account, made with
 * `bulwark init --like` the primary). Each scheduled backup, run by a real `bulwark agent worker`,
 * submits a copy job that the same worker runs: after every tick the copy vault holds the new point,
 * byte-identical to the disk when it was taken; the copy keeps the policy's retention; `bulwark
 * status` shows the item's copy lag (0, and behind after a backup whose copy has not run); `agent
 * prune` visits the copy vault; then the primary's storage goes away (its containers are deleted)
 * and the copy still restores through the CLI. Also: a forged copy job (another vault, another
 * source) is refused, and a backup's last step run twice makes one copy job per copy vault.
 *
 * Why deleted and not a stopped Azurite: a copy between two Blob vaults is server-side (Copy Blob
 * From URL), which Azurite serves only between containers of one instance, and a process reaches
 * one Azurite (one connection string); so both regions live in one Azurite, and the primary's
 * outage is its containers gone, which leaves the restore nothing of the primary to lean on.
 */
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { expect, test } from "vitest";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { systemClock } from "../../runtime/jobs/clock.ts";
import { newJobId, type JobRecord } from "../../runtime/jobs/records.ts";
import { itemStatuses } from "../../runtime/jobs/reports.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { JobAuthority } from "../../runtime/policy/authority.ts";
import { parsePolicy, type Policy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { openStore } from "../../runtime/store/open.ts";
import { copyJobId, withCopyJobs } from "../../runtime/workloads/copy-machine.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { KiB, MiB, ageItems, fleetWorldForFile, makeDisk, pattern, vaultManifests, type FleetWorld } from "./harness.ts";

const DAY = 86_400_000;
const world = fleetWorldForFile();

/** The copy vault's URL: a container beside the primary, made `init --like` it. */
async function makeCopyVault(w: FleetWorld): Promise<string> {
  const url = w.blobs.getContainerClient("copyregion").url;
  const made = await w.cli(["init", "--vault", url, "--like", w.vault, "--json"], { BULWARK_FROM_PASSPHRASE: PASSPHRASE });
  expect(made.code, made.stderr).toBe(0);
  return url;
}

async function openCopy(w: FleetWorld, url: string): Promise<Vault> {
  return Vault.open((await openStore(url, { AZURE_STORAGE_CONNECTION_STRING: w.env.AZURE_STORAGE_CONNECTION_STRING })).store, new PassphraseProvider(PASSPHRASE));
}

/** A point's bytes restored from `vault` in this process. */
async function restoredFrom(vault: Vault, pointId: string): Promise<Buffer> {
  const point = await vault.readPoint(pointId);
  const out = Buffer.alloc(point.size);
  const pool = new CodecPool(vault.master, { threads: 1 });
  try {
    await restoreContent(vault, pool, point, { needsZeros: true, write: async (offset, data) => void data.copy(out, offset) });
  } finally {
    await pool.close();
  }
  return out;
}

test("a copy job after each scheduled backup: the copy vault holds every point byte-identical, keeps the policy's retention, status shows the lag, and restores with the primary gone", async () => {
  const w = world();
  w.emulator.world.addResourceGroup("copies", "westeurope");
  const diskId = makeDisk(w, "copies", "c-disk", 1 * MiB, { seed: 21 }).id;
  const copyVault = await makeCopyVault(w);
  const yaml = `name: copied
vault: ${w.vault}
copyTo: [${copyVault}]
protect:
  resources: [${diskId}]
schedule: { every: 1d }
retention: { last: 1 }
`;
  const policyFile = await w.policy("copied", yaml);
  const policy = parsePolicy(yaml, policyFile);
  const fleet = await w.fleet();
  const resolver = new ArmItemResolver(w.emulator.credential(), { endpoint: w.emulator.armEndpoint });
  const images = new Map<string, Buffer>();
  const copy = await openCopy(w, copyVault);

  for (let tick = 0; tick < 2; tick++) {
    w.emulator.control.writeDisk(diskId, tick * 64 * KiB, pattern(500 + tick, 64 * KiB));
    const image = w.emulator.control.readImage(diskId);
    const scheduled = await scheduleTick({ fleet, policies: [policy], resolveItems: resolver, regionsWithAgents: ["westeurope"], log: () => {} });
    expect(scheduled.enqueued).toHaveLength(1);
    const backupJobId = scheduled.enqueued[0]!.jobId;

    const summary = await w.worker("westeurope").summary();
    expect(summary).toMatchObject({ succeeded: 2, failed: 0, poisoned: 0, refused: 0 });
    const backup = (await fleet.jobs.get(backupJobId))!.value;
    const pointId = String(backup.data.pointId);
    images.set(pointId, image);

    // Exactly one copy job for the point, keyed by the point and the copy vault, and it succeeded.
    const copyJob = (await fleet.jobs.get(copyJobId(backupJobId, pointId, copyVault)))!.value;
    expect(copyJob).toMatchObject({ machine: "copy", status: "succeeded", region: "westeurope", itemId: diskId });
    expect(copyJob.data.copied).toMatchObject({ pointsCopied: 1 });
    const jobsOfTick = [];
    for await (const job of fleet.jobs.list()) if (job.createdAt >= backup.createdAt) jobsOfTick.push(job.machine);
    expect(jobsOfTick.sort()).toEqual(["backup", "copy"]);

    // The new point is in the copy, byte-identical to the disk when it was taken.
    await copy.reloadIndex();
    expect((await restoredFrom(copy, pointId)).equals(image)).toBe(true);
    await ageItems(w, 2 * DAY);
  }

  // Retention (last: 1): the primary's retain step and the second copy job's kept the newest point only.
  const primaryPoints = (await vaultManifests(w)).map((p) => p.id).sort();
  const copyPoints = (await copy.listPoints()).map((p) => p.id).sort();
  expect(primaryPoints).toEqual([[...images.keys()][1]]);
  expect(copyPoints).toEqual(primaryPoints);

  // Status: the copy holds the item's last good point (lag 0).
  const status = await w.json<any[]>(["status", "--policies", policyFile]);
  const item = status.find((s) => s.item.toLowerCase() === diskId.toLowerCase());
  expect(item.copies).toEqual([
    { vault: copyVault, newestPoint: item.lastGoodPoint, newestAt: expect.any(String), lagMs: 0, copiedAt: expect.any(String) },
  ]);

  // A backup committed since, whose copy has not run yet: the lag is from the copy's newest point.
  const copied = await copy.readPoint(copyPoints[0]!);
  const later = Date.parse(copied.time) + 6 * 3_600_000;
  await fleet.items.update(diskId, () => { throw new Error("no item"); }, (current) => ({ ...current, lastGoodAt: later, lastGoodPointId: "f".repeat(32) }));
  const behind = (await itemStatuses(fleet.items, [policy], later)).find((s) => s.item.toLowerCase() === diskId.toLowerCase())!;
  expect(behind.copies).toEqual([expect.objectContaining({ newestPoint: copied.id, lagMs: 6 * 3_600_000 })]);

  // agent prune visits the copy vault too (retention, then unreferenced packs), and the copy still restores.
  const pruned = await w.json<{ vaults: { vault: string; removedPoints: number }[] }>(["agent", "prune", "--policies", policyFile]);
  expect(pruned.vaults.map((v) => v.vault).sort()).toEqual([w.vault, copyVault].sort());

  // The primary region's storage is gone; the copy restores the point it keeps through the CLI.
  await w.blobs.getContainerClient("vault").delete();
  await w.blobs.getContainerClient("vault-locks").deleteIfExists();
  for (const pointId of copyPoints) {
    const to = path.join(w.dir, `from-copy-${pointId.slice(0, 8)}`);
    const restored = await w.cli(["restore", pointId, "--vault", copyVault, "--to", to, "--json"]);
    expect(restored.code, restored.stderr).toBe(0);
    expect((await readFile(to)).equals(images.get(pointId)!)).toBe(true);
    await rm(to);
  }
}, 180_000);

test("a copy job naming a vault outside the policy's copyTo, or another source, is refused before it runs", async () => {
  const policy: Policy = parsePolicy(
    `name: p
vault: https://primary.blob.core.windows.net/vault
copyTo: [https://paired.blob.core.windows.net/vault]
protect: { resources: [/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d] }
schedule: { every: 1d }
retention: { last: 2 }
`,
    "p.yaml",
  );
  const authority = new JobAuthority([policy], "westeurope", { resolve: async () => [] });
  const claims = (input: Record<string, unknown>) => ({
    jobId: "1-ab",
    machine: "copy",
    itemId: "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d",
    itemKind: "disk",
    policy: "p",
    input: { policy: "p", pointId: "x", ...input },
    data: {},
  });
  expect(await authority.refusal(claims({ from: policy.vault, to: "https://paired.blob.core.windows.net/vault/" }))).toBeUndefined();
  expect(await authority.refusal(claims({ from: policy.vault, to: "https://elsewhere.blob.core.windows.net/vault" }))).toMatch(/not among policy p's copyTo vaults/);
  expect(await authority.refusal(claims({ from: "https://other.blob.core.windows.net/vault", to: policy.copyTo[0] }))).toMatch(/copies from/);
  // The copy vault is one the worker may open (a restore may name it too).
  expect(authority.allowsVault("https://PAIRED.blob.core.windows.net/vault")).toBe(true);
});

test("a backup's last step run twice (its worker died before committing it) makes one copy job per copy vault", async () => {
  const copyTo = ["https://paired.blob.core.windows.net/vault", "https://third.blob.core.windows.net/vault"];
  const itemId = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/twice";
  const policy = parsePolicy(
    `name: twice
vault: https://primary.blob.core.windows.net/vault
copyTo: [${copyTo.join(", ")}]
protect: { resources: [${itemId}] }
schedule: { every: 1d }
retention: { last: 2 }
`,
    "twice.yaml",
  );
  const fleet = await world().fleet();
  const backup = withCopyJobs(
    { name: "backup", initial: "last", makesPoints: true, start: () => ({}), metrics: () => ({ pointId: "p-twice" }), states: { last: { step: async (_ctx, data) => ({ done: true, data }) } } },
    fleet,
    new JobAuthority([policy], "eastus", { resolve: async () => [] }),
  );
  const now = Date.now();
  const job: JobRecord = {
    jobId: newJobId(now), machine: "backup", itemId, itemKind: "disk", region: "eastus", policy: policy.name, input: {}, status: "running", state: "last", data: {},
    compensable: [], pendingCompensations: [], owner: "w", leaseUntil: now + 60_000, createdAt: now, startedAt: now, endedAt: 0, runs: 1, failures: 0, error: "",
  };
  const ctx = { jobId: job.jobId, job, signal: new AbortController().signal, clock: systemClock, log: () => {} };
  for (let run = 0; run < 2; run++) expect(await backup.states.last!.step(ctx, {})).toEqual({ done: true, data: {} });

  const copies = [];
  for await (const record of fleet.jobs.list()) if (record.machine === "copy" && record.input.pointId === "p-twice") copies.push(record);
  expect(copies.map((c) => [c.jobId, c.input.to, c.region, c.status]).sort()).toEqual(
    copyTo.map((to) => [copyJobId(job.jobId, "p-twice", to), to, "eastus", "queued"]).sort(),
  );
});
