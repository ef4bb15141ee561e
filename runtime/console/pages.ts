/**
 * The console's pages, rendered on the server from what fleet-view.ts reads. Filters and sorting
 * are query-string links and GET forms, so every page works without script; restores are POST
 * forms carrying the session's CSRF token.
 */
import type { PointManifest } from "../engine/point.ts";
import type { BrowseEntry } from "../items/browse.ts";
import type { ItemKind } from "../policy/items.ts";
import { formatAge, type Protection, type StatusRow } from "../cli/status-view.ts";
import type { AgentStatus } from "./agents.ts";
import type { JobRow, Unreadable, VaultRow } from "./fleet-view.ts";
import { bytes, href, html, table, time, type Markup } from "./html.ts";
import { targetWords } from "./restore-request.ts";

export const PROTECTIONS: Protection[] = ["ok", "at risk", "missed", "never"];

function unreadableList(records: Unreadable[], what: string): Markup {
  if (records.length === 0) return html``;
  return html`<section aria-labelledby="unreadable"><h2 id="unreadable">Unreadable records</h2>
<p>These ${what} records in the fleet's tables do not hold what such a record must (damaged, or written by someone other than the agents); they are left out above. Check who can write the fleet's storage.</p>
<ul class="unreadable">${records.map((r) => html`<li>unreadable record <code>${r.key || "(no key)"}</code>: ${r.why}</li>`)}</ul></section>`;
}

function protectionBadge(state: Protection | string): Markup {
  return html`<span class="badge state-${state.replace(" ", "-")}">${state}</span>`;
}

function outcomeBadge(outcome: string): Markup {
  return outcome ? html`<span class="badge outcome-${outcome.replace(/[^a-z]/g, "")}">${outcome}</span>` : html`<span class="muted">none yet</span>`;
}

/** The last part of a resource id: what people call the item. */
export function shortName(id: string): string {
  return id.split("/").filter(Boolean).at(-1) ?? id;
}

export interface ItemsQuery {
  text: string;
  state: string;
  sort: string;
  descending: boolean;
}

export function itemsQuery(url: URL): ItemsQuery {
  return {
    text: (url.searchParams.get("q") ?? "").slice(0, 200),
    state: url.searchParams.get("state") ?? "",
    sort: url.searchParams.get("sort") ?? "item",
    descending: url.searchParams.get("dir") === "desc",
  };
}

const ITEM_COLUMNS: Array<[key: string, label: string, value: (row: StatusRow) => string | number]> = [
  ["item", "Name", (r) => shortName(r.item).toLowerCase()],
  ["kind", "Type", (r) => r.kind],
  ["region", "Region", (r) => r.region],
  ["policy", "Policy", (r) => r.policy],
  ["last", "Last good point", (r) => r.lastGoodAt ?? ""],
  ["age", "Age", (r) => r.ageMs ?? Number.MAX_SAFE_INTEGER],
  ["state", "RPO", (r) => PROTECTIONS.indexOf(r.protection)],
  ["outcome", "Last job", (r) => r.lastOutcome],
];

export function selectItems(rows: StatusRow[], query: ItemsQuery): StatusRow[] {
  const needle = query.text.toLowerCase();
  const column = ITEM_COLUMNS.find(([key]) => key === query.sort) ?? ITEM_COLUMNS[0];
  const picked = rows.filter(
    (r) => (!query.state || r.protection === query.state) && (!needle || [r.item, r.kind, r.region, r.policy].some((v) => v.toLowerCase().includes(needle))),
  );
  const value = column[2];
  picked.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return query.descending ? -order : order;
  });
  return picked;
}

/** Rows the Protected items page shows at most: a fleet of thousands still gives a page a browser renders at once. */
export const ITEMS_SHOWN = 500;

