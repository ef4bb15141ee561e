/**
 * What the fleet suites share: one local Azure emulator with its own Azurite (fleet tables and
 * queues, the vault, one transient container per region), the environment that points the real
 * `bulwark` CLI (and the agents) at them, helpers to start `bulwark agent worker` processes and to
 * read the fleet's records in-process, and the checks that nothing was left behind.
 */
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, expect } from "vitest";
import { systemClock, type Clock } from "../../runtime/jobs/clock.ts";
import { FleetStorage } from "../../runtime/jobs/storage.ts";
import { openFleet, type Fleet } from "../../runtime/jobs/submit.ts";
import { CodecPool } from "../../runtime/engine/codec-pool.ts";
import type { PointManifest } from "../../runtime/engine/point.ts";
import { restoreContent } from "../../runtime/engine/restore.ts";
import { Vault } from "../../runtime/engine/vault.ts";
import { PassphraseProvider } from "../../runtime/keys/passphrase.ts";
import { openStore } from "../../runtime/store/open.ts";
import type { DiskRecord } from "../emulator/arm/compute.ts";
import { type AzureEmulatorOptions, type RunningAzureEmulator, startAzureEmulator } from "../emulator/server.ts";
import { pattern } from "../support/bytes.ts";
import { initVaultInProcess } from "../cli/vaults.ts";
import { trackChild, trackFolder } from "../support/cleanup.ts";
import { PASSPHRASE, runCli, runJson, startCli, type CliResult } from "../support/cli.ts";

export const KiB = 1024;
export const MiB = 1024 * 1024;

export interface FleetWorld {
  emulator: RunningAzureEmulator;
  /** The environment of every `bulwark` child process (fleet storage, Azure, vault key, short leases). */
  env: Record<string, string>;
  dir: string;
  blobs: BlobServiceClient;
  /** The vault: a container in Azurite, initialised with the test passphrase. */
  vault: string;
  vaultContainer: ContainerClient;
  /** The fleet's table and queue prefix. */
  prefix: string;
  transient(region: string): ContainerClient;
  /** The environment of a worker of `region` (its transient container). */
  workerEnv(region: string): Record<string, string>;
  cli(args: string[], env?: Record<string, string>): Promise<CliResult>;
  json<T = any>(args: string[], env?: Record<string, string>): Promise<T>;
  /** The fleet's stores, in this process (for assertions and submitting jobs). */
  fleet(clock?: Clock): Promise<Fleet>;
  /** Starts `bulwark agent worker --region R --until-drained`. */
  worker(region: string, env?: Record<string, string>): WorkerProcess;
  /** Writes a policy file and returns its path. */
  policy(name: string, yaml: string): Promise<string>;
  stop(): Promise<void>;
}

export interface WorkerProcess {
  child: ChildProcess;
  /** The JSON lines it printed (stdout and stderr). */
  lines: Record<string, any>[];
  /** Resolves with the exit code (null when killed) once it exited. */
  exited: Promise<{ code: number | null; stderr: string }>;
  waitFor(predicate: (lines: Record<string, any>[]) => boolean, timeoutMs: number): Promise<void>;
  /** The summary it printed last (`--json`), after it exited. */
  summary(): Promise<Record<string, any>>;
}

export const REGIONS = ["westeurope", "northeurope"] as const;

