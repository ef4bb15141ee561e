/**
 * What a job may touch, derived from the policies a worker loads (the same policies the scheduler
 * runs: `--policies` / BULWARK_POLICIES / BULWARK_POLICY_JSON), never from the job record.
 *
 * A job record sits in the fleet's table, where anyone who can write the table could change it. A
 * worker that trusted it would open whatever vault the record names, sending the storage SDK's
 * bearer token to that host, or apply whatever retention it carries. So:
 * - a backup job must name one of the loaded policies; its item must be one that policy protects
 *   now (an explicit id of the policy, or a resource its tagged selector finds), of the kind the
 *   record says, in this worker's region (or the policy allows crossRegion); the vault the record
 *   names (in its input and its state data) must be that policy's vault. Its vault, retention and
 *   tags are then taken from the policy (backup-machine.ts `start`), whatever the record says;
 * - a restore job's vault must be one of the loaded policies' vaults (their copyTo vaults included);
 * - a copy job must name one of the loaded policies, copy from that policy's vault into one of its
 *   copyTo vaults, for an item the policy could protect; its retention is the policy's;
 * - any other machine is refused;
 * - and the workers' environment opens only those vaults (`policyBoundEnvironment`), whatever a step
 *   asks for, so a record changed between two steps cannot redirect one either.
 * A refused job fails at once with the reason (workers poison its message); it is never retried.
 */
import type { RetentionRule } from "../retention/gfs.ts";
import { PermanentJobError } from "../jobs/machine.ts";
import type { WorkloadEnvironment } from "../workloads/environment.ts";
import { kindOfResourceId, kindOfResourceType, normalizeRegion, subscriptionOf, type ItemResolver, type ProtectedItem } from "./items.ts";
import { vaultKey, type Policy } from "./policy.ts";

/** What a backup job of a policy uses, from the policy. */
export interface BackupTerms {
  policy: string;
  vault: string;
  retention: RetentionRule;
  tags: Record<string, string>;
}

/** What a copy job of a policy uses, from the policy: it reads `vault` and writes one of `copyTo`. */
export interface CopyTerms {
  policy: string;
  vault: string;
  copyTo: string[];
  retention: RetentionRule;
}

/** The parts of a job record the authority judges. */
export interface JobClaims {
  jobId: string;
  machine: string;
  itemId: string;
  itemKind: string;
  policy: string;
  input: Record<string, unknown>;
  data: Record<string, unknown>;
}

export class JobAuthority {
  readonly policies: Policy[];
  readonly region: string;
  private readonly resolver: ItemResolver;
  private readonly byName: Map<string, Policy>;
  private readonly allowedVaults: Set<string>;
  private readonly resolved = new Map<string, { at: number; items: Promise<ProtectedItem[]> }>();
  private readonly cacheMs: number;

  constructor(policies: Policy[], region: string, resolver: ItemResolver, options: { cacheMs?: number } = {}) {
    this.policies = policies;
    this.region = normalizeRegion(region);
    this.resolver = resolver;
    this.byName = new Map(policies.map((p) => [p.name, p]));
    // A policy's copy vaults too: its copy jobs write them, and a restore may read from them.
    this.allowedVaults = new Set(policies.flatMap((p) => [p.vault, ...p.copyTo].map(vaultKey)));
    this.cacheMs = options.cacheMs ?? 5 * 60_000;
  }

  /** The vaults the policies name (their copy vaults included). */
  get vaults(): string[] {
    return [...new Set(this.policies.flatMap((p) => [p.vault, ...p.copyTo]))];
  }

  allowsVault(location: string): boolean {
    return typeof location === "string" && location !== "" && this.allowedVaults.has(vaultKey(location));
  }

  /** A backup job's vault, retention and tags, from its policy; undefined for a policy this worker does not have. */
  backupTerms(policyName: string): BackupTerms | undefined {
    const policy = this.byName.get(policyName);
    if (!policy) return undefined;
    return { policy: policy.name, vault: policy.vault, retention: { ...policy.retention }, tags: { policy: policy.name } };
  }

