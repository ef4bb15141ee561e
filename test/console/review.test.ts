/**
 * A hostile review of the web console (issue 14): what a process on the same machine, a page of
 * another site open in the operator's browser, and a person with write access to the fleet's
 * storage could try. Plain HTTP against a console started in this process over a small fleet state:
 * Azurite's tables, a local folder vault with one ext2 disk point per item (made in this process),
 * one policy. One fixture serves every test of the file.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backupDisk } from "../../runtime/engine/backup.ts";
import type { Vault } from "../../runtime/engine/vault.ts";
import type { Fleet } from "../../runtime/jobs/submit.ts";
import { newJobId } from "../../runtime/jobs/records.ts";
import { encodeKey } from "../../runtime/jobs/storage.ts";
import { loadPolicies, type Policy } from "../../runtime/policy/policy.ts";
import { consoleSettings, startConsole, type StartedConsole } from "../../runtime/console/command.ts";
import { AccessControl } from "../../runtime/console/access.ts";
import { vaultOpener } from "../../runtime/console/fleet-view.ts";
import { ConsoleApp } from "../../runtime/console/server.ts";
import { ext2Image } from "./ext2-image.ts";
import { Azurite } from "../support/azurite.ts";
import { trackFolder } from "../support/cleanup.ts";
import { initVaultInProcess } from "../cli/vaults.ts";
import { testFleet } from "../jobs/harness.ts";

const SUB = "00000000-0000-0000-0000-0000000000aa";
const disk = (name: string) => `/subscriptions/${SUB}/resourceGroups/rg/providers/Microsoft.Compute/disks/${name}`;
const ITEM = disk("app-data");
const OTHER = disk("app-logs");
/** File names a person who controls a protected disk could give (the console lists them when browsing). */
const HOSTILE_NAMES = [`"><img src=x onerror=alert(1)>`, "javascript:alert(1)"];

let azurite: Azurite;
let fleet: Fleet;
let vault: Vault;
let console_: StartedConsole;
let policies: Policy[];
let cookie = "";
let csrf = "";
const points = { item: "", other: "" };

async function diskPoint(itemId: string, image: Buffer): Promise<string> {
  const source = { size: image.length, read: async (offset: number, length: number) => image.subarray(offset, offset + length) };
  return (await backupDisk(vault, source, { kind: "disk", source: { type: "azure-disk", path: itemId } })).id;
}

async function itemRecord(itemId: string): Promise<void> {
  await fleet.items.table.createEntity({ partitionKey: "item", rowKey: encodeKey(itemId), kind: "disk", region: "westeurope", policy: "daily", state: "idle", lastGoodAt: Date.now() });
}

/** A session: the printed URL's token turned into a cookie, and the CSRF token of its forms. */
async function enter(): Promise<{ cookie: string; csrf: string }> {
  const entered = await fetch(console_.entryUrl, { redirect: "manual" });
  const session = entered.headers.get("set-cookie")!.split(";")[0];
  return { cookie: session, csrf: await csrfOf(console_, { cookie: session }) };
}

async function csrfOf(running: StartedConsole, headers: Record<string, string>): Promise<string> {
  const item = await (await fetch(`${running.url}/item?id=${encodeURIComponent(ITEM)}`, { headers })).text();
  return /name="csrf" value="([^"]+)"/.exec(item)![1];
}

/** Another console over the same fleet and vault, for the while of `use` (a fresh token, or entra mode). */
async function withConsole(auth: "token" | "entra", use: (running: StartedConsole) => Promise<void>): Promise<void> {
  const running = await startConsole({
    fleet, policies, env: {}, readAgents: async () => [], openVault: async () => vault,
    settings: { listen: { host: "127.0.0.1", port: 0, loopback: auth === "token" }, auth },
  });
  try {
    await use(running);
  } finally {
    await running.close();
  }
}

/** A page's text with the console's character references (&#39; and the like) read back. */
async function pageText(response: Response): Promise<string> {
  return (await response.text()).replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));
}

