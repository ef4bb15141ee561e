/**
 * Stack config parsing: the example files parse; bad config fails with a message that names the
 * key and says how to fix it; a region stack that does not match its customer stack fails too.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { exampleConfig } from "./harness.ts";
import { deployExampleCustomer, deployRegion, exampleRegionConfig } from "./region-fixture.ts";
import { parseStackConfig, rawFromPulumiConfig } from "../../infra/config.ts";
import { UsageError } from "../../runtime/errors.ts";

const customer = () => exampleConfig("Pulumi.dev.yaml").raw;
const region = () => exampleConfig("Pulumi.dev-westeurope.yaml").raw;

function failure(raw: Record<string, unknown>, secretKeys: string[] = []): UsageError {
  try {
    parseStackConfig(raw, new Set(secretKeys));
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return error as UsageError;
  }
  throw new Error("config was accepted");
}

describe("stack config", () => {
  it("parses the example customer and region stacks with defaults filled in", () => {
    const c = parseStackConfig(customer());
    expect(c).toMatchObject({ kind: "customer", customer: "contoso", homeRegion: "westeurope", key: { size: 3072, rotationPeriod: "P90D", expiresAfter: "P1Y", publicNetworkAccess: true } });
    const r = parseStackConfig(region());
    expect(r).toMatchObject({ kind: "region", region: "westeurope", redundancy: "Standard_ZRS", retention: { pointsDays: 35, immutabilityDays: 30, immutabilityLocked: false } });
    const north = parseStackConfig(exampleConfig("Pulumi.dev-northeurope.yaml").raw);
    expect(north).toMatchObject({
      worker: { replicaTimeoutSeconds: 14400, replicaRetryLimit: 2, maxExecutions: 10, maxJobsPerWorker: 2, maxJobsPerRegion: 8 },
      policy: { every: "4h", tag: "bulwark-protect=true", resources: [] },
      retention: { rule: { last: 6, daily: 35 } },
    });
    expect(north).not.toHaveProperty("sqlAdmin", expect.anything());
  });

  it("maps retention to the policy's rule: daily from pointsDays, last a day of points, the others when set", () => {
    const raw = region();
    raw.backupEvery = "30m";
    raw.retention = { pointsDays: 10, immutabilityDays: 5, hourly: 24, yearly: 3, last: 0 };
    expect(parseStackConfig(raw)).toMatchObject({ retention: { rule: { daily: 10, hourly: 24, yearly: 3 } } });
    expect((parseStackConfig(raw) as any).retention.rule).not.toHaveProperty("last");
    raw.retention = { pointsDays: 10 };
    expect((parseStackConfig(raw) as any).retention.rule).toEqual({ last: 48, daily: 10 });
  });

  it("opens the key vault to the agents' network unless bulwark:network is private (no private endpoint, no wrap or unwrap)", () => {
    const raw = customer();
    raw.key = { rotationPeriod: "P90D" };
    expect(parseStackConfig(raw)).toMatchObject({ key: { publicNetworkAccess: true, size: 3072, expiresAfter: "P1Y" }, network: "public" });
    expect(parseStackConfig({ ...raw, network: "private" })).toMatchObject({ key: { publicNetworkAccess: false }, network: "private" });
  });

  it("reads values the way Pulumi passes them: strings, with objects as JSON", () => {
    const { raw, secretKeys } = rawFromPulumiConfig(
      { "bulwark:stackKind": "region", "bulwark:retention": '{"pointsDays":7}', "other:thing": "x", "bulwark:notificationWebhook": "https://hook" },
      (key) => key === "bulwark:notificationWebhook",
    );
    expect(raw).toEqual({ stackKind: "region", retention: { pointsDays: 7 }, notificationWebhook: "https://hook" });
    expect([...secretKeys]).toEqual(["notificationWebhook"]);
  });

  const cases: [string, (raw: Record<string, unknown>) => void, RegExp, "customer" | "region"][] = [
    ["missing stack kind", (r) => delete r.stackKind, /^bulwark:stackKind is not set\. Set `bulwark:stackKind: customer`/, "customer"],
    ["bad customer name", (r) => (r.customer = "Contoso Ltd"), /^bulwark:customer "Contoso Ltd" is not a valid customer name\. Use 3 to 20 lowercase/, "customer"],
    ["tenant id not a GUID", (r) => (r.tenantId = "contoso.onmicrosoft.com"), /^bulwark:tenantId "contoso\.onmicrosoft\.com" is not a tenant id \(a GUID\)\. Copy it from `az account show/, "customer"],
    ["nothing to protect", (r) => (r.protect = []), /^bulwark:protect lists no subscription or resource group to protect\. List them as/, "customer"],
    ["unknown region", (r) => ((r.protect as any[])[1].region = "westeuroupe"), /^bulwark:protect\[1\]\.region names an unknown Azure region "westeuroupe"\. Use a programmatic region name/, "customer"],
    ["bad subscription", (r) => ((r.protect as any[])[0].subscriptionId = "prod"), /^bulwark:protect\[0\]\.subscriptionId must be a subscription id \(a GUID\), got "prod"/, "customer"],
    ["repeated scope", (r) => (r.protect as any[]).push({ ...(r.protect as any[])[0] }), /^bulwark:protect\[3\] repeats \/subscriptions\/.*\/resourceGroups\/contoso-prod-vms\. List each scope once\./, "customer"],
    ["unpinned image", (r) => (r.image = "bulwarkregistry.azurecr.io/bulwark:latest"), /^bulwark:image uses the :latest tag\. Pin a version tag or a digest/, "customer"],
    ["image without tag", (r) => (r.image = "bulwarkregistry.azurecr.io/bulwark"), /^bulwark:image "bulwarkregistry\.azurecr\.io\/bulwark" is not a pinned image reference/, "customer"],
    ["rotation too short", (r) => (r.key = { rotationPeriod: "P3D" }), /^bulwark:key\.rotationPeriod P3D is shorter than Key Vault's minimum of 7 days\. Use P7D or longer\./, "customer"],
    ["rotation not a duration", (r) => (r.key = { rotationPeriod: "90 days" }), /^bulwark:key\.rotationPeriod "90 days" is not a duration\. Write an ISO 8601 duration/, "customer"],
    ["expiry too close to rotation", (r) => (r.key = { rotationPeriod: "P90D", expiresAfter: "P100D" }), /^bulwark:key\.expiresAfter P100D leaves less than 28 days/, "customer"],
    ["bad cron", (r) => (r.schedule = "0 25 * * *"), /^bulwark:schedule "0 25 \* \* \*" has an hour outside 0-23/, "region"],
    ["cron with six fields", (r) => (r.schedule = "0 0 2 * * *"), /^bulwark:schedule "0 0 2 \* \* \*" has 6 fields/, "region"],
    ["bad redundancy", (r) => (r.redundancy = "Premium_LRS"), /^bulwark:redundancy must be one of Standard_LRS, .*got "Premium_LRS"\. Choose it before the first backup: it cannot change afterwards\./, "region"],
    ["immutability beyond retention", (r) => (r.retention = { pointsDays: 7, immutabilityDays: 30 }), /^bulwark:retention\.immutabilityDays \(30\) is longer than retention\.pointsDays \(7\)/, "region"],
    ["retry limit not a number", (r) => (r.worker = { replicaRetryLimit: "many" }), /^bulwark:worker\.replicaRetryLimit must be a whole number from 0 to 10, got "many"/, "region"],
    ["customer stack not qualified", (r) => (r.customerStack = "dev"), /^bulwark:customerStack "dev" is not a fully qualified stack name\. Write organization\/project\/stack/, "region"],
    ["a webhook nothing reads", (r) => (r.notificationWebhook = "https://hook"), /^bulwark:notificationWebhook is not used: the agents send no notifications .*pulumi config rm bulwark:notificationWebhook/, "region"],
    ["plain-text SQL password", (r) => ((r.sqlAdminLogin = "admin"), (r.sqlAdminPassword = "hunter2")), /^bulwark:sqlAdminLogin is stored in plain text\. .*pulumi config set --secret bulwark:sqlAdminLogin/, "region"],
    ["backup interval not a duration", (r) => (r.backupEvery = "4 hours"), /^bulwark:backupEvery "4 hours" is not a duration\. Write a duration .* e\.g\. "4h"/, "region"],
    ["protect tag without a value", (r) => (r.protectTag = "bulwark-protect"), /^bulwark:protectTag "bulwark-protect" is not a tag\. Write the tag as key=value/, "region"],
    ["protect tag with a slash in its name", (r) => (r.protectTag = "a/b=c"), /^bulwark:protectTag "a\/b=c" is not a tag/, "region"],
    ["explicit resource not a VM, disk or database", (r) => (r.protectResources = ["/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/x/providers/Microsoft.Web/sites/app"]), /^bulwark:protectResources\[0\] ".*Microsoft\.Web\/sites\/app" is not the ARM id of a VM, managed disk or Azure SQL database\. List ARM ids/, "region"],
    ["more jobs per worker than per region", (r) => (r.worker = { maxJobsPerWorker: 10, maxJobsPerRegion: 4 }), /^bulwark:worker\.maxJobsPerWorker \(10\) is more than worker\.maxJobsPerRegion \(4\)/, "region"],
  ];

  for (const [what, spoil, message, kind] of cases) {
    it(`rejects ${what} with a message that names the key and the fix`, () => {
      const raw = kind === "customer" ? customer() : region();
      spoil(raw);
      expect(failure(raw).message).toMatch(message);
    });
  }

  it("accepts the SQL login when both halves are secrets, and refuses one half alone", () => {
    const raw = region();
    raw.sqlAdminLogin = "admin";
    raw.sqlAdminPassword = "hunter2";
    expect(parseStackConfig(raw, new Set(["sqlAdminLogin", "sqlAdminPassword"]))).toMatchObject({
      sqlAdmin: { login: { secret: true, value: "admin" }, password: { secret: true, value: "hunter2" } },
    });
    delete raw.sqlAdminPassword;
    expect(failure(raw, ["sqlAdminLogin"]).message).toMatch(/^bulwark:sqlAdminPassword is not set, but its other half is\. .*pulumi config set --secret bulwark:sqlAdminPassword/);
  });
});

describe("region stack against its customer stack", () => {
  beforeAll(async () => {
    await deployExampleCustomer();
  });

  it("fails for a region the customer protects nothing in", async () => {
    const config = exampleRegionConfig("Pulumi.dev-westeurope.yaml", { region: "eastus" });
    await expect(deployRegion(config)).rejects.toThrow(/^bulwark:region eastus has no protected scope: customer contoso protects only westeurope, northeurope\. Add a scope in eastus/);
  });

  it("fails when pointed at another customer's stack", async () => {
    const config = exampleRegionConfig("Pulumi.dev-westeurope.yaml", { customer: "fabrikam" });
    await expect(deployRegion(config)).rejects.toThrow(/belongs to customer "contoso", not "fabrikam"\. Point bulwark:customerStack at fabrikam's customer stack\./);
  });
});
