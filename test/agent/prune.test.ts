/**
 * `bulwark agent prune`: retention on its own schedule. Each policy's retention applies to the
 * points carrying its name (per protected item), then unreferenced packs go; points of other
 * policies and on-demand backups are left alone.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { runCli, runJson } from "../support/cli.ts";

let folder: string;
beforeAll(async () => {
  folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-agent-prune-"));
});
afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

async function countObjects(dir: string): Promise<number> {
  let n = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) if (entry.isFile()) n++;
  return n;
}

test("keeps exactly what each policy's retention says, prunes the rest, and leaves other points alone", async () => {
  const vault = path.join(folder, "vault");
  await runJson(["init", "--vault", vault]);
  const source = path.join(folder, "data.bin");
  const other = path.join(folder, "other.bin");
  const versions: { id: string; sha: string }[] = [];
  for (let i = 0; i < 5; i++) {
    const bytes = randomBytes(3 * 1024 * 1024);
    await writeFile(source, bytes);
    const point = await runJson<{ id: string }>(["backup", source, "--vault", vault, "--tag", "policy=gold"]);
    versions.push({ id: point.id, sha: createHash("sha256").update(bytes).digest("hex") });
  }
  await writeFile(other, randomBytes(1024 * 1024));
  const untagged = await runJson<{ id: string }>(["backup", other, "--vault", vault]);
  const policyFile = path.join(folder, "gold.yaml");
  await writeFile(
    policyFile,
    ["name: gold", `vault: ${vault}`, "protect:", "  resources:", "    - /subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d", "schedule:", "  every: 4h", "retention:", "  last: 2", ""].join("\n"),
  );
  const packsBefore = await countObjects(path.join(vault, "data"));

  const result = await runCli(["agent", "prune", "--policies", policyFile, "--json"]);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);

  const remaining = (await runJson<{ id: string }[]>(["points", "--vault", vault])).map((p) => p.id).sort();
  expect(remaining).toEqual([versions[3].id, versions[4].id, untagged.id].sort());
  expect(await countObjects(path.join(vault, "data"))).toBeLessThan(packsBefore);
  expect((await runCli(["verify", "--vault", vault, "--read-data"])).code).toBe(0);
  for (const kept of versions.slice(3)) {
    const out = path.join(folder, `restored-${kept.id}`);
    await runJson(["restore", kept.id, "--vault", vault, "--to", out]);
    expect(createHash("sha256").update(await readFile(out)).digest("hex")).toBe(kept.sha);
  }
});
