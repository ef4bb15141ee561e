/**
 * Issue 8, item 5: job records are not trusted input. A worker runs the real backup and restore
 * machines in this process, as `bulwark agent worker` wires them (its policies' JobAuthority and
 * the policy-bound environment), against the Azure emulator and Azurite. Records are forged straight
 * into the fleet's table, as anyone who can write that table could:
 * - a job whose vault is a local HTTPS server (a throwaway certificate this process trusts): the
 *   server receives no request at all, so no Authorization header; the job fails at once with one
 *   clear error, its message is poisoned, and it is not retried;
 * - a job whose retention says `last: 1` for an item whose policy keeps 3: the policy's retention
 *   and tags are applied, the item's earlier points stay.
 * (The storage layer also refuses blob hosts that are not Azure Storage's or the configured
 * emulator's, store/open.ts: the refusal here comes first, from the policies, and names them.)
 */
import https from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, test } from "vitest";
import { runWorker, type WorkerOptions } from "../../runtime/jobs/worker.ts";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { JobAuthority, policyBoundEnvironment } from "../../runtime/policy/authority.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { backupMachine } from "../../runtime/workloads/backup-machine.ts";
import { restoreMachine } from "../../runtime/workloads/restore-machine.ts";
import { workloadEnvironment, type WorkloadEnvironment } from "../../runtime/workloads/environment.ts";
import { makeCertificates, trustEmulatorCA, type EmulatorCertificates } from "../emulator/tls.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { MiB, expectNothingLeaked, makeDisk, restoreBytes, startFleetWorld, vaultManifests, type FleetWorld, adoptWorldCredentials } from "./harness.ts";

const REGION = "westeurope";
let world: FleetWorld;
let certificates: EmulatorCertificates;
let forger: https.Server;
let forgedVault: string;
const received: { method: string; url: string; authorization: string | undefined }[] = [];
let restoreEnvironment: (() => void) | undefined;

beforeAll(async () => {
  world = await startFleetWorld();
  restoreEnvironment = adoptWorldCredentials(world);
  certificates = await makeCertificates();
  trustEmulatorCA(certificates.caPem);
  forger = https.createServer({ key: certificates.keyPem, cert: certificates.certPem }, (req, res) => {
    received.push({ method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization });
    res.writeHead(403, { "content-type": "application/xml" });
    res.end("<?xml version=\"1.0\"?><Error><Code>AuthorizationFailure</Code><Message>forger</Message></Error>");
  });
  await new Promise<void>((resolve) => forger.listen(0, "127.0.0.1", resolve));
  forgedVault = `https://127.0.0.1:${(forger.address() as AddressInfo).port}/forger/vault`;
}, 60_000);

afterAll(async () => {
  restoreEnvironment?.();
  await new Promise((resolve) => (forger ? forger.close(resolve) : resolve(undefined)));
  await certificates?.remove();
  await world?.stop();
});

function guardedPolicy(diskId: string) {
  return parsePolicy(
    `name: guarded
vault: ${world.vault}
protect:
  resources: [${diskId}]
schedule: { every: 1d }
retention: { last: 3 }
`,
    "guarded.yaml",
  );
}

/** The worker as `bulwark agent worker` wires it: the policies' authority, and the environment bound to them. */
function policyWorker(base: WorkloadEnvironment, authority: JobAuthority | undefined, fleet: WorkerOptions["fleet"], log: Record<string, unknown>[]) {
  const env = authority ? policyBoundEnvironment(base, authority) : base;
  return runWorker({
    fleet,
    region: REGION,
    machines: [backupMachine(env), restoreMachine(env)],
    limits: { perWorker: 2, perRegion: 2 },
    authority,
    leaseMs: 5_000,
    maxAttempts: 1,
    retryDelayMs: 100,
    lockRetryMs: 200,
    pollMs: 100,
    log: (line) => log.push(line),
  });
}