  /** A copy job's source, destinations and retention, from its policy; undefined for a policy this worker does not have. */
  copyTerms(policyName: string): CopyTerms | undefined {
    const policy = this.byName.get(policyName);
    if (!policy) return undefined;
    return { policy: policy.name, vault: policy.vault, copyTo: [...policy.copyTo], retention: { ...policy.retention } };
  }

  /** Undefined when the job may run; otherwise why not (one sentence that names the job and what to do). */
  async refusal(job: JobClaims): Promise<string | undefined> {
    const named = (what: string) => `job ${job.jobId} (${job.machine} of ${job.itemId || "no item"}) ${what}`;
    const fix = "the job record does not match this worker's policies and may have been forged; submit the job again from the policies";
    if (job.machine === "restore" || job.machine === "restore-files") {
      for (const [where, vault] of [["input", job.input.vault], ["state", job.data.vault]] as const) {
        if (vault === undefined && where === "state") continue;
        if (!this.allowsVault(String(vault ?? ""))) {
          return `${named(`names the vault ${JSON.stringify(vault ?? "")} (in its ${where}), which none of this worker's policies names (${this.vaults.join(", ") || "none"})`)}; ${fix}`;
        }
      }
      return undefined;
    }
    if (job.machine === "copy") return this.copyRefusal(job, named, fix);
    if (job.machine !== "backup") return `${named(`is of machine "${job.machine}", which this worker's policies do not allow`)}; ${fix}`;

    const policy = this.byName.get(job.policy);
    if (!policy) {
      return `${named(`names the policy ${JSON.stringify(job.policy)}, which is not among this worker's policies (${[...this.byName.keys()].join(", ") || "none"})`)}; ${fix}`;
    }
    if (job.input.policy !== undefined && job.input.policy !== job.policy) {
      return `${named(`names the policy ${JSON.stringify(job.policy)} but its input names ${JSON.stringify(job.input.policy)}`)}; ${fix}`;
    }
    for (const [where, vault] of [["input", job.input.vault], ["state", job.data.vault]] as const) {
      if (vault === undefined) continue;
      if (vaultKey(String(vault)) !== vaultKey(policy.vault)) {
        return `${named(`names the vault ${JSON.stringify(vault)} (in its ${where}), but policy ${policy.name} keeps its points in ${policy.vault}`)}; ${fix}`;
      }
    }
    // A job already started carries its retention and tags in its state: they must be the policy's.
    if (job.data.retention !== undefined && JSON.stringify(normalizeRule(job.data.retention)) !== JSON.stringify(normalizeRule(policy.retention))) {
      return `${named(`carries the retention ${JSON.stringify(job.data.retention)}, but policy ${policy.name} keeps ${JSON.stringify(policy.retention)}`)}; ${fix}`;
    }
    if (job.data.tags !== undefined && JSON.stringify(job.data.tags) !== JSON.stringify({ policy: policy.name })) {
      return `${named(`carries the tags ${JSON.stringify(job.data.tags)}, but policy ${policy.name} tags its points ${JSON.stringify({ policy: policy.name })}`)}; ${fix}`;
    }

    const kind = kindOfResourceId(job.itemId);
    if (!kind || kind !== job.itemKind || (job.input.kind !== undefined && job.input.kind !== kind)) {
      return `${named(`says its item is a ${JSON.stringify(job.input.kind ?? job.itemKind)}, which its id does not`)}; ${fix}`;
    }
    if (job.input.itemId !== undefined && String(job.input.itemId).toLowerCase() !== job.itemId.toLowerCase()) {
      return `${named(`backs up ${JSON.stringify(job.input.itemId)} according to its input`)}; ${fix}`;
    }
    if (!this.mayProtect(policy, job.itemId, kind)) {
      return `${named(`is not an item policy ${policy.name} protects (not in protect.resources, not of a type and subscription its tagged selectors search)`)}; ${fix}`;
    }
    let item = await this.findItem(policy, job.itemId, false);
    if (!item) item = await this.findItem(policy, job.itemId, true);
    if (!item) {
      return `${named(`is not among the resources policy ${policy.name} protects now: it does not exist, or its tagged selector no longer selects it`)}; if it should be protected, check that it exists and carries the policy's tag`;
    }
    if (item.region !== this.region && !policy.crossRegion) {
      return `${named(`is in region ${item.region}, not this worker's region ${this.region}, and policy ${policy.name} does not allow crossRegion`)}; ${fix}`;
    }
    return undefined;
  }

