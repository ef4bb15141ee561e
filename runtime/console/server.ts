/**
 * The console's HTTP server (node:http): pages rendered on the server, one stylesheet and one small
 * script file, every response with a Content-Security-Policy that allows only the console's own
 * files (no inline script, no other origin), and no caching (pages hold the fleet's state and a
 * CSRF token). Every request must carry the session (access.ts); only GET pages and one POST (a
 * restore) exist: there is no delete, forget or prune here.
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { BulwarkError, UsageError, describeError } from "../errors.ts";
import { PointBrowser, type BrowseEntry } from "../items/browse.ts";
import type { Vault } from "../engine/vault.ts";
import type { AccessControl, Access } from "./access.ts";
import { pointsOf, readItems, readJobs, readVaults, vaultPoints, type ConsoleSources } from "./fleet-view.ts";
import { html, page, type Markup } from "./html.ts";
import { agentsPage, browsePage, itemPage, itemsPage, itemsQuery, jobsPage, messagePage, shortName, vaultsPage } from "./pages.ts";
import { restoreForm, submitRestore } from "./restore-request.ts";

const ASSETS: Record<string, { type: string; body: Buffer }> = {
  "/static/console.css": { type: "text/css; charset=utf-8", body: readFileSync(new URL("./console.css", import.meta.url)) },
  "/static/console.js": { type: "text/javascript; charset=utf-8", body: readFileSync(new URL("./console.js", import.meta.url)) },
};

const SECURITY_HEADERS = {
  "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  "X-Content-Type-Options": "nosniff",
  // The first URL holds the access token: never send it on as a referrer.
  "Referrer-Policy": "no-referrer",
  "Cache-Control": "no-store",
};

/** A form post is small: a restore's fields, at most MAX_FILE_PATHS paths. */
const MAX_BODY = 256 * 1024;
/**
 * A page request or a restore form arrives in well under a second from a browser; one that trickles
 * in (a slow-body attack from anything that can reach the port) is answered 408 and closed after
 * this, not after Node's default of five minutes.
 */
const REQUEST_TIMEOUT_MS = 30_000;
/** Browsers of recently opened points, so walking folders does not reopen the point each time. */
const BROWSERS_KEPT = 4;

export interface ConsoleServerOptions {
  host: string;
  port: number;
  sources: ConsoleSources;
  access: AccessControl;
  /** Bound to loopback: requests must name a loopback host (a page of another site reached through DNS rebinding does not). */
  loopback: boolean;
  /** How long a request may take to arrive, headers and body (REQUEST_TIMEOUT_MS unless a test says). */
  requestTimeoutMs?: number;
}

export interface RunningConsole {
  /** http://HOST:PORT (without the token). */
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function send(response: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  response.writeHead(status, { ...SECURITY_HEADERS, "Content-Type": type, "Content-Length": Buffer.byteLength(body), ...headers });
  response.end(body);
}

async function readBody(request: IncomingMessage): Promise<URLSearchParams> {
  if (!/^application\/x-www-form-urlencoded\b/i.test(request.headers["content-type"] ?? "")) throw new HttpError(415, "a form post must be application/x-www-form-urlencoded");
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of request) {
    size += (part as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, "the form is larger than a restore request can be");
    parts.push(part as Buffer);
  }
  return new URLSearchParams(Buffer.concat(parts).toString("utf8"));
}

/** The loopback names a request may give: the usual ones and the address the console printed (--listen 127.0.0.2:PORT). */
function isLoopbackHost(host: string | undefined, port: number, boundTo: string): boolean {
  const printed = boundTo.includes(":") ? `[${boundTo}]` : boundTo;
  return host !== undefined && [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `${printed.toLowerCase()}:${port}`].includes(host.toLowerCase());
}

export class ConsoleApp {
  private readonly options: ConsoleServerOptions;
  private readonly browsers = new Map<string, Promise<PointBrowser>>();
  private port = 0;