export async function startFleetWorld(options: AzureEmulatorOptions = {}): Promise<FleetWorld> {
  const emulator = await startAzureEmulator({ azurite: true, ...options });
  const dir = trackFolder(await mkdtemp(path.join(os.tmpdir(), "bulwark-fleet-")));
  const connectionString = emulator.env.AZURE_STORAGE_CONNECTION_STRING!;
  const blobs = BlobServiceClient.fromConnectionString(connectionString);
  const transients = new Map<string, ContainerClient>();
  for (const region of [...REGIONS, "eastus"]) {
    const container = blobs.getContainerClient(`transient-${region}`);
    await container.createIfNotExists();
    transients.set(region, container);
  }
  const vaultContainer = blobs.getContainerClient("vault");
  const prefix = `f${randomBytes(4).toString("hex")}`;
  const policyFiles: string[] = [];
  const env: Record<string, string> = {
    ...emulator.env,
    BULWARK_PASSPHRASE: PASSPHRASE,
    BULWARK_FLEET_PREFIX: prefix,
    BULWARK_LEASE_MS: "3000",
    BULWARK_RETRY_DELAY_MS: "500",
  };
  const world: FleetWorld = {
    emulator,
    env,
    dir,
    blobs,
    vault: vaultContainer.url,
    vaultContainer,
    prefix,
    transient: (region) => transients.get(region)!,
    workerEnv: (region) => ({ ...env, BULWARK_TRANSIENT: transients.get(region)!.url }),
    cli: (args, extra = {}) => runCli(args, { ...env, ...extra }),
    json: (args, extra = {}) => runJson(args, { ...env, ...extra }),
    fleet: (clock = systemClock) => openFleet(new FleetStorage({ connectionString }, { prefix }), clock),
    // A worker takes what its jobs may touch from the scheduler's policies: every policy file written so far.
    worker: (region, extra = {}) =>
      spawnWorker(["agent", "worker", "--region", region, "--until-drained", "--json"], { ...world.workerEnv(region), BULWARK_POLICIES: policyFiles.join(","), ...extra }),
    async policy(name, yaml) {
      const file = path.join(dir, `${name}.yaml`);
      await writeFile(file, yaml);
      if (!policyFiles.includes(file)) policyFiles.push(file);
      return file;
    },
    async stop() {
      await codecPools.get(world)?.close();
      await emulator.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  // Made in this process (no CLI start): the fleet suites are about the agents, not `bulwark init`.
  await initVaultInProcess({ env: { AZURE_STORAGE_CONNECTION_STRING: connectionString } }, world.vault);
  return world;
}

/** Worker processes started through watchProcess that have not exited yet. */
const liveWorkers = new Set<ChildProcess>();

/** A process that logs JSON lines (a worker): its lines, its exit, and waiting for a line. */
export function watchProcess(child: ChildProcess): WorkerProcess {
  trackChild(child); // killed after the test even when it fails before stopping it
  if (child.exitCode === null && child.signalCode === null) {
    liveWorkers.add(child);
    child.once("exit", () => liveWorkers.delete(child));
  }
  // With --json the agent prints its summary on stdout and its JSON log lines on stderr; `lines` has both.
  const lines: Record<string, any>[] = [];
  const output: Record<string, any>[] = [];
  const listeners = new Set<() => void>();
  let stderr = "";
  const parse = (line: string) => {
    try {
      return JSON.parse(line);
    } catch {
      return { raw: line };
    }
  };
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const parsed = parse(line);
    output.push(parsed);
    lines.push(parsed);
    for (const listener of listeners) listener();
  });
  createInterface({ input: child.stderr! }).on("line", (line) => {
    const parsed = parse(line);
    if (parsed.raw !== undefined) stderr += `${line}\n`;
    lines.push(parsed);
    for (const listener of listeners) listener();
  });
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once("close", (code) => resolve({ code, stderr })));
  return {
    child,
    lines,
    exited,
    waitFor: (predicate, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        if (predicate(lines)) return resolve();
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`the process did not get there in ${timeoutMs} ms; it logged ${JSON.stringify(lines.slice(-5))} ${stderr}`));
        }, timeoutMs);
        function check() {
          if (predicate(lines)) {
            clearTimeout(timer);
            listeners.delete(check);
            resolve();
          }
        }
        listeners.add(check);
        void exited.then(() => {
          check();
          if (listeners.has(check)) {
            clearTimeout(timer);
            listeners.delete(check);
            reject(new Error(`the process exited first; it logged ${JSON.stringify(lines.slice(-5))} ${stderr}`));
          }
        });
      }),
    async summary() {
      const { code, stderr: err } = await exited;
      if (code !== 0) throw new Error(`the worker exited ${code}: ${err} ${JSON.stringify(lines.slice(-5))}`);
      const last = output.at(-1);
      if (!last || typeof last.workerId !== "string") throw new Error(`no summary: ${JSON.stringify(output.slice(-3))} ${err}`);
      return last;
    },
  };
}

function spawnWorker(args: string[], env: Record<string, string>): WorkerProcess {
  return watchProcess(startCli(args, env));
}

/** A disk of `sizeBytes` in `group`, at `location`, with `tags`, some of it written. */
export function makeDisk(world: FleetWorld, group: string, name: string, sizeBytes: number, options: { location?: string; tags?: Record<string, string>; seed?: number } = {}): DiskRecord {
  if (!world.emulator.world.resourceGroup(group)) world.emulator.world.addResourceGroup(group, options.location ?? "westeurope");
  const disk = world.emulator.compute.createDisk(group, name, sizeBytes, { location: options.location });
  if (options.tags) disk.tags = options.tags;
  const seed = options.seed ?? name.length;
  // A quarter of the disk written in 64 KiB pieces, the rest never touched.
  for (let offset = 0; offset < sizeBytes; offset += 256 * KiB) world.emulator.control.writeDisk(disk.id, offset, pattern(seed * 1000 + offset / KiB, 64 * KiB));
  return disk;
}

export { pattern } from "../support/bytes.ts";

/** Restores a point to a local file through the CLI and returns its bytes. */
export async function restoreToFile(world: FleetWorld, point: string): Promise<Buffer> {
  const file = path.join(world.dir, `restore-${point}-${randomBytes(3).toString("hex")}`);
  await world.json(["restore", point, "--vault", world.vault, "--to", file]);
  const bytes = await readFile(file);
  await rm(file, { force: true });
  return bytes;
}

const openedVaults = new WeakMap<FleetWorld, Promise<Vault>>();

/** The vault, opened once per world in this process (the passphrase KDF is slow); its index reloaded. */
export async function openVault(world: FleetWorld): Promise<Vault> {
  let opened = openedVaults.get(world);
  if (!opened) {
    opened = openStore(world.vault, { AZURE_STORAGE_CONNECTION_STRING: world.env.AZURE_STORAGE_CONNECTION_STRING }).then((o) =>
      Vault.open(o.store, new PassphraseProvider(PASSPHRASE)),
    );
    openedVaults.set(world, opened);
  }
  const vault = await opened;
  await vault.reloadIndex();
  return vault;
}

