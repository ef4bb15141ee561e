/**
 * Microsoft.App jobs, read side only: Jobs_Get and JobsExecutions_List, the two calls the console's
 * Agents page makes (runtime/console/agents.ts). Shapes follow Azure/azure-rest-api-specs
 * specification/app/resource-manager/Microsoft.App/ContainerApps/stable/2026-07-01/examples/
 * Job_Get.json and Job_Executions_Get.json (api-version 2026-07-01, what @azure/arm-appcontainers
 * 4.0.0 sends): a job is {id, name, type "Microsoft.App/jobs", location, properties: {configuration:
 * {triggerType, replicaTimeout, replicaRetryLimit, scheduleTriggerConfig | eventTriggerConfig},
 * environmentId, provisioningState, template}}; executions come as {value: [{id, name, properties:
 * {status, startTime, endTime}}], nextLink}. Execution statuses are the spec's
 * JobExecutionRunningState values.
 *
 * Tests seed jobs and executions here (no Microsoft.App write path is emulated: Bulwark never
 * creates jobs at run time, Pulumi does). Assumptions, since no reference states them: the page
 * size of the executions list (20 here, so the SDK's paging is exercised) and its order (the
 * emulator returns oldest first, so a client must sort rather than trust the first item).
 */
import { type EmulatorReply, type EmulatorRequest, armError, json } from "../http.ts";
import type { World } from "./world.ts";

export type JobExecutionStatus = "Running" | "Processing" | "Stopped" | "Degraded" | "Failed" | "Unknown" | "Succeeded";

export interface SeededJob {
  resourceGroup: string;
  name: string;
  location: string;
  trigger: { kind: "schedule"; cron: string } | { kind: "event" };
  createdAt: Date;
  executions: SeededExecution[];
}

export interface SeededExecution {
  name: string;
  status: JobExecutionStatus;
  startTime: Date;
  endTime?: Date;
}

const PAGE_SIZE = 20;

export class ContainerAppsProvider {
  private readonly world: World;
  private readonly jobs = new Map<string, SeededJob>();

  constructor(world: World) {
    this.world = world;
  }

  /** A job as Pulumi would have created it; its executions are added with addExecution. */
  addJob(resourceGroup: string, name: string, options: { location?: string; trigger: SeededJob["trigger"]; createdAt?: Date }): SeededJob {
    const job: SeededJob = {
      resourceGroup,
      name,
      location: options.location ?? this.world.resourceGroup(resourceGroup)?.location ?? "westeurope",
      trigger: options.trigger,
      createdAt: options.createdAt ?? new Date(),
      executions: [],
    };
    this.jobs.set(key(resourceGroup, name), job);
    return job;
  }

  /** An execution of a seeded job; execution names are `<job>-<8 digits>` as in Azure's example. */
  addExecution(resourceGroup: string, jobName: string, execution: Omit<SeededExecution, "name"> & { name?: string }): SeededExecution {
    const job = this.jobs.get(key(resourceGroup, jobName));
    if (!job) throw new Error(`no seeded job ${jobName} in ${resourceGroup}`);
    const seeded = { ...execution, name: execution.name ?? `${jobName}-${String(job.executions.length + 1).padStart(8, "0")}` };
    job.executions.push(seeded);
    return seeded;
  }

  /** `segments` follow .../resourceGroups/{group}/providers/Microsoft.App/. */
  handle(request: EmulatorRequest, group: string, segments: string[]): EmulatorReply {
    if (!request.query.get("api-version")) {
      return armError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.");
    }
    const [type, name, child, ...rest] = segments;
    if (type?.toLowerCase() !== "jobs" || !name || rest.length > 0 || request.method !== "GET") {
      return armError(400, "NoRegisteredProviderFound", `The emulator does not serve ${request.method} ${request.path}.`);
    }
    const job = this.jobs.get(key(group, name));
    if (!job) return armError(404, "ResourceNotFound", `The Resource 'Microsoft.App/jobs/${name}' under resource group '${group}' was not found.`);
    if (child === undefined) return json(200, this.jobJson(job));
    if (child.toLowerCase() === "executions") return this.executionsPage(request, job);
    return armError(400, "NoRegisteredProviderFound", `The emulator does not serve ${request.method} ${request.path}.`);
  }

  private jobId(job: SeededJob): string {
    return `/subscriptions/${this.world.subscriptionId}/resourceGroups/${job.resourceGroup}/providers/Microsoft.App/jobs/${job.name}`;
  }

  private jobJson(job: SeededJob) {
    const trigger = job.trigger;
    return {
      id: this.jobId(job),
      name: job.name,
      type: "Microsoft.App/jobs",
      location: job.location,
      systemData: { createdAt: job.createdAt.toISOString(), createdByType: "User", lastModifiedAt: job.createdAt.toISOString() },
      properties: {
        provisioningState: "Succeeded",
        environmentId: `/subscriptions/${this.world.subscriptionId}/resourceGroups/${job.resourceGroup}/providers/Microsoft.App/managedEnvironments/${job.name}-env`,
        configuration: {
          triggerType: trigger.kind === "schedule" ? "Schedule" : "Event",
          replicaTimeout: 900,
          replicaRetryLimit: 1,
          ...(trigger.kind === "schedule"
            ? { scheduleTriggerConfig: { cronExpression: trigger.cron, parallelism: 1, replicaCompletionCount: 1 } }
            : { eventTriggerConfig: { parallelism: 1, replicaCompletionCount: 1, scale: { minExecutions: 0, maxExecutions: 10, pollingInterval: 30, rules: [] } } }),
        },
        template: { containers: [{ name: job.name, image: "bulwark.azurecr.io/bulwark:emulated", resources: { cpu: 0.5, memory: "1Gi" } }] },
      },
    };
  }

  private executionsPage(request: EmulatorRequest, job: SeededJob): EmulatorReply {
    if (request.query.has("$filter")) return armError(400, "InvalidFilter", "The emulator does not implement $filter on job executions.");
    const skip = Number(request.query.get("$skiptoken") ?? "0");
    if (!Number.isInteger(skip) || skip < 0) return armError(400, "InvalidSkipToken", "The $skiptoken is not valid.");
    const page = job.executions.slice(skip, skip + PAGE_SIZE);
    const more = skip + PAGE_SIZE < job.executions.length;
    const nextLink = more ? `${request.origin}${this.jobId(job)}/executions?api-version=${request.query.get("api-version")}&$skiptoken=${skip + PAGE_SIZE}` : null;
    return json(200, {
      value: page.map((e) => ({
        id: `${this.jobId(job)}/executions/${e.name}`,
        name: e.name,
        type: "Microsoft.App/jobs/executions",
        properties: {
          status: e.status,
          startTime: e.startTime.toISOString(),
          ...(e.endTime ? { endTime: e.endTime.toISOString() } : {}),
        },
      })),
      nextLink,
    });
  }
}

function key(group: string, name: string): string {
  return `${group.toLowerCase()}/${name.toLowerCase()}`;
}
