/**
 * A backup that dies leaves a valid vault: killed with SIGKILL at several moments (once it holds
 * its lock, while its first pack is being written, right after the first and the second pack
 * land, right after an index object lands, just before the manifest), or cut off from Azure
 * storage by an Azurite restart, the vault still verifies with --read-data, every point it lists
 * restores identical, and the next backup succeeds. Each kill waits for what the backup wrote to
 * the vault (an object appearing), never for a time, so a busy machine moves nothing.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { finished, startCli } from "../support/cli.ts";
import {
  AzuriteVaults,
  LocalVaults,
  MIB,
  cliJson,
  diskImage,
  initVaultInProcess,
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

/**
 * The vaults here close their packs at 4 MiB (the default is 32 MiB; a vault's config chooses):
 * the kill moments are about packs, not their size, and the bytes to back up, restore and verify
 * are most of this file's time (Azurite's above all).
 */
const PACK_SIZE = 4 * MIB;

/**
 * 16 MiB, mostly random: four packs, so the first two are committed well before the backup ends
 * (7 MiB of random data, two more packs, the index and the manifest still to go after the second;
 * with 3 MiB to go a local backup finished before the kill after its second pack was seen).
 */
function bigImage(seed: string): Buffer {
  return Buffer.concat([pseudoRandom(seed, 15 * MIB), Buffer.alloc(1 * MIB)]);
}

/**
 * How long a wait for a kill moment may take: it ends when the moment comes or the backup exits, so
 * this only bounds a hang. 60 s was too short on a loaded machine (load 25 on 2 cores): a first
 * pack took longer than that to reach Azurite, and the test failed with the backup alive.
 */
const HANG_MS = 300_000;

/** Kill when `count` new objects under `when` exist (committed), or once a pack is being written. */
type KillMoment = { when: "locks/" | "data/" | "index/"; count?: number } | { when: "writing" };

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
    await initVaultInProcess(kind, vault, { packSize: PACK_SIZE });
    const earlierImage = diskImage("earlier", 4);
    const earlierPath = path.join(scratch, `earlier-${kindName}.img`);
    await writeFile(earlierPath, earlierImage);
    const earlier = await cliJson<BackupSummary>(kind, vault, ["backup", earlierPath]);

    const image = bigImage(`big-${kindName}`);
    const imagePath = path.join(scratch, `big-${kindName}.img`);
    await writeFile(imagePath, image);

    // Between the packs too on a local vault; Azurite's backups are slower, so one moment fewer there.
    const moments: KillMoment[] =
      kindName === "local"
        ? [{ when: "locks/" }, { when: "writing" }, { when: "data/" }, { when: "data/", count: 2 }, { when: "index/" }]
        : [{ when: "locks/" }, { when: "writing" }, { when: "data/" }, { when: "index/" }];
    const outcomes: string[] = [];
    const began = Date.now();
    for (const moment of moments) {
      if (process.env.CRASH_DEBUG) console.log(`${kindName} ${JSON.stringify(moment)} at ${Date.now() - began} ms`);
      const before = await kind.objects(vault);
      const child = startCli(["backup", imagePath, "--vault", vault], kind.env);
      const exited = finished(child);
      let done = false;
      void exited.then(() => (done = true));
      if (moment.when === "writing") {
        // A pack with bytes in it that is not committed yet (a file in .tmp/, or staged blocks).
        await waitFor("a pack being written", async () => done || (await kind.inFlight!(vault)).some((bytes) => bytes > 0 || kind.name === "azurite"), HANG_MS, 5);
      } else {
        const prefix = moment.when;
        const wanted = keysUnder(before, prefix).length + (moment.count ?? 1);
        await waitFor(`${moment.count ?? 1} new ${prefix} object(s)`, async () => done || keysUnder(await kind.objects(vault), prefix).length >= wanted, HANG_MS, 5);
      }
      child.kill("SIGKILL");
      const result = await exited;
      outcomes.push(result.signal === "SIGKILL" ? `killed (${JSON.stringify(moment)})` : `finished first (${JSON.stringify(moment)})`);
    }
    // Every moment precedes the manifest, so each kill must catch the backup alive, except the
    // index one: the last index object is written just before the manifest, and a backup may
    // finish in the few milliseconds between seeing it and the signal.
    const alive = outcomes.filter((o) => o.startsWith("killed"));
    expect(alive.length, outcomes.join("; ")).toBeGreaterThanOrEqual(moments.length - 1);
    for (const early of moments.filter((m) => m.when !== "index/")) {
      expect(outcomes, outcomes.join("; ")).toContain(`killed (${JSON.stringify(early)})`);
    }

    const report = await verifyClean(kind, vault);
    expect(report.packsRead).toBeGreaterThan(0);
    const points = await everyPointRestores(vault, new Map([[earlierPath, sha256(earlierImage)], [imagePath, sha256(image)]]));
    expect(points.map((p) => p.id)).toContain(earlier.id);

    const next = await cliJson<BackupSummary>(kind, vault, ["backup", imagePath]);
    expect(await restoredHash(kind, vault, next.id, scratch)).toBe(sha256(image));
    await verifyClean(kind, vault);
    // Every step waits on an event (an object, an exit); the limit only bounds a hang. Quiet, this
    // takes about a minute; with the machine's cores busy elsewhere it took over 120 s.
  }, 360_000);

  test.runIf(kindName === "azurite")("Azurite restarted in the middle of a backup: it succeeds or fails clearly, and the vault stays whole", async () => {
    const azurite = (kind as AzuriteVaults).azurite;
    const vault = kind.newLocation("outage");
    await initVaultInProcess(kind, vault, { packSize: PACK_SIZE });
    const earlierImage = diskImage("outage-earlier", 3);
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
    await waitFor("the backup's lock object", async () => done || keysUnder(await kind.objects(vault), "locks/").length > 0, HANG_MS, 5);
    expect(done, "the backup finished before the outage").toBe(false);
    await azurite.halt();
    // How long storage stays away is the scenario (an outage of a second and a half), not a race:
    // the backup is alive when it starts (checked above), and either outcome below is checked.
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
  }, 360_000);
});
