/**
 * Ctrl-C during Azure work (issue 8, item 15), with the real CLI against the emulator. A VM backup
 * revokes every read grant it took and deletes the snapshots it made, so each disk keeps exactly
 * its golden snapshot; a SIGKILLed one leaves them, and the next backup on this host removes them; a
 * restore to a new managed disk revokes its write grant and removes the half-written disk. Each
 * interrupted command exits 130 with one line. The moment comes from the emulator's request log:
 * the managed-disk reads or writes are throttled (503 with Retry-After, as storage throttles) and
 * the signal is sent once the first throttled request is logged.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { finished, startCli } from "../support/cli.ts";
import { waitFor } from "../cli/vaults.ts";
import { bulwarkSnapshots, expectNothingLeaked, startWorld, type AzureWorld } from "./harness.ts";

describe("interrupted Azure commands", () => {
  let world: AzureWorld;
  let vault: string;

  beforeAll(async () => {
    world = await startWorld();
    vault = await world.newVault("interrupt");
  });

  afterAll(async () => {
    await world?.stop();
  });

  test("SIGINT during a VM backup leaves no new snapshot and no open SAS, and exits 130 with one line", async () => {
    const disks = [world.sample.osDiskId, world.sample.dataDiskId];
    const first = await world.cli(["backup", world.sample.vmId, "--vault", vault, "--json"]);
    expect(first.code, first.stderr).toBe(0);
    const golden = bulwarkSnapshots(world).map((s) => s.id).sort();
    expect(golden).toHaveLength(2);

    const from = world.emulator.requestLog.length;
    const diskRead = /^\/md-[^/]+\/[^/]+\/[^/]+$/;
    world.emulator.control.throttle({ method: "GET", path: diskRead, times: 4, status: 503, retryAfterSeconds: 2 });
    const child = startCli(["backup", world.sample.vmId, "--vault", vault], world.env);
    const done = finished(child);
    try {
      await waitFor(
        "a throttled read of a snapshot",
        async () => world.emulator.requestLog.slice(from).some((r) => r.status === 503 && diskRead.test(r.path)),
        60_000,
        5,
      );
      child.kill("SIGINT");
      const result = await done;
      expect(result.code, result.stderr).toBe(130);
      const lines = result.stderr.trimEnd().split("\n");
      expect(lines, result.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^bulwark backup: interrupted by SIGINT/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      world.emulator.control.clearFaults();
    }
    // Only the golden snapshots of the first backup remain, and no grant is open.
    expect(bulwarkSnapshots(world).map((s) => s.id).sort()).toEqual(golden);
    await expectNothingLeaked(world, disks);
    const points = await world.json<unknown[]>(["points", "--vault", vault]);
    expect(points).toHaveLength(3); // the first backup's VM point and its two disk points
  });

  test("after a SIGKILLed VM backup, the next backup removes the snapshots and read grants it left", async () => {
    const disks = [world.sample.osDiskId, world.sample.dataDiskId];
    const golden = bulwarkSnapshots(world).map((s) => s.id).sort();
    expect(golden).toHaveLength(2);
    const from = world.emulator.requestLog.length;
    const diskRead = /^\/md-[^/]+\/[^/]+\/[^/]+$/;
    world.emulator.control.throttle({ method: "GET", path: diskRead, times: 4, status: 503, retryAfterSeconds: 2 });
    const child = startCli(["backup", world.sample.vmId, "--vault", vault], world.env);
    const done = finished(child);
    try {
      await waitFor("a throttled read of a snapshot", async () => world.emulator.requestLog.slice(from).some((r) => r.status === 503 && diskRead.test(r.path)), 60_000, 5);
      child.kill("SIGKILL");
      expect((await done).signal).toBe("SIGKILL");
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      world.emulator.control.clearFaults();
    }
    // The killed run left its new snapshots (and their open grants) beside the golden ones.
    expect(bulwarkSnapshots(world).length).toBeGreaterThan(2);
    expect(world.emulator.control.inventory().activeSasGrants.length).toBeGreaterThan(0);

    const next = await world.cli(["backup", world.sample.vmId, "--vault", vault, "--json"]);
    expect(next.code, next.stderr).toBe(0);
    await expectNothingLeaked(world, disks);
    // The new backup's snapshots are the golden ones now; the old golden ones were retired.
    expect(bulwarkSnapshots(world).filter((s) => golden.includes(s.id))).toEqual([]);
  });

  test("SIGINT during a restore to a new managed disk leaves no disk and no write grant, and exits 130", async () => {
    const points = await world.json<{ id: string; kind: string; source: string }[]>(["points", "--vault", vault]);
    const osPoint = points.filter((p) => p.kind === "disk" && p.source.toLowerCase() === world.sample.osDiskId.toLowerCase()).at(-1)!;
    const target = world.sample.osDiskId.replace(/\/disks\/[^/]+$/, "/disks/interrupted-restore");
    const from = world.emulator.requestLog.length;
    const diskWrite = /^\/md-[^/]+\/[^/]+\/[^/]+$/;
    world.emulator.control.throttle({ method: "PUT", path: diskWrite, times: 4, status: 503, retryAfterSeconds: 2 });
    const child = startCli(["restore", osPoint.id, "--vault", vault, "--to", target], world.env);
    const done = finished(child);
    try {
      await waitFor("a throttled write to the new disk", async () => world.emulator.requestLog.slice(from).some((r) => r.status === 503 && r.method === "PUT" && diskWrite.test(r.path)), 60_000, 5);
      child.kill("SIGINT");
      const result = await done;
      expect(result.code, result.stderr).toBe(130);
      const lines = result.stderr.trimEnd().split("\n");
      expect(lines, result.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^bulwark restore: interrupted by SIGINT/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      world.emulator.control.clearFaults();
    }
    const inventory = world.emulator.control.inventory();
    expect(inventory.disks.filter((d) => /interrupted-restore/i.test(d.id))).toEqual([]);
    expect(inventory.activeSasGrants).toEqual([]);
  });
});
