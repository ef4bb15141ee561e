/**
 * HTML for the console, built as strings: every value from storage, a policy or a request goes
 * through `text` (or `attr`), so a job's error or an item's name holding markup renders as text.
 * There is no other way into a page than `html` templates and `raw` pieces built from them.
 */

/** Markup that is already safe: produced by `html`, never by concatenating untrusted text. */
export class Markup {
  readonly value: string;
  constructor(value: string) {
    this.value = value;
  }
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

type Piece = Markup | string | number | null | undefined | false | Piece[];

function render(piece: Piece): string {
  if (piece === null || piece === undefined || piece === false) return "";
  if (piece instanceof Markup) return piece.value;
  if (Array.isArray(piece)) return piece.map(render).join("");
  return escapeHtml(String(piece));
}

/** A template whose interpolations are escaped (Markup from other templates is kept as it is). */
export function html(strings: TemplateStringsArray, ...values: Piece[]): Markup {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Markup(out);
}

/** A time as UTC ISO inside <time datetime>: correct without script, shown in the viewer's zone with it. */
export function time(ms: number | string | null | undefined): Markup {
  const date = typeof ms === "string" ? new Date(ms) : typeof ms === "number" && ms > 0 ? new Date(ms) : undefined;
  if (!date || Number.isNaN(date.getTime())) return html`<span class="muted">never</span>`;
  const iso = date.toISOString();
  return html`<time datetime="${iso}">${iso.replace(/\.\d{3}Z$/, "Z")}</time>`;
}

/** 1.5 MiB, 512 B. */
export function bytes(count: number | null | undefined): string {
  if (typeof count !== "number" || !Number.isFinite(count)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A link with a query string built from named parameters (each encoded). */
export function href(path: string, query: Record<string, string | undefined> = {}): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) if (value !== undefined && value !== "") params.set(name, value);
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

export const NAV = [
  ["/", "Protected items"],
  ["/jobs", "Jobs"],
  ["/vaults", "Vaults"],
  ["/agents", "Agents"],
] as const;

/** The page around a body: one stylesheet, one script file, no inline script (the CSP forbids it). */
export function page(title: string, current: string, body: Markup, who?: string): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Bulwark</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body>
<header>
<a class="brand" href="/">Bulwark</a>
<nav aria-label="Console"><ul>${NAV.map(([path, label]) => html`<li><a href="${path}"${path === current ? html` aria-current="page"` : ""}>${label}</a></li>`)}</ul></nav>
${who ? html`<span class="who">${who}</span>` : ""}
</header>
<main id="main">
<h1>${title}</h1>
${body}
</main>
</body>
</html>
`.value;
}

/** A table with column headers (scope="col"); each row's cells are markup already. */
export function table(caption: string, headers: Array<string | Markup>, rows: Markup[][], options: { empty?: string } = {}): Markup {
  if (rows.length === 0) return html`<p class="empty">${options.empty ?? "Nothing yet."}</p>`;
  return html`<table>
<caption>${caption}</caption>
<thead><tr>${headers.map((h) => html`<th scope="col">${h}</th>`)}</tr></thead>
<tbody>${rows.map((cells) => html`<tr>${cells.map((cell, i) => (i === 0 ? html`<th scope="row">${cell}</th>` : html`<td>${cell}</td>`))}</tr>`)}</tbody>
</table>`;
}
