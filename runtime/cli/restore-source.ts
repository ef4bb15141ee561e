/**
 * Which source `restore latest` means. A vault may hold points of many sources; the newest point of
 * the vault is not necessarily the one the user wants on this target. The rule: among the sources
 * whose points the target can take, `--source` chooses; one source is taken; several are narrowed to
 * those of the target's own kind (a device or image takes disks, a file path files) and taken if one
 * remains, saying which; otherwise the restore is refused with the list of sources.
 */
import path from "node:path";
import { NotFoundError, UsageError } from "../errors.ts";
import { sourceIdentity, type PointManifest } from "../engine/point.ts";

export interface LatestSource {
  kind: PointManifest["kind"];
  path: string;
  host?: string;
  /** Why this source, when the vault holds others the target could take (for the user). */
  why?: string;
}

/** ARM ids are compared case-insensitively (Azure treats them so); local paths exactly (see sourceIdentity). */
function isArmId(source: string): boolean {
  return /^\/subscriptions\//i.test(source);
}

export function sameSource(point: Pick<PointManifest, "kind" | "source">, source: Pick<LatestSource, "kind" | "path" | "host">): boolean {
  return sourceIdentity(point) === sourceIdentity({ kind: source.kind, source: { path: source.path, host: source.host } });
}

function describeSource(s: LatestSource): string {
  return `${s.path} (${s.kind}${s.host ? ` on ${s.host}` : ""})`;
}

/**
 * `points` are the points the target can take; `targetKind` the kind it naturally takes; `chosen` the
 * --source option (a path, resolved against the working folder, or an ARM id).
 */
export function chooseLatestSource(points: readonly PointManifest[], targetKind: PointManifest["kind"], chosen: string | undefined, target: string): LatestSource {
  const sources = new Map<string, LatestSource>();
  for (const p of points) sources.set(sourceIdentity(p), { kind: p.kind, path: p.source.path, host: p.source.host });
  const all = [...sources.values()];
  const listing = all.map(describeSource).join(", ");
  if (all.length === 0) throw new NotFoundError(`the vault holds no recovery point that can be restored to ${target}`);
  if (chosen !== undefined) {
    const wanted = isArmId(chosen) ? chosen.toLowerCase() : path.resolve(chosen);
    const matching = all.filter((s) => (isArmId(s.path) ? s.path.toLowerCase() === wanted : s.path === wanted));
    if (matching.length === 0) throw new NotFoundError(`the vault holds no point of ${chosen} that can be restored to ${target}; its sources are: ${listing}`);
    const ofKind = matching.filter((s) => s.kind === targetKind);
    const pick = ofKind.length === 1 ? ofKind : matching;
    if (pick.length > 1) throw new UsageError(`--source ${chosen} names ${pick.length} sources (${pick.map(describeSource).join(", ")}); restore a point by its id (see \`bulwark points\`)`);
    return pick[0];
  }
  if (all.length === 1) return all[0];
  const ofKind = all.filter((s) => s.kind === targetKind);
  if (ofKind.length === 1) {
    return { ...ofKind[0], why: `the only ${targetKind} source of the ${all.length} in the vault; --source PATH chooses another` };
  }
  throw new UsageError(
    `"latest" is ambiguous: the vault holds points of ${all.length} sources (${listing}); choose one with --source PATH, or give a point id`,
  );
}
