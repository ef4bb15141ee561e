/**
 * Operators are told: Azure Monitor alerts over what the region's agents print, into one action
 * group of the configured emails and webhooks (`bulwark:alerts`).
 *
 * The agents print one JSON object per line on stdout (runtime/jobs/runner.ts jsonLog); the
 * Container Apps environment ships console output to its Log Analytics workspace, table
 * ContainerAppConsoleLogs_CL, the line in column Log_s (MicrosoftDocs/azure-docs
 * articles/container-apps/log-monitoring.md, "Console Logs"; that is the table of the
 * "log-analytics" destination the environment uses). The docs list no job-name column, so the
 * queries select lines by their own fields only: the workspace holds this region's agents alone.
 *
 * Rules are ScheduledQueryRule resources of kind LogAlert (azure-native `monitor` module, REST API
 * 2025-01-01-preview in this provider; formerly `insights`), scoped to the workspace. Job executions
 * that fail outright (the container exits non-zero, so no report line is printed) are caught by a
 * metric alert on each job: metric "Executions" of Microsoft.App/jobs, dimension "state"
 * (learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-app-jobs-metrics).
 * That the dimension's value for a failed execution is "Failed" is an assumption: it is the job
 * execution status Azure/azure-rest-api-specs names (specification/app, JobExecution.status), and
 * the metrics page lists no values.
 */
import * as pulumi from "@pulumi/pulumi";
import * as monitor from "@pulumi/azure-native/monitor/index.js";
import { UsageError } from "../../runtime/errors.ts";
import { CronExpression } from "../../runtime/policy/cron.ts";
import type { AlertReceivers } from "../network-and-alerts-config.ts";

export const CONSOLE_LOG_TABLE = "ContainerAppConsoleLogs_CL";

/** One log line's fields, as a KQL expression over the parsed line. */
function field(path: string): string {
  return `tostring(line.${path})`;
}

/** The lines of the agents' log whose fields equal the given values. */
export function linesWhere(fields: Record<string, string>): string {
  const conditions = Object.entries(fields).map(([path, value]) => `${field(path)} == ${JSON.stringify(value)}`);
  return [CONSOLE_LOG_TABLE, "| extend line = parse_json(Log_s)", `| where ${conditions.join(" and ")}`].join("\n");
}

export interface LogAlertDefinition {
  /** Part of the rule's name. */
  key: string;
  displayName: string;
  description: string;
  /** 0 (critical) to 4 (verbose). */
  severity: number;
  query: string;
  /** Fires when the number of matching lines in the window is … */
  operator: "GreaterThan" | "LessThan";
  threshold: number;
  /** ISO 8601: how far back each evaluation looks. */
  windowSize: string;
  evaluationFrequency: string;
}

/** The longest gap between two fires of a five-field cron, over a week (the longest cycle that matters here). */
export function longestTickGapMs(cron: string): number {
  const expression = new CronExpression(cron);
  let at = expression.nextFire(new Date(Date.UTC(2030, 0, 6)))!;
  const end = at.getTime() + 8 * 86_400_000;
  let longest = 0;
  while (at.getTime() < end) {
    const next = expression.nextFire(at)!;
    longest = Math.max(longest, next.getTime() - at.getTime());
    at = next;
  }
  return longest;
}

/**
 * The look-back windows a log search alert rule offers (its "aggregation granularity"), in
 * minutes, up to two days. The REST spec types windowSize only as an ISO 8601 duration; these are
 * the values the Azure portal offers for it, so the rule uses one of them rather than an arbitrary
 * duration the service might refuse (not settled by the spec: see the report of issue 9).
 */
const WINDOW_MINUTES = [5, 10, 15, 30, 45, 60, 120, 180, 240, 300, 360, 1440, 2880];

function isoDuration(minutes: number): string {
  if (minutes % 1440 === 0) return `P${minutes / 1440}D`;
  if (minutes % 60 === 0) return `PT${minutes / 60}H`;
  return `PT${minutes}M`;
}

