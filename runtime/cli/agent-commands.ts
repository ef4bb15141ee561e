/**
 * The agents, as Container Apps runs them: `bulwark agent schedule` (a cron-triggered job: one
 * tick) and `bulwark agent worker` (a queue-triggered job: work until the region's queue is empty),
 * plus `bulwark jobs` and `bulwark status` to see what they did.
 *
 * Configuration comes from the environment (infra/README.md lists what the Pulumi program sets):
 * the fleet's tables and queues (AZURE_STORAGE_CONNECTION_STRING, or BULWARK_FLEET_TABLE_ENDPOINT
 * and BULWARK_FLEET_QUEUE_ENDPOINT with the managed identity), BULWARK_POLICIES,
 * BULWARK_AGENT_REGIONS, BULWARK_REGION, BULWARK_TRANSIENT, and the vault key.
 */
import { UsageError } from "../errors.ts";
import { azureContext, restoreAzureContext } from "../azure/context.ts";
import { FleetStorage, openFleet, runWorker, scheduleTick, systemClock, listRecentJobs, itemStatuses, jsonLog, defaultWorkerId } from "../jobs/index.ts";
import type { StorageConnection } from "../jobs/storage.ts";
import { loadPolicies, validatePolicy, type Policy } from "../policy/policy.ts";
import { ArmItemResolver } from "../policy/resolve-arm.ts";
import { JobAuthority, policyBoundEnvironment } from "../policy/authority.ts";
import { backupMachine } from "../workloads/backup-machine.ts";
import { restoreMachine } from "../workloads/restore-machine.ts";
import { restoreFilesMachine } from "../workloads/restore-files-machine.ts";
import { copyMachine, withCopyJobs } from "../workloads/copy-machine.ts";
import { CopyRecords } from "../jobs/copy-status.ts";
import { agentKeyProvider, workloadEnvironment } from "../workloads/environment.ts";
import { describeError } from "../errors.ts";
import { CodecPool } from "../engine/codec-pool.ts";
import { VaultLock } from "../engine/locks.ts";
import { pruneVault } from "../engine/prune.ts";
import { Vault } from "../engine/vault.ts";
import { pointsBeyondRetention } from "../engine/retention-points.ts";
import { forgetPoint } from "../engine/chain.ts";
import { openStore } from "../store/open.ts";
import { statusRows, type StatusRow } from "./status-view.ts";

type Values = Record<string, unknown>;

/** The fleet's tables and queues, from the environment (also the console's: runtime/console/command.ts). */
export async function fleetConnection(): Promise<StorageConnection> {
  if (process.env.AZURE_STORAGE_CONNECTION_STRING) return { connectionString: process.env.AZURE_STORAGE_CONNECTION_STRING };
  const tableEndpoint = process.env.BULWARK_FLEET_TABLE_ENDPOINT;
  const queueEndpoint = process.env.BULWARK_FLEET_QUEUE_ENDPOINT;
  if (!tableEndpoint || !queueEndpoint) {
    throw new UsageError("no fleet storage: set BULWARK_FLEET_TABLE_ENDPOINT and BULWARK_FLEET_QUEUE_ENDPOINT (or AZURE_STORAGE_CONNECTION_STRING)");
  }
  return { tableEndpoint, queueEndpoint, credential: (await azureContext()).credential };
}

async function fleet() {
  return openFleet(new FleetStorage(await fleetConnection(), { prefix: process.env.BULWARK_FLEET_PREFIX || undefined }), systemClock);
}

function list(value: unknown, env: string | undefined): string[] {
  const raw = (value as string | undefined) ?? env ?? "";
  return raw.split(",").map((s) => s.trim()).filter(Boolean);
}

/**
 * The policies: files or folders (--policies, BULWARK_POLICIES), or, where there are no files (a
 * Container Apps job), a JSON array of policy documents in BULWARK_POLICY_JSON (the Pulumi program
 * renders it from the stack's config).
 */
export async function policies(values: Values): Promise<Policy[]> {
  const paths = list(values.policies, process.env.BULWARK_POLICIES);
  if (paths.length > 0) return loadPolicies(paths);
  const inline = process.env.BULWARK_POLICY_JSON;
  if (inline) {
    let documents: unknown;
    try {
      documents = JSON.parse(inline);
    } catch (error) {
      throw new UsageError(`BULWARK_POLICY_JSON is not valid JSON: ${(error as Error).message}`);
    }
    if (!Array.isArray(documents)) throw new UsageError("BULWARK_POLICY_JSON must be a JSON array of policy documents");
    const parsed = documents.map((document, i) => validatePolicy(document, `BULWARK_POLICY_JSON[${i}]`));
    const names = new Set<string>();
    for (const policy of parsed) {
      if (names.has(policy.name)) throw new UsageError(`BULWARK_POLICY_JSON: two policies are named ${policy.name}`);
      names.add(policy.name);
    }
    return parsed;
  }
  throw new UsageError("no policies: pass --policies FILE-OR-FOLDER (or set BULWARK_POLICIES or BULWARK_POLICY_JSON); the worker takes what a job may touch from the scheduler's policies");
}

