/**
 * The http case (issue 13, "undici on the data path"): the storage SDK's pipeline, used exactly as
 * the product uses it, against an undici Pool with the same concurrency and keep-alive, on the
 * product's four data paths:
 *   - range-read: snapshot reads, 4 MiB aligned GETs over the snapshot's SAS, 8 in flight
 *     (runtime/sources/azure-disk.ts), against the local Azure emulator's managed-disk page blob;
 *   - page-write: restore to a managed disk, 4 MiB Put Page over the upload disk's write SAS,
 *     6 in flight (runtime/sources/azure-restore.ts, runtime/engine/restore.ts), same emulator;
 *   - pack-upload: 32 MiB packs as 8 MiB Put Block (4 at once) + Put Block List, 3 packs at once
 *     (runtime/store/azure-blob.ts createWriter, runtime/engine/vault-writer.ts), against Azurite;
 *   - pack-read: 8 MiB ranges of packs, 6 in flight (AzureBlobStore.getRange, runtime/engine/restore.ts),
 *     against Azurite.
 * Each trial runs in a process of its own (bench/http-trial.ts), so the CPU seconds are the
 * client's only; the emulator runs in this process and Azurite in its own. Clients take turns,
 * the order alternating each round; the report is the median of the rounds.
 */
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, platform, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ComputeManagementClient } from "@azure/arm-compute";
import { BlobServiceClient, ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from "@azure/storage-blob";
import { startAzureEmulator } from "../test/emulator/server.ts";
import type { RunningAzureEmulator } from "../test/emulator/server.ts";
import { AZURITE_ACCOUNT, AZURITE_KEY } from "../test/support/azurite.ts";
import { PACK_BYTES } from "./http-trial.ts";
import type { HttpClientName, HttpPath, TrialResult, TrialSpec } from "./http-trial.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TRIAL_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), "http-trial.ts");
export const HTTP_PATHS: HttpPath[] = ["range-read", "page-write", "pack-upload", "pack-read"];
const CLIENTS: HttpClientName[] = ["sdk", "undici"];
/** The page blobs' size: reads and writes cycle over it. */
const DISK_BYTES = 256 * MiB;
const PACKS_TO_READ = 8;
const CONTAINER = "httpbench";
/** "Clear margin" for keeping undici on a path: more than 15% in CPU/GiB or throughput. */
export const CLEAR_MARGIN = 0.15;

export interface HttpSettings {
  totalBytes: number;
  rounds: number;
  outPath: string;
  log: (line: string) => void;
}

export interface PathSummary {
  path: HttpPath;
  server: string;
  clients: Record<HttpClientName, { mibPerSecond: number; cpuSecondsPerGiB: number; rounds: TrialResult[] }>;
  /** undici's over the SDK's: throughput ratio, and CPU per GiB saved (1 - undici/sdk). */
  undiciThroughputRatio: number;
  undiciCpuSaving: number;
  verdict: string;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Runs one trial in a child process; its stdout's last line is the result. */
function runTrialProcess(spec: TrialSpec, env: Record<string, string>): Promise<TrialResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TRIAL_SCRIPT, JSON.stringify(spec)], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) return reject(new Error(`${spec.path} with ${spec.client} exited ${code}: ${stderr.trim().split("\n").slice(-6).join("\n")}`));
      resolve(JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as TrialResult);
    });
  });
}

/** A source disk full of random bytes with a read SAS, and an upload disk with a write SAS. */
async function emulatorDisks(emulator: RunningAzureEmulator): Promise<{ readSas: string; writeSas: string }> {
  const group = "httpbench";
  const location = "westeurope";
  emulator.world.addResourceGroup(group, location);
  const source = emulator.compute.createDisk(group, "source", DISK_BYTES);
  for (let offset = 0; offset < DISK_BYTES; offset += 4 * MiB) emulator.control.writeDisk(source.id, offset, randomBytes(4 * MiB));
  const arm = new ComputeManagementClient(emulator.credential(), emulator.subscriptionId, { endpoint: emulator.armEndpoint });
  const read = await arm.disks.beginGrantAccessAndWait(group, "source", { access: "Read", durationInSeconds: 4 * 3600 });
  // An upload disk is N MiB + the 512-byte VHD footer (as the restore path creates it).
  await arm.disks.beginCreateOrUpdateAndWait(group, "target", { location, creationData: { createOption: "Upload", uploadSizeBytes: DISK_BYTES + 512 } });
  const write = await arm.disks.beginGrantAccessAndWait(group, "target", { access: "Write", durationInSeconds: 4 * 3600 });
  if (!read.accessSAS || !write.accessSAS) throw new Error("the emulator granted no SAS");
  return { readSas: read.accessSAS, writeSas: write.accessSAS };
}