export function itemsPage(rows: StatusRow[], unreadable: Unreadable[], query: ItemsQuery): Markup {
  const matching = selectItems(rows, query);
  const shown = matching.slice(0, ITEMS_SHOWN);
  const counts = PROTECTIONS.map((p) => [p, rows.filter((r) => r.protection === p).length] as const);
  const sortLink = (key: string, label: string) => {
    const active = query.sort === key;
    const next = active && !query.descending ? "desc" : undefined;
    const link = href("/", { q: query.text || undefined, state: query.state || undefined, sort: key, dir: next });
    return html`<a href="${link}"${active ? html` aria-sort="${query.descending ? "descending" : "ascending"}"` : ""}>${label}${active ? (query.descending ? " ▼" : " ▲") : ""}</a>`;
  };
  return html`<p class="summary">${counts.map(([p, n]) => html`<span>${protectionBadge(p)} ${n}</span> `)}</p>
<form class="filters" method="get" action="/">
<label for="q">Filter by text</label> <input id="q" name="q" type="search" value="${query.text}">
<label for="state">RPO state</label> <select id="state" name="state"><option value="">any</option>${PROTECTIONS.map((p) => html`<option value="${p}"${query.state === p ? html` selected` : ""}>${p}</option>`)}</select>
<input type="hidden" name="sort" value="${query.sort}">
<button type="submit">Apply</button> <a href="/">Clear</a>
</form>
${matching.length > shown.length ? html`<p class="note">Only the first ${shown.length} of the ${matching.length} items that match are shown: narrow them with the filter or the RPO state.</p>` : ""}
${table(
  `${matching.length} of ${rows.length} protected items${matching.length > shown.length ? ` (the first ${shown.length} shown)` : ""}`,
  ITEM_COLUMNS.map(([key, label]) => sortLink(key, label)),
  shown.map((r) => [
    html`<a href="${href("/item", { id: r.item })}">${shortName(r.item)}</a>`,
    html`${r.kind || "-"}`,
    html`${r.region || "-"}`,
    html`${r.policy}`,
    r.lastGoodPoint ? html`<code>${r.lastGoodPoint.slice(0, 12)}</code> ${time(r.lastGoodAt)}` : html`<span class="muted">never</span>`,
    html`${r.ageMs === null ? "-" : formatAge(r.ageMs)}`,
    html`${protectionBadge(r.protection)}${r.unprotected ? html` <span class="note">${r.unprotected}</span>` : ""}`,
    html`${outcomeBadge(r.lastOutcome)}${r.lastError ? html` <span class="error">${r.lastError}</span>` : ""}`,
  ]),
  { empty: rows.length ? "No item matches the filter." : "No protected items: the policies name none, and the scheduler has recorded none yet." },
)}
${unreadableList(unreadable, "item")}`;
}

function duration(row: JobRow): string {
  if (!row.startedAt) return "-";
  const end = row.endedAt || Date.now();
  return formatAge(Math.max(0, end - row.startedAt));
}

/** The last column: the error (failed jobs), what the job produced, or whichever the job has. */
type LastColumn = "error" | "result" | "either";

function jobResult(j: JobRow): Markup {
  return html`${j.report?.output ? html`<code>${j.report.output}</code>` : ""}${j.report?.pointId ? html`point <code>${j.report.pointId.slice(0, 12)}</code>` : ""}`;
}

/**
 * The step beside a job's status: the one running or next for an unfinished job, the one it failed
 * in for a failed job, none for a succeeded one (its record keeps its last step, e.g. a backup's
 * `cleanup`, which would read as still cleaning up; runtime/cli/jobs-view.ts reads it the same way).
 */
function stepNote(j: JobRow): Markup | string {
  if (!j.state || j.status === "succeeded") return "";
  return html` <span class="muted">${j.status === "failed" ? `in ${j.state}` : j.state}</span>`;
}

function jobRows(rows: JobRow[], last: LastColumn): Markup[][] {
  return rows.map((j) => [
    html`<code>${j.jobId}</code>`,
    html`${j.machine}`,
    html`<a href="${href("/item", { id: j.itemId })}">${shortName(j.itemId)}</a>`,
    html`${j.region}`,
    html`${outcomeBadge(j.status)}${stepNote(j)}`,
    time(j.createdAt),
    html`${duration(j)}`,
    html`${j.report ? `${bytes(j.report.bytesRead)} / ${bytes(j.report.bytesNew)} / ${bytes(j.report.bytesStored)}` : "-"}`,
    last === "error" || (last === "either" && j.error) ? html`<span class="error">${j.error}</span>` : jobResult(j),
  ]);
}

