/**
 * The fleet harness's leak check checks what it promises: a worker process still running, or a
 * long-running Azure operation still in progress, fails expectNothingLeaked; once they are gone
 * it passes.
 */
import { ComputeManagementClient } from "@azure/arm-compute";
import { spawn } from "node:child_process";
import { afterAll, beforeAll, expect, test } from "vitest";
import { MiB, expectNothingLeaked, startFleetWorld, watchProcess, type FleetWorld } from "./harness.ts";

let world: FleetWorld;

beforeAll(async () => {
  // Operations settle only when polled (not by themselves after a few seconds), so the one below
  // is still in progress when the check runs, however slow the machine.
  world = await startFleetWorld({ lro: { settleAfterMs: 600_000 } });
  world.emulator.world.addResourceGroup("leaks", "westeurope");
});

afterAll(async () => {
  await world?.stop();
});

test("expectNothingLeaked fails while a worker process runs and while an Azure operation is in progress", async () => {
  await expectNothingLeaked(world, []);

  // A "worker" that never exits on its own.
  const worker = watchProcess(spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: ["ignore", "pipe", "pipe"] }));
  await expect(expectNothingLeaked(world, [])).rejects.toThrow(/worker processes still running/);
  worker.child.kill("SIGKILL");
  await worker.exited;
  await expectNothingLeaked(world, []);

  // A snapshot whose creation (a long-running operation) nobody polled to its end yet.
  const compute = new ComputeManagementClient(world.emulator.credential(), world.emulator.subscriptionId, { endpoint: world.emulator.armEndpoint });
  const disk = world.emulator.compute.createDisk("leaks", "leak-disk", 1 * MiB);
  const poller = await compute.snapshots.beginCreateOrUpdate("leaks", "leak-probe", {
    location: "westeurope",
    incremental: true,
    creationData: { createOption: "Copy", sourceResourceId: disk.id },
  });
  expect(world.emulator.control.inventory().runningOperations).toBe(1);
  await expect(expectNothingLeaked(world, [])).rejects.toThrow(/long-running operations in progress/);
  await poller.pollUntilDone();
  await expectNothingLeaked(world, []);
});