export async function agentSchedule(values: Values): Promise<Record<string, unknown>> {
  const loaded = await policies(values);
  const regions = list(values["agent-regions"], process.env.BULWARK_AGENT_REGIONS);
  if (regions.length === 0) throw new UsageError("which regions have agents? pass --agent-regions a,b (or set BULWARK_AGENT_REGIONS)");
  const ctx = await azureContext();
  const result = await scheduleTick({
    fleet: await fleet(),
    policies: loaded,
    resolveItems: new ArmItemResolver(ctx.credential, { endpoint: ctx.armEndpoint }),
    regionsWithAgents: regions,
    log: values.json ? (line) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...line })}\n`) : jsonLog,
  });
  return result as unknown as Record<string, unknown>;
}

export async function agentWorker(values: Values): Promise<Record<string, unknown>> {
  const region = (values.region as string | undefined) ?? process.env.BULWARK_REGION;
  if (!region) throw new UsageError("which region does this worker serve? pass --region R (or set BULWARK_REGION)");
  // What a job may touch comes from the policies (the scheduler's own), never from its record.
  const loaded = await policies(values);
  const azure = await azureContext();
  const authority = new JobAuthority(loaded, region, new ArmItemResolver(azure.credential, { endpoint: azure.armEndpoint }));
  const env = policyBoundEnvironment(await workloadEnvironment(), authority);
  const jobsFleet = await fleet();
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  try {
    const summary = await runWorker({
      fleet: jobsFleet,
      region,
      // Restores call Resource Manager as the restore identity (azure/context.ts), the rest as the worker's.
      // A files restore reads the vault and writes transient storage only: the worker's own identity.
      // A backup that commits a point submits its policy's copy jobs (copyTo), which this region's workers run.
      machines: [
        withCopyJobs(backupMachine(env), jobsFleet, authority),
        copyMachine(env, new CopyRecords(jobsFleet.items.table)),
        restoreMachine({ ...env, azure: await restoreAzureContext() }),
        restoreFilesMachine(env),
      ],
      limits: {
        perWorker: Number(values["max-jobs"] ?? process.env.BULWARK_MAX_JOBS_PER_WORKER ?? 2),
        perRegion: Number(process.env.BULWARK_MAX_JOBS_PER_REGION ?? 8),
      },
      signal: controller.signal,
      authority,
      workerId: defaultWorkerId(),
      leaseMs: process.env.BULWARK_LEASE_MS ? Number(process.env.BULWARK_LEASE_MS) : undefined,
      retryDelayMs: process.env.BULWARK_RETRY_DELAY_MS ? Number(process.env.BULWARK_RETRY_DELAY_MS) : undefined,
      lockRetryMs: process.env.BULWARK_LOCK_RETRY_MS ? Number(process.env.BULWARK_LOCK_RETRY_MS) : undefined,
      untilDrained: values["until-drained"] === true,
      // With --json, stdout carries only the summary; the job log lines go to stderr.
      log: values.json ? (line) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...line })}\n`) : jsonLog,
    });
    return summary as unknown as Record<string, unknown>;
  } finally {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
  }
}

/**
 * Retention and prune on their own schedule (`bulwark agent prune`, a daily Container Apps job):
 * for every vault the policies name (their copyTo vaults included), each policy's retention applied
 * to its points (per protected item; a kept VM point keeps its disk points), then prune under the
 * vault's exclusive lock.
 * Objects still under immutability stay for a later run.
 */
export async function agentPrune(values: Values): Promise<Record<string, unknown>> {
  const loaded = await policies(values);
  const azure = await azureContext();
  const provider = agentKeyProvider(process.env, azure);
  const byVault = new Map<string, Policy[]>();
  // A policy's copy vaults keep its retention too (their copy jobs apply it; this catches up and prunes).
  for (const policy of loaded) {
    for (const location of [policy.vault, ...policy.copyTo]) byVault.set(location, [...(byVault.get(location) ?? []), policy]);
  }
  const results: Record<string, unknown>[] = [];
  for (const [location, vaultPolicies] of byVault) {
    const store = (await openStore(location)).store;
    const lock = await VaultLock.acquire(store, "exclusive", "agent prune");
    try {
      const vault = await Vault.open(store, provider);
      const points = await vault.listPoints();
      const removed = new Set<string>();
      for (const policy of vaultPolicies) {
        // Membership is judged over every point: a VM point of one policy keeps its disk points from another's rule.
        for (const id of pointsBeyondRetention(points, policy.retention, (p) => p.tags.policy === policy.name).remove) removed.add(id);
      }
      const held: string[] = [];
      for (const id of removed) {
        await forgetPoint(vault, id, "agent prune: policy retention").catch((error) => held.push(`${id}: ${describeError(error).split("\n")[0]}`));
      }
      const doomed = [...removed];
      const fresh = await Vault.open(store, provider);
      const pool = new CodecPool(fresh.master);
      try {
        const report = await pruneVault(fresh, pool, { lock });
        results.push({ vault: location, removedPoints: doomed.length - held.length, held, prune: report });
      } finally {
        await pool.close();
      }
    } finally {
      await lock.release().catch(() => {});
    }
  }
  return { vaults: results };
}

/** `bulwark agent bridge`: inventory and snapshot hygiene in the customer's tenant (see workloads/bridge.ts). */
export async function agentBridge(): Promise<Record<string, unknown>> {
  const { runBridge, parseScopes } = await import("../workloads/bridge.ts");
  const graceDays = Number(process.env.BULWARK_SNAPSHOT_GRACE_DAYS ?? 7);
  if (!(graceDays >= 0)) throw new UsageError("BULWARK_SNAPSHOT_GRACE_DAYS must be a number of days, 0 or more");
  const report = await runBridge(await azureContext(), parseScopes(process.env.BULWARK_PROTECTED_SCOPES), { graceMs: graceDays * 86_400_000 });
  return report as unknown as Record<string, unknown>;
}

export async function jobsList(values: Values) {
  const f = await fleet();
  return listRecentJobs(f.jobs, { limit: Number(values.limit ?? 20) });
}

export async function statusList(values: Values): Promise<StatusRow[]> {
  const f = await fleet();
  const loaded = await policies(values);
  const now = Date.now();
  return statusRows(await itemStatuses(f.items, loaded, now), loaded, new Date(now));
}
