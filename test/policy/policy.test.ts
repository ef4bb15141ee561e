import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { UsageError } from "../../runtime/errors.ts";
import { loadPolicies, parsePolicy } from "../../runtime/policy/policy.ts";
import { StaticItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { isDue, meetsRpo, parseDuration } from "../../runtime/policy/schedule.ts";

const VM = "/subscriptions/sub-a/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/web1";
const DB = "/subscriptions/sub-a/resourceGroups/rg1/providers/Microsoft.Sql/servers/sql1/databases/orders";

const GOOD_YAML = `
name: prod-vms
vault: https://isolated.blob.core.windows.net/vault
protect:
  resources:
    - ${VM}
  tagged:
    type: Microsoft.Compute/disks
    tag: backup=gold
    subscriptions: [sub-a, sub-b]
schedule:
  every: 4h
retention:
  last: 3
  daily: 7
  weekly: 4
crossRegion: true
`;

describe("parsePolicy", () => {
  test("reads a valid YAML policy", () => {
    const policy = parsePolicy(GOOD_YAML, "prod.yaml");
    expect(policy.name).toBe("prod-vms");
    expect(policy.protect.resources).toEqual([VM]);
    expect(policy.protect.tagged).toEqual([
      { type: "Microsoft.Compute/disks", tagName: "backup", tagValue: "gold", subscriptions: ["sub-a", "sub-b"] },
    ]);
    expect(policy.schedule).toMatchObject({ kind: "every", intervalMs: 4 * 3_600_000 });
    expect(policy.retention).toEqual({ last: 3, daily: 7, weekly: 4 });
    expect(policy.crossRegion).toBe(true);
  });

  test("reads JSON with a cron schedule and an RPO", () => {
    const policy = parsePolicy(
      JSON.stringify({
        name: "sql",
        vault: "/var/backups/vault",
        protect: { resources: [DB] },
        schedule: { cron: "0 2 * * *", rpo: "26h" },
        retention: { daily: 30 },
      }),
      "sql.json",
    );
    expect(policy.schedule.kind).toBe("cron");
    expect(policy.schedule.rpoMs).toBe(26 * 3_600_000);
    expect(policy.crossRegion).toBe(false);
  });

  const base = {
    name: "p",
    vault: "/v",
    protect: { resources: [VM] },
    schedule: { every: "1d" },
    retention: { daily: 7 },
  };
  const broken: [string, Record<string, unknown>, RegExp][] = [
    ["missing name", { ...base, name: undefined }, /p\.json: name: is required/],
    ["bad name", { ...base, name: "has space" }, /name: "has space" must be/],
    ["unknown field", { ...base, retain: 3 }, /retain: is not a known field/],
    ["typo inside schedule", { ...base, schedule: { evry: "1d" } }, /schedule\.evry: is not a known field/],
    ["both schedules", { ...base, schedule: { every: "1d", cron: "* * * * *" } }, /schedule: must have exactly one/],
    ["no schedule kind", { ...base, schedule: {} }, /schedule: must have exactly one/],
    ["bad duration", { ...base, schedule: { every: "4x" } }, /schedule\.every: "4x" is not a duration/],
    ["bad cron", { ...base, schedule: { cron: "0 25 * * *" } }, /schedule\.cron: cron "0 25 \* \* \*": hour 25/],
    ["cron that never fires", { ...base, schedule: { cron: "0 0 31 2 *" } }, /schedule\.cron: .* never fires/],
    ["bad rpo", { ...base, schedule: { every: "1d", rpo: "soon" } }, /schedule\.rpo: "soon"/],
    ["bad resource id", { ...base, protect: { resources: [VM, "/subscriptions/x/vm"] } }, /protect\.resources\[1\]: .* is not the ARM id/],
    ["unprotectable type", { ...base, protect: { resources: ["/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a"] } }, /protect\.resources\[0\]/],
    ["protects nothing", { ...base, protect: {} }, /protect: must list resources or a tagged selector/],
    ["bad tag", { ...base, protect: { tagged: { type: "Microsoft.Compute/disks", tag: "gold", subscriptions: ["s"] } } }, /protect\.tagged\.tag: "gold" must be key=value/],
    ["bad type", { ...base, protect: { tagged: [{ type: "Microsoft.Web/sites", tag: "a=b", subscriptions: ["s"] }] } }, /protect\.tagged\[0\]\.type: "Microsoft.Web\/sites" is not one of/],
    ["no subscriptions", { ...base, protect: { tagged: { type: "Microsoft.Compute/disks", tag: "a=b" } } }, /protect\.tagged\.subscriptions: is required/],
    ["negative retention", { ...base, retention: { daily: -1 } }, /retention\.daily: must be a whole number/],
    ["unknown retention", { ...base, retention: { daily: 1, forever: 1 } }, /retention\.forever: is not a known field/],
    ["empty retention", { ...base, retention: { daily: 0 } }, /retention: keeps nothing/],
    ["SAS in vault", { ...base, vault: "https://a.blob.core.windows.net/v?sig=abc" }, /vault: must not carry a query string/],
    ["crossRegion not boolean", { ...base, crossRegion: "yes" }, /crossRegion: must be true or false/],
  ];
  test.each(broken)("refuses %s with an error naming the file and field", (_name, document, message) => {
    const text = JSON.stringify(document);
    let caught: unknown;
    try {
      parsePolicy(text, "p.json");
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(UsageError);
    expect((caught as Error).message).toMatch(/^p\.json: /);
    expect((caught as Error).message).toMatch(message);
  });

  test("reports YAML syntax errors with the line", () => {
    expect(() => parsePolicy("name: a\n  vault: [\n", "bad.yaml")).toThrow(/bad\.yaml: is not valid YAML \(line \d+/);
    expect(() => parsePolicy("name: a\nname: b\n", "dup.yaml")).toThrow(/dup\.yaml: is not valid YAML/);
  });
});

describe("loadPolicies", () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-policies-"));
  });
  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  test("loads every policy file of a folder and refuses duplicate names", async () => {
    await writeFile(path.join(folder, "a.yaml"), GOOD_YAML);
    await writeFile(path.join(folder, "notes.txt"), "not a policy");
    await writeFile(
      path.join(folder, "b.json"),
      JSON.stringify({ name: "sql", vault: "/v", protect: { resources: [DB] }, schedule: { every: "1d" }, retention: { last: 1 } }),
    );
    const policies = await loadPolicies([folder]);
    expect(policies.map((p) => p.name)).toEqual(["prod-vms", "sql"]);
    await writeFile(path.join(folder, "c.yml"), GOOD_YAML);
    await expect(loadPolicies([folder])).rejects.toThrow(/c\.yml: name: "prod-vms" is already the name of the policy in .*a\.yaml/);
    await expect(loadPolicies([path.join(folder, "missing.yaml")])).rejects.toThrow(UsageError);
  });
});