const JOB_HEADERS = ["Job", "Machine", "Item", "Region", "Status", "Created", "Duration", "Read / new / stored"];

export function jobsPage(rows: JobRow[], unreadable: Unreadable[], options: { submitted?: string; more?: boolean } = {}): Markup {
  const { submitted, more } = options;
  const group = (statuses: string[]) => rows.filter((r) => statuses.includes(r.status));
  return html`${submitted ? html`<p class="notice" role="status">Restore job <code>${submitted}</code> submitted: the region's workers run it; it shows below.</p>` : ""}
${more ? html`<p class="note">Only the newest ${rows.length + unreadable.length} jobs are shown here; older ones are left out (<code>bulwark jobs --limit N</code> lists more).</p>` : ""}
<h2 id="running">Running</h2>
${table("Jobs a worker runs now", [...JOB_HEADERS, "Result"], jobRows(group(["running", "compensating"]), "result"), { empty: "No job is running." })}
<h2 id="queued">Queued</h2>
${table("Jobs waiting for a worker", [...JOB_HEADERS, "Result"], jobRows(group(["queued"]), "result"), { empty: "No job is queued." })}
<h2 id="failed">Failed</h2>
${table("Jobs that failed, with their error", [...JOB_HEADERS, "Error"], jobRows(group(["failed"]), "error"), { empty: "No job failed." })}
<h2 id="succeeded">Succeeded</h2>
${table("Jobs that succeeded", [...JOB_HEADERS, "Result"], jobRows(group(["succeeded"]), "result"), { empty: "No job succeeded yet." })}
${unreadableList(unreadable, "job")}`;
}

export function vaultsPage(rows: VaultRow[]): Markup {
  return html`${table(
    "The vaults the policies name (their copy vaults included)",
    ["Vault", "Policies", "Points", "Content", "Stored", "Dedup ratio", "Immutability", "Last verify", "Last prune"],
    rows.map((v) => [
      html`<code>${v.location}</code>${v.error ? html` <span class="error">cannot be read: ${v.error}</span>` : ""}`,
      html`${v.policies.join(", ")}`,
      html`${v.points}${v.damaged ? html` <span class="error">(${v.damaged} damaged)</span>` : ""}`,
      html`${bytes(v.logicalBytes)}`,
      html`${bytes(v.packBytes)}`,
      html`${v.dedupRatio === null ? "-" : `${v.dedupRatio}×`}`,
      html`${v.immutability}`,
      v.lastVerify ? html`${outcomeBadge(v.lastVerify.outcome)} ${time(v.lastVerify.end)}` : html`<span class="muted">none reported</span>`,
      v.lastPrune ? html`${outcomeBadge(v.lastPrune.outcome)} ${time(v.lastPrune.end)}` : html`<span class="muted">none reported</span>`,
    ]),
    { empty: "The policies name no vault." },
  )}
<p class="muted">Content: the points' sources' bytes; stored: the vault's packs. Dedup ratio: content per stored byte (compression included).</p>`;
}

export function agentsPage(rows: AgentStatus[], error: string): Markup {
  return html`${error ? html`<p class="error" role="alert">The agents could not be read: ${error}</p>` : ""}
${table(
  "Each region's scheduler and worker (Container Apps jobs) and their latest execution",
  ["Job", "Region", "Role", "Schedule", "Latest execution", "Last success", "State", "Why"],
  rows.map((a) => {
    const latest = a.lastExecutions[0];
    return [
      html`${a.job}`,
      html`${a.region}`,
      html`${a.kind}`,
      html`${a.schedule ? html`<code>${a.schedule}</code>` : "-"}`,
      latest ? html`${outcomeBadge(latest.status.toLowerCase())} ${time(latest.start ?? null)}${latest.end ? html` to ${time(latest.end)}` : ""}` : html`<span class="muted">none on record</span>`,
      time(a.lastSuccessAt ?? null),
      html`<span class="badge agent-${a.state}">${a.state}</span>`,
      html`${a.detail}`,
    ];
  }),
  { empty: error ? "" : "No agents are configured for this console (BULWARK_CONSOLE_AGENTS): a local console has none to show." },
)}`;
}