test("a forged job whose vault is a local https server receives no Authorization header, and the job fails with a clear error", async () => {
  world.emulator.world.addResourceGroup("forged", REGION);
  const diskId = makeDisk(world, "forged", "f-disk", 1 * MiB, { seed: 11 }).id;
  const policy = guardedPolicy(diskId);
  const fleet = await world.fleet();
  const resolver = new ArmItemResolver(world.emulator.credential(), { endpoint: world.emulator.armEndpoint });
  const authority = new JobAuthority([policy], REGION, resolver);
  const base = await workloadEnvironment({ ...world.workerEnv(REGION), BULWARK_PASSPHRASE: PASSPHRASE });
  const item = { id: diskId, kind: "disk" as const, region: REGION };

  // The forged records: a backup into the forger's vault under the real policy, a backup naming a
  // policy the worker does not have, and a restore out of the forger's vault.
  const forged = [
    await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, policy: "guarded", input: { itemId: diskId, kind: "disk", policy: "guarded", vault: forgedVault, retention: { last: 3 } } }),
    await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, policy: "invented", input: { itemId: diskId, kind: "disk", policy: "invented", vault: forgedVault, retention: { last: 3 } } }),
    await submitJob(fleet, { machine: "restore", item, queueRegion: REGION, input: { vault: forgedVault, pointId: "latest", target: diskId.replace(/f-disk$/, "f-restored") } }),
  ].map((s) => {
    if (!s.submitted) throw new Error(s.reason);
    return s.job.jobId;
  });
  const log: Record<string, unknown>[] = [];
  const summary = await policyWorker(base, authority, fleet, log);

  expect(received).toEqual([]);
  expect(summary).toMatchObject({ succeeded: 0, failed: 3, refused: 3, poisoned: 3, retried: 0 });
  const jobs = await Promise.all(forged.map(async (id) => (await fleet.jobs.get(id))!.value));
  // Failed at their first delivery, without running a step.
  for (const job of jobs) expect(job).toMatchObject({ status: "failed", runs: 0, state: "" });
  expect(jobs[0]!.error).toMatch(new RegExp(`^refused: job ${jobs[0]!.jobId} \\(backup of .*f-disk\\) names the vault "${forgedVault.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}" \\(in its input\\), but policy guarded keeps its points in ${world.vault.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}; .*may have been forged`));
  expect(jobs[1]!.error).toMatch(/^refused: job .* names the policy "invented", which is not among this worker's policies \(guarded\)/);
  expect(jobs[2]!.error).toMatch(/^refused: job .* \(restore of .*\) names the vault ".*forger\/vault" \(in its input\), which none of this worker's policies names/);
  // One alert-able line per refused job, and the reports say failed.
  expect(log.filter((l) => l.event === "job.refused").map((l) => l.jobId)).toEqual(expect.arrayContaining(forged));
  for (const id of forged) expect(await fleet.reports.get(id)).toMatchObject({ outcome: "failed", error: expect.stringMatching(/^refused: /) });
  // Not retried: the queue is empty, each message is in the poison queue.
  const queue = await fleet.storage.queue(REGION);
  expect((await queue.peekMessages({ numberOfMessages: 1 })).peekedMessageItems).toEqual([]);
  const poison = await fleet.storage.poisonQueue(REGION);
  const poisoned = (await poison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.map((m) => JSON.parse(m.messageText));
  for (const id of forged) expect(poisoned.some((p) => String(p.message).includes(id) && /refused/.test(p.error))).toBe(true);
  // Even a step asked to open the forger's vault (a record changed between two steps) sends nothing.
  await expect(policyBoundEnvironment(base, authority).openVault(forgedVault)).rejects.toThrow(/not one this worker's policies name/);
  expect(received).toEqual([]);
}, 120_000);

test("a forged retention (last: 1 on an item whose policy keeps 3) is not applied: the policy's retention and tags are", async () => {
  world.emulator.world.addResourceGroup("kept", REGION);
  const diskId = makeDisk(world, "kept", "k-disk", 1 * MiB, { seed: 12 }).id;
  const policy = guardedPolicy(diskId);
  const fleet = await world.fleet();
  const authority = new JobAuthority([policy], REGION, new ArmItemResolver(world.emulator.credential(), { endpoint: world.emulator.armEndpoint }));
  const base = await workloadEnvironment({ ...world.workerEnv(REGION), BULWARK_PASSPHRASE: PASSPHRASE });
  const item = { id: diskId, kind: "disk" as const, region: REGION };
  const images: Buffer[] = [];
  const run = async (input: Record<string, unknown>) => {
    images.push(world.emulator.control.readImage(diskId));
    const submitted = await submitJob(fleet, { machine: "backup", item, queueRegion: REGION, policy: "guarded", input: { itemId: diskId, kind: "disk", policy: "guarded", vault: world.vault, ...input } });
    if (!submitted.submitted) throw new Error(submitted.reason);
    const summary = await policyWorker(base, authority, fleet, []);
    expect(summary).toMatchObject({ succeeded: 1, failed: 0 });
    world.emulator.control.writeDisk(diskId, images.length * 64 * 1024, Buffer.alloc(64 * 1024, images.length));
    return (await fleet.jobs.get(submitted.job.jobId))!.value;
  };
  await run({ retention: policy.retention });
  await run({ retention: policy.retention });
  const forged = await run({ retention: { last: 1 }, tags: { policy: "other", owner: "forger" } });
  expect(forged.data.retention).toEqual({ last: 3 });

  const points = (await vaultManifests(world)).filter((p) => p.source.path.toLowerCase() === diskId.toLowerCase());
  expect(points).toHaveLength(3);
  for (const point of points) expect(point.tags).toEqual({ policy: "guarded" });
  const newestFirst = [...points].sort((a, b) => b.time.localeCompare(a.time) || 0);
  expect(newestFirst[0]!.id).toBe(forged.data.pointId);
  // Every point still restores the disk as it was.
  const byTime = [...points].sort((a, b) => a.time.localeCompare(b.time));
  for (const [i, point] of byTime.entries()) expect((await restoreBytes(world, point.id)).equals(images[i]!)).toBe(true);
  await expectNothingLeaked(world, [diskId]);
}, 180_000);
