/**
 * The web console in a real browser (Debian's Chromium through playwright-core) over a real fleet
 * state: Azurite holds the fleet's tables and the vault, the local Azure emulator the disks, the
 * scheduler's tick (in this process) queued the backups and the real `bulwark agent worker` made the points. One fleet, one console and
 * one browser serve every test of the file.
 *
 * Set BULWARK_CONSOLE_SCREENSHOTS=1 to write each page's screenshot into docs/console/ (README's
 * "The console" shows them).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newJobId } from "../../runtime/jobs/records.ts";
import { encodeKey } from "../../runtime/jobs/storage.ts";
import { openFleet, submitJob } from "../../runtime/jobs/submit.ts";
import { systemClock } from "../../runtime/jobs/clock.ts";
import { scheduleTick } from "../../runtime/jobs/scheduler.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";
import { ExistingFleetStorage } from "../../runtime/console/fleet-storage.ts";
import { loadPolicies } from "../../runtime/policy/policy.ts";
import { consoleSettings, startConsole, type StartedConsole } from "../../runtime/console/command.ts";
import type { AgentStatus } from "../../runtime/console/agents.ts";
import { startCli, finished } from "../support/cli.ts";
import { MiB, fleetWorldForFile, makeDisk, vaultManifests } from "../fleet/harness.ts";
import { launchChromium } from "./browser.ts";
import { ext2Image } from "./ext2-image.ts";

const world = fleetWorldForFile();
const SCREENSHOTS = process.env.BULWARK_CONSOLE_SCREENSHOTS ? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs/console") : undefined;
const DAY = 86_400_000;
const APP_CONF = "listen = 0.0.0.0:8443\nworkers = 4\n";

const ids = { data: "", logs: "", never: "", hostile: "" };
let policyFiles: { scheduled: string; unscheduled: string };
let console_: StartedConsole;
let browser: BrowserContext;
let page: Page;
let failedRestoreJob = "";
let hostileJob = "";

/** A stub of C2's readAgents: one region's scheduler ticking, its worker's last run failed. */
async function agentsStub(): Promise<AgentStatus[]> {
  const start = new Date(Date.now() - 20 * 60_000).toISOString();
  return [
    { region: "westeurope", job: "contoso-weu-sched", kind: "scheduler", schedule: "*/15 * * * *", lastExecutions: [{ name: "contoso-weu-sched-1", status: "Succeeded", start }], lastSuccessAt: start, state: "ok", detail: "ticking" },
    { region: "westeurope", job: "contoso-weu-worker", kind: "worker", lastExecutions: [{ name: "contoso-weu-worker-7", status: "Failed", start }], state: "failing", detail: "its latest finished execution failed" },
  ];
}