/** Every point manifest in the vault, read in this process (details and stats included), oldest first. */
export async function vaultManifests(world: FleetWorld): Promise<PointManifest[]> {
  return (await openVault(world)).listPoints();
}

/** One codec thread per world for the restores made in this process (a thread's start costs more than a small restore); closed by stop(). */
const codecPools = new WeakMap<FleetWorld, CodecPool>();

/** A point's content restored in this process (the CLI's restore is the same engine call, and slow to start). */
export async function restoreBytes(world: FleetWorld, pointId: string): Promise<Buffer> {
  const vault = await openVault(world);
  const point = await vault.readPoint(pointId);
  const out = Buffer.alloc(point.size);
  let pool = codecPools.get(world);
  if (!pool) {
    pool = new CodecPool(vault.master, { threads: 1 });
    codecPools.set(world, pool);
  }
  await restoreContent(vault, pool, point, {
    needsZeros: true,
    write: async (offset, data) => {
      data.copy(out, offset);
    },
  });
  return out;
}

export async function blobNames(container: ContainerClient): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of container.listBlobsFlat()) names.push(blob.name);
  return names;
}

/** The vault verifies, reading every pack. */
export async function expectVaultVerifies(world: FleetWorld): Promise<Record<string, any>> {
  const result = await world.cli(["verify", "--vault", world.vault, "--read-data", "--json"]);
  expect(result.stderr).toBe("");
  const report = JSON.parse(result.stdout);
  expect(report.problems).toEqual([]);
  expect(result.code).toBe(0);
  return report;
}

/**
 * Nothing left behind: exactly one golden snapshot for each disk in `goldenFor` (none for other
 * disks), no active SAS grant, no running operation, no Bulwark copy database, empty transient containers.
 */
export async function expectNothingLeaked(world: FleetWorld, goldenFor: string[]): Promise<void> {
  // No worker process of this test still running (it would still be working on the emulator).
  expect([...liveWorkers].map((c) => `${c.pid} ${c.spawnargs.slice(1).join(" ")}`), "worker processes still running").toEqual([]);
  const inventory = world.emulator.control.inventory();
  // No long-running operation (snapshot, grant, revoke, copy, export, delete) still in progress.
  expect(inventory.runningOperations, "long-running operations in progress").toBe(0);
  const snapshots = inventory.snapshots.filter((s) => /-bulwark-/i.test(s.id));
  const bySource = new Map<string, number>();
  for (const s of snapshots) bySource.set(s.sourceResourceId.toLowerCase(), (bySource.get(s.sourceResourceId.toLowerCase()) ?? 0) + 1);
  expect(Object.fromEntries(bySource)).toEqual(Object.fromEntries(goldenFor.map((d) => [d.toLowerCase(), 1])));
  expect(snapshots.every((s) => s.provisioningState === "Succeeded")).toBe(true);
  expect(inventory.activeSasGrants).toEqual([]);
  expect(inventory.databases.filter((d) => /-bulwark-/i.test(d.id))).toEqual([]);
  for (const region of [...REGIONS, "eastus"]) expect({ region, blobs: await blobNames(world.transient(region)) }).toEqual({ region, blobs: [] });
}

/**
 * Moves every item's last good run back by `ms`, as if that much time had passed since the last
 * tick (the CLI agents run on the system clock; the fleet's records are what "time passed" changes).
 */
export async function ageItems(world: FleetWorld, ms: number): Promise<void> {
  const fleet = await world.fleet();
  for await (const item of fleet.items.list()) {
    if (!item.lastGoodAt) continue;
    await fleet.items.update(
      item.itemId,
      () => item,
      (current) => ({ ...current, lastGoodAt: current.lastGoodAt - ms }),
    );
  }
}

/**
 * Points this process's Azure credential environment at the world, as an agent's is: an in-process
 * worker's credential reads it. Returns what puts the environment back.
 */
export function adoptWorldCredentials(world: FleetWorld): () => void {
  const saved: Record<string, string | undefined> = {};
  for (const name of ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"]) {
    saved[name] = process.env[name];
    process.env[name] = world.env[name];
  }
  return () => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}

/**
 * One fleet world for a test file: started before its tests with the world's Azure credentials
 * adopted (adoptWorldCredentials), stopped after them. Returns the world's getter.
 */
export function fleetWorldForFile(options: AzureEmulatorOptions = {}): () => FleetWorld {
  let world: FleetWorld | undefined;
  let restoreEnvironment: (() => void) | undefined;
  beforeAll(async () => {
    world = await startFleetWorld(options);
    restoreEnvironment = adoptWorldCredentials(world);
  }, 60_000);
  afterAll(async () => {
    restoreEnvironment?.();
    await world?.stop();
  });
  return () => {
    if (!world) throw new Error("the fleet world is not started yet: call the getter inside a test");
    return world;
  };
}