export interface ItemPageData {
  row: StatusRow;
  points: PointManifest[];
  jobs: JobRow[];
  csrf: string;
  pointsError: string;
  /** A restore the form refused, and why. */
  refused?: string;
}

function restoreForms(data: ItemPageData): Markup {
  const { row, points, csrf } = data;
  if (points.length === 0) return html`<p class="muted">No point to restore yet.</p>`;
  const kind = row.kind as ItemKind;
  const base = shortName(row.item);
  const suggested = `${row.item.replace(/\/[^/]+$/, "")}/${base}-restored-${new Date().toISOString().slice(0, 10).replace(/-/g, "")}`;
  const pointOptions = points.map((p) => html`<option value="${p.id}">${p.time} · ${p.id.slice(0, 12)}</option>`);
  const browsable = points.filter((p) => p.kind === "disk" || p.kind === "vm");
  return html`<form class="restore" method="post" action="/restore">
<input type="hidden" name="csrf" value="${csrf}"><input type="hidden" name="item" value="${row.item}"><input type="hidden" name="kind" value="resource">
<p id="restore-note">The target must be a <strong>new</strong> resource: a restore never overwrites, and a job whose target exists fails and leaves it untouched.</p>
<div><label for="restore-point">Point</label> <select id="restore-point" name="point">${pointOptions}</select></div>
<div><label for="restore-target">Restore to ${targetWords(kind)}</label> <input id="restore-target" name="target" size="90" required aria-describedby="restore-note" value="${suggested}"></div>
${kind === "vm" ? html`<div><label for="restore-nic">Network interface for the new VM (a NIC id)</label> <input id="restore-nic" name="nic" size="90" required></div>` : ""}
<button type="submit">Start restore</button>
</form>
${browsable.length ? html`<h3>Files</h3><p>Restore files out of a point: <a href="${href("/browse", { id: row.item, point: browsable[0].id, path: "/" })}">browse the newest point's volumes and folders</a> (or pick another point's “browse” link below).</p>` : ""}`;
}

