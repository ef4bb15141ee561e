/**
 * A vault is exactly where its URL says (issue 8, item 14). With AZURE_STORAGE_CONNECTION_STRING
 * pointing at Azurite, a vault URL naming another account or endpoint is refused with one line that
 * says why, and nothing is created in Azurite; a URL under Azurite's own endpoint still works.
 */
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Azurite } from "../support/azurite.ts";
import { runCli } from "../support/cli.ts";

async function containerNames(azurite: Azurite): Promise<string[]> {
  const names: string[] = [];
  for await (const c of BlobServiceClient.fromConnectionString(azurite.connectionString).listContainers()) names.push(c.name);
  return names.sort();
}

function expectOneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trimEnd().split("\n");
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^bulwark init: /);
  expect(lines[0]).toMatch(pattern);
}

describe("the vault is where its URL says", () => {
  let azurite: Azurite;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    azurite = await Azurite.start();
    env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
  });

  afterAll(async () => {
    await azurite?.stop();
  });

  test("init of a production account URL while the connection string points at Azurite is refused and creates nothing in Azurite", async () => {
    const before = await containerNames(azurite);
    const result = await runCli(["init", "--vault", "https://prodaccount.blob.core.windows.net/backups/x"], env);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stdout).toBe("");
    expectOneLine(result.stderr, /prodaccount\.blob\.core\.windows\.net.*AZURE_STORAGE_CONNECTION_STRING.*127\.0\.0\.1:\d+\/devstoreaccount1/);
    expect(await containerNames(azurite)).toEqual(before);
    expect(before).not.toContain("backups");
  });

  test("init of another account on Azurite's own host is refused: the account in the URL must be the connection string's", async () => {
    const result = await runCli(["init", "--vault", `http://127.0.0.1:${azurite.blobPort}/otheraccount/backups`], env);
    expect(result.code, result.stderr).toBe(2);
    expectOneLine(result.stderr, /otheraccount.*devstoreaccount1/);
    expect(await containerNames(azurite)).not.toContain("backups");
  });

  test("a refusal under a SAS connection string names its endpoint but never prints the signature", async () => {
    const sasEnv = { AZURE_STORAGE_CONNECTION_STRING: "BlobEndpoint=https://sasaccount.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&sig=SECRETSIGNATURE" };
    const result = await runCli(["init", "--vault", "https://prodaccount.blob.core.windows.net/backups"], sasEnv);
    expect(result.code, result.stderr).toBe(2);
    expectOneLine(result.stderr, /sasaccount\.blob\.core\.windows\.net/);
    expect(result.stderr).not.toContain("SECRETSIGNATURE");
  });

  test("init of a URL under the connection string's endpoint creates the vault there", async () => {
    const url = `${azurite.blobEndpoint}/located/some/prefix`;
    const result = await runCli(["init", "--vault", url], env);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`at ${url}/`);
    expect(await containerNames(azurite)).toContain("located");
  });
});
