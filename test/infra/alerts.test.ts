/**
 * Issue 9, "operators are told": a region stack sends Azure Monitor alerts (an item past its RPO, a
 * failed job, a poisoned message, a silent scheduler, failed job executions) to an action group of
 * the configured receivers, and refuses to deploy with nobody to tell unless that is deliberate.
 *
 * The alert queries are checked against log lines the runtime really prints: the scheduler and a
 * worker run here against Azurite, and every field a query compares must hold on one of their
 * lines (never against a string written for the test).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ofType, settled } from "./harness.ts";
import type { RecordedResource } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { UsageError } from "../../runtime/errors.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { runWorker } from "../../runtime/jobs/worker.ts";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { emptyItem } from "../../runtime/jobs/records.ts";
import { PermanentJobError, type MachineDefinition } from "../../runtime/jobs/machine.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { StaticItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { JobAuthority } from "../../runtime/policy/authority.ts";
import { Azurite } from "../support/azurite.ts";
import { collectLog, disk, testFleet } from "../jobs/harness.ts";

const WESTEUROPE = "Pulumi.dev-westeurope.yaml";
const receivers = { emails: ["backup-ops@contoso.example"], webhooks: ["https://hooks.contoso.example/bulwark/T0KEN"] };

let resources: RecordedResource[];

beforeAll(async () => {
  await deployExampleCustomer();
  ({ resources } = await deployRegion(exampleRegionConfig(WESTEUROPE, { alerts: receivers })));
});

const rules = () => ofType(resources, "azure-native:monitor:ScheduledQueryRule");
const rule = (key: string) => rules().find((r) => r.inputs.ruleName === `bulwark-${key}`)!;

describe("bulwark:alerts", () => {
  it("refuses a region stack that names nobody to tell, and says how to fix it", () => {
    expect(() => exampleRegionConfig(WESTEUROPE, { alerts: undefined })).toThrow(UsageError);
    expect(() => exampleRegionConfig(WESTEUROPE, { alerts: undefined })).toThrow(/bulwark:alerts is not set.*bulwark:alerts: none/);
    expect(() => exampleRegionConfig(WESTEUROPE, { alerts: {} })).toThrow(/bulwark:alerts names no email and no webhook/);
  });

  it("refuses an email that is not an address and a webhook that is not an https URL", () => {
    expect(() => exampleRegionConfig(WESTEUROPE, { alerts: { emails: ["ops at contoso"] } })).toThrow(/bulwark:alerts\.emails\[0\] "ops at contoso" is not an email address/);
    expect(() => exampleRegionConfig(WESTEUROPE, { alerts: { webhooks: ["http://hooks.contoso.example/x"] } })).toThrow(/bulwark:alerts\.webhooks\[0\] .* is not an https URL/);
    expect(() => exampleRegionConfig(WESTEUROPE, { alerts: { pagers: ["x"] } })).toThrow(/bulwark:alerts\.pagers is not a receiver kind/);
  });

  it("deploys without alerts only when bulwark:alerts is none", async () => {
    const quiet = await deployRegion(exampleRegionConfig(WESTEUROPE, { alerts: "none" }));
    expect(ofType(quiet.resources, "azure-native:monitor:ActionGroup")).toEqual([]);
    expect(ofType(quiet.resources, "azure-native:monitor:ScheduledQueryRule")).toEqual([]);
  });

  it("the example region configs name someone to tell", () => {
    for (const file of [WESTEUROPE, "Pulumi.dev-northeurope.yaml"]) {
      const alerts = exampleRegionConfig(file).alerts;
      expect(alerts).not.toBe("none");
      if (alerts !== "none") expect(alerts.emails.length + alerts.webhooks.length).toBeGreaterThan(0);
    }
  });
});

describe("the region's alerts", () => {
  it("go to one action group holding the configured emails and webhooks (the webhook kept secret)", () => {
    const [group] = ofType(resources, "azure-native:monitor:ActionGroup");
    expect(group.inputs.emailReceivers.map((r: any) => r.emailAddress)).toEqual(receivers.emails);
    expect(group.inputs.webhookReceivers.map((r: any) => r.serviceUri)).toEqual(receivers.webhooks);
    // The engine marks the secret's enclosing list secret.
    expect(group.secretPaths.some((path) => "webhookReceivers[0].serviceUri".startsWith(path))).toBe(true);
    expect(group.inputs.groupShortName.length).toBeLessThanOrEqual(12);
    expect(group.inputs.enabled).toBe(true);
    const alerts = [...rules(), ...ofType(resources, "azure-native:monitor:MetricAlert")];
    expect(alerts.length).toBeGreaterThanOrEqual(5);
    for (const r of rules()) expect(r.inputs.actions.actionGroups).toEqual([group.id]);
    for (const m of ofType(resources, "azure-native:monitor:MetricAlert")) expect(m.inputs.actions).toEqual([{ actionGroupId: group.id }]);
  });

  it("query the Container Apps environment's own Log Analytics workspace, console log table", () => {
    const [workspace] = ofType(resources, "azure-native:operationalinsights:Workspace");
    expect(rules().map((r) => r.inputs.ruleName).sort()).toEqual(
      ["bulwark-item-missing", "bulwark-job-failed", "bulwark-job-refused", "bulwark-poison-message", "bulwark-rpo-missed", "bulwark-scheduler-silent"],
    );
    for (const r of rules()) {
      expect(r.inputs.kind).toBe("LogAlert");
      expect(r.inputs.scopes).toEqual([workspace.id]);
      expect(r.inputs.location).toBe("westeurope");
      const [condition] = r.inputs.criteria.allOf;
      expect(condition.query).toMatch(/^ContainerAppConsoleLogs_CL\n\| extend line = parse_json\(Log_s\)/);
      expect(condition.timeAggregation).toBe("Count");
    }
  });

  it("the scheduler's silence alert fires when no tick arrived within two ticks of its schedule", () => {
    const silent = rule("scheduler-silent");
    const [condition] = silent.inputs.criteria.allOf;
    expect(condition).toMatchObject({ operator: "LessThan", threshold: 1 });
    // The example ticks every 15 minutes: two ticks and the ingestion margin fit in 45 minutes.
    expect(silent.inputs.windowSize).toBe("PT45M");
    for (const key of ["item-missing", "job-failed", "job-refused", "poison-message", "rpo-missed"]) expect(rule(key).inputs.criteria.allOf[0]).toMatchObject({ operator: "GreaterThan", threshold: 0 });
  });

  it("a scheduler that ticks less than every two days is refused (its silence could not be seen)", async () => {
    await expect(deployRegion(exampleRegionConfig(WESTEUROPE, { alerts: receivers, schedule: "0 3 * * 0" }))).rejects.toThrow(/bulwark:schedule "0 3 \* \* 0" ticks too rarely/);
    await settled();
  });

  it("watch every agent job's failed executions with a metric alert", () => {
    const jobs = ofType(resources, "azure-native:app:Job");
    const metricAlerts = ofType(resources, "azure-native:monitor:MetricAlert");
    expect(metricAlerts.map((m) => m.inputs.scopes[0]).sort()).toEqual(jobs.map((j) => j.id).sort());
    for (const m of metricAlerts) {
      expect(m.inputs.criteria).toMatchObject({ odataType: "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria" });
      expect(m.inputs.criteria.allOf).toEqual([
        expect.objectContaining({ metricNamespace: "Microsoft.App/jobs", metricName: "Executions", dimensions: [{ name: "state", operator: "Include", values: ["Failed"] }], operator: "GreaterThan", threshold: 0 }),
      ]);
    }
  });
});

/** `tostring(line.a.b) == "v"` comparisons of a query, as path → value. */
function comparisons(query: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const m of query.matchAll(/tostring\(line\.([\w.]+)\) == ("(?:[^"\\]|\\.)*")/g)) found.set(m[1], JSON.parse(m[2]));
  return found;
}

