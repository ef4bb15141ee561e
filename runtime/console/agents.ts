/**
 * The Agents page's data: each region's scheduler and worker jobs (Container Apps jobs, named by
 * infra/naming.ts's regionalName as infra/components/agent-job.ts creates them), their latest
 * executions, and a judgement per job, read through the Container Apps API
 * (@azure/arm-appcontainers: Jobs_Get and JobsExecutions_List, api-version 2026-07-01 as the SDK
 * sends it; Azure/azure-rest-api-specs specification/app/resource-manager/Microsoft.App/
 * ContainerApps/stable/2026-07-01/examples/Job_Get.json and Job_Executions_Get.json).
 *
 * Why it exists: a scheduler that stopped ticking shows here before any RPO is missed. The
 * scheduler is "late" once its last successful execution is older than two of its cron periods
 * (read from the job's own schedule trigger, so the judgement follows what is deployed).
 *
 * What Resource Manager returns is checked before use (a status outside the published enum, a
 * date that does not parse, a page of executions without end): such a job is "unknown" with the
 * reason, and the other jobs still show.
 */
import type { TokenCredential } from "@azure/identity";
import type { ContainerAppsAPIClient } from "@azure/arm-appcontainers";
import { UsageError } from "../errors.ts";
import { CronExpression, CronSyntaxError } from "../policy/cron.ts";

export type AgentKind = "scheduler" | "worker";

/**
 * - ok: nothing to act on;
 * - late (scheduler only): no successful execution within two cron periods;
 * - failing: the latest finished execution failed (Failed or Degraded);
 * - unknown: the job could not be read, or what came back made no sense; `detail` says which.
 */
export type AgentState = "ok" | "late" | "failing" | "unknown";

/** One execution as the page shows it. Times are UTC ISO 8601 strings. */
export interface AgentExecution {
  name: string;
  /** JobExecutionRunningState: Running, Processing, Stopped, Degraded, Failed, Unknown, Succeeded. */
  status: string;
  start?: string;
  end?: string;
}

export interface AgentStatus {
  region: string;
  /** The job's Azure name, e.g. contoso-weu-sched. */
  job: string;
  kind: AgentKind;
  /** The scheduler's cron (UTC) as deployed; absent for the queue-triggered worker. */
  schedule?: string;
  /** Newest first, at most `executionsShown`. */
  lastExecutions: AgentExecution[];
  /** When the newest successful execution started (ISO), if any is on record. */
  lastSuccessAt?: string;
  state: AgentState;
  /** One sentence for the operator: why the state is what it is. */
  detail: string;
}

/** Where one region's agent jobs are: what the console is configured with (BULWARK_CONSOLE_AGENTS). */
export interface AgentJobs {
  region: string;
  subscriptionId: string;
  resourceGroup: string;
  schedulerJob: string;
  workerJob: string;
}

export interface ReadAgentsOptions {
  credential: TokenCredential;
  /** Resource Manager's endpoint (BULWARK_ARM_ENDPOINT); Azure's public cloud when absent. */
  armEndpoint?: string;
  /** The console's clock; injectable so tests can place "now". */
  now?: () => Date;
  /** How many executions per job the page lists (default 10). */
  executionsShown?: number;
  /** Gives up on a job after this long (default 20 s): a throttled Resource Manager must not hang the page. */
  timeoutMs?: number;
}

const KNOWN_STATUSES = new Set(["Running", "Processing", "Stopped", "Degraded", "Failed", "Unknown", "Succeeded"]);
const FINISHED = new Set(["Succeeded", "Failed", "Degraded", "Stopped"]);
const FAILED = new Set(["Failed", "Degraded"]);
/** Executions read per job at most, whatever Resource Manager pages out: a bound on hostile or runaway lists. */
const MAX_EXECUTIONS_READ = 500;
const MINUTE = 60_000;

/**
 * Container Apps names: 2-32 lowercase letters, digits and hyphens, starting with a letter and
 * ending with a letter or digit (MicrosoftDocs/azure-docs
 * articles/azure-resource-manager/management/resource-name-rules.md, Microsoft.App), and no "--"
 * (the Azure CLI reference for `az containerapp job`: a name "cannot have '--'").
 */
export const CONTAINER_APPS_NAME = /^(?!.*--)[a-z][a-z0-9-]{0,30}[a-z0-9]$/;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Resource group names: 1-90 letters, digits, _ - . ( ), not ending in a period (resource-name-rules.md). */
const RESOURCE_GROUP = /^[-\w.()]{0,89}[-\w()]$/;

/**
 * The regions' agent jobs from BULWARK_CONSOLE_AGENTS (a JSON list of AgentJobs, written by the
 * Pulumi program: infra/components/console-app.ts). Absent: no agents to show (a local console).
 */
export function agentJobsFromEnv(env: NodeJS.ProcessEnv = process.env): AgentJobs[] {
  const text = env.BULWARK_CONSOLE_AGENTS;
  if (text === undefined || text.trim() === "") return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError("BULWARK_CONSOLE_AGENTS is not JSON: set it to a list of {region, subscriptionId, resourceGroup, schedulerJob, workerJob}, or unset it to show no agents");
  }
  if (!Array.isArray(parsed)) throw new UsageError("BULWARK_CONSOLE_AGENTS must be a JSON list of {region, subscriptionId, resourceGroup, schedulerJob, workerJob}");
  return parsed.map((entry, i) => agentJobsEntry(entry, i));
}

