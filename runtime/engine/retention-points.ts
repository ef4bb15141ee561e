/**
 * Which points a retention rule removes. Retention applies per protected source (sourceIdentity:
 * ARM ids case-insensitively, local paths exactly and per host). A group point (a VM) governs its
 * member disk points: they go with it, are kept with it, and never count as points of their own
 * source, whoever's rule is being applied. So a disk protected on its own and also as part of a VM
 * never loses the disk points a VM point is made of to the disk's rule.
 */
import { selectRetained, type RetentionRule } from "../retention/gfs.ts";
import { sourceIdentity, type PointManifest } from "./point.ts";

/**
 * @param all every point of the vault (membership is judged over all of them, not only those the
 *   rule applies to)
 * @param applies which points the rule governs (a policy's own points, one item's points...)
 */
export function pointsBeyondRetention(
  all: PointManifest[],
  rule: RetentionRule,
  applies: (point: PointManifest) => boolean = () => true,
): { remove: string[]; kept: number } {
  const memberOf = new Map<string, string>();
  for (const p of all) for (const m of p.members ?? []) memberOf.set(m.point, p.id);
  const bySource = new Map<string, PointManifest[]>();
  for (const p of all) {
    if (memberOf.has(p.id) || !applies(p)) continue;
    const key = sourceIdentity(p);
    bySource.set(key, [...(bySource.get(key) ?? []), p]);
  }
  const removing = new Set<string>();
  const order: string[] = [];
  let kept = 0;
  for (const group of bySource.values()) {
    const keep = new Set(selectRetained(group.map((p) => ({ id: p.id, time: new Date(p.time) })), rule).keep.map((k) => k.id));
    kept += keep.size;
    for (const p of group) {
      if (keep.has(p.id)) continue;
      // The group first, then its members: a crash in between leaves members no group names, not the reverse.
      for (const id of [p.id, ...(p.members ?? []).map((m) => m.point)]) {
        if (!removing.has(id)) order.push(id);
        removing.add(id);
      }
    }
  }
  // Never a point that a point staying in the vault still names as a member.
  const remove = order.filter((id) => {
    const group = memberOf.get(id);
    return group === undefined || removing.has(group);
  });
  return { remove, kept };
}