describe("isDue and meetsRpo", () => {
  const every4h = parsePolicy(GOOD_YAML, "p.yaml").schedule;
  const nightly = parsePolicy(
    JSON.stringify({ name: "n", vault: "/v", protect: { resources: [VM] }, schedule: { cron: "0 2 * * *" }, retention: { daily: 1 } }),
    "n.json",
  ).schedule;
  const t = (iso: string) => new Date(iso);

  test("an item that never succeeded is due", () => {
    expect(isDue(every4h, undefined, t("2026-11-20T00:00:00Z"))).toBe(true);
    expect(isDue(nightly, undefined, t("2026-11-20T00:00:00Z"))).toBe(true);
  });

  test("every: due once an interval (less 5 minutes of slack for late ticks) has passed", () => {
    expect(isDue(every4h, t("2026-11-20T08:00:00Z"), t("2026-11-20T11:54:59Z"))).toBe(false);
    expect(isDue(every4h, t("2026-11-20T08:00:03Z"), t("2026-11-20T12:00:01Z"))).toBe(true);
    expect(isDue(every4h, t("2026-11-20T08:00:00Z"), t("2026-11-20T11:55:00Z"))).toBe(true);
    const every30m = { ...every4h, intervalMs: 30 * 60_000 };
    expect(isDue(every30m, t("2026-11-20T08:00:00Z"), t("2026-11-20T08:28:29Z"))).toBe(false);
    expect(isDue(every30m, t("2026-11-20T08:00:00Z"), t("2026-11-20T08:28:30Z"))).toBe(true);
  });

  test("cron: due when the schedule fired after the last successful run was scheduled", () => {
    expect(isDue(nightly, t("2026-11-20T02:03:00Z"), t("2026-11-20T23:00:00Z"))).toBe(false);
    expect(isDue(nightly, t("2026-11-20T02:03:00Z"), t("2026-11-21T02:00:00Z"))).toBe(true);
    expect(isDue(nightly, t("2026-11-19T02:03:00Z"), t("2026-11-20T01:00:00Z"))).toBe(false);
  });

  test("RPO: by default one scheduled run may be outstanding; an explicit rpo is a strict age", () => {
    expect(meetsRpo(every4h, undefined, t("2026-11-20T00:00:00Z"))).toBe(false);
    expect(meetsRpo(every4h, t("2026-11-20T04:00:00Z"), t("2026-11-20T12:00:00Z"))).toBe(true);
    expect(meetsRpo(every4h, t("2026-11-20T04:00:00Z"), t("2026-11-20T12:00:01Z"))).toBe(false);
    expect(meetsRpo(nightly, t("2026-11-19T02:05:00Z"), t("2026-11-20T02:30:00Z"))).toBe(true);
    expect(meetsRpo(nightly, t("2026-11-18T02:05:00Z"), t("2026-11-20T02:30:00Z"))).toBe(false);
    const strict = { ...every4h, rpoMs: parseDuration("5h") };
    expect(meetsRpo(strict, t("2026-11-20T04:00:00Z"), t("2026-11-20T09:00:00Z"))).toBe(true);
    expect(meetsRpo(strict, t("2026-11-20T04:00:00Z"), t("2026-11-20T09:00:01Z"))).toBe(false);
  });
});

describe("StaticItemResolver", () => {
  test("resolves explicit ids and tagged resources of the selected type and subscriptions", async () => {
    const diskA = "/subscriptions/sub-a/resourceGroups/rg1/providers/Microsoft.Compute/disks/d1";
    const diskC = "/subscriptions/sub-c/resourceGroups/rg1/providers/Microsoft.Compute/disks/d2";
    const vmTagged = "/subscriptions/sub-a/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/web2";
    const resolver = new StaticItemResolver([
      { id: VM, kind: "vm", region: "West Europe" },
      { id: diskA, kind: "disk", region: "northeurope", tags: { backup: "gold" } },
      { id: diskC, kind: "disk", region: "northeurope", tags: { backup: "gold" } }, // subscription not selected
      { id: vmTagged, kind: "vm", region: "northeurope", tags: { backup: "gold" } }, // type not selected
    ]);
    const items = await resolver.resolve(parsePolicy(GOOD_YAML, "p.yaml"));
    expect(items).toEqual([
      { id: VM, kind: "vm", region: "westeurope" },
      { id: diskA, kind: "disk", region: "northeurope" },
    ]);
  });
});
