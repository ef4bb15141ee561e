/**
 * The Agents page's data: readAgents through the real @azure/arm-appcontainers client against the
 * emulator's Microsoft.App jobs (test/emulator/arm/container-apps.ts), one emulator for the file.
 */
import { ClientSecretCredential } from "@azure/identity";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentJobs, agentJobsFromEnv, judge, lateDeadline, readAgents } from "../../runtime/console/agents.ts";
import { CronExpression } from "../../runtime/policy/cron.ts";
import { UsageError } from "../../runtime/errors.ts";
import type { JobExecutionStatus } from "../emulator/arm/container-apps.ts";
import { type RunningAzureEmulator, startAzureEmulator } from "../emulator/server.ts";

const MINUTE = 60_000;
/** The console's clock in every test: 10:07 UTC, two minutes after the 10:05 tick of a 5-minute cron. */
const NOW = new Date("2026-11-30T10:07:00Z");
const EVERY_5 = "*/5 * * * *";
const ago = (minutes: number) => new Date(NOW.getTime() - minutes * MINUTE);

let emulator: RunningAzureEmulator;
const regions: Record<string, AgentJobs> = {};

function region(name: string, code: string): AgentJobs {
  const resourceGroup = `bulwark-contoso-${name}`;
  emulator.world.addResourceGroup(resourceGroup, name);
  const jobs = { region: name, subscriptionId: emulator.subscriptionId, resourceGroup, schedulerJob: `contoso-${code}-sched`, workerJob: `contoso-${code}-worker` };
  emulator.containerApps.addJob(resourceGroup, jobs.schedulerJob, { trigger: { kind: "schedule", cron: EVERY_5 }, createdAt: ago(7 * 24 * 60) });
  emulator.containerApps.addJob(resourceGroup, jobs.workerJob, { trigger: { kind: "event" }, createdAt: ago(7 * 24 * 60) });
  regions[name] = jobs;
  return jobs;
}

function ran(jobs: AgentJobs, job: "schedulerJob" | "workerJob", status: JobExecutionStatus, startedMinutesAgo: number): void {
  const startTime = ago(startedMinutesAgo);
  const endTime = status === "Running" ? undefined : new Date(startTime.getTime() + 40_000);
  emulator.containerApps.addExecution(jobs.resourceGroup, jobs[job], { status, startTime, endTime });
}

beforeAll(async () => {
  emulator = await startAzureEmulator();
  // westeurope: ticking every 5 minutes for the last 2.5 hours (30 ticks: two pages), the worker fine.
  const healthy = region("westeurope", "weu");
  for (let m = 152; m >= 2; m -= 5) ran(healthy, "schedulerJob", "Succeeded", m);
  ran(healthy, "workerJob", "Succeeded", 30);
  ran(healthy, "workerJob", "Running", 1);
  // northeurope: the scheduler's last tick was 17 minutes ago (10:05, 10:00 and 09:55 missed), the worker's last run failed.
  const stalled = region("northeurope", "neu");
  ran(stalled, "schedulerJob", "Succeeded", 22);
  ran(stalled, "schedulerJob", "Succeeded", 17);
  ran(stalled, "workerJob", "Succeeded", 60);
  ran(stalled, "workerJob", "Failed", 20);
  // eastus: the scheduler fails at every tick (it runs, so only the failure tells).
  const broken = region("eastus", "eus");
  ran(broken, "schedulerJob", "Succeeded", 62);
  for (let m = 57; m >= 2; m -= 5) ran(broken, "schedulerJob", "Failed", m);
});

afterAll(async () => {
  await emulator?.stop();
});

function read(jobs: AgentJobs[], credential = emulator.credential()) {
  return readAgents(jobs, { credential, armEndpoint: emulator.armEndpoint, now: () => NOW });
}