/**
 * Two ticks of the scheduler, plus five minutes for log ingestion where a window allows it: the
 * silence alert fires when no `schedule.tick` line arrived in that time, and an item past its RPO
 * (logged on every tick) stays alerted while it is late.
 */
export function schedulerWindowMinutes(schedule: string): number {
  const twoTicks = Math.ceil((2 * longestTickGapMs(schedule)) / 60_000);
  const window = WINDOW_MINUTES.find((m) => m >= twoTicks + 5) ?? WINDOW_MINUTES.find((m) => m >= twoTicks);
  if (window === undefined) {
    throw new UsageError(`bulwark:schedule "${schedule}" ticks too rarely: an alert can look back at most two days, so a stopped scheduler would never be noticed. Tick at least once a day (the scheduler also checks every item's RPO on each tick).`);
  }
  return window;
}

/**
 * The log alerts. Each names the runtime's own fields: `event` on every line, `alert` on the lines
 * meant for one (runtime/jobs/scheduler.ts, worker.ts), `report.outcome` on a finished job's
 * report (runtime/jobs/reports.ts JobReport). A refused job prints no report (it never ran): its
 * own alert covers it.
 */
export function logAlertDefinitions(schedule: string): LogAlertDefinition[] {
  const tickWindow = schedulerWindowMinutes(schedule);
  // A rule is evaluated at least once per window, and at most every 15 minutes.
  const tickEvaluation = isoDuration(Math.min(tickWindow, 15));
  return [
    {
      key: "rpo-missed",
      displayName: "Bulwark: an item is past its RPO",
      description: "The scheduler found a protected item whose last good backup is older than its policy's RPO (event schedule.late).",
      severity: 1,
      query: linesWhere({ event: "schedule.late", alert: "rpo-missed" }),
      operator: "GreaterThan",
      threshold: 0,
      windowSize: isoDuration(tickWindow),
      evaluationFrequency: tickEvaluation,
    },
    {
      key: "item-missing",
      displayName: "Bulwark: a resource a policy protects no longer exists",
      description: "The scheduler could not find a VM, disk or database a policy names (event schedule.missing): it is not being backed up. Restore it or remove it from the policy.",
      severity: 2,
      query: linesWhere({ event: "schedule.missing", alert: "item-missing" }),
      operator: "GreaterThan",
      threshold: 0,
      windowSize: isoDuration(tickWindow),
      evaluationFrequency: tickEvaluation,
    },
    {
      key: "job-failed",
      displayName: "Bulwark: a backup or restore job failed",
      description: "A job ended failed after its retries and compensations (event job.report, report.outcome failed). `bulwark jobs` shows the error.",
      severity: 1,
      query: linesWhere({ event: "job.report", "report.outcome": "failed" }),
      operator: "GreaterThan",
      threshold: 0,
      windowSize: "PT15M",
      evaluationFrequency: "PT15M",
    },
    {
      key: "job-refused",
      displayName: "Bulwark: a worker refused a job that does not match its policies",
      description: "A job record named a vault, policy or machine the region's policies do not allow (event job.refused): it may have been forged by someone who can write the fleet's tables. It was failed without running.",
      severity: 1,
      query: linesWhere({ event: "job.refused", alert: "job-refused" }),
      operator: "GreaterThan",
      threshold: 0,
      windowSize: "PT15M",
      evaluationFrequency: "PT15M",
    },
    {
      key: "poison-message",
      displayName: "Bulwark: a work message was moved to the poison queue",
      description: "A worker moved a message to the region's poison queue (event message.poisoned): its job failed, or the message was not Bulwark's.",
      severity: 2,
      query: linesWhere({ event: "message.poisoned" }),
      operator: "GreaterThan",
      threshold: 0,
      windowSize: "PT15M",
      evaluationFrequency: "PT15M",
    },
    {
      key: "scheduler-silent",
      displayName: "Bulwark: the scheduler has not run for two ticks",
      description: `No scheduler tick finished (event schedule.tick) within two ticks of "${schedule}": nothing is being enqueued.`,
      severity: 1,
      query: linesWhere({ event: "schedule.tick" }),
      operator: "LessThan",
      threshold: 1,
      windowSize: isoDuration(tickWindow),
      evaluationFrequency: tickEvaluation,
    },
  ];
}

