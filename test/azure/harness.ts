/**
 * What the Azure workload suites share: one local Azure emulator (with its own Azurite) and the
 * sample world per test file, the environment that points the real `bulwark` CLI at them, a local
 * vault folder, and the checks that nothing was left behind in the customer's account.
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { expect } from "vitest";
import { trackFolder } from "../support/cleanup.ts";
import { runCli, runJson, type CliResult } from "../support/cli.ts";
import { type SampleWorld, seedSampleWorld } from "../emulator/seed.ts";
import { type AzureEmulatorOptions, type LoggedRequest, type RunningAzureEmulator, startAzureEmulator } from "../emulator/server.ts";
import { backupRoleActions } from "../../runtime/azure/role.ts";
import { usedActions } from "./role-map.ts";

export const KiB = 1024;
export const MiB = 1024 * 1024;
/** The vault's block size: incremental reads are the changed ranges rounded out to these blocks. */
export const BLOCK = 64 * KiB;

export interface AzureWorld {
  emulator: RunningAzureEmulator;
  /** The seeded sample world (throws when started with seed: false). */
  readonly sample: SampleWorld;
  /** A resource group that exists (the sample's, or an empty one) and its location. */
  group: string;
  location: string;
  /** The environment of every `bulwark` child process. */
  env: Record<string, string>;
  /** A scratch folder removed at the end. */
  dir: string;
  transient: ContainerClient;
  blobs: BlobServiceClient;
  /** The requests the emulator served while a `bulwark` command ran: the runtime's own calls. */
  cliRequests: LoggedRequest[];
  /** Runs the CLI; extra env on top of the world's. */
  cli(args: string[], env?: Record<string, string>): Promise<CliResult>;
  json<T = Record<string, any>>(args: string[], env?: Record<string, string>): Promise<T>;
  /** A new, empty local vault folder (initialised with the test passphrase unless told otherwise). */
  newVault(name: string, options?: { init?: boolean }): Promise<string>;
  stop(): Promise<void>;
}

export async function startWorld(options: AzureEmulatorOptions & { seed?: boolean } = {}): Promise<AzureWorld> {
  const emulator = await startAzureEmulator({ azurite: true, ...options });
  const seeded = options.seed === false ? undefined : await seedSampleWorld(emulator);
  const group = seeded?.resourceGroup ?? "bulwark-test";
  const location = seeded?.location ?? "westeurope";
  if (!seeded) emulator.world.addResourceGroup(group, location);
  const dir = trackFolder(await mkdtemp(path.join(os.tmpdir(), "bulwark-azure-")));
  const blobs = BlobServiceClient.fromConnectionString(emulator.env.AZURE_STORAGE_CONNECTION_STRING!);
  const transient = blobs.getContainerClient("transient");
  await transient.createIfNotExists();
  await blobs.getContainerClient("restores").createIfNotExists();
  const env: Record<string, string> = { ...emulator.env, BULWARK_TRANSIENT: transient.url };
  if (seeded) {
    env.BULWARK_SQL_ADMIN_LOGIN = seeded.sqlAdministratorLogin;
    env.BULWARK_SQL_ADMIN_PASSWORD = seeded.sqlAdministratorPassword;
  }
  const cliRequests: LoggedRequest[] = [];
  const recorded = async <T>(run: () => Promise<T>): Promise<T> => {
    const from = emulator.requestLog.length;
    try {
      return await run();
    } finally {
      cliRequests.push(...emulator.requestLog.slice(from));
    }
  };
  const cli = (args: string[], extra: Record<string, string> = {}) => recorded(() => runCli(args, { ...env, ...extra }));
  const json = <T = Record<string, any>>(args: string[], extra: Record<string, string> = {}) => recorded(() => runJson<T>(args, { ...env, ...extra }));
  return {
    emulator,
    get sample(): SampleWorld {
      if (!seeded) throw new Error("this world was started with seed: false");
      return seeded;
    },
    group,
    location,
    env,
    cliRequests,
    dir,
    transient,
    blobs,
    cli,
    json,
    async newVault(name, { init = true } = {}) {
      const vault = path.join(dir, name);
      if (init) await json(["init", "--vault", vault]);
      return vault;
    },
    async stop() {
      await emulator.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function diskIdIn(world: AzureWorld, group: string, name: string): string {
  return `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/disks/${name}`;
}

export function vmIdIn(world: AzureWorld, group: string, name: string): string {
  return `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Compute/virtualMachines/${name}`;
}

export function nicIdIn(world: AzureWorld, group: string, name: string): string {
  return `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${group}/providers/Microsoft.Network/networkInterfaces/${name}`;
}

export function databaseIdIn(world: AzureWorld, name: string): string {
  const s = world.sample;
  return `/subscriptions/${world.emulator.subscriptionId}/resourceGroups/${s.resourceGroup}/providers/Microsoft.Sql/servers/${s.sqlServerName}/databases/${name}`;
}

/** Restores a point to a local file through the CLI and returns its bytes. */
export async function restoreToFile(world: AzureWorld, vault: string, point: string, name: string, env: Record<string, string> = {}): Promise<Buffer> {
  const file = path.join(world.dir, name);
  await world.json(["restore", point, "--vault", vault, "--to", file], env);
  const bytes = await readFile(file);
  await rm(file, { force: true });
  return bytes;
}

export { pattern } from "../support/bytes.ts";

/** The bulwark snapshots (name contains -bulwark-) that exist now, per source disk. */
export function bulwarkSnapshots(world: AzureWorld): { id: string; sourceResourceId: string; provisioningState: string }[] {
  return world.emulator.control.inventory().snapshots.filter((s) => /-bulwark-/i.test(s.id));
}

export async function transientBlobs(world: AzureWorld): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of world.transient.listBlobsFlat()) names.push(blob.name);
  return names;
}

/**
 * Nothing left behind: exactly one golden snapshot for each disk in `goldenFor` (and none for other
 * disks), no active SAS grant, no long-running operation still going, no Bulwark copy database, an
 * empty transient container.
 */
export async function expectNothingLeaked(world: AzureWorld, goldenFor: string[]): Promise<void> {
  const inventory = world.emulator.control.inventory();
  const snapshots = bulwarkSnapshots(world);
  const bySource = new Map<string, number>();
  for (const s of snapshots) bySource.set(s.sourceResourceId.toLowerCase(), (bySource.get(s.sourceResourceId.toLowerCase()) ?? 0) + 1);
  expect(Object.fromEntries(bySource)).toEqual(Object.fromEntries(goldenFor.map((d) => [d.toLowerCase(), 1])));
  expect(snapshots.every((s) => s.provisioningState === "Succeeded")).toBe(true);
  expect(inventory.activeSasGrants).toEqual([]);
  expect(inventory.runningOperations).toBe(0);
  expect(inventory.databases.filter((d) => /-bulwark-/i.test(d.id))).toEqual([]);
  expect(await transientBlobs(world)).toEqual([]);
}

/** Every Azure call the CLI made in this world needs only actions the backup role declares. */
export function expectCallsAllowedByRole(world: AzureWorld): void {
  expect(world.cliRequests.length).toBeGreaterThan(0);
  const { actions, dataActions } = usedActions(world.cliRequests);
  const role = backupRoleActions();
  const declared = new Set(role.actions.map((a) => a.toLowerCase()));
  const declaredData = new Set(role.dataActions.map((a) => a.toLowerCase()));
  expect([...actions].filter((a) => !declared.has(a)).sort()).toEqual([]);
  expect([...dataActions].filter((a) => !declaredData.has(a)).sort()).toEqual([]);
}
