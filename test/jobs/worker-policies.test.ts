/**
 * Issue 8, item 5, at the command line: `bulwark agent worker` takes what its jobs may touch from the
 * scheduler's policies, so without them it refuses to start, with one message that says what to
 * pass (exit 2), before it reads any queue.
 */
import { expect, test } from "vitest";
import { runCli } from "../support/cli.ts";

test("bulwark agent worker without policies refuses to start: exit 2 and one message naming --policies", async () => {
  const result = await runCli(["agent", "worker", "--region", "westeurope"], {
    BULWARK_POLICIES: "",
    BULWARK_POLICY_JSON: "",
    AZURE_STORAGE_CONNECTION_STRING: "UseDevelopmentStorage=true",
    BULWARK_TRANSIENT: "http://127.0.0.1:1/devstoreaccount1/transient",
  });
  expect(result.code).toBe(2);
  expect(result.stderr.trim().split("\n")).toHaveLength(1);
  expect(result.stderr).toMatch(/no policies: pass --policies FILE-OR-FOLDER \(or set BULWARK_POLICIES or BULWARK_POLICY_JSON\); the worker takes what a job may touch from the scheduler's policies/);
});
