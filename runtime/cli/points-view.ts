/**
 * `bulwark points` as a person reads it: filtered by source, tags and host, under a header in
 * aligned columns, a VM point's disk points indented under it (by their role) instead of as rows
 * of their own.
 */
import type { PointManifest } from "../engine/point.ts";
import { formatBytes } from "./progress.ts";

export interface PointFilter {
  /** A source path or resource id; resource ids compare case-insensitively, as Azure does. */
  source?: string;
  tags: Record<string, string>;
  host?: string;
}

function sameSourcePath(point: PointManifest, source: string): boolean {
  const path = point.source.path;
  return /^\/subscriptions\//i.test(path) ? path.toLowerCase() === source.toLowerCase() : path === source;
}

function matches(point: PointManifest, filter: PointFilter): boolean {
  if (filter.source !== undefined && !sameSourcePath(point, filter.source)) return false;
  if (filter.host !== undefined && point.source.host !== filter.host) return false;
  return Object.entries(filter.tags).every(([key, value]) => point.tags[key] === value);
}

/**
 * The points the filter takes, and the members of the VM points among them (a VM's disks carry the
 * VM's tags, not always its source: they come along with it).
 */
export function filterPoints(points: PointManifest[], filter: PointFilter): PointManifest[] {
  const chosen = new Set(points.filter((p) => matches(p, filter)).map((p) => p.id));
  for (const point of points) if (chosen.has(point.id)) for (const member of point.members ?? []) chosen.add(member.point);
  return points.filter((p) => chosen.has(p.id));
}

function tagText(tags: Record<string, string>): string {
  return Object.entries(tags)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

/** The rows in time order, each VM point followed by its members (`  os`, `  lun0`) indented. */
export function pointsText(points: PointManifest[]): string {
  if (points.length === 0) return "no recovery points yet";
  const byId = new Map(points.map((p) => [p.id, p]));
  const memberOf = new Set(points.flatMap((p) => (p.members ?? []).map((m) => m.point)).filter((id) => byId.has(id)));
  const row = (p: PointManifest, indent: string) => [`${indent}${p.id.slice(0, 12)}`, p.time, p.kind, formatBytes(p.size), p.source.path, tagText(p.tags)];
  const rows: string[][] = [["ID", "TIME", "KIND", "SIZE", "SOURCE", "TAGS"]];
  for (const point of points) {
    if (memberOf.has(point.id)) continue;
    rows.push(row(point, ""));
    for (const member of point.members ?? []) {
      const memberPoint = byId.get(member.point);
      if (memberPoint) rows.push(row(memberPoint, `  ${member.role} `));
      else rows.push([`  ${member.role} ${member.point.slice(0, 12)}`, "", "", "", "(not in the vault)", ""]);
    }
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((r) => r[column].length)));
  // Sizes align right, the rest left.
  return rows.map((r) => r.map((cell, column) => (column === 3 ? cell.padStart(widths[column]) : cell.padEnd(widths[column]))).join("  ").trimEnd()).join("\n");
}
