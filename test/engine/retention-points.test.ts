/**
 * Which points retention removes (engine/retention-points.ts), as forget, agent prune and the
 * backup machine's retain step all apply it: per source identity, a group point governing its
 * members, and never a point that a point staying in the vault names as a member.
 */
import { expect, test } from "vitest";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { pointsBeyondRetention } from "../../runtime/engine/retention-points.ts";

const DISK = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/data";
const VM = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/app";

function point(id: string, day: number, kind: PointManifest["kind"], path: string, extra: Partial<PointManifest> = {}): PointManifest {
  return {
    version: 1,
    id,
    time: new Date(Date.UTC(2026, 0, day)).toISOString(),
    kind,
    source: { type: kind, path, host: "h1" },
    size: 0,
    tags: {},
    stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, durationMs: 0 },
    ...extra,
  };
}

/** Three rounds: each day a VM point (with its data disk's point as a member) and a disk point of its own. */
function rounds(): PointManifest[] {
  const points: PointManifest[] = [];
  for (let day = 1; day <= 3; day++) {
    points.push(point(`vmdisk${day}`, day, "disk", DISK, { tags: { policy: "vms" } }));
    points.push(point(`vm${day}`, day, "vm", VM, { tags: { policy: "vms" }, members: [{ role: "data", point: `vmdisk${day}` }] }));
    points.push(point(`disk${day}`, day, "disk", DISK.toUpperCase(), { tags: { policy: "disks" } }));
  }
  return points;
}

test("a disk's own rule never removes the disk points a VM point is made of, and groups ARM ids case-insensitively", () => {
  const all = rounds();
  const { remove } = pointsBeyondRetention(all, { last: 1 }, (p) => p.kind === "disk" && p.source.path.toLowerCase() === DISK.toLowerCase());
  expect(remove.sort()).toEqual(["disk1", "disk2"]);
});

test("the VM's rule removes old VM points with their members, group first", () => {
  const { remove } = pointsBeyondRetention(rounds(), { last: 1 }, (p) => p.tags.policy === "vms");
  expect(remove).toEqual(["vm1", "vmdisk1", "vm2", "vmdisk2"]);
});

test("forget over everything keeps each kept VM point's members", () => {
  const { remove } = pointsBeyondRetention(rounds(), { last: 2 });
  expect(remove.sort()).toEqual(["disk1", "vm1", "vmdisk1"]);
});

test("local sources are grouped exactly: paths differing in case, or on two hosts, are two sources", () => {
  const all = [
    point("a1", 1, "file", "/data/Case.img"),
    point("b1", 2, "file", "/data/case.img"),
    point("c1", 3, "file", "/data/case.img", { source: { type: "file", path: "/data/case.img", host: "h2" } }),
    point("a2", 4, "file", "/data/Case.img"),
  ];
  expect(pointsBeyondRetention(all, { last: 1 }).remove).toEqual(["a1"]);
});
