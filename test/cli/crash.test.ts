/**
 * A backup that dies leaves a valid vault: killed with SIGKILL at several moments (early, while
 * packs are being written, right after the first pack or index object lands, just before the
 * manifest), or cut off from Azure storage by an Azurite restart, the vault still verifies with
 * --read-data, every point it lists restores identical, and the next backup succeeds.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { finished, startCli } from "../support/cli.ts";
import {
  AzuriteVaults,
  LocalVaults,
  MIB,
  cli,
  cliJson,
  diskImage,
  keysUnder,
  pseudoRandom,
  restoredHash,
  sha256,
  tempFolder,
  verifyClean,
  waitFor,
  type BackupSummary,
  type VaultKind,
} from "./vaults.ts";

/** 72 MiB, mostly random: three 32 MiB packs, so packs are committed well before the backup ends. */
function bigImage(seed: string): Buffer {
  const image = Buffer.concat([pseudoRandom(seed, 70 * MIB), Buffer.alloc(2 * MIB)]);
  return image;
}

type KillMoment = { after: number } | { when: "data/" | "index/" };

describe.each(["local", "azurite"] as const)("interrupted backups, %s vault", (kindName) => {
  let kind: VaultKind;
  let scratch: string;

  beforeAll(async () => {
    kind = kindName === "local" ? await LocalVaults.create() : await AzuriteVaults.create();
    scratch = await tempFolder("crash");
  });

  afterAll(async () => {
    await kind?.close();
  });

  /** Every point the vault lists restores to one of the images that were backed up. */
  async function everyPointRestores(vault: string, expected: Map<string, string>): Promise<BackupSummary[]> {
    const points = await cliJson<BackupSummary[]>(kind, vault, ["points"]);
    for (const p of points) {
      const want = expected.get(p.source);
      expect(want, `point ${p.id} of unknown source ${p.source}`).toBeDefined();
      expect(await restoredHash(kind, vault, p.id, scratch), `point ${p.id}`).toBe(want);
    }
    return points;
  }

  test("SIGKILL at several moments leaves a vault that verifies, restores every earlier point, and takes the next backup", async () => {
    const vault = kind.newLocation("killed");
    expect((await cli(kind, vault, ["init"])).code).toBe(0);
    const earlierImage = diskImage("earlier", 8);
    const earlierPath = path.join(scratch, `earlier-${kindName}.img`);
    await writeFile(earlierPath, earlierImage);
    const earlier = await cliJson<BackupSummary>(kind, vault, ["backup", earlierPath]);

    const image = bigImage(`big-${kindName}`);
    const imagePath = path.join(scratch, `big-${kindName}.img`);
    await writeFile(imagePath, image);

    const moments: KillMoment[] =
      kindName === "local"
        ? [{ after: 400 }, { after: 900 }, { when: "data/" }, { when: "index/" }, { after: 1500 }]
        : [{ after: 1200 }, { when: "data/" }, { when: "index/" }];
    const outcomes: string[] = [];
    for (const moment of moments) {
      const before = await kind.objects(vault);
      const child = startCli(["backup", imagePath, "--vault", vault], kind.env);
      const exited = finished(child);
      let done = false;
      void exited.then(() => (done = true));
      if ("after" in moment) {
        await new Promise((r) => setTimeout(r, moment.after));
      } else {
        const prefix = moment.when;
        const known = keysUnder(before, prefix).length;
        await waitFor(`a new ${prefix} object`, async () => done || keysUnder(await kind.objects(vault), prefix).length > known, 60_000, 5);
      }
      child.kill("SIGKILL");
      const result = await exited;
      outcomes.push(result.signal === "SIGKILL" ? `killed (${JSON.stringify(moment)})` : `finished first (${JSON.stringify(moment)})`);
    }
    // Most moments must have caught the backup alive (a fast machine may finish before the latest
    // timed one, and the last index object is written just before the manifest).
    expect(outcomes.filter((o) => o.startsWith("killed")).length, outcomes.join("; ")).toBeGreaterThanOrEqual(moments.length - 2);
    expect(outcomes.some((o) => o.startsWith('killed ({"when":"data/"})')), outcomes.join("; ")).toBe(true);

    const report = await verifyClean(kind, vault);
    expect(report.packsRead).toBeGreaterThan(0);
    const points = await everyPointRestores(vault, new Map([[earlierPath, sha256(earlierImage)], [imagePath, sha256(image)]]));
    expect(points.map((p) => p.id)).toContain(earlier.id);

    const next = await cliJson<BackupSummary>(kind, vault, ["backup", imagePath]);
    expect(await restoredHash(kind, vault, next.id, scratch)).toBe(sha256(image));
    await verifyClean(kind, vault);
  });

  test.runIf(kindName === "azurite")("Azurite restarted in the middle of a backup: it succeeds or fails clearly, and the vault stays whole", async () => {
    const azurite = (kind as AzuriteVaults).azurite;
    const vault = kind.newLocation("outage");
    expect((await cli(kind, vault, ["init"])).code).toBe(0);
    const earlierImage = diskImage("outage-earlier", 6);
    const earlierPath = path.join(scratch, "outage-earlier.img");
    await writeFile(earlierPath, earlierImage);
    await cliJson<BackupSummary>(kind, vault, ["backup", earlierPath]);

    const image = bigImage("outage");
    const imagePath = path.join(scratch, "outage.img");
    await writeFile(imagePath, image);
    const child = startCli(["backup", imagePath, "--vault", vault, "--json"], kind.env);
    const exited = finished(child);
    let done = false;
    void exited.then(() => (done = true));
    // The backup holds its lock once it starts writing: cut storage off then.
    await waitFor("the backup's lock object", async () => done || keysUnder(await kind.objects(vault), "locks/").length > 0, 60_000, 5);
    expect(done, "the backup finished before the outage").toBe(false);
    await azurite.halt();
    await new Promise((r) => setTimeout(r, 1500));
    await azurite.resume();
    const result = await exited;

    if (result.code === 0) {
      const summary = JSON.parse(result.stdout) as BackupSummary;
      expect(summary.size).toBe(image.length);
    } else {
      // A clear, single message about storage, not a stack trace or "unexpected failure".
      expect(result.code, result.stderr).toBe(8);
      expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(result.stderr).toMatch(/^bulwark backup: .*(storage|unavailable)/);
      expect(result.stderr).not.toMatch(/unexpected failure/);
    }
    await verifyClean(kind, vault);
    await everyPointRestores(vault, new Map([[earlierPath, sha256(earlierImage)], [imagePath, sha256(image)]]));
    // And storage being back, the next backup works.
    const next = await cliJson<BackupSummary>(kind, vault, ["backup", imagePath]);
    expect(next.size).toBe(image.length);
  });
});