  /**
   * A copy job reads its policy's vault and writes one of the policy's copyTo vaults, for an item the
   * policy could protect (not asked of ARM: the points of an item deleted since are still copied).
   */
  private copyRefusal(job: JobClaims, named: (what: string) => string, fix: string): string | undefined {
    const policy = this.byName.get(job.policy);
    if (!policy) {
      return `${named(`names the policy ${JSON.stringify(job.policy)}, which is not among this worker's policies (${[...this.byName.keys()].join(", ") || "none"})`)}; ${fix}`;
    }
    if (job.input.policy !== job.policy) {
      return `${named(`names the policy ${JSON.stringify(job.policy)} but its input names ${JSON.stringify(job.input.policy)}`)}; ${fix}`;
    }
    for (const data of [job.input, job.data]) {
      if (data.from !== undefined && vaultKey(String(data.from)) !== vaultKey(policy.vault)) {
        return `${named(`copies from ${JSON.stringify(data.from)}, but policy ${policy.name} keeps its points in ${policy.vault}`)}; ${fix}`;
      }
      if (data.to !== undefined && !policy.copyTo.some((v) => vaultKey(v) === vaultKey(String(data.to)))) {
        return `${named(`copies to ${JSON.stringify(data.to)}, which is not among policy ${policy.name}'s copyTo vaults (${policy.copyTo.join(", ") || "none"})`)}; ${fix}`;
      }
    }
    const kind = kindOfResourceId(job.itemId);
    if (!kind || kind !== job.itemKind || !this.mayProtect(policy, job.itemId, kind)) {
      return `${named(`is not an item policy ${policy.name} protects (not in protect.resources, not of a type and subscription its tagged selectors search)`)}; ${fix}`;
    }
    return undefined;
  }

  /** Without asking ARM: is the id one the policy could select at all? */
  private mayProtect(policy: Policy, itemId: string, kind: string): boolean {
    const id = itemId.toLowerCase();
    if (policy.protect.resources.some((r) => r.toLowerCase() === id)) return true;
    const subscription = subscriptionOf(itemId)?.toLowerCase();
    return policy.protect.tagged.some(
      (s) => kindOfResourceType(s.type) === kind && s.subscriptions.some((sub) => sub.toLowerCase() === subscription),
    );
  }

  private async findItem(policy: Policy, itemId: string, fresh: boolean): Promise<ProtectedItem | undefined> {
    const now = Date.now();
    let cached = this.resolved.get(policy.name);
    if (!cached || fresh || now - cached.at > this.cacheMs) {
      // A deleted explicit resource is simply not found; the policy's other items still resolve.
      const items = this.resolver.resolve(policy, { onMissing: () => {} });
      cached = { at: now, items };
      this.resolved.set(policy.name, cached);
      items.catch(() => this.resolved.delete(policy.name));
    }
    const items = await cached.items;
    return items.find((i) => i.id.toLowerCase() === itemId.toLowerCase());
  }
}

function normalizeRule(rule: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  if (typeof rule !== "object" || rule === null) return out;
  for (const [key, value] of Object.entries(rule as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b))) {
    if (typeof value === "number" && value > 0) out[key] = value;
  }
  return out;
}

/**
 * The workers' environment bound to the policies: vaults open only if a policy names them, so no
 * step of any job sends a credential to a host the policies do not name; and the backup machine
 * takes its terms from `authority`.
 */
export function policyBoundEnvironment(env: WorkloadEnvironment, authority: JobAuthority): WorkloadEnvironment {
  return {
    ...env,
    authority,
    async openVault(location) {
      if (!authority.allowsVault(location)) {
        throw new PermanentJobError(
          `the vault ${JSON.stringify(location)} is not one this worker's policies name (${authority.vaults.join(", ") || "none"}); nothing was sent to it`,
        );
      }
      return env.openVault(location);
    },
  };
}
