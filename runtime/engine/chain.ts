/**
 * Each source's points form a chain, so a point deleted outside retention does not go unnoticed.
 *
 *   chain/<source key>/<sequence>   sealed marker: which point holds that place in its source's chain
 *   forgotten/<point id>            sealed tombstone: retention (or forget) removed this point on purpose
 *
 * The source key is an HMAC of the source's identity under the id key (a reader of the storage
 * learns nothing from it). A point's manifest carries its sequence and the previous point; its
 * marker is written right after the manifest. A point is missing when a marker or a later point
 * names it, its manifest is gone and no tombstone says retention removed it: that is how deleting
 * the newest point (`points/<id>` alone) shows, in verify, in `points` and to `restore latest`.
 * Markers and tombstones are sealed (keys derived from the data key), so nobody without it can forge a tombstone
 * to explain a deletion away. An attacker who deletes a source's newest point together with its
 * marker cannot be seen from the vault alone; immutability (WORM) on points and markers is what
 * stops that (see README).
 */
import { createHmac } from "node:crypto";
import { IntegrityError, ObjectNotFoundError } from "../errors.ts";
import { labelAssociatedData, openObject, sealObject } from "./crypto.ts";
import { sourceIdentity, type PointManifest } from "./point.ts";
import { mapLimit, type Vault } from "./vault.ts";

interface Marker {
  point: string;
  sequence: number;
  time: string;
  source: { kind: string; path: string; host?: string };
}

interface Tombstone {
  point: string;
  forgottenAt: string;
  reason: string;
}

export interface MissingPoint {
  id: string;
  sequence?: number;
  time?: string;
  source?: { kind: string; path: string; host?: string };
  /** What names it: its chain marker, or the next point of its source. */
  namedBy: string;
}

const SEQUENCE_DIGITS = 12;

export function sourceKey(vault: Vault, point: Pick<PointManifest, "kind" | "source">): string {
  return createHmac("sha256", vault.master.idKey).update("bulwark/chain/").update(sourceIdentity(point)).digest("hex").slice(0, 32);
}

function markerName(key: string, sequence: number): string {
  return `chain/${key}/${String(sequence).padStart(SEQUENCE_DIGITS, "0")}`;
}

async function readMarker(vault: Vault, name: string): Promise<Marker> {
  const marker = JSON.parse(openObject(vault.master.dataKey, await vault.store.get(name), labelAssociatedData("chain", name), name).toString("utf8")) as Marker;
  if (typeof marker.point !== "string" || name !== markerName(name.split("/")[1]!, marker.sequence)) {
    throw new IntegrityError(`chain marker ${name} does not hold what its name says`);
  }
  return marker;
}

/** The sequence and previous point a new point of this source takes. */
export async function nextInChain(vault: Vault, point: PointManifest): Promise<{ sequence: number; previous?: string }> {
  const key = sourceKey(vault, point);
  let newest: string | undefined;
  for await (const info of vault.store.list(`chain/${key}/`)) if (!newest || info.key > newest) newest = info.key;
  if (!newest) return { sequence: 1 };
  const marker = await readMarker(vault, newest);
  return { sequence: marker.sequence + 1, previous: marker.point };
}

/** Writes the marker of a committed point (idempotent: a marker already there is left alone). */
export async function writeMarker(vault: Vault, point: PointManifest): Promise<void> {
  if (!point.chain) return;
  const name = markerName(sourceKey(vault, point), point.chain.sequence);
  const marker: Marker = {
    point: point.id,
    sequence: point.chain.sequence,
    time: point.time,
    source: { kind: point.kind, path: point.source.path, host: point.source.host },
  };
  if (await vault.store.stat(name)) return;
  await vault.store
    .create(name, sealObject(vault.master.dataKey, Buffer.from(JSON.stringify(marker)), labelAssociatedData("chain", name), vault.master.format))
    .catch(async (error) => {
      // Another point of this source took the place at the same moment (two CLI backups of one
      // source at once): both points stay valid; the chain only forks, and verify does not call it a loss.
      if (!(await vault.store.stat(name))) throw error;
    });
}

/** Removes points on purpose (retention, forget): a tombstone first, then the manifest. */
export async function forgetPoint(vault: Vault, id: string, reason: string): Promise<void> {
  const name = `forgotten/${id}`;
  if (!(await vault.store.stat(name))) {
    const tombstone: Tombstone = { point: id, forgottenAt: new Date().toISOString(), reason };
    const sealed = sealObject(vault.master.dataKey, Buffer.from(JSON.stringify(tombstone)), labelAssociatedData("forgotten", name), vault.master.format);
    await vault.store.create(name, sealed).catch(async (error) => {
      if (!(await vault.store.stat(name))) throw error;
    });
  }
  await vault.store.delete(`points/${id}`);
}

/**
 * Points that the chain says exist and that are gone without a tombstone. `points` are the
 * manifests the caller read (their `chain.previous` names the point before each). Damaged markers
 * and tombstones are reported through onProblem.
 */
export async function missingPoints(vault: Vault, points: PointManifest[], onProblem: (problem: string) => void = () => {}): Promise<MissingPoint[]> {
  const present = new Set(await vault.listPointIds());
  const forgotten = new Set<string>();
  const tombstoneNames: string[] = [];
  for await (const info of vault.store.list("forgotten/")) tombstoneNames.push(info.key);
  await mapLimit(tombstoneNames, 8, async (name) => {
    try {
      const tombstone = JSON.parse(openObject(vault.master.dataKey, await vault.store.get(name), labelAssociatedData("forgotten", name), name).toString("utf8")) as Tombstone;
      if (`forgotten/${tombstone.point}` !== name) throw new IntegrityError(`tombstone ${name} names another point`);
      forgotten.add(tombstone.point);
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError)) onProblem(`tombstone ${name}: ${(error as Error).message}`);
    }
  });
  const missing = new Map<string, MissingPoint>();
  const markerNames: string[] = [];
  for await (const info of vault.store.list("chain/")) markerNames.push(info.key);
  await mapLimit(markerNames, 8, async (name) => {
    try {
      const marker = await readMarker(vault, name);
      if (!present.has(marker.point) && !forgotten.has(marker.point)) {
        missing.set(marker.point, { id: marker.point, sequence: marker.sequence, time: marker.time, source: marker.source, namedBy: name });
      }
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError)) onProblem(`chain marker ${name}: ${(error as Error).message}`);
    }
  });
  for (const point of points) {
    const previous = point.chain?.previous;
    if (previous && !present.has(previous) && !forgotten.has(previous) && !missing.has(previous)) {
      missing.set(previous, {
        id: previous,
        sequence: point.chain!.sequence - 1,
        source: { kind: point.kind, path: point.source.path, host: point.source.host },
        namedBy: `point ${point.id}`,
      });
    }
  }
  return [...missing.values()].sort((a, b) => (a.time ?? "").localeCompare(b.time ?? "") || a.id.localeCompare(b.id));
}

export function describeMissing(m: MissingPoint): string {
  const where = m.source ? `${m.source.kind} ${m.source.path}${m.source.host && !m.source.path.startsWith("/subscriptions/") ? ` on ${m.source.host}` : ""}` : "its source";
  return `point ${m.id} (#${m.sequence ?? "?"} of ${where}${m.time ? `, taken ${m.time}` : ""}) is missing: it was deleted outside retention (named by ${m.namedBy})`;
}
