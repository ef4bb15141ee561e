/**
 * One error contract for every command: a failure prints one line on stderr naming the command
 * (with --json, one JSON object {error, code, exitCode} on stderr), nothing on stdout, and exits
 * with the documented code. Azure credential failures are exit 8 with one line naming what to set.
 * Also: `key` actions named when mistyped, key ids by unique prefix, counts in the singular.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { AuthenticationError, CredentialUnavailableError } from "@azure/identity";
import { afterEach, beforeAll, describe, expect, test, vi } from "vitest";
import { commands } from "../../runtime/cli/commands.ts";
import { failureReport, type FailureReport } from "../../runtime/cli/error-report.ts";
import { parseCommandLine } from "../../runtime/cli/parse.ts";
import { PASSPHRASE, runCli, type CliResult } from "../support/cli.ts";
import { pseudoRandom, tempFolder } from "./vaults.ts";

let scratch: string;
let vault: string;

/** No Azure or fleet configuration leaks in from the machine running the tests. */
const NO_AZURE: NodeJS.ProcessEnv = {
  AZURE_STORAGE_CONNECTION_STRING: "",
  AZURE_CLIENT_ID: "",
  AZURE_TENANT_ID: "",
  AZURE_CLIENT_SECRET: "",
  BULWARK_VAULT: "",
  BULWARK_POLICIES: "",
  BULWARK_POLICY_JSON: "",
  BULWARK_FLEET_TABLE_ENDPOINT: "",
  BULWARK_FLEET_QUEUE_ENDPOINT: "",
  // Only the environment credential: it finds nothing at once (no managed identity probe).
  AZURE_TOKEN_CREDENTIALS: "EnvironmentCredential",
};

interface Case {
  args: () => string[];
  exitCode: number;
  code: string;
  message: RegExp;
  env?: NodeJS.ProcessEnv;
}

const FLEET = { BULWARK_FLEET_TABLE_ENDPOINT: "https://acct.table.core.windows.net", BULWARK_FLEET_QUEUE_ENDPOINT: "https://acct.queue.core.windows.net" };
const WRONG_KEY = { BULWARK_PASSPHRASE: "not the passphrase of this vault" };
const NO_CREDENTIAL = /^no Azure credential could be used: set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET .*`az login`/;

/** A failure of every command, with the exit code README documents for it. */
const cases: Record<string, Case> = {
  init: { args: () => ["init", "--vault", vault], exitCode: 2, code: "usage", message: /^a vault already exists at / },
  copy: { args: () => ["copy", "--to", vault], exitCode: 2, code: "usage", message: /^give both vaults/ },
  seed: { args: () => ["seed", "journal"], exitCode: 2, code: "usage", message: /^no vault given: pass --vault/ },
  backup: { args: () => ["backup", path.join(scratch, "absent"), "--vault", vault], exitCode: 6, code: "unreadable-source", message: /does not exist/ },
  points: { args: () => ["points", "--vault", path.join(scratch, "no-vault")], exitCode: 4, code: "not-found", message: /^no vault at / },
  restore: { args: () => ["restore", "deadbeef", "--vault", vault, "--to", path.join(scratch, "out")], exitCode: 4, code: "not-found", message: /^no recovery point deadbeef/ },
  ls: { args: () => ["ls", "deadbeef", "--vault", vault], exitCode: 4, code: "not-found", message: /^no recovery point deadbeef/ },
  find: { args: () => ["find", "deadbeef", "*.conf", "--vault", vault], exitCode: 4, code: "not-found", message: /^no recovery point deadbeef/ },
  mount: { args: () => ["mount", "deadbeef", "--vault", vault, "--nbd", "127.0.0.1:0"], exitCode: 4, code: "not-found", message: /^no recovery point deadbeef/ },
  verify: { args: () => ["verify", "--vault", vault], env: WRONG_KEY, exitCode: 3, code: "wrong-key", message: /^wrong passphrase/ },
  forget: { args: () => ["forget", "--vault", vault], exitCode: 2, code: "usage", message: /^give at least one --keep-\* option/ },
  prune: { args: () => ["prune", "--vault", vault], env: WRONG_KEY, exitCode: 3, code: "wrong-key", message: /^wrong passphrase/ },
  key: { args: () => ["key", "lst", "--vault", vault], exitCode: 2, code: "usage", message: /^unknown key action "lst"; did you mean `bulwark key list`\?$/ },
  unlock: { args: () => ["unlock", "--vault", path.join(scratch, "no-vault")], exitCode: 4, code: "not-found", message: /^no vault at / },
  stats: { args: () => ["stats", "--vault", path.join(scratch, "no-vault")], exitCode: 4, code: "not-found", message: /^no vault at / },
  diff: { args: () => ["diff", "deadbeef", "latest", "--vault", vault], exitCode: 4, code: "not-found", message: /^no recovery point deadbeef/ },
  completion: { args: () => ["completion", "fish"], exitCode: 2, code: "usage", message: /^give the shell: bulwark completion bash\|zsh \(not "fish"\)$/ },
  console: { args: () => ["console", "--listen", "nowhere"], exitCode: 2, code: "usage", message: /^--listen nowhere is not HOST:PORT/ },
  agent: { args: () => ["agent", "schedule"], exitCode: 2, code: "usage", message: /^no policies: pass --policies/ },
  jobs: { args: () => ["jobs"], exitCode: 2, code: "usage", message: /^no fleet storage: set BULWARK_FLEET_TABLE_ENDPOINT/ },
  status: { args: () => ["status", "--policies", scratch], env: FLEET, exitCode: 8, code: "service", message: NO_CREDENTIAL },
};