/** The container, packs to read, and a service SAS for the container (undici's authorization). */
async function azuriteContainer(connectionString: string, blobEndpoint: string): Promise<{ containerUrl: string; sas: string; packKeys: string[]; clear: () => Promise<void> }> {
  const container = BlobServiceClient.fromConnectionString(connectionString).getContainerClient(CONTAINER);
  await container.createIfNotExists();
  const packKeys: string[] = [];
  for (let n = 0; n < PACKS_TO_READ; n++) {
    const key = `read/pack-${n}`;
    await container.getBlockBlobClient(key).uploadData(randomBytes(PACK_BYTES));
    packKeys.push(key);
  }
  const sas = generateBlobSASQueryParameters(
    { containerName: CONTAINER, permissions: ContainerSASPermissions.parse("racwd"), startsOn: new Date(Date.now() - 5 * 60_000), expiresOn: new Date(Date.now() + 4 * 3600_000) },
    new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
  ).toString();
  // Uploaded packs are deleted after each trial, so Azurite's folder does not grow with the rounds.
  const clear = async () => {
    for await (const item of container.listBlobsFlat({ prefix: "packs/" })) await container.deleteBlob(item.name);
  };
  return { containerUrl: `${blobEndpoint}/${CONTAINER}`, sas, packKeys, clear };
}

function summarize(path: HttpPath, server: string, results: TrialResult[]): PathSummary {
  const of = (client: HttpClientName) => {
    const rounds = results.filter((r) => r.client === client);
    return {
      mibPerSecond: median(rounds.map((r) => r.bytes / MiB / r.seconds)),
      cpuSecondsPerGiB: median(rounds.map((r) => r.cpuSeconds / (r.bytes / GiB))),
      rounds,
    };
  };
  const clients = { sdk: of("sdk"), undici: of("undici") };
  const undiciThroughputRatio = clients.undici.mibPerSecond / clients.sdk.mibPerSecond;
  const undiciCpuSaving = 1 - clients.undici.cpuSecondsPerGiB / clients.sdk.cpuSecondsPerGiB;
  // A clear margin: the median beyond CLEAR_MARGIN and undici ahead in every round (a loaded machine's noise flips single rounds).
  const everyRound = (better: (sdk: TrialResult, undici: TrialResult) => boolean) => clients.sdk.rounds.every((sdk, i) => better(sdk, clients.undici.rounds[i]));
  const fasterEveryRound = everyRound((sdk, undici) => undici.bytes / undici.seconds > sdk.bytes / sdk.seconds);
  const cheaperEveryRound = everyRound((sdk, undici) => undici.cpuSeconds / undici.bytes < sdk.cpuSeconds / sdk.bytes);
  const wins = (undiciThroughputRatio > 1 + CLEAR_MARGIN && fasterEveryRound) || (undiciCpuSaving > CLEAR_MARGIN && cheaperEveryRound);
  const loses = undiciThroughputRatio < 1 && undiciCpuSaving < 0;
  const verdict = wins ? "undici wins by a clear margin" : loses ? "the SDK is faster" : "no clear margin: keep the SDK";
  return { path, server, clients, undiciThroughputRatio, undiciCpuSaving, verdict };
}

