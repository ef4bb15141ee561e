/**
 * The emulator's Microsoft.App jobs against Azure's own examples, not against Bulwark: Jobs_Get and
 * JobsExecutions_List from the REST specification (fixtures/specs/app/*.json, each with its source
 * repository, commit and path; trimmed of volumes, init containers and execution templates, which
 * Bulwark does not read) are replayed as raw HTTP requests with the example's names, and the
 * replies are held to the examples' status codes, the fields runtime/console/agents.ts reads, and
 * the examples' JSON types.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningAzureEmulator, startAzureEmulator } from "./server.ts";
import { armCall } from "./arm-call.ts";

interface SpecExample {
  source: { repo: string; commit: string; path: string };
  example: { parameters: Record<string, string>; responses: Record<string, { body: Record<string, any> }> };
}

function example(name: string): SpecExample["example"] {
  return (JSON.parse(readFileSync(path.join(import.meta.dirname, "fixtures", "specs", "app", `${name}.json`), "utf8")) as SpecExample).example;
}

let emulator: RunningAzureEmulator;
let token: string;
const job = example("Job_Get");
const executions = example("Job_Executions_Get");
const { resourceGroupName: group, jobName } = job.parameters as { resourceGroupName: string; jobName: string };

beforeAll(async () => {
  emulator = await startAzureEmulator();
  emulator.world.addResourceGroup(group, "eastus");
  emulator.containerApps.addJob(group, jobName, { trigger: { kind: "schedule", cron: "*/15 * * * *" } });
  const seeded = executions.responses["200"]!.body.value[0];
  emulator.containerApps.addExecution(group, jobName, { name: seeded.name, status: seeded.properties.status, startTime: new Date(seeded.properties.startTime), endTime: new Date(seeded.properties.endTime) });
  token = (await emulator.credential().getToken("https://management.azure.com/.default"))!.token;
});

afterAll(async () => {
  await emulator?.stop();
});

const url = (suffix = "") => `/subscriptions/${emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.App/jobs/${jobName}${suffix}?api-version=${job.parameters["api-version"]}`;

/** Every field present in both bodies has the same JSON type. */
function expectSameTypes(actual: any, expected: any, at = "body"): void {
  const kind = (v: unknown) => (Array.isArray(v) ? "array" : v === null ? "null" : typeof v);
  for (const [key, value] of Object.entries(expected ?? {})) {
    if (!(key in (actual ?? {}))) continue;
    expect(kind(actual[key]), `${at}.${key}`).toBe(kind(value));
    if (kind(value) === "object") expectSameTypes(actual[key], value, `${at}.${key}`);
  }
}

describe("Microsoft.App jobs replays of the REST specification's examples", () => {
  it("Jobs_Get: 200 with the example's resource shape and the configuration the Agents page reads", async () => {
    const reply = await armCall(emulator.armEndpoint, token, "GET", url());
    const expected = job.responses["200"]!.body;
    expect(Object.keys(job.responses)).toContain(String(reply.status));
    expect(Object.keys(reply.body)).toEqual(expect.arrayContaining(["id", "name", "type", "location", "properties"]));
    expect(reply.body).toMatchObject({ name: jobName, type: expected.type, id: expect.stringMatching(new RegExp(`/resourceGroups/${group}/providers/Microsoft\\.App/jobs/${jobName}$`)) });
    expect(Object.keys(reply.body.properties)).toEqual(expect.arrayContaining(["configuration", "environmentId", "provisioningState", "template"]));
    expect(Object.keys(reply.body.properties.configuration)).toEqual(expect.arrayContaining(["triggerType", "replicaTimeout", "replicaRetryLimit"]));
    expectSameTypes(reply.body, expected);
  });

  it("JobsExecutions_List: 200 with value and nextLink, each execution's status and times as the example gives them", async () => {
    const reply = await armCall(emulator.armEndpoint, token, "GET", url("/executions"));
    const expected = executions.responses["200"]!.body;
    expect(Object.keys(executions.responses)).toContain(String(reply.status));
    expect(reply.body.nextLink).toBeNull();
    const [execution] = reply.body.value;
    const [exampleExecution] = expected.value;
    expect(execution).toMatchObject({ name: exampleExecution.name, id: expect.stringMatching(new RegExp(`/jobs/${jobName}/executions/${exampleExecution.name}$`)) });
    expect(Object.keys(execution.properties)).toEqual(expect.arrayContaining(["status", "startTime", "endTime"]));
    expect(new Date(execution.properties.startTime).getTime()).toBe(new Date(exampleExecution.properties.startTime).getTime());
    expectSameTypes(reply.body, expected);
  });

  it("an unknown job answers 404 ResourceNotFound, a request without api-version 400, as Resource Manager does", async () => {
    const missing = await armCall(emulator.armEndpoint, token, "GET", url().replace(jobName, "nosuchjob"));
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("ResourceNotFound");
    const unversioned = await armCall(emulator.armEndpoint, token, "GET", url().split("?")[0]!);
    expect(unversioned.status).toBe(400);
    expect(unversioned.body.error.code).toBe("MissingApiVersionParameter");
  });
});
