/**
 * A worker holds two identities: restores call Resource Manager as the restore identity
 * (BULWARK_RESTORE_CLIENT_ID), whose role alone may create disks in the restore resource groups,
 * and never as the worker's own identity, which backs up. The emulator's Entra endpoint issues each
 * client its own token, and its request log names the client behind every ARM request.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes, randomUUID } from "node:crypto";
import { submitJob } from "../../runtime/jobs/submit.ts";
import { type FleetWorld, MiB, makeDisk, startFleetWorld } from "./harness.ts";

let world: FleetWorld;
const restoreClientId = randomUUID();
const restoreClientSecret = randomBytes(24).toString("base64url");

beforeAll(async () => {
  world = await startFleetWorld();
  world.emulator.entra.addServicePrincipal({ clientId: restoreClientId, clientSecret: restoreClientSecret });
});

afterAll(async () => {
  await world?.stop();
});

describe("a worker with a restore identity", () => {
  it("makes a restore job's ARM requests with the restore identity's token, never with the worker's own", async () => {
    const disk = makeDisk(world, "ri-prod", "ri-data", 1 * MiB, { seed: 7 });
    world.emulator.world.addResourceGroup("ri-restores", "westeurope");
    await world.policy("ri", `name: ri\nvault: ${world.vault}\nprotect:\n  resources:\n    - ${disk.id}\nschedule:\n  every: 1d\nretention:\n  last: 5\n`);
    const point = (await world.json(["backup", disk.id, "--vault", world.vault])).id as string;

    const target = `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/ri-restores/providers/Microsoft.Compute/disks/ri-data-restored`;
    const fleet = await world.fleet();
    const submitted = await submitJob(fleet, {
      machine: "restore",
      item: { id: disk.id, kind: "disk", region: "westeurope" },
      queueRegion: "westeurope",
      input: { vault: world.vault, pointId: point, target },
    });
    if (!submitted.submitted) throw new Error(submitted.reason);
    const from = world.emulator.requestLog.length;
    const worker = world.worker("westeurope", { BULWARK_RESTORE_CLIENT_ID: restoreClientId, BULWARK_RESTORE_CLIENT_SECRET: restoreClientSecret });
    expect(await worker.summary()).toMatchObject({ succeeded: 1, failed: 0 });

    const arm = world.emulator.requestLog.slice(from).filter((r) => r.endpoint === "main" && r.path.toLowerCase().startsWith("/subscriptions/"));
    const creates = arm.filter((r) => r.method === "PUT" && r.path.toLowerCase().endsWith("/disks/ri-data-restored"));
    expect(creates.length).toBeGreaterThan(0);
    // Every request that touches the restored disk, or polls a disk operation, is the restore identity's.
    const restoreRequests = arm.filter((r) => /ri-data-restored|\/diskoperations\/|\/locations\/[^/]+\/operations\//i.test(r.path));
    expect(restoreRequests.map((r) => r.caller).filter((c) => c !== restoreClientId)).toEqual([]);
    // The worker's own identity (which checks the job's item against its policies) never wrote a disk.
    expect(arm.filter((r) => r.caller === world.emulator.clientId && r.method !== "GET")).toEqual([]);
    expect(world.emulator.control.inventory().disks.find((d) => d.id.toLowerCase() === target.toLowerCase())).toMatchObject({ provisioningState: "Succeeded" });
  });
});