export function itemPage(data: ItemPageData): Markup {
  const { row, points, jobs } = data;
  // The job that made a point reports what it read and added (a point's own stats may be partial).
  const madeBy = new Map(jobs.flatMap((j) => (j.report?.pointId ? [[j.report.pointId, j.report] as const] : [])));
  return html`<dl class="facts">
<dt>Resource</dt><dd><code>${row.item}</code></dd>
<dt>Type</dt><dd>${row.kind || "-"}</dd><dt>Region</dt><dd>${row.region || "-"}</dd><dt>Policy</dt><dd>${row.policy}</dd>
<dt>RPO</dt><dd>${protectionBadge(row.protection)}${row.rpoMs !== null ? ` (at most ${formatAge(row.rpoMs)} old)` : ""}${row.unprotected ? html` <span class="note">${row.unprotected}</span>` : ""}</dd>
<dt>Last good point</dt><dd>${row.lastGoodPoint ? html`<code>${row.lastGoodPoint}</code> ${time(row.lastGoodAt)}` : "never"}</dd>
<dt>Last job</dt><dd>${outcomeBadge(row.lastOutcome)} ${row.lastError ? html`<span class="error">${row.lastError}</span>` : ""}</dd>
</dl>
${data.refused ? html`<p class="error" role="alert">Restore refused: ${data.refused}</p>` : ""}
<h2>Points</h2>
${data.pointsError ? html`<p class="error">The vault could not be read: ${data.pointsError}</p>` : ""}
${table(
  "Points over time, newest first",
  ["Time", "Point", "Kind", "Size", "New", "Stored", "Its job: read / new / stored", "Files"],
  points.map((p) => [
    time(p.time),
    html`<code>${p.id.slice(0, 12)}</code>`,
    html`${p.kind}`,
    html`${bytes(p.size)}`,
    html`${bytes(p.stats.bytesNew)}`,
    html`${bytes(p.stats.bytesStored)}`,
    html`${madeBy.has(p.id) ? `${bytes(madeBy.get(p.id)!.bytesRead)} / ${bytes(madeBy.get(p.id)!.bytesNew)} / ${bytes(madeBy.get(p.id)!.bytesStored)}` : "-"}`,
    p.kind === "disk" || p.kind === "vm" ? html`<a href="${href("/browse", { id: row.item, point: p.id, path: "/" })}">browse</a>` : html`-`,
  ]),
  { empty: "No points yet." },
)}
<h2>Restore</h2>
${restoreForms(data)}
<h2>Copies</h2>
${table(
  "Where each copy vault stands",
  ["Vault", "Newest point there", "Lag", "Copied"],
  row.copies.map((c) => [html`<code>${c.vault}</code>`, c.newestPoint ? html`<code>${c.newestPoint.slice(0, 12)}</code> ${time(c.newestAt)}` : html`none yet`, html`${c.lagMs === null ? "-" : formatAge(c.lagMs)}`, time(c.copiedAt)]),
  { empty: "The policy copies this item nowhere." },
)}
<h2>Job history</h2>
${table("This item's jobs, newest first", [...JOB_HEADERS, "Error or result"], jobRows(jobs, "either"), { empty: "No jobs yet." })}`;
}

export interface BrowsePageData {
  row: StatusRow;
  point: PointManifest;
  path: string;
  entries: BrowseEntry[];
  csrf: string;
}

export function browsePage(data: BrowsePageData): Markup {
  const { row, point, path, entries, csrf } = data;
  const parts = path.split("/").filter(Boolean);
  const crumbs = [html`<a href="${href("/browse", { id: row.item, point: point.id, path: "/" })}">/</a>`];
  parts.forEach((part, i) => crumbs.push(html` <a href="${href("/browse", { id: row.item, point: point.id, path: `/${parts.slice(0, i + 1).join("/")}` })}">${part}</a> /`));
  const opens = (e: BrowseEntry) => e.type === "dir" || e.type === "volume" || e.type === "disk";
  return html`<p><a href="${href("/item", { id: row.item })}">${shortName(row.item)}</a>, point <code>${point.id.slice(0, 12)}</code> of ${time(point.time)}</p>
<nav aria-label="Folder"><p>${crumbs}</p></nav>
<form method="post" action="/restore">
<input type="hidden" name="csrf" value="${csrf}"><input type="hidden" name="item" value="${row.item}"><input type="hidden" name="kind" value="files"><input type="hidden" name="point" value="${point.id}">
${table(
  `Entries of ${path}`,
  ["Name", "Restore", "Type", "Size", "Modified"],
  entries.map((e, i) => [
    opens(e) ? html`<a href="${href("/browse", { id: row.item, point: point.id, path: e.path })}">${e.name}</a>` : html`${e.name}`,
    html`<input type="checkbox" id="path-${i}" name="paths" value="${e.path}"><label for="path-${i}" class="visually-hidden">restore ${e.name}</label>`,
    html`${e.type}${e.filesystem ? ` (${e.filesystem})` : ""}${e.unreadable ? html` <span class="error">${e.unreadable}</span>` : ""}`,
    html`${e.type === "file" ? bytes(e.size) : "-"}`,
    time(e.mtime ?? null),
  ]),
  { empty: "This folder is empty." },
)}
<p>The chosen files and folders are restored by the region's agent into an archive in transient storage; nothing in Azure is overwritten.</p>
<button type="submit">Restore the chosen paths</button>
</form>`;
}

export function messagePage(message: string, detail?: Markup): Markup {
  return html`<p class="error" role="alert">${message}</p>${detail ?? ""}`;
}
