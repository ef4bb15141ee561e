/**
 * Item-level restore on the command line (issue 11): `ls` and `find` browse a disk or VM point,
 * `restore --path` restores files and folders out of it, `mount` serves a point's disk over NBD.
 * The vault is opened by the caller (commands.ts); these print what they found.
 */
import { NotFoundError, UsageError } from "../errors.ts";
import type { Vault } from "../engine/vault.ts";
import { interrupted } from "../interruption.ts";
import { findPaths, PointBrowser, type BrowseEntry } from "../items/browse.ts";
import { serveNbd } from "../items/nbd.ts";
import { restorePaths } from "../items/restore-files.ts";
import { formatBytes } from "./progress.ts";

type Values = Record<string, unknown>;
type Print = (values: Values, json: unknown, text: string) => void;

export async function listCommand(vault: Vault, values: Values, positionals: string[], print: Print): Promise<number> {
  const [reference, where = "/", extra] = positionals;
  if (!reference || extra) throw new UsageError("give a POINT and at most one PATH: bulwark ls POINT [PATH] --vault V");
  const browser = await PointBrowser.open(vault, reference);
  const entries = await browser.list(await browser.locate(where));
  const long = values.long === true;
  print(values, entries, entries.map((e) => (long ? longLine(e) : shortLine(e))).join("\n"));
  return reportRefused(browser);
}

export async function findCommand(vault: Vault, values: Values, positionals: string[], print: Print): Promise<number> {
  const [reference, pattern, extra] = positionals;
  if (!reference || !pattern || extra) throw new UsageError("give a POINT and a PATTERN: bulwark find POINT '*.conf' --vault V (quote the pattern so the shell leaves it)");
  const browser = await PointBrowser.open(vault, reference);
  const found: BrowseEntry[] = [];
  let unreadable = 0;
  for await (const at of findPaths(browser, await browser.locate("/"), pattern, (place, error) => {
    unreadable++;
    process.stderr.write(`bulwark find: ${place.path} could not be read: ${error instanceof Error ? error.message : String(error)}\n`);
  })) {
    found.push(browser.entry(at));
  }
  print(values, found, found.map((e) => e.path).join("\n"));
  return unreadable > 0 ? 5 : reportRefused(browser);
}

export async function restoreItemsCommand(vault: Vault, values: Values, reference: string, print: Print, onProgress: (n: number) => void): Promise<number> {
  const to = values.to as string | undefined;
  if (!to) throw new UsageError("give the folder to restore into: --to DIR");
  const paths = values.path as string[];
  const browser = await PointBrowser.open(vault, reference);
  const report = await restorePaths(browser, paths, to, { overwrite: values.overwrite === true, onProgress });
  const lines = [
    `restored ${count(report.files, "file")}, ${count(report.directories, "folder")}, ${count(report.symlinks, "symlink")}` +
      `${report.hardLinks ? `, ${count(report.hardLinks, "hard link")}` : ""} (${formatBytes(report.bytesWritten)}) from ${browser.point.id.slice(0, 12)} to ${to}; read ${formatBytes(report.bytesRead)} from the vault`,
    ...report.skipped.map((s) => `NOT RESTORED: ${s.path}: ${s.reason}`),
    ...report.damaged.map((d) => `DAMAGED: ${d.path}: ${d.error}`),
  ];
  print(values, { id: browser.point.id, to, ...report }, lines.join("\n"));
  for (const s of report.skipped) process.stderr.write(`bulwark restore: ${s.path} was not restored: ${s.reason}\n`);
  for (const d of report.damaged) process.stderr.write(`bulwark restore: ${d.path} was not restored: ${d.error}\n`);
  // Damaged data is exit 5; content this reader does not read (compressed, encrypted) is an unreadable source, exit 6.
  return report.damaged.length > 0 ? 5 : report.skipped.length > 0 ? 6 : reportRefused(browser);
}