  constructor(options: ConsoleServerOptions) {
    this.options = options;
  }

  async listen(): Promise<RunningConsole> {
    const requestTimeout = this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    // Node checks for timed-out requests every connectionsCheckingInterval (30 s by default).
    const timeouts = { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(1000, requestTimeout / 2) };
    const server = createServer(timeouts, (request, response) => void this.handle(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, this.options.host, () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    const host = this.options.host.includes(":") ? `[${this.options.host}]` : this.options.host;
    return {
      url: `http://${host}:${this.port}`,
      port: this.port,
      server,
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    };
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    try {
      if (this.options.loopback && !isLoopbackHost(request.headers.host, this.port, this.options.host)) throw new HttpError(421, "this console answers only at the loopback address it printed");
      const url = new URL(request.url ?? "/", "http://console");
      const access = this.options.access.check(request, url);
      if (access.kind === "refused") return this.refuse(response, access.why);
      if (access.kind === "enter") return send(response, 303, "text/plain; charset=utf-8", "", { Location: access.location, "Set-Cookie": access.cookie });
      const setCookie = this.options.access.cookieToSet(request, access.sessionId);
      await this.route(request, response, url, access, setCookie ? { "Set-Cookie": setCookie } : {});
    } catch (error) {
      this.fail(response, error);
    }
  }

  private refuse(response: ServerResponse, why: string): void {
    const how =
      this.options.access.mode === "entra"
        ? html`<p>Sign in through the console's address: Container Apps authentication (Microsoft Entra ID) lets in the people the customer's tenant allows.</p>`
        : html`<p>Open the address <code>bulwark console</code> printed when it started (it holds a one-time access token: the first browser to open it is signed in), in this browser. Restarting the console prints a new one.</p>`;
    send(response, 401, "text/html; charset=utf-8", page("Not signed in", "", html`${messagePage(`This console needs a session: ${why}.`)}${how}`), {
      "WWW-Authenticate": this.options.access.mode === "entra" ? "Bearer" : 'Cookie realm="bulwark console"',
    });
  }

  private fail(response: ServerResponse, error: unknown): void {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    const status = error instanceof HttpError ? error.status : error instanceof UsageError ? 400 : 500;
    const message = error instanceof HttpError || error instanceof BulwarkError ? error.message : describeError(error).split("\n")[0];
    send(response, status, "text/html; charset=utf-8", page(status === 500 ? "Something failed" : "Not possible", "", messagePage(message)));
  }

  private async route(request: IncomingMessage, response: ServerResponse, url: URL, access: Extract<Access, { kind: "session" }>, headers: Record<string, string>): Promise<void> {
    const method = request.method ?? "GET";
    const who = this.options.access.mode === "entra" ? access.session.who : undefined;
    const htmlPage = (title: string, current: string, body: Markup, status = 200) => send(response, status, "text/html; charset=utf-8", page(title, current, body, who), headers);
    if (method === "POST") {
      if (url.pathname !== "/restore") throw new HttpError(405, "the console takes one kind of form: a restore");
      const body = await readBody(request);
      if (!this.options.access.csrfValid(access.session, body.get("csrf") ?? undefined)) {
        throw new HttpError(403, "the form's CSRF token is not this session's: reload the page and submit it again");
      }
      const form = restoreForm(body);
      try {
        const submitted = await submitRestore(this.options.sources, form);
        return send(response, 303, "text/plain; charset=utf-8", "", { ...headers, Location: `/jobs?submitted=${encodeURIComponent(submitted.jobId)}` });
      } catch (error) {
        if (!(error instanceof UsageError)) throw error;
        throw new HttpError(400, `restore refused: ${error.message}`);
      }
    }
    if (method !== "GET" && method !== "HEAD") throw new HttpError(405, "only GET pages and the restore form's POST");
    const asset = ASSETS[url.pathname];
    if (asset) return send(response, 200, asset.type, asset.body, headers);
    const sources = this.options.sources;
    switch (url.pathname) {
      case "/": {
        const { rows, unreadable } = await readItems(sources);
        return htmlPage("Protected items", "/", itemsPage(rows, unreadable, itemsQuery(url)));
      }
      case "/item":
        return htmlPage(...(await this.itemPage(url, access.session.csrf)));
      case "/browse":
        return htmlPage(...(await this.browsePage(url, access.session.csrf)));
      case "/jobs": {
        const { rows, unreadable, more } = await readJobs(sources);
        const submitted = url.searchParams.get("submitted") ?? undefined;
        return htmlPage("Jobs", "/jobs", jobsPage(rows, unreadable, { submitted: submitted && /^\d{13}-[0-9a-f]{1,32}$/.test(submitted) ? submitted : undefined, more }));
      }
      case "/vaults":
        return htmlPage("Vaults", "/vaults", vaultsPage(await readVaults(sources)));
      case "/agents": {
        let error = "";
        const rows = await sources.readAgents().catch((e: unknown) => {
          error = describeError(e).split("\n")[0];
          return [];
        });
        return htmlPage("Agents", "/agents", agentsPage(rows, error));
      }
      default:
        throw new HttpError(404, `no page at ${url.pathname}`);
    }
  }

  /** The item a query names, among the items the policies protect. */
  private async itemOf(url: URL) {
    const id = url.searchParams.get("id") ?? "";
    const { rows } = await readItems(this.options.sources);
    const row = rows.find((r) => r.item.toLowerCase() === id.toLowerCase());
    if (!row) throw new HttpError(404, "no protected item by that id: pick one from Protected items");
    const policy = this.options.sources.policies.find((p) => p.name === row.policy);
    return { row, policy };
  }

  private async itemPage(url: URL, csrf: string): Promise<[string, string, Markup]> {
    const { row, policy } = await this.itemOf(url);
    let points: ReturnType<typeof pointsOf> = [];
    let pointsError = "";
    try {
      if (policy) points = pointsOf((await vaultPoints(this.options.sources, policy.vault)).points, row.item);
    } catch (error) {
      pointsError = describeError(error).split("\n")[0];
    }
    const { rows } = await readJobs(this.options.sources, 500);
    const jobs = rows.filter((j) => j.itemId.toLowerCase() === row.item.toLowerCase());
    return [shortName(row.item), "/", itemPage({ row, points, jobs, csrf, pointsError })];
  }

  private async browsePage(url: URL, csrf: string): Promise<[string, string, Markup]> {
    const { row, policy } = await this.itemOf(url);
    if (!policy) throw new HttpError(404, "this item's policy is not loaded");
    const pointId = url.searchParams.get("point") ?? "";
    const points = pointsOf((await vaultPoints(this.options.sources, policy.vault)).points, row.item);
    const point = points.find((p) => p.id === pointId);
    if (!point) throw new HttpError(404, "that point is not one of this item's points");
    const vault = await this.options.sources.openVault(policy.vault);
    const browser = await this.browser(vault, point.id);
    const path = url.searchParams.get("path") || "/";
    let entries: BrowseEntry[];
    try {
      entries = await browser.list(await browser.locate(path));
    } catch (error) {
      if (error instanceof BulwarkError) throw new HttpError(404, error.message);
      throw error;
    }
    return [`Files of ${shortName(row.item)}`, "/", browsePage({ row, point, path, entries, csrf })];
  }

  private browser(vault: Vault, pointId: string): Promise<PointBrowser> {
    let browser = this.browsers.get(pointId);
    if (!browser) {
      if (this.browsers.size >= BROWSERS_KEPT) this.browsers.delete(this.browsers.keys().next().value!);
      browser = PointBrowser.open(vault, pointId);
      this.browsers.set(pointId, browser);
      browser.catch(() => this.browsers.delete(pointId));
    }
    return browser;
  }
}