describe("readAgents through the Container Apps API", () => {
  it("a region whose scheduler ticks on time and whose worker succeeded is ok, newest execution first across pages", async () => {
    const [scheduler, worker] = await read([regions.westeurope!]);
    expect(scheduler).toMatchObject({ region: "westeurope", job: "contoso-weu-sched", kind: "scheduler", schedule: EVERY_5, state: "ok" });
    // 31 ticks on two pages, listed oldest first by the emulator: the newest is on the second page.
    expect(scheduler!.lastExecutions).toHaveLength(10);
    expect(scheduler!.lastExecutions[0]).toMatchObject({ status: "Succeeded", start: ago(2).toISOString() });
    expect(scheduler!.lastSuccessAt).toBe(ago(2).toISOString());
    expect(worker).toMatchObject({ job: "contoso-weu-worker", kind: "worker", state: "ok" });
    expect(worker!.lastExecutions.map((e) => e.status)).toEqual(["Running", "Succeeded"]);
    expect(worker!.lastExecutions[0]!.end).toBeUndefined();
    // Only the two documented reads, through the SDK's api-version.
    const paths = emulator.requestLog.filter((r) => r.path.includes("/Microsoft.App/")).map((r) => r.path);
    expect(paths.every((p) => /\/jobs\/contoso-weu-(sched|worker)(\/executions)?$/.test(p))).toBe(true);
  });

  it("a scheduler whose last successful tick is older than two cron periods is late, before any RPO fails", async () => {
    const [scheduler, worker] = await read([regions.northeurope!]);
    expect(scheduler!.state).toBe("late");
    expect(scheduler!.detail).toContain(ago(17).toISOString());
    expect(scheduler!.detail).toContain("not being queued");
    expect(worker!.state).toBe("failing");
    expect(worker!.detail).toMatch(/contoso-neu-worker-\d{8} failed/);
  });

  it("a scheduler that runs but fails at every tick is failing, naming its last success", async () => {
    const [scheduler] = await read([regions.eastus!]);
    expect(scheduler!.state).toBe("failing");
    expect(scheduler!.detail).toContain(ago(62).toISOString());
    expect(scheduler!.lastExecutions[0]).toMatchObject({ status: "Failed", start: ago(2).toISOString() });
  });

  it("a job that is not deployed shows as unknown with why, and the other regions still show", async () => {
    const missing = { ...regions.westeurope!, region: "westeurope", schedulerJob: "contoso-weu-gone" };
    const statuses = await read([missing, regions.eastus!]);
    expect(statuses.map((s) => [s.job, s.state])).toEqual([
      ["contoso-weu-gone", "unknown"],
      ["contoso-weu-worker", "ok"],
      ["contoso-eus-sched", "failing"],
      ["contoso-eus-worker", "ok"],
    ]);
    expect(statuses[0]!.detail).toContain("not found");
  });

  it("a lapsed credential makes every job unknown with the reason instead of failing the page", async () => {
    const lapsed = new ClientSecretCredential(emulator.tenantId, emulator.clientId, "not-the-secret", { authorityHost: emulator.authorityHost, disableInstanceDiscovery: true });
    const statuses = await read([regions.westeurope!], lapsed);
    expect(statuses.map((s) => s.state)).toEqual(["unknown", "unknown"]);
    expect(statuses[0]!.detail).toMatch(/reading the job failed|may not read/);
    expect(statuses[0]!.lastExecutions).toEqual([]);
  });

  it("a brand-new scheduler with no tick yet is ok, not late", async () => {
    const fresh = region("uksouth", "uks");
    emulator.containerApps.addJob(fresh.resourceGroup, fresh.schedulerJob, { trigger: { kind: "schedule", cron: EVERY_5 }, createdAt: ago(3) });
    const [scheduler, worker] = await read([fresh]);
    expect(scheduler).toMatchObject({ state: "ok", lastExecutions: [] });
    expect(worker!.detail).toContain("no finished execution");
  });
});

describe("the scheduler's judgement", () => {
  const id = { region: "westeurope", job: "contoso-weu-sched", kind: "scheduler" as const };
  const observed = (starts: Date[], cron = EVERY_5) => ({ triggerType: "Schedule", cron, createdAt: ago(10_000), executions: starts.map((start, i) => ({ name: `t-${i}`, status: "Succeeded", start, end: start })) });

  it("one missed tick is tolerated, two are late", () => {
    expect(judge(id, observed([ago(7)]), NOW).state).toBe("ok"); // 10:00 ran, 10:05 missing
    expect(judge(id, observed([ago(12)]), NOW).state).toBe("late"); // 09:55 ran, 10:00 and 10:05 missing
  });

  it("a console clock a minute ahead of Azure's does not call a punctual scheduler late", () => {
    // The 10:05 tick started at 10:04:50 by Azure's clock (ten seconds behind the console's); the
    // console reads 10:11:30, the 10:10 tick is still starting, and it counts from 10:05.
    const started = new Date("2026-11-30T10:04:50Z");
    expect(judge(id, observed([started]), new Date("2026-11-30T10:11:30Z")).state).toBe("ok");
  });

  it("a daily schedule is judged on days, not minutes", () => {
    const daily = new CronExpression("30 2 * * *");
    // The fire before the latest (02:30 the day before), less the slack's 5-minute cap.
    expect(lateDeadline(daily, NOW)!.toISOString()).toBe("2026-11-29T02:25:00.000Z");
    expect(judge(id, observed([new Date("2026-11-29T02:30:05Z")], "30 2 * * *"), NOW).state).toBe("ok");
    expect(judge(id, observed([new Date("2026-11-28T02:30:05Z")], "30 2 * * *"), NOW).state).toBe("late");
  });

  it("a status outside the published enum and a schedule that is not a cron are unknown, not trusted", () => {
    expect(judge(id, { ...observed([ago(2)]), cron: "@hourly" }, NOW)).toMatchObject({ state: "unknown" });
    expect(judge(id, { ...observed([ago(2)]), triggerType: "Manual" }, NOW).detail).toContain("not Schedule");
  });
});

describe("BULWARK_CONSOLE_AGENTS", () => {
  const good = { region: "westeurope", subscriptionId: "00000000-0000-0000-0000-000000000001", resourceGroup: "bulwark-contoso-westeurope", schedulerJob: "contoso-weu-sched", workerJob: "contoso-weu-worker" };

  it("is read as a list of each region's jobs; unset means no agents", () => {
    expect(agentJobsFromEnv({ BULWARK_CONSOLE_AGENTS: JSON.stringify([good]) })).toEqual([good]);
    expect(agentJobsFromEnv({})).toEqual([]);
  });

  it("refuses a job name that is not a Container Apps name (a path, a double hyphen) with what to fix", () => {
    for (const schedulerJob of ["../../providers/x", "contoso--sched", "Contoso-weu-sched", "a".repeat(33)]) {
      expect(() => agentJobsFromEnv({ BULWARK_CONSOLE_AGENTS: JSON.stringify([{ ...good, schedulerJob }]) })).toThrow(UsageError);
    }
    expect(() => agentJobsFromEnv({ BULWARK_CONSOLE_AGENTS: "{not json" })).toThrow(/not JSON/);
  });
});