function get(pathAndQuery: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${console_.url}${pathAndQuery}`, { headers: { cookie, ...headers }, redirect: "manual" });
}

function postRestore(fields: Record<string, string>, session = { cookie, csrf }): Promise<Response> {
  return fetch(`${console_.url}/restore`, {
    method: "POST",
    headers: { cookie: session.cookie, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrf: session.csrf, kind: "resource", item: ITEM, point: points.item, ...fields }),
    redirect: "manual",
  });
}

async function countJobs(): Promise<number> {
  let n = 0;
  for await (const _ of fleet.jobs.table.listEntities({ queryOptions: { filter: "PartitionKey eq 'job'" } })) n++;
  return n;
}

/** A raw request (fetch does not let a caller set Host, or send a path fetch would normalize). */
function rawRequest(options: { port?: number; path: string; method?: string; headers?: Record<string, string | number>; body?: Buffer }): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const port = options.port ?? console_.port;
    const request = httpRequest({ host: "127.0.0.1", port, path: options.path, method: options.method ?? "GET", headers: { host: `127.0.0.1:${port}`, cookie, ...options.headers } }, (response) => {
      const parts: Buffer[] = [];
      response.on("data", (part: Buffer) => parts.push(part));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(parts).toString("utf8") }));
    });
    request.once("error", reject);
    request.end(options.body);
  });
}

beforeAll(async () => {
  const dir = trackFolder(await mkdtemp(path.join(os.tmpdir(), "bulwark-console-review-")));
  azurite = await Azurite.start();
  fleet = await testFleet(azurite.connectionString);
  const vaultDir = path.join(dir, "vault");
  vault = await initVaultInProcess({ env: {} }, vaultDir);
  const files = Object.fromEntries(HOSTILE_NAMES.map((name) => [`docs/${name}`, "hostile"]));
  points.item = await diskPoint(ITEM, await ext2Image(path.join(dir, "item"), { ...files, [`${HOSTILE_NAMES[1]}/inside.txt`]: "x" }));
  points.other = await diskPoint(OTHER, await ext2Image(path.join(dir, "other"), { "other.txt": "other" }));
  await itemRecord(ITEM);
  await itemRecord(OTHER);
  const policyFile = path.join(dir, "daily.yaml");
  await writeFile(policyFile, `name: daily\nvault: ${vaultDir}\nprotect:\n  resources:\n    - ${ITEM}\n    - ${OTHER}\nschedule:\n  every: 1d\nretention:\n  last: 5\n`);
  policies = await loadPolicies([policyFile]);
  console_ = await startConsole({
    fleet, policies, env: {}, readAgents: async () => [], openVault: async () => vault,
    settings: { listen: { host: "127.0.0.1", port: 0, loopback: true }, auth: "token" },
  });
  ({ cookie, csrf } = await enter());
}, 120_000);

afterAll(async () => {
  await console_?.close();
  await azurite?.stop();
});

describe("the console under attack", () => {
  it("a forged X-MS-CLIENT-PRINCIPAL-NAME is worth nothing in token mode (401); in entra mode the name shows as text", async () => {
    const forged = await fetch(`${console_.url}/jobs`, { headers: { "X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.example" } });
    expect(forged.status).toBe(401);
    // Deployed, the name Container Apps passes is shown as text, whatever it holds.
    await withConsole("entra", async (entra) => {
      const page = await (await fetch(`${entra.url}/`, { headers: { "X-MS-CLIENT-PRINCIPAL-NAME": "<img src=x onerror=alert(1)>" } })).text();
      expect(page).toContain(`<span class="who">&#60;img src=x onerror=alert(1)&#62;</span>`);
    });
  });

  it("a session id planted in the browser (fixation) is not adopted: entering with the token issues a fresh one", async () => {
    await withConsole("token", async (running) => {
      const planted = "bulwark_console=attacker-chosen-session-id";
      const entered = await fetch(running.entryUrl, { headers: { cookie: planted }, redirect: "manual" });
      expect(entered.status).toBe(303);
      expect(entered.headers.get("set-cookie")).not.toContain("attacker-chosen-session-id");
      expect((await fetch(`${running.url}/jobs`, { headers: { cookie: planted } })).status).toBe(401);
    });
  });

  it("the printed token signs in once: a second browser (or someone who read the URL later) is refused, the first browser coming back with it keeps its session", async () => {
    const again = await fetch(console_.entryUrl, { redirect: "manual" });
    expect(again.status).toBe(401);
    expect(await pageText(again)).toContain("was used already");
    // The operator's own browser opening the printed address again is simply let in (no new session).
    const back = await fetch(console_.entryUrl, { headers: { cookie }, redirect: "manual" });
    expect(back.status).toBe(303);
    expect(back.headers.get("set-cookie")?.split(";")[0] ?? cookie).toBe(cookie);
    expect((await get("/jobs")).status).toBe(200);
  });

  it("a restore posted with another session's CSRF token, or none, is refused (403) and submits no job", async () => {
    const before = await countJobs();
    const target = disk("app-data-copy");
    // Two signed-in users of a deployed console: one's form token is worth nothing in the other's session.
    await withConsole("entra", async (entra) => {
      const as = (who: string) => ({ "X-MS-CLIENT-PRINCIPAL-NAME": who });
      const first = await fetch(`${entra.url}/`, { headers: as("alice@contoso.example") });
      const aliceCookie = first.headers.get("set-cookie")!.split(";")[0];
      const aliceCsrf = await csrfOf(entra, { ...as("alice@contoso.example"), cookie: aliceCookie });
      const mallory = await fetch(`${entra.url}/restore`, {
        method: "POST", headers: { ...as("mallory@contoso.example"), "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ csrf: aliceCsrf, kind: "resource", item: ITEM, point: points.item, target }),
      });
      expect(mallory.status).toBe(403);
      // Alice's cookie in Mallory's request is not Alice's session either.
      const borrowed = await fetch(`${entra.url}/restore`, {
        method: "POST", headers: { ...as("mallory@contoso.example"), cookie: aliceCookie, "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ csrf: aliceCsrf, kind: "resource", item: ITEM, point: points.item, target }),
      });
      expect(borrowed.status).toBe(403);
    });
    const bare = await fetch(`${console_.url}/restore`, { method: "POST", headers: { cookie, "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams({ kind: "resource", item: ITEM, point: points.item, target }) });
    expect(bare.status).toBe(403);
    // A page of another site posting a form: the cookie stays home (SameSite=Strict), so no session at all.
    const crossSite = await fetch(`${console_.url}/restore`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: "https://evil.example" }, body: new URLSearchParams({ csrf, kind: "resource", item: ITEM, point: points.item, target }) });
    expect(crossSite.status).toBe(401);
    // No GET changes anything: /restore is a form's action only.
    expect((await get(`/restore?${new URLSearchParams({ csrf, kind: "resource", item: ITEM, point: points.item, target })}`)).status).toBe(404);
    expect(await countJobs()).toBe(before);
  });

  it("a restore aimed at the item itself written another way (trailing slash, doubled slash, percent-encoded name, other case) is refused before any job exists", async () => {
    const before = await countJobs();
    for (const target of [`${ITEM}/`, ITEM.replace("/disks/", "/disks//"), ITEM.replace("app-data", "app%2Ddata"), ITEM.toUpperCase()]) {
      const refused = await postRestore({ target });
      expect(refused.status, target).toBe(400);
      expect(await refused.text()).toContain("the protected item itself");
    }
    // Another resource spelled oddly is refused too (ARM might read it as some other resource); a plain new one is taken.
    const odd = await postRestore({ target: `${disk("app-data-copy")}/` });
    expect(odd.status).toBe(400);
    expect(await odd.text()).toContain("write the target as Azure shows it");
    expect(await countJobs()).toBe(before);
    expect((await postRestore({ target: disk("app-data-copy") })).status).toBe(303);
    expect(await countJobs()).toBe(before + 1);
  });

  it("a restore of another item's point through this item's form is refused: the point must be the item's own", async () => {
    const before = await countJobs();
    const refused = await postRestore({ point: points.other, target: disk("app-data-copy") });
    expect(refused.status).toBe(400);
    expect(await pageText(refused)).toContain("not one of this item's points");
    const browse = await get(`/browse?${new URLSearchParams({ id: ITEM, point: points.other, path: "/" })}`);
    expect(browse.status).toBe(404);
    expect(await countJobs()).toBe(before);
  });

  it("a restore for a resource no policy protects is refused, whatever the form says", async () => {
    const before = await countJobs();
    const refused = await postRestore({ item: disk("not-protected"), target: disk("copy") });
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain("not one the policies protect");
    expect(await countJobs()).toBe(before);
  });

  it("an oversized form body gets 413 (declared or streamed) and submits nothing", async () => {
    const before = await countJobs();
    const big = Buffer.alloc(300 * 1024, "a");
    const streamed = await rawRequest({ path: "/restore", method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked" }, body: big });
    expect(streamed.status).toBe(413);
    const declared = await rawRequest({ path: "/restore", method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", "content-length": big.length }, body: big });
    expect(declared.status).toBe(413);
    expect(await countJobs()).toBe(before);
  });

  it("the token URL cannot send the browser to another site after signing in (no open redirect)", async () => {
    // The address parser resolves dot segments after reading the host: these paths become //evil.example/.
    for (const trick of ["/.//evil.example/", "/a/..//evil.example/", "/%2e//evil.example", "/./\\evil.example", "//evil.example/"]) {
      await withConsole("token", async (running) => {
        const entered = await rawRequest({ port: running.port, path: `${trick}?token=${running.access.token}`, headers: { cookie: "" } });
        expect(entered.status, trick).toBe(303);
        const location = String(entered.headers.location);
        expect(new URL(location, running.url).origin, `${trick} -> ${location}`).toBe(running.url);
      });
    }
  });

  it("static files are the two assets only: no path leads out of them", async () => {
    for (const probe of ["/static/../package.json", "/static/%2e%2e/package.json", "/static/..%2fpackage.json", "/static/console.css/..%2f..%2fcommand.ts", "/static/"]) {
      const answer = await rawRequest({ path: probe });
      expect(answer.status, probe).toBe(404);
      expect(answer.body).not.toContain("\"name\": \"bulwark");
    }
  });

  it("file names inside a browsed point render as text, and every link stays on the console", async () => {
    const folder = await get(`/browse?${new URLSearchParams({ id: ITEM, point: points.item, path: "/" })}`);
    const root = await folder.text();
    const volume = /href="(\/browse\?[^"]+)">volume/.exec(root)?.[1];
    expect(volume, root).toBeDefined();
    const docs = `/browse?${new URLSearchParams({ id: ITEM, point: points.item, path: `${decodeURIComponent(/path=([^&"]+)/.exec(volume!.replaceAll("&#38;", "&"))![1])}/docs` })}`;
    const page = await (await get(docs)).text();
    expect(page).not.toContain("<img");
    expect(page).toContain("&#34;&#62;&#60;img src=x onerror=alert(1)&#62;");
    const links = [...page.matchAll(/\b(?:href|action|src)="([^"]*)"/g)].map((m) => m[1]);
    expect(links.length).toBeGreaterThan(3);
    for (const link of links) expect(link, link).toMatch(/^\/(?!\/)/);
  });

  it("a job and report written by someone with write access to the tables (markup and javascript: in its item, machine, error, output and point) render as text, every link on the console", async () => {
    const jobId = newJobId(Date.now() + 60_000);
    const hostile = `"><img src=x onerror=alert(1)>`;
    await fleet.jobs.table.createEntity({ partitionKey: "job", rowKey: jobId, machine: `<script>alert(2)</script>`, itemId: "javascript:alert(3)", itemKind: "disk", region: hostile, policy: "daily", status: "failed", state: hostile, input: "{}", error: `<a href="javascript:alert(4)">retry</a>`, createdAt: Date.now(), startedAt: Date.now(), endedAt: Date.now(), runs: 1 });
    await fleet.reports.write({ jobId, machine: "backup", item: ITEM, kind: "disk", region: "westeurope", policy: "daily", start: "", end: "", outcome: "failed", error: "", bytesRead: 1, bytesNew: 1, bytesStored: 1, dedupRatio: null, pointId: hostile, output: `javascript:alert(5)${hostile}`, runs: 1 });
    const page = await (await get("/jobs")).text();
    expect(page).toContain(jobId);
    expect(page).not.toMatch(/<img|<script>alert|<a href="javascript/);
    const links = [...page.matchAll(/\b(?:href|action|src)="([^"]*)"/g)].map((m) => m[1]);
    for (const link of links) expect(link, link).toMatch(/^\/(?!\/)/);
    expect(await pageText(await get("/jobs"))).toContain(`<a href="javascript:alert(4)">retry</a>`);
  });

  it("a jobs table longer than a page (300 jobs) gives a bounded Jobs page: the newest 200 rows, and a note that older ones are left out", async () => {
    const job = { partitionKey: "job", machine: "backup", itemId: OTHER, itemKind: "disk", region: "westeurope", policy: "daily", status: "succeeded", state: "", input: "{}", error: "", createdAt: Date.now(), startedAt: Date.now(), endedAt: Date.now(), runs: 1 };
    const now = Date.now();
    const ids = Array.from({ length: 300 }, (_, i) => newJobId(now - i * 1000));
    for (let i = 0; i < ids.length; i += 100) {
      await fleet.jobs.table.submitTransaction(ids.slice(i, i + 100).map((rowKey) => ["create", { ...job, rowKey }]));
    }
    const jobs = await (await get("/jobs")).text();
    expect(jobs.match(/<tr><th scope="row">/g)?.length ?? 0).toBeLessThanOrEqual(200);
    expect(jobs).toMatch(/Only the newest 200 jobs are shown here; older ones are left out/);
  });

  it("a fleet of 600 items gives a bounded Protected items page: the first 500 rows of the filter, a note saying so, and the counts of all 600", async () => {
    const now = Date.now();
    const rows = Array.from({ length: 600 }, (_, i) => ({ partitionKey: "item", rowKey: encodeKey(disk(`bulk-${String(i).padStart(4, "0")}`)), kind: "disk", region: "westeurope", policy: "daily", state: "idle", lastGoodAt: now }));
    for (let i = 0; i < rows.length; i += 100) {
      await fleet.items.table.submitTransaction(rows.slice(i, i + 100).map((entity) => ["create", entity]));
    }
    const page = await pageText(await get("/"));
    expect(page.match(/<tr><th scope="row">/g)?.length ?? 0).toBe(500);
    expect(page).toContain("Only the first 500 of the 602 items that match are shown");
    expect(page).toMatch(/state-ok">ok<\/span> 602/);
    const filtered = await pageText(await get("/?q=bulk-059"));
    expect(filtered.match(/<tr><th scope="row">/g)?.length ?? 0).toBe(10);
    expect(filtered).not.toContain("Only the first");
  });

  it("bound to another loopback address (--listen 127.0.0.2:0), the console answers at the address it printed and still refuses other host names", async () => {
    const running = await startConsole({ fleet, policies, env: {}, readAgents: async () => [], openVault: async () => vault, settings: consoleSettings({ listen: "127.0.0.2:0" }) });
    try {
      expect(running.entryUrl).toMatch(/^http:\/\/127\.0\.0\.2:\d+\/\?token=/);
      expect((await fetch(running.entryUrl, { redirect: "manual" })).status).toBe(303);
      const rebound = await new Promise<number>((resolve, reject) => {
        const request = httpRequest({ host: "127.0.0.2", port: running.port, path: "/", headers: { host: `evil.example:${running.port}` } }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        });
        request.once("error", reject);
        request.end();
      });
      expect(rebound).toBe(421);
    } finally {
      await running.close();
    }
  });

  it("a form body that trickles in is cut off (408) once the request's time is up, instead of holding the connection for Node's default five minutes", async () => {
    const sources = { fleet, policies, openVault: vaultOpener(async () => vault), readAgents: async () => [], now: () => Date.now() };
    const access = new AccessControl("token");
    const running = await new ConsoleApp({ host: "127.0.0.1", port: 0, sources, access, loopback: true, requestTimeoutMs: 500 }).listen();
    try {
      const session = (await fetch(`${running.url}/?token=${access.token}`, { redirect: "manual" })).headers.get("set-cookie")!.split(";")[0];
      const started = Date.now();
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(running.port, "127.0.0.1", () => {
          // Headers and a first byte of a 1,000-byte body, then nothing more.
          socket.write(`POST /restore HTTP/1.1\r\nHost: 127.0.0.1:${running.port}\r\nCookie: ${session}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nc`);
        });
        let received = "";
        socket.on("data", (part) => (received += part.toString("latin1")));
        socket.once("close", () => resolve(received));
        socket.once("error", reject);
      });
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await running.close();
    }
  });
});