export function renderHttpTable(summaries: PathSummary[]): string {
  const header = ["path", "server", "SDK MiB/s", "undici MiB/s", "SDK CPU s/GiB", "undici CPU s/GiB", "undici/SDK throughput", "CPU saved", "verdict"];
  const rows = summaries.map((s) => [
    s.path,
    s.server,
    s.clients.sdk.mibPerSecond.toFixed(0),
    s.clients.undici.mibPerSecond.toFixed(0),
    s.clients.sdk.cpuSecondsPerGiB.toFixed(2),
    s.clients.undici.cpuSecondsPerGiB.toFixed(2),
    `${s.undiciThroughputRatio.toFixed(2)}x`,
    `${(100 * s.undiciCpuSaving).toFixed(0)}%`,
    s.verdict,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => (i >= 2 && i <= 7 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i >= 2 && i <= 7 ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

/** Runs every path with both clients for `rounds` rounds, prints the table, writes the results; false on a failure. */
export async function runHttpBench(settings: HttpSettings): Promise<boolean> {
  const { log } = settings;
  const emulator = await startAzureEmulator({ azurite: true });
  const loads: number[] = [];
  try {
    const azurite = emulator.azurite!;
    const { readSas, writeSas } = await emulatorDisks(emulator);
    const blobs = await azuriteContainer(azurite.connectionString, azurite.blobEndpoint);
    const env = { NODE_EXTRA_CA_CERTS: emulator.caPath };
    const specFor = (path: HttpPath, client: HttpClientName): TrialSpec => {
      const common = { path, client, blobBytes: DISK_BYTES, totalBytes: settings.totalBytes };
      if (path === "range-read") return { ...common, url: readSas };
      if (path === "page-write") return { ...common, url: writeSas };
      return { ...common, url: blobs.containerUrl, containerSas: blobs.sas, connectionString: azurite.connectionString, packKeys: blobs.packKeys };
    };
    const startedAt = new Date().toISOString();
    const results = new Map<HttpPath, TrialResult[]>(HTTP_PATHS.map((path) => [path, []]));
    for (let round = 0; round < settings.rounds; round++) {
      const order = round % 2 === 0 ? CLIENTS : [...CLIENTS].reverse();
      for (const path of HTTP_PATHS) {
        for (const client of order) {
          loads.push(loadavg()[0]);
          const result = await runTrialProcess(specFor(path, client), env);
          if (path === "pack-upload") await blobs.clear();
          results.get(path)!.push(result);
          log(
            `round ${round + 1}: ${path.padEnd(11)} ${client.padEnd(6)} ${(result.bytes / MiB / result.seconds).toFixed(0).padStart(5)} MiB/s, ` +
              `${(result.cpuSeconds / (result.bytes / GiB)).toFixed(2)} CPU s/GiB (${result.requests} requests, load ${loads.at(-1)!.toFixed(1)})`,
          );
        }
      }
    }
    const servers: Record<HttpPath, string> = {
      "range-read": "emulator page blob (https)",
      "page-write": "emulator page blob (https)",
      "pack-upload": "Azurite (http)",
      "pack-read": "Azurite (http)",
    };
    const summaries = HTTP_PATHS.map((path) => summarize(path, servers[path], results.get(path)!));
    const document = {
      benchmark: "bulwark-bench",
      runId: randomUUID(),
      case: "http",
      startedAt,
      finishedAt: new Date().toISOString(),
      machine: { nproc: cpus().length, cpuModel: cpus()[0]?.model, totalMemoryBytes: totalmem(), os: `${platform()} ${release()}`, node: process.versions.node },
      load: { min: Math.min(...loads), max: Math.max(...loads) },
      method: {
        bytesPerTrial: settings.totalBytes,
        rounds: settings.rounds,
        cpu: "user + system CPU seconds of the trial's own process (process.cpuUsage) over the measured requests, after one warm-up operation",
        throughput: "bytes moved / wall seconds of the measured requests",
        sdk:
          "@azure/storage-blob as the product uses (or, for packs, used) it: PageBlobClient over the SAS (anonymous credential pipeline, downloadToBuffer / uploadPages); " +
          "for packs a ContainerClient from the connection string (Shared Key) with STORAGE_PIPELINE, stageBlock + commitBlockList and downloadToBuffer, as AzureBlobStore did before undici",
        sameWork: "both clients get the same buffers and the same MD5 work; only the requests differ",
        undici: "undici Pool per origin, connections = the path's concurrency, keep-alive, service SAS in the query string",
        order: "per path, the clients alternate which goes first each round",
      },
      summaries,
    };
    await mkdir(dirname(settings.outPath), { recursive: true });
    await writeFile(settings.outPath, `${JSON.stringify(document, null, 2)}\n`);
    log("");
    log(`http results: median of ${settings.rounds} rounds of ${(settings.totalBytes / MiB).toFixed(0)} MiB per trial (${cpus().length} CPUs, load ${Math.min(...loads).toFixed(1)} to ${Math.max(...loads).toFixed(1)}):`);
    log(renderHttpTable(summaries));
    log(`\nresults written to ${settings.outPath}`);
    return true;
  } catch (error) {
    log(`FAILED: ${(error as Error).message}`);
    return false;
  } finally {
    await emulator.stop();
  }
}
