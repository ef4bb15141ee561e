/**
 * Which points a retention rule removes. Retention applies per protected source (a point's kind
 * and source path); a group point (a VM) governs its member disk points: they go with it, are kept
 * with it, and never count as a source of their own.
 */
import { selectRetained, type RetentionRule } from "../retention/gfs.ts";
import type { PointManifest } from "./point.ts";

export function pointsBeyondRetention(points: PointManifest[], rule: RetentionRule): { remove: string[]; kept: number } {
  const members = new Set(points.flatMap((p) => (p.members ?? []).map((m) => m.point)));
  const bySource = new Map<string, PointManifest[]>();
  for (const p of points) {
    if (members.has(p.id)) continue;
    const key = `${p.kind}:${p.source.path.toLowerCase()}`;
    bySource.set(key, [...(bySource.get(key) ?? []), p]);
  }
  const remove: string[] = [];
  let kept = 0;
  for (const group of bySource.values()) {
    const keep = new Set(selectRetained(group.map((p) => ({ id: p.id, time: new Date(p.time) })), rule).keep.map((k) => k.id));
    kept += keep.size;
    for (const p of group) {
      if (keep.has(p.id)) continue;
      // The group first, then its members: a crash in between leaves members no group names, not the reverse.
      remove.push(p.id, ...(p.members ?? []).map((m) => m.point));
    }
  }
  return { remove, kept };
}