/** The real command in a child process: for what main itself writes (one line, or JSON). */
function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runCli(args, { ...NO_AZURE, ...env });
}

/**
 * The command as main runs it, in this process (a child per command would take minutes on a busy
 * machine): the command line parsed, the command run, its failure turned into the report main
 * prints. Returns the report and what the command wrote on stdout.
 */
async function runHere(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ report?: FailureReport; stdout: string }> {
  const saved = { ...process.env };
  Object.assign(process.env, NO_AZURE, { BULWARK_PASSPHRASE: PASSPHRASE }, env);
  let stdout = "";
  const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  try {
    const line = parseCommandLine(args, commands);
    if (line.kind !== "run") throw new Error(`bulwark ${args.join(" ")} is not a command run`);
    await line.command.run(line.values, line.positionals);
    return { stdout };
  } catch (error) {
    return { report: failureReport(error), stdout };
  } finally {
    write.mockRestore();
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

beforeAll(async () => {
  scratch = await tempFolder("errors-contract");
  vault = path.join(scratch, "vault");
  await writeFile(path.join(scratch, "file"), pseudoRandom("errors-contract", 100_000));
  for (const args of [["init", "--vault", vault], ["backup", path.join(scratch, "file"), "--vault", vault]]) {
    const { report } = await runHere(args);
    if (report) throw new Error(`bulwark ${args.join(" ")}: ${report.error}`);
  }
}, 60_000);

afterEach(() => vi.restoreAllMocks());

describe("every command fails the same way", () => {
  test("each command's failure is one line, nothing on stdout, the documented exit code and its word", { timeout: 60_000 }, async () => {
    expect(Object.keys(cases).sort(), "a failure case for every command").toEqual(Object.keys(commands).sort());
    for (const [name, c] of Object.entries(cases)) {
      const { report, stdout } = await runHere(c.args(), c.env);
      expect(report, `bulwark ${name} succeeded`).toBeDefined();
      expect(report, name).toEqual({ error: report!.error, code: c.code, exitCode: c.exitCode });
      expect(report!.error, name).toMatch(c.message);
      expect(report!.error, name).not.toContain("\n");
      expect(stdout, name).toBe("");
    }
  });

  test("the real command writes the failure as one line naming it, or with --json one JSON object, on stderr", async () => {
    const [text, json] = await Promise.all([run(["restore", "deadbeef", "--vault", vault, "--to", path.join(scratch, "out")]), run(["points", "--vault", path.join(scratch, "none"), "--json"])]);
    expect(text).toMatchObject({ code: 4, stdout: "", stderr: "bulwark restore: no recovery point deadbeef in the vault; list them with `bulwark points`\n" });
    expect(json).toMatchObject({ code: 4, stdout: "" });
    expect(json.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(JSON.parse(json.stderr)).toEqual({ error: expect.stringMatching(/^no vault at /), code: "not-found", exitCode: 4 });
  });

  test("a Blob vault with no Azure credential anywhere: exit 8, one line naming what to set, no SDK text", async () => {
    const result = await run(["points", "--vault", "https://acct.blob.core.windows.net/vault"]);
    expect(result.code, result.stderr).toBe(8);
    expect(result.stderr).toMatch(/^bulwark points: no Azure credential could be used: set AZURE_CLIENT_ID/);
    expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(result.stderr).not.toMatch(/ChainedTokenCredential|EnvironmentCredential|at .*\.js/);
  });

  test("credentials Azure refuses, or none found, wrapped in other errors or not, are exit 8 naming what to set", () => {
    const refused = new AuthenticationError(401, { error: "invalid_client", error_description: "AADSTS7000215: Invalid client secret provided.\nTrace ID: 1" });
    expect(failureReport(refused)).toMatchObject({ code: "service", exitCode: 8, error: expect.stringMatching(/^Azure refused the credential \(.*AADSTS7000215.*\): check it, or set AZURE_CLIENT_ID/) });
    expect(failureReport(refused).error).not.toContain("\n");
    const wrapped = new Error("listing blobs failed", { cause: new CredentialUnavailableError("EnvironmentCredential is unavailable") });
    expect(failureReport(wrapped)).toMatchObject({ code: "service", exitCode: 8, error: expect.stringMatching(NO_CREDENTIAL) });
  });

  test("an unexpected failure is one line with exit 1, its details only with BULWARK_DEBUG", () => {
    expect(failureReport(new TypeError("x is not a function\n    at f (file.js:1:1)"))).toEqual({
      error: "unexpected failure: x is not a function (set BULWARK_DEBUG=1 for details)",
      code: "failure",
      exitCode: 1,
    });
  });
});

describe("keys and counts", () => {
  test("a key is removed by a unique prefix of its id; a prefix of none is exit 4", async () => {
    const added = await runHere(["key", "add", "--vault", vault, "--json"], { BULWARK_NEW_PASSPHRASE: "a second passphrase, long enough" });
    expect(added.report).toBeUndefined();
    const { id } = JSON.parse(added.stdout) as { id: string };
    const listed = JSON.parse((await runHere(["key", "list", "--vault", vault, "--json"])).stdout) as { id: string }[];
    // The shortest prefix no other key shares.
    const others = listed.map((k) => k.id).filter((k) => k !== id);
    const prefix = id.slice(0, [...Array(16).keys()].map((n) => n + 1).find((n) => !others.some((k) => k.startsWith(id.slice(0, n))))!);
    expect(await runHere(["key", "remove", prefix, "--vault", vault])).toEqual({ stdout: `removed key ${id}\n` });
    expect((await runHere(["key", "remove", prefix, "--vault", vault])).report).toEqual({
      error: `no key ${prefix} in the vault; see \`bulwark key list\``,
      code: "not-found",
      exitCode: 4,
    });
  });

  test("a prefix two keys share is refused naming both", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 20 && !ids.some((a, n) => ids.slice(n + 1).some((b) => a[0] === b[0])); i++) {
      ids.push(JSON.parse((await runHere(["key", "add", "--vault", vault, "--json"], { BULWARK_NEW_PASSPHRASE: `another passphrase number ${i}` })).stdout).id);
    }
    const shared = ids.find((a, n) => ids.slice(n + 1).some((b) => a[0] === b[0]))!;
    const { report } = await runHere(["key", "remove", shared[0], "--vault", vault]);
    expect(report).toMatchObject({ code: "usage", exitCode: 2, error: expect.stringMatching(new RegExp(`^${shared[0]} starts \\d+ key ids \\(.*${shared}.*\\); give more of the id$`)) });
  });

  test("one of a thing is counted in the singular: verify of one point and pack, unlock of no lock", async () => {
    const verify = await runHere(["verify", "--vault", vault, "--read-data"]);
    expect(verify.report).toBeUndefined();
    expect(verify.stdout).toMatch(/^1 point, 1 index object, 1 pack; read 1 pack, checked \d+ chunks\n/);
    expect(await runHere(["unlock", "--vault", vault])).toEqual({ stdout: "removed 0 lock objects\n" });
  });
});
