/**
 * `bulwark points`: a header and aligned columns, filters by source, tag and host, and a VM point's
 * disk points indented under it by role.
 */
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { filterPoints, pointsText } from "../../runtime/cli/points-view.ts";
import { runCli, runJson } from "../support/cli.ts";
import { pseudoRandom, tempFolder } from "./vaults.ts";

const VM = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/web";
const DISKS = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks";

/** A manifest with what the listing reads; the rest of a point does not matter to it. */
function point(id: string, kind: PointManifest["kind"], source: string, extra: Partial<PointManifest> = {}): PointManifest {
  return { id: id.padEnd(32, "0"), time: "2026-11-30T10:00:00.000Z", kind, source: { type: "azure", path: source }, size: 1 << 30, tags: {}, ...extra } as PointManifest;
}

describe("a VM point and its disks", () => {
  const os_ = point("aa", "disk", `${DISKS}/web-os`, { tags: { env: "prod" } });
  const data = point("bb", "disk", `${DISKS}/web-data`, { tags: { env: "prod" } });
  const vm = point("cc", "vm", VM, { tags: { env: "prod" }, members: [{ role: "os", point: os_.id }, { role: "lun0", point: data.id }] });
  const other = point("dd", "disk", `${DISKS}/other`, { tags: { env: "test" } });

  test("the disks are listed indented under their VM by role, not as rows of their own", () => {
    const lines = pointsText([os_, data, vm, other]).split("\n");
    expect(lines.map((l) => l.trim().split(/\s{2,}/)[0])).toEqual(["ID", "cc0000000000", "os aa0000000000", "lun0 bb0000000000", "dd0000000000"]);
    expect(lines[2]).toMatch(/^ {2}os aa0000000000\s+2026-11-30T10:00:00.000Z\s+disk\s+1(\.0)? GiB\s+\/subscriptions\/.*\/web-os\s+env=prod$/);
  });

  test("a VM chosen by its source brings its disks; a resource id matches whatever its case", () => {
    expect(filterPoints([os_, data, vm, other], { source: VM.toUpperCase(), tags: {} }).map((p) => p.id)).toEqual([os_.id, data.id, vm.id]);
    expect(filterPoints([os_, data, vm, other], { tags: { env: "test" } }).map((p) => p.id)).toEqual([other.id]);
  });
});

describe("points of a real vault", () => {
  let vault: string;
  let scratch: string;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    scratch = await tempFolder("points");
    vault = path.join(scratch, "vault");
    await writeFile(path.join(scratch, "a.bin"), pseudoRandom("points a", 50_000));
    await writeFile(path.join(scratch, "b.bin"), pseudoRandom("points b", 70_000));
    const init = await runCli(["init", "--vault", vault]);
    if (init.code !== 0) throw new Error(init.stderr);
    const [a, b] = await Promise.all([
      runJson<{ id: string }>(["backup", path.join(scratch, "a.bin"), "--vault", vault, "--tag", "env=prod", "--tag", "app=web"]),
      runJson<{ id: string }>(["backup", path.join(scratch, "b.bin"), "--vault", vault, "--tag", "env=test"]),
    ]);
    ids.a = a.id;
    ids.b = b.id;
  }, 60_000);

  test("a header over aligned columns; --tag, --source and --host choose the points", async () => {
    const [all, prod, bySource, otherHost] = await Promise.all([
      runCli(["points", "--vault", vault]),
      runJson<{ id: string }[]>(["points", "--vault", vault, "--tag", "env=prod", "--tag", "app=web"]),
      runCli(["points", "--vault", vault, "--source", path.join(scratch, "b.bin"), "--host", os.hostname()]),
      runCli(["points", "--vault", vault, "--host", "not-this-host"]),
    ]);
    const lines = all.stdout.trimEnd().split("\n");
    expect(lines[0].split(/\s{2,}/)).toEqual(["ID", "TIME", "KIND", "SIZE", "SOURCE", "TAGS"]);
    expect(lines).toHaveLength(3);
    const sourceColumn = lines[0].indexOf("SOURCE");
    for (const line of lines.slice(1)) expect(line.slice(sourceColumn), line).toMatch(/^\/.*\.bin/);
    expect(prod.map((p) => p.id)).toEqual([ids.a]);
    expect(bySource.stdout.trimEnd().split("\n").slice(1).map((l) => l.split(" ")[0])).toEqual([ids.b.slice(0, 12)]);
    expect(otherHost).toMatchObject({ code: 0, stdout: "no recovery points match\n" });
  });
});