async function shoot(name: string): Promise<void> {
  if (!SCREENSHOTS) return;
  await mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** The text of the Protected items row whose name cell is `name`. */
async function itemRow(name: string): Promise<string> {
  return page.locator("tbody tr", { has: page.locator("th", { hasText: new RegExp(`^${name}$`) }) }).innerText();
}

beforeAll(async () => {
  const w = world();
  w.emulator.world.addResourceGroup("console-we", "westeurope");
  ids.data = makeDisk(w, "console-we", "app-data", 2 * MiB, { seed: 11 }).id;
  // app-data holds a filesystem (ext2 on the whole disk, made by mke2fs): its files can be browsed and restored.
  w.emulator.control.writeDisk(ids.data, 0, await ext2Image(w.dir, { "etc/app.conf": APP_CONF }, "2048k"));
  ids.logs = makeDisk(w, "console-we", "app-logs", 1 * MiB, { seed: 12 }).id;
  ids.never = makeDisk(w, "console-we", "app-new", 1 * MiB, { seed: 13 }).id;
  const yaml = (name: string, resources: string[]) =>
    `name: ${name}\nvault: ${w.vault}\nprotect:\n  resources:\n${resources.map((r) => `    - ${r}\n`).join("")}schedule:\n  every: 1d\nretention:\n  last: 5\n`;
  // The scheduler runs "daily"; "later" names a disk no tick has seen yet: it is shown as never backed up.
  policyFiles = { scheduled: await w.policy("daily", yaml("daily", [ids.data, ids.logs])), unscheduled: await w.policy("later", yaml("later", [ids.never])) };
  // The scheduler's tick (what `bulwark agent schedule` runs), in this process; the real worker runs the backups.
  const fleet = await w.fleet();
  const tick = await scheduleTick({
    fleet, policies: await loadPolicies([policyFiles.scheduled]), regionsWithAgents: ["westeurope"], log: () => {},
    resolveItems: new ArmItemResolver(w.emulator.credential(), { endpoint: w.emulator.armEndpoint }),
  });
  expect(tick.enqueued).toHaveLength(2);
  expect(await w.worker("westeurope").summary()).toMatchObject({ succeeded: 2, failed: 0 });

  // app-logs' last good run three days ago: with a daily schedule its RPO (two intervals) is missed.
  await fleet.items.update(ids.logs, () => { throw new Error("app-logs has no record"); }, (item) => ({ ...item, lastGoodAt: item.lastGoodAt - 3 * DAY }));
  // A restore onto a disk that exists: the agents refuse it (nothing is overwritten) and the job fails.
  const logsPoint = (await vaultManifests(w)).find((p) => p.source.path.toLowerCase() === ids.logs.toLowerCase())!;
  const failing = await submitJob(fleet, { machine: "restore", item: { id: ids.logs, kind: "disk", region: "westeurope" }, queueRegion: "westeurope", policy: "daily", input: { vault: w.vault, pointId: logsPoint.id, target: ids.data } });
  if (!failing.submitted) throw new Error(failing.reason);
  failedRestoreJob = failing.job.jobId;

  // What a person with write access to the tables could leave: markup in a job's error and an
  // item's name, a job whose input is not JSON, an item whose time is not a time.
  ids.hostile = `/subscriptions/${w.emulator.subscriptionId}/resourceGroups/console-we/providers/Microsoft.Compute/disks/<img src=x onerror="window.pwned=1">`;
  hostileJob = newJobId(Date.now());
  const job = { partitionKey: "job", machine: "backup", itemId: ids.hostile, itemKind: "disk", region: "westeurope", policy: "daily", status: "failed", state: "", input: "{}", createdAt: Date.now(), startedAt: Date.now(), endedAt: Date.now(), runs: 1, failures: 1, dataParts: 0, compensable: "[]", pendingCompensations: "[]", owner: "", leaseUntil: 0 };
  await fleet.jobs.table.createEntity({ ...job, rowKey: hostileJob, error: `<script>window.pwned=2</script><b>bold</b>` });
  await fleet.jobs.table.createEntity({ ...job, rowKey: newJobId(Date.now()), input: "{not json", error: "" });
  await fleet.items.table.createEntity({ partitionKey: "item", rowKey: encodeKey(ids.hostile), kind: "disk", region: "westeurope", policy: "daily", state: "idle", lastOutcome: "failed", lastError: `<script>window.pwned=3</script>`, lastGoodAt: 0 });
  await fleet.items.table.createEntity({ partitionKey: "item", rowKey: encodeKey(`${ids.data.replace("app-data", "app-odd")}`), kind: "disk", region: "westeurope", policy: "daily", state: "idle", lastGoodAt: "yesterday" });

  // A policy whose vault is not there (deleted, or the console's identity lost its access to it).
  const gone = `${w.vault.replace(/\/vault$/, "/vault-gone")}`;
  const ghost = `/subscriptions/${w.emulator.subscriptionId}/resourceGroups/console-we/providers/Microsoft.Compute/disks/ghost`;
  const ghostPolicy = path.join(w.dir, "ghost.yaml");
  await writeFile(ghostPolicy, `name: ghost\nvault: ${gone}\nprotect:\n  resources:\n    - ${ghost}\nschedule:\n  every: 1d\nretention:\n  last: 5\n`);
  const policies = await loadPolicies([policyFiles.scheduled, policyFiles.unscheduled, ghostPolicy]);
  // The console opens the fleet as deployed: the agents' tables and queues, never creating any.
  const consoleFleet = await openFleet(new ExistingFleetStorage({ connectionString: w.env.AZURE_STORAGE_CONNECTION_STRING! }, { prefix: w.prefix }), systemClock);
  console_ = await startConsole({ fleet: consoleFleet, policies, settings: { listen: { host: "127.0.0.1", port: 0, loopback: true }, auth: "token" }, env: w.env, readAgents: agentsStub });
  browser = await launchChromium();
  page = await browser.newPage();
  page.on("pageerror", (error) => { throw error; });
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await console_?.close();
});

describe("the console", () => {
  it("lets the browser in with the printed token, then drops the token from the address into an HttpOnly SameSite=Strict cookie", async () => {
    await page.goto(console_.entryUrl);
    expect(page.url()).toBe(`${console_.url}/`);
    const [cookie] = await browser.cookies(console_.url);
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Strict" });
    expect(await page.locator("h1").innerText()).toBe("Protected items");
  });

  it("shows every protected item with its RPO state: ok, missed (three days without a good point), never", async () => {
    await page.goto(`${console_.url}/`);
    expect(await itemRow("app-data")).toMatch(/\bok\b/);
    expect(await itemRow("app-logs")).toMatch(/\bmissed\b/);
    expect(await itemRow("app-new")).toMatch(/\bnever\b/);
    expect(await itemRow("app-data")).toMatch(/westeurope[\s\S]*daily[\s\S]*succeeded/);
    await shoot("items");
    // Without script a time reads as UTC ISO 8601; the script shows it in the viewer's zone, the ISO time as its title.
    const raw = await (await page.request.get(`${console_.url}/`)).text();
    expect(raw).toMatch(/<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z">\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ<\/time>/);
    const shown = page.locator("time").first();
    expect(await shown.getAttribute("title")).toBe(await shown.getAttribute("datetime"));
    expect(await shown.innerText()).not.toMatch(/^\d{4}-\d\d-\d\dT/);
    // Filtering and sorting are links and a GET form: they work without script.
    await page.selectOption("#state", "missed");
    await page.click("form.filters button");
    expect(await page.locator("tbody th").allInnerTexts()).toEqual(["app-logs"]);
    await page.goto(`${console_.url}/?sort=item&dir=desc`);
    const names = await page.locator("tbody th").allInnerTexts();
    expect(names.filter((n) => n.startsWith("app-"))).toEqual(["app-new", "app-logs", "app-data"]);
  });

  it("renders markup from storage as inert text, and a malformed record as \"unreadable record\" while the page still loads", async () => {
    await page.goto(`${console_.url}/`);
    expect(await page.locator("body").innerText()).toContain("<script>window.pwned=3</script>");
    expect(await page.locator("main").innerText()).toMatch(/unreadable record .*lastGoodAt is not a time/);
    await page.goto(`${console_.url}/jobs`);
    expect(await page.locator("body").innerText()).toContain("<script>window.pwned=2</script><b>bold</b>");
    expect(await page.locator("main").innerText()).toMatch(/unreadable record .*its input is not JSON/);
    expect(await page.locator("main b").count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as { pwned?: number }).pwned)).toBeUndefined();
  });

  it("refuses a request without the session (401, with how to get in), a wrong token, and a host name other than loopback", async () => {
    const bare = await fetch(`${console_.url}/jobs`);
    expect(bare.status).toBe(401);
    expect(await bare.text()).toContain("Open the address");
    expect((await fetch(`${console_.url}/?token=${"A".repeat(43)}`, { redirect: "manual" })).status).toBe(401);
    // A page of another site reaching the port through DNS rebinding names its own host.
    expect(await statusWithHost(`${console_.url}/`, `evil.example:${console_.port}`)).toBe(421);
    const css = await fetch(`${console_.url}/static/console.css`);
    expect(css.status).toBe(401);
  });

  it("refuses a restore whose CSRF token is forged (403) and submits no job", async () => {
    const before = await countJobs();
    await page.goto(`${console_.url}/item?id=${encodeURIComponent(ids.data)}`);
    const point = await page.locator("#restore-point").inputValue();
    const status = await page.evaluate(async ([item, pointId]) => {
      const body = new URLSearchParams({ csrf: "forged", kind: "resource", item, point: pointId, target: item.replace("app-data", "forged-copy") });
      return (await fetch("/restore", { method: "POST", body })).status;
    }, [ids.data, point] as const);
    expect(status).toBe(403);
    expect(await countJobs()).toBe(before);
  });

  it("starts a disk restore and a files restore (browsed to the file) from the item's page; the worker runs both, and the Jobs page shows them succeeded and the failed job's error", async () => {
    const w = world();
    await page.goto(`${console_.url}/item?id=${encodeURIComponent(ids.data)}`);
    await shoot("item");
    const target = ids.data.replace(/app-data$/, "app-data-console");
    await page.fill("#restore-target", target);
    await page.click("form.restore button[type=submit]");
    expect(new URL(page.url()).pathname).toBe("/jobs");
    const submitted = new URL(page.url()).searchParams.get("submitted")!;
    expect(await page.locator(".notice").innerText()).toContain(submitted);
    expect(await page.locator("section, table", { hasText: submitted }).first().innerText()).toMatch(/queued/);
    // Files: browse the point's volume and folder, tick a file, restore it into an archive.
    await page.goto(`${console_.url}/item?id=${encodeURIComponent(ids.data)}`);
    await page.click("text=browse the newest point's volumes and folders");
    await page.click("tbody a >> text=volume");
    await page.click("tbody a >> text=etc");
    await shoot("browse");
    await page.check("input[name=paths][value='/volume/etc/app.conf']");
    await page.click("text=Restore the chosen paths");
    const filesJob = new URL(page.url()).searchParams.get("submitted")!;
    expect(filesJob).toMatch(/^\d{13}-/);
    expect(await w.worker("westeurope").summary()).toMatchObject({ succeeded: 2, failed: 1 });
    const files = (await (await w.fleet()).jobs.get(filesJob))!.value;
    expect(files).toMatchObject({ machine: "restore-files", status: "succeeded", input: { paths: ["/volume/etc/app.conf"] } });
    const archive = await w.transient("westeurope").getBlobClient(String(files.data.archive)).downloadToBuffer();
    expect(archive.includes(Buffer.from(APP_CONF))).toBe(true);
    const job = (await (await w.fleet()).jobs.get(submitted))!.value;
    expect(job).toMatchObject({ machine: "restore", status: "succeeded", input: { target } });
    expect(w.emulator.control.inventory().disks.some((d) => d.id.toLowerCase() === target.toLowerCase())).toBe(true);
    await page.goto(`${console_.url}/jobs`);
    const succeeded = page.locator("table", { hasText: "Jobs that succeeded" });
    expect(await succeeded.locator("tr", { hasText: submitted }).innerText()).toMatch(/restore[\s\S]*app-data/);
    const failed = page.locator("table", { hasText: "Jobs that failed" });
    const failedRow = await failed.locator("tr", { hasText: failedRestoreJob }).innerText();
    expect(failedRow).toMatch(/already exists; restores never overwrite/);
    expect(failedRow).toMatch(/failed\s+in restore/);
    // A finished job's record keeps its last step (a backup's is cleanup): not shown as if still running it.
    expect(await succeeded.innerText()).not.toMatch(/cleanup/);
    await shoot("jobs");
  });

  it("shows the vault's points, size and dedup ratio, a vault that cannot be read with why (the others still shown), and the agents from readAgents", async () => {
    await page.goto(`${console_.url}/vaults`);
    const row = await page.locator("tbody tr").first().innerText();
    expect(row).toContain(world().vault);
    expect(row).toMatch(/daily, later\s+2\s/);
    expect(await page.locator("tbody tr", { hasText: "vault-gone" }).innerText()).toMatch(/cannot be read: .+/);
    await shoot("vaults");
    await page.goto(`${console_.url}/agents`);
    expect(await page.locator("tbody tr", { hasText: "contoso-weu-worker" }).innerText()).toMatch(/failing/);
    await shoot("agents");
  });

  it("refuses a restore onto the item itself or onto another kind of resource, and says what to give", async () => {
    await page.goto(`${console_.url}/item?id=${encodeURIComponent(ids.data)}`);
    // Every control has a label, and the form is reached and sent from the keyboard alone.
    expect(await page.evaluate(() => {
      const doc = (globalThis as unknown as { document: { querySelectorAll(s: string): Array<{ labels: { length: number } | null; id: string }> } }).document;
      return [...doc.querySelectorAll("input:not([type=hidden]), select")].filter((c) => !c.labels || c.labels.length === 0).map((c) => c.id);
    })).toEqual([]);
    await page.focus("#restore-target");
    await page.keyboard.press("Control+A");
    await page.keyboard.type(ids.data);
    await page.keyboard.press("Enter");
    await page.waitForURL(`${console_.url}/restore`);
    expect(await page.locator("main").innerText()).toContain("the target is the protected item itself: the console never overwrites");
    await page.goto(`${console_.url}/item?id=${encodeURIComponent(ids.data)}`);
    await page.fill("#restore-target", ids.data.replace("Microsoft.Compute/disks", "Microsoft.Compute/virtualMachines"));
    await page.click("form.restore button[type=submit]");
    expect(await page.locator("main").innerText()).toMatch(/a disk point restores to a new managed disk id/);
  });

  it("deployed with --auth entra, trusts only Container Apps' principal header: none is 401, a signed-in user sees the pages under their name", async () => {
    const w = world();
    const entra = await startConsole({
      fleet: await w.fleet(), policies: await loadPolicies([policyFiles.scheduled]), env: w.env, readAgents: agentsStub,
      settings: { listen: { host: "127.0.0.1", port: 0, loopback: false }, auth: "entra" },
    });
    try {
      const anonymous = await fetch(`${entra.url}/`);
      expect(anonymous.status).toBe(401);
      expect(await anonymous.text()).toContain("Container Apps authentication");
      // The token mode's URL token means nothing here.
      expect((await fetch(`${entra.url}/?token=${console_.access.token}`)).status).toBe(401);
      const signedIn = await fetch(`${entra.url}/`, { headers: { "X-MS-CLIENT-PRINCIPAL-NAME": "ops@contoso.example" } });
      expect(signedIn.status).toBe(200);
      expect(signedIn.headers.get("set-cookie")).toMatch(/HttpOnly; SameSite=Strict; Secure/);
      expect(await signedIn.text()).toContain("ops@contoso.example");
    } finally {
      await entra.close();
    }
  });

  it("refuses a non-loopback --listen without --allow-remote, and --auth entra on loopback", () => {
    expect(() => consoleSettings({ listen: "0.0.0.0:8080" })).toThrow(/--allow-remote/);
    expect(() => consoleSettings({ listen: "0.0.0.0:8080", "allow-remote": true, auth: "entra" })).not.toThrow();
    expect(() => consoleSettings({ listen: "127.0.0.1:8080", auth: "entra" })).toThrow(/not on loopback/);
    expect(() => consoleSettings({ listen: "console.example:8080", "allow-remote": true })).toThrow(/give an IP address/);
    expect(consoleSettings({}).listen).toEqual({ host: "127.0.0.1", port: 0, loopback: true });
  });

  it("bulwark console prints its URL with the token, refuses without it, and stops on Ctrl-C with exit 0", async () => {
    const child = startCli(["console", "--policies", policyFiles.scheduled], world().env);
    const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once("line", resolve));
    const match = /^console: (http:\/\/127\.0\.0\.1:\d+)\/\?token=([A-Za-z0-9_-]{43})$/.exec(line);
    expect(match, line).not.toBeNull();
    expect((await fetch(`${match![1]}/`)).status).toBe(401);
    const entered = await fetch(`${match![1]}/?token=${match![2]}`, { redirect: "manual" });
    expect(entered.status).toBe(303);
    expect(entered.headers.get("location")).toBe("/");
    expect(entered.headers.get("set-cookie")).toMatch(/HttpOnly; SameSite=Strict/);
    child.kill("SIGINT");
    expect((await finished(child)).code).toBe(0);
  });
});

/** GET with a Host header of our choosing (fetch does not let a caller set Host). */
function statusWithHost(url: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, { headers: { Host: host } }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.once("error", reject);
    request.end();
  });
}

async function countJobs(): Promise<number> {
  let n = 0;
  for await (const _ of (await world().fleet()).jobs.table.listEntities()) n++;
  return n;
}