function agentJobsEntry(entry: unknown, i: number): AgentJobs {
  const where = `BULWARK_CONSOLE_AGENTS[${i}]`;
  if (typeof entry !== "object" || entry === null) throw new UsageError(`${where} must be an object {region, subscriptionId, resourceGroup, schedulerJob, workerJob}`);
  const e = entry as Record<string, unknown>;
  const text = (key: string, valid: RegExp, what: string): string => {
    const value = e[key];
    if (typeof value !== "string" || !valid.test(value)) throw new UsageError(`${where}.${key} ${JSON.stringify(value)} is not ${what}: correct the console's configuration`);
    return value;
  };
  return {
    region: text("region", /^[a-z0-9]{2,40}$/, "an Azure region's programmatic name (e.g. westeurope)"),
    subscriptionId: text("subscriptionId", GUID, "a subscription id (a GUID)"),
    resourceGroup: text("resourceGroup", RESOURCE_GROUP, "a resource group name"),
    schedulerJob: text("schedulerJob", CONTAINER_APPS_NAME, "a Container Apps job name"),
    workerJob: text("workerJob", CONTAINER_APPS_NAME, "a Container Apps job name"),
  };
}

/** Every region's scheduler and worker, in the order given; one job's failure to read never hides another. */
export async function readAgents(regions: AgentJobs[], options: ReadAgentsOptions): Promise<AgentStatus[]> {
  const clients = new Map<string, Promise<ContainerAppsAPIClient>>();
  const clientFor = (subscriptionId: string) => {
    let client = clients.get(subscriptionId);
    if (!client) {
      client = containerAppsClient(options, subscriptionId);
      clients.set(subscriptionId, client);
    }
    return client;
  };
  const reads = regions.flatMap((region) =>
    (["scheduler", "worker"] as const).map(async (kind) => {
      const job = kind === "scheduler" ? region.schedulerJob : region.workerJob;
      try {
        const observed = await observeJob(await clientFor(region.subscriptionId), region.resourceGroup, job, options.timeoutMs ?? 20_000);
        return judge({ region: region.region, job, kind }, observed, (options.now ?? (() => new Date()))(), options.executionsShown ?? 10);
      } catch (error) {
        return unreadable({ region: region.region, job, kind }, region, error);
      }
    }),
  );
  return Promise.all(reads);
}

async function containerAppsClient(options: ReadAgentsOptions, subscriptionId: string): Promise<ContainerAppsAPIClient> {
  // Loaded on use, as runtime/azure/context.ts loads the other Resource Manager clients.
  const { ContainerAppsAPIClient } = await import("@azure/arm-appcontainers");
  return new ContainerAppsAPIClient(options.credential, subscriptionId, {
    endpoint: options.armEndpoint,
    // A page waits for this: a few quick retries, not the agents' patient ones.
    retryOptions: { maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 4_000 },
  });
}

/** What Resource Manager said about one job, checked. */
export interface ObservedJob {
  triggerType?: string;
  cron?: string;
  createdAt?: Date;
  executions: { name: string; status: string; start?: Date; end?: Date }[];
}

async function observeJob(client: ContainerAppsAPIClient, resourceGroup: string, jobName: string, timeoutMs: number): Promise<ObservedJob> {
  const abortSignal = AbortSignal.timeout(timeoutMs);
  const job = await client.jobs.get(resourceGroup, jobName, { abortSignal });
  const executions: ObservedJob["executions"] = [];
  for await (const execution of client.jobsExecutions.list(resourceGroup, jobName, { abortSignal })) {
    executions.push(checkedExecution(execution));
    if (executions.length >= MAX_EXECUTIONS_READ) break;
  }
  return {
    triggerType: job.configuration?.triggerType,
    cron: job.configuration?.scheduleTriggerConfig?.cronExpression,
    createdAt: validDate(job.systemData?.createdAt),
    executions,
  };
}

function checkedExecution(execution: { name?: string; status?: string; startTime?: Date; endTime?: Date }): ObservedJob["executions"][number] {
  const name = typeof execution.name === "string" ? execution.name : "(unnamed)";
  const status = typeof execution.status === "string" && KNOWN_STATUSES.has(execution.status) ? execution.status : "Unknown";
  return { name, status, start: validDate(execution.startTime), end: validDate(execution.endTime) };
}

function validDate(value: unknown): Date | undefined {
  return value instanceof Date && Number.isFinite(value.getTime()) ? value : undefined;
}

/**
 * The judgement, a pure function of what was observed and the console's clock (tests call it
 * directly for the edges: a clock that is off, a cron that fires rarely).
 */