export interface AgentAlertsArgs {
  customer: string;
  region: string;
  resourceGroupName: pulumi.Input<string>;
  /** The Container Apps environment's Log Analytics workspace (ARM id). */
  workspaceId: pulumi.Input<string>;
  /** The agents' Container Apps jobs (ARM ids), for the failed-execution metric alerts. */
  jobs: { role: string; id: pulumi.Input<string> }[];
  /** The scheduler's tick (cron, UTC). */
  schedule: string;
  receivers: AlertReceivers;
  tags: Record<string, string>;
}

export class AgentAlerts extends pulumi.ComponentResource {
  readonly actionGroupId: pulumi.Output<string>;

  constructor(name: string, args: AgentAlertsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("bulwark:region:AgentAlerts", name, {}, opts);
    const actionGroup = new monitor.ActionGroup(
      `${name}-receivers`,
      {
        actionGroupName: `bulwark-${args.customer}-${args.region}`,
        resourceGroupName: args.resourceGroupName,
        location: "Global",
        tags: args.tags,
        // At most 12 characters (the SMS and email sender name).
        groupShortName: "bulwark",
        enabled: true,
        emailReceivers: args.receivers.emails.map((emailAddress, i) => ({ name: `email-${i}`, emailAddress, useCommonAlertSchema: true })),
        // A webhook URL often carries its token: kept secret in the state.
        webhookReceivers: args.receivers.webhooks.map((url, i) => ({ name: `webhook-${i}`, serviceUri: pulumi.secret(url), useCommonAlertSchema: true })),
      },
      { parent: this },
    );
    for (const rule of logAlertDefinitions(args.schedule)) {
      new monitor.ScheduledQueryRule(
        `${name}-${rule.key}`,
        {
          ruleName: `bulwark-${rule.key}`,
          resourceGroupName: args.resourceGroupName,
          location: args.region,
          tags: args.tags,
          kind: "LogAlert",
          displayName: rule.displayName,
          description: rule.description,
          severity: rule.severity,
          enabled: true,
          scopes: [args.workspaceId],
          evaluationFrequency: rule.evaluationFrequency,
          windowSize: rule.windowSize,
          criteria: {
            allOf: [
              {
                query: rule.query,
                timeAggregation: "Count",
                operator: rule.operator,
                threshold: rule.threshold,
                failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 },
              },
            ],
          },
          autoMitigate: true,
          actions: { actionGroups: [actionGroup.id] },
        },
        { parent: this },
      );
    }
    for (const job of args.jobs) {
      new monitor.MetricAlert(
        `${name}-${job.role}-failed-executions`,
        {
          ruleName: `bulwark-${job.role}-failed-executions`,
          resourceGroupName: args.resourceGroupName,
          location: "global",
          tags: args.tags,
          description: `An execution of the ${job.role} job failed (the container exited with an error or timed out).`,
          severity: 1,
          enabled: true,
          scopes: [job.id],
          evaluationFrequency: "PT5M",
          windowSize: "PT15M",
          criteria: {
            odataType: "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria",
            allOf: [
              {
                criterionType: "StaticThresholdCriterion",
                name: "failed-executions",
                metricNamespace: "Microsoft.App/jobs",
                metricName: "Executions",
                dimensions: [{ name: "state", operator: "Include", values: ["Failed"] }],
                operator: "GreaterThan",
                threshold: 0,
                timeAggregation: "Total",
              },
            ],
          },
          autoMitigate: true,
          actions: [{ actionGroupId: actionGroup.id }],
        },
        { parent: this },
      );
    }
    this.actionGroupId = actionGroup.id;
    this.registerOutputs({ actionGroupId: this.actionGroupId });
  }
}