export async function mountCommand(vault: Vault, values: Values, positionals: string[], print: Print): Promise<number> {
  const [reference, extra] = positionals;
  if (!reference || extra) throw new UsageError("give one POINT: bulwark mount POINT --vault V --nbd HOST:PORT");
  const listen = values.nbd as string | undefined;
  if (!listen) throw new UsageError("give where to serve the disk: --nbd 127.0.0.1:10809 (port 0 picks a free one)");
  const { host, port } = parseHostPort(listen);
  const browser = await PointBrowser.open(vault, reference);
  const diskName = values.disk as string | undefined;
  const disk = pickDisk(browser, diskName);
  const stop = new AbortController();
  const server = await serveNbd(disk.reader, {
    host,
    port,
    exportName: disk.name || "disk",
    // The point's own block: a client reading in these units fetches each chunk once.
    preferredBlockSize: disk.reader.point.content && "blockSize" in disk.reader.point.content ? disk.reader.point.content.blockSize : undefined,
    signal: stop.signal,
    log: (event) => process.stderr.write(`bulwark mount: ${JSON.stringify(event)}\n`),
  });
  print(values, { id: browser.point.id, disk: disk.name || undefined, uri: server.uri, size: disk.reader.size }, `serving point ${browser.point.id.slice(0, 12)}${disk.name ? ` disk ${disk.name}` : ""} (${formatBytes(disk.reader.size)}, read-only) at ${server.uri}\n  attach it with: nbd-client -N ${disk.name || "disk"} ${host} ${server.address.port} /dev/nbd0 (or qemu-nbd, nbdcopy); Ctrl-C stops`);
  await Promise.race([interrupted(), server.closed]);
  stop.abort();
  await server.closed;
  return 0;
}

function pickDisk(browser: PointBrowser, name: string | undefined) {
  if (browser.tree) throw new UsageError(`point ${browser.point.id.slice(0, 12)} is a folder point: it has no disk to serve; browse it with \`bulwark ls\` and restore with \`bulwark restore --path\``);
  if (browser.point.kind !== "vm") {
    if (name !== undefined) throw new UsageError(`--disk chooses a disk of a VM point; ${browser.point.id.slice(0, 12)} is a disk point`);
    return browser.disks[0];
  }
  const names = browser.disks.map((d) => d.name);
  if (name === undefined) throw new UsageError(`point ${browser.point.id.slice(0, 12)} is a VM point: choose its disk with --disk ${names.join("|")}`);
  const disk = browser.disks.find((d) => d.name === name);
  if (!disk) throw new NotFoundError(`the VM point has no disk ${name}: its disks are ${names.join(", ")}`);
  return disk;
}

function parseHostPort(raw: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(raw);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new UsageError(`--nbd ${raw}: give HOST:PORT, e.g. 127.0.0.1:10809 or [::1]:10809`);
  return { host: match[1] ?? match[2], port };
}

/** Names a filesystem held that cannot be paths here were left out: say so, exit 5 (the filesystem is damaged or hostile). */
function reportRefused(browser: PointBrowser): number {
  for (const name of browser.refusedNames) process.stderr.write(`bulwark: left out a name that cannot be a path (damaged filesystem?): ${name}\n`);
  return browser.refusedNames.size > 0 ? 5 : 0;
}

function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

function shortLine(e: BrowseEntry): string {
  if (e.type === "volume") return `${e.name}/  ${e.filesystem ?? "-"}${e.label ? `  "${e.label}"` : ""}  ${formatBytes(e.size)}${e.unreadable ? `  (${e.unreadable})` : ""}`;
  if (e.type === "disk" || e.type === "dir") return `${e.name}/`;
  return e.type === "symlink" ? `${e.name} -> ${e.target}` : e.name;
}

const TYPE_LETTER: Record<BrowseEntry["type"], string> = { dir: "d", file: "-", symlink: "l", other: "?", volume: "v", disk: "D" };

function longLine(e: BrowseEntry): string {
  if (e.type === "volume" || e.type === "disk") return `${TYPE_LETTER[e.type]}  ${String(e.size).padStart(14)}  ${shortLine(e)}`;
  const mode = e.mode ?? 0;
  const bits = ["r", "w", "x", "r", "w", "x", "r", "w", "x"].map((c, i) => (mode & (0o400 >> i) ? c : "-")).join("");
  return `${TYPE_LETTER[e.type]}${bits}  ${String(e.uid ?? "").padStart(5)} ${String(e.gid ?? "").padStart(5)}  ${String(e.size).padStart(12)}  ${e.mtime ?? "-".padEnd(24)}  ${shortLine(e)}${e.unreadable ? `  (not readable: ${e.unreadable})` : ""}`;
}