export function judge(id: Pick<AgentStatus, "region" | "job" | "kind">, observed: ObservedJob, now: Date, executionsShown = 10): AgentStatus {
  const newestFirst = [...observed.executions].sort((a, b) => (b.start?.getTime() ?? 0) - (a.start?.getTime() ?? 0));
  const lastExecutions = newestFirst.slice(0, executionsShown).map((e) => ({
    name: e.name,
    status: e.status,
    ...(e.start ? { start: e.start.toISOString() } : {}),
    ...(e.end ? { end: e.end.toISOString() } : {}),
  }));
  const lastSuccess = newestFirst.find((e) => e.status === "Succeeded" && e.start);
  const lastFinished = newestFirst.find((e) => FINISHED.has(e.status));
  const base = {
    ...id,
    lastExecutions,
    ...(lastSuccess?.start ? { lastSuccessAt: lastSuccess.start.toISOString() } : {}),
  };
  const failing = lastFinished !== undefined && FAILED.has(lastFinished.status);
  if (id.kind === "worker") {
    if (failing) return { ...base, state: "failing", detail: `its latest finished execution ${lastFinished.name} ${lastFinished.status.toLowerCase()}: see the job's console logs in the region's Log Analytics workspace` };
    if (lastFinished === undefined) return { ...base, state: "ok", detail: "no finished execution on record: the worker runs only while the region's work queue holds messages" };
    return { ...base, state: "ok", detail: `its latest finished execution ${lastFinished.status.toLowerCase()}` };
  }
  return judgeScheduler(base, observed, now, failing ? lastFinished : undefined, lastSuccess?.start);
}

function judgeScheduler(
  base: Omit<AgentStatus, "state" | "detail">,
  observed: ObservedJob,
  now: Date,
  lastFailed: { name: string; status: string } | undefined,
  lastSuccessAt: Date | undefined,
): AgentStatus {
  if (observed.triggerType !== undefined && observed.triggerType !== "Schedule") {
    return { ...base, state: "unknown", detail: `the job's trigger is ${observed.triggerType}, not Schedule: it is not a scheduler as Bulwark deploys one` };
  }
  let cron: CronExpression;
  try {
    cron = new CronExpression(observed.cron ?? "");
  } catch (error) {
    if (!(error instanceof CronSyntaxError)) throw error;
    return { ...base, state: "unknown", detail: `the job's schedule ${JSON.stringify(observed.cron ?? "")} is not a cron Bulwark reads: ${error.message}` };
  }
  const withSchedule = { ...base, schedule: cron.source };
  const deadline = lateDeadline(cron, now);
  if (lastFailed) {
    return { ...withSchedule, state: "failing", detail: `its latest finished tick ${lastFailed.name} ${lastFailed.status.toLowerCase()}${lastSuccessAt ? `; the last successful one started ${lastSuccessAt.toISOString()}` : "; none succeeded on record"}` };
  }
  if (deadline === undefined) return { ...withSchedule, state: "ok", detail: "its schedule has not fired twice yet" };
  if (lastSuccessAt === undefined) {
    // A job created since the deadline has not had two ticks yet.
    if (observed.createdAt !== undefined && observed.createdAt.getTime() >= deadline.getTime()) {
      return { ...withSchedule, state: "ok", detail: "new: its first ticks are due" };
    }
    return { ...withSchedule, state: "late", detail: `no successful tick on record, and its schedule (${cron.source}) has fired at least twice: due items are not being queued` };
  }
  if (lastSuccessAt.getTime() < deadline.getTime()) {
    return { ...withSchedule, state: "late", detail: `its last successful tick started ${lastSuccessAt.toISOString()}, more than two periods of ${cron.source} ago: due items are not being queued` };
  }
  return { ...withSchedule, state: "ok", detail: `ticking: the last successful tick started ${lastSuccessAt.toISOString()}` };
}

/**
 * The oldest a last successful tick may have started and the scheduler still be on time: the
 * fire before the latest fire at or before now (so one tick may be missing or running), less a
 * little slack for an execution that starts a moment before its minute on a clock that is off
 * (5% of that period, at most 5 minutes). Undefined when the schedule has not fired twice.
 */
export function lateDeadline(cron: CronExpression, now: Date): Date | undefined {
  const latest = cron.previousFire(now);
  if (!latest) return undefined;
  const before = cron.previousFire(new Date(latest.getTime() - MINUTE));
  if (!before) return undefined;
  const slack = Math.min((latest.getTime() - before.getTime()) * 0.05, 5 * MINUTE);
  return new Date(before.getTime() - slack);
}

function unreadable(id: Pick<AgentStatus, "region" | "job" | "kind">, where: AgentJobs, error: unknown): AgentStatus {
  const status = (error as { statusCode?: unknown }).statusCode;
  const at = `${where.resourceGroup} in subscription ${where.subscriptionId}`;
  const detail =
    status === 404
      ? `the job was not found in ${at}: is the region stack deployed?`
      : status === 401 || status === 403
        ? `the console's identity may not read the job in ${at}: it needs Reader on the job (the region stack grants it from the customer stack's console identity)`
        : error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError")
          ? "Resource Manager did not answer in time: reload the page to try again"
          : `reading the job failed: ${error instanceof Error ? error.message : String(error)}`;
  return { ...id, lastExecutions: [], state: "unknown", detail };
}