function at(line: Record<string, unknown>, path: string): unknown {
  return path.split(".").reduce<unknown>((value, key) => (value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined), line);
}

describe("the alert queries against what the runtime prints", () => {
  let azurite: Azurite;
  const printed: Record<string, unknown>[] = [];

  beforeAll(async () => {
    azurite = await Azurite.start();
    const fleet = await testFleet(azurite.connectionString);
    const late = disk("s1", "d-late", "westeurope");
    // A disk the policy names that no longer exists (ARM has no such resource).
    const deleted = disk("s1", "d-deleted", "westeurope");
    const policy = parsePolicy(
      JSON.stringify({ name: "disks", vault: "https://isolated.blob.core.windows.net/vault", protect: { resources: [late.id, deleted.id] }, schedule: { every: "4h" }, retention: { last: 3 } }),
      "disks.json",
    );
    // The disk's last good point is three days old: past an every-4h policy's RPO.
    const now = fleet.clock.now();
    await fleet.items.update(late.id, () => ({ ...emptyItem(late.id, "disk", "westeurope", "disks"), lastGoodAt: now - 3 * 86_400_000, lastEndedAt: now - 3 * 86_400_000 }), (item) => item);
    const log = collectLog();
    // Its backup fails for good: a failed report, then a poisoned message.
    const failing: MachineDefinition = {
      name: "backup",
      initial: "start",
      states: { start: { step: async () => { throw new PermanentJobError("the source is gone"); } } },
      start: (input) => input,
    };
    await scheduleTick({ fleet, policies: [policy], resolveItems: new StaticItemResolver([late]), regionsWithAgents: ["westeurope"], log: log.sink });
    // A restore into a vault no policy names: refused as a forged record would be.
    await submitJob(fleet, { machine: "restore", item: late, queueRegion: "westeurope", input: { vault: "https://elsewhere.blob.core.windows.net/vault" } });
    // And a message that is not Bulwark's: poisoned.
    await (await fleet.storage.queue("westeurope")).sendMessage("not a work message");
    const authority = new JobAuthority([policy], "westeurope", new StaticItemResolver([late]));
    await runWorker({ fleet, region: "westeurope", machines: [failing], authority, limits: { perWorker: 1, perRegion: 1 }, untilDrained: true, leaseMs: 5_000, log: log.sink });
    // As jsonLog prints them: one JSON object per line.
    printed.push(...log.lines.map((line) => JSON.parse(JSON.stringify(line))));
  });
  afterAll(async () => {
    await azurite?.stop();
  });

  for (const key of ["rpo-missed", "item-missing", "job-failed", "job-refused", "poison-message", "scheduler-silent"]) {
    it(`${key}: every field the query compares holds on a line the runtime printed`, () => {
      const query: string = rule(key).inputs.criteria.allOf[0].query;
      const wanted = comparisons(query);
      expect(wanted.size).toBeGreaterThan(0);
      // The query reads no field of the line that it does not compare.
      expect([...query.matchAll(/line\.([\w.]+)/g)].map((m) => m[1]).every((path) => wanted.has(path))).toBe(true);
      const matching = printed.filter((line) => [...wanted].every(([path, value]) => at(line, path) === value));
      expect(matching.length, `no printed line has ${JSON.stringify(Object.fromEntries(wanted))}; printed events: ${[...new Set(printed.map((l) => l.event))].join(", ")}`).toBeGreaterThan(0);
    });
  }
});
