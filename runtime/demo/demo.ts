/**
 * `npm start`: the whole system in miniature, on embedded defaults, with no cloud account. It
 * starts Azurite and the local Azure emulator (a subscription with a sample VM and an Azure SQL
 * database), writes a backup policy, and drives the real `bulwark` command: a vault in (emulated)
 * isolated Blob storage, one scheduler tick that enqueues the due items on the region's queue, two
 * queue-triggered workers that run the backups as persisted state machines (staging in transient
 * storage, promotion into the vault), the VM's disk changing and an incremental backup that reads
 * only what changed, restores as an alternate VM and as a new database, a full verify, the job
 * list and item status, and a summary that checks the restored bytes and rows; then the web console
 * over all of it (its URL printed; kept up until Ctrl-C when run on a terminal).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { seedSampleWorld } from "../../test/emulator/seed.ts";
import { startAzureEmulator } from "../../test/emulator/server.ts";
import { consoleSettings, startConsole } from "../console/command.ts";
import { FleetStorage, openFleet, systemClock } from "../jobs/index.ts";
import { loadPolicies } from "../policy/policy.ts";

const CLI = new URL("../cli/main.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** An argument as a shell takes it: quoted when it holds anything but plain characters. */
function shellWord(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs the real command, then shows it as a person would type it (full ids, nothing cut, so it can
 * be pasted) with what it printed indented under it.
 */
async function bulwark(args: string[], env: NodeJS.ProcessEnv, show: (stdout: string) => string = (stdout) => stdout): Promise<string> {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  say(`  $ bulwark ${args.map(shellWord).join(" ")}`);
  const shown = show(stdout).trimEnd();
  if (shown) say(shown.split("\n").map((line) => `      ${line}`).join("\n"));
  if (code !== 0) throw new Error(`bulwark ${args[0]} failed (exit ${code}): ${stderr.trim()}`);
  return stdout;
}

/** The same with --json, for what the demo checks; the JSON is shown laid out. */
async function bulwarkJson<T = Record<string, unknown>>(args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  return JSON.parse(await bulwark([...args, "--json"], env, (stdout) => JSON.stringify(JSON.parse(stdout), null, 2))) as T;
}

/** An agent's output without its JSON log lines (kept for the Container Apps log, not for a person). */
function withoutLogLines(stdout: string): string {
  const lines = stdout.split("\n");
  const logLines = lines.filter((line) => line.startsWith("{"));
  return [...lines.filter((line) => line !== "" && !line.startsWith("{")), `(and ${logLines.length} JSON log lines)`].join("\n");
}

const started = Date.now();
say("Bulwark demo: starting Azurite and the local Azure emulator...");
const emulator = await startAzureEmulator({ azurite: true });
try {
  const sample = await seedSampleWorld(emulator);
  const azurite = emulator.azurite!;
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  await service.getContainerClient("isolated").createIfNotExists();
  await service.getContainerClient("transient").createIfNotExists();
  const vaultUrl = `${azurite.blobEndpoint}/isolated/demo-customer`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...emulator.env,
    // A demo passphrase, generated for this run only and never written anywhere.
    BULWARK_PASSPHRASE: `demo ${randomBytes(12).toString("base64")}`,
    BULWARK_TRANSIENT: `${azurite.blobEndpoint}/transient`,
    BULWARK_SQL_ADMIN_LOGIN: sample.sqlAdministratorLogin,
    BULWARK_SQL_ADMIN_PASSWORD: sample.sqlAdministratorPassword,
  };
  say(`\nSubscription ${emulator.subscriptionId}: VM ${sample.vmName} (OS + data disk), SQL ${sample.sqlServerName}/${sample.databaseName}`);

  const folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-demo-"));
  const policyFile = path.join(folder, "demo-policy.yaml");
  await writeFile(
    policyFile,
    [
      "name: demo",
      `vault: ${vaultUrl}`,
      "protect:",
      "  resources:",
      `    - ${sample.vmId}`,
      `    - ${sample.databaseId}`,
      "schedule:",
      "  every: 4h",
      "retention:",
      "  last: 7",
      "  daily: 14",
      "",
    ].join("\n"),
  );

  say("Each command below runs in the environment `npm run emulator` prints, with BULWARK_PASSPHRASE set to this run's passphrase.");
  say("\n1. A vault in the customer's isolated storage");
  await bulwark(["init", "--vault", vaultUrl], env);

  say(`\n2. The scheduler's tick: policy "demo" protects the VM and the database, both due`);
  await bulwark(["agent", "schedule", "--policies", policyFile, "--agent-regions", sample.location], env, withoutLogLines);

  say("\n3. Two workers take the jobs off the queue and run them as state machines");
  say("   (snapshot/copy -> stage in transient storage -> verify -> promote into the vault -> commit -> release)");
  const workerLines = await Promise.all([1, 2].map(() => bulwark(["agent", "worker", "--region", sample.location, "--policies", policyFile], env, withoutLogLines)));
  const workers = workerLines.map((line) => {
    const counts = /(\d+) succeeded, (\d+) failed/.exec(line);
    return { succeeded: Number(counts?.[1] ?? 0), failed: counts ? Number(counts[2]) : 1 };
  });
  await bulwark(["points", "--vault", vaultUrl], env);
  const osBefore = emulator.control.readImage(sample.osDiskId);

  say("\n4. The VM writes 2 MiB on its data disk; an on-demand backup reads only the changed ranges");
  emulator.control.writeDisk(sample.dataDiskId, 8 * MiB, randomBytes(2 * MiB));
  const dataAfter = emulator.control.readImage(sample.dataDiskId);
  const second = await bulwarkJson(["backup", sample.vmId, "--vault", vaultUrl, "--tag", "policy=demo"], env);

  say("\n5. Restore the VM point just made as an alternate VM, and the database's latest point as a new database");
  const restoredVm = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${sample.resourceGroup}/providers/Microsoft.Compute/virtualMachines/${sample.vmName}-restored`;
  const nic = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${sample.resourceGroup}/providers/Microsoft.Network/networkInterfaces/${sample.vmName}-restored-nic`;
  const vmRestore = await bulwarkJson(["restore", String(second.id), "--vault", vaultUrl, "--to", restoredVm, "--nic", nic], env);
  const restoredDb = sample.databaseId.replace(/databases\/[^/]+$/, `databases/${sample.databaseName}-restored`);
  await bulwark(["restore", "latest", "--source", sample.databaseId, "--vault", vaultUrl, "--to", restoredDb], env);

  const restoredDisks = (vmRestore.disks as string[]).map((id) => emulator.control.readImage(id));
  const osSame = restoredDisks.some((d) => d.equals(osBefore));
  const dataSame = restoredDisks.some((d) => d.equals(dataAfter));
  const rowsSame = JSON.stringify(emulator.control.databaseContent(restoredDb)) === JSON.stringify(emulator.control.databaseContent(sample.databaseId));

  say("\n6. Verify every object in the vault (a problem exits 5 and stops the demo); the jobs and the protected items");
  await bulwark(["verify", "--vault", vaultUrl, "--read-data"], env);
  await bulwark(["jobs"], env);
  // The same words as `bulwark status`: ok, at risk, missed, never.
  await bulwark(["status", "--policies", policyFile], env);
  const demoPolicies = await loadPolicies([policyFile]);
  await rm(folder, { recursive: true, force: true });

  const inventory = emulator.control.inventory();
  const disks = second.disks as { disk: string; mode: string; bytesFetched: number; changedBytes: number }[];
  say("\nSummary");
  say(`  scheduled tick + 2 workers: ${workers.reduce((s, w) => s + w.succeeded, 0)} jobs succeeded (VM and database), ${workers.reduce((s, w) => s + w.failed, 0)} failed`);
  say(`  on-demand VM backup (${disks.map((d) => d.mode).join("/")}): read ${(disks.reduce((s, d) => s + d.bytesFetched, 0) / MiB).toFixed(1)} MiB for ${(disks.reduce((s, d) => s + d.changedBytes, 0) / MiB).toFixed(1)} MiB changed, stored ${(Number(second.bytesStored) / MiB).toFixed(1)} MiB`);
  say(`  alternate VM restored:      OS disk identical: ${osSame}, data disk identical: ${dataSame}`);
  say(`  database restored:          rows identical: ${rowsSame}`);
  say("  verify --read-data:         no problems");
  say(`  left in the subscription:   ${inventory.snapshots.length} snapshots (one golden per disk), ${inventory.activeSasGrants.length} open SAS grants`);
  const transientLeft = await (async () => {
    let n = 0;
    for await (const _ of service.getContainerClient("transient").listBlobsFlat()) n++;
    return n;
  })();
  say(`  transient storage left:     ${transientLeft} objects (staging is cleaned up)`);
  say(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (!osSame || !dataSame || !rowsSame || workers.some((w) => w.failed > 0)) process.exitCode = 1;
  say("\nWhat to try next");
  say("  npm run emulator                        Azurite and the emulator in the foreground: paste the export lines it prints into another shell");
  say('  README.md, "First steps"                a first backup, listing, diff and restore of your own folder, then the sample VM and database');
  say("  npx bulwark help [COMMAND]              every command, and a command's options");
  say("  source <(npx bulwark completion bash)   completion of commands and options in bash");

  // The operator's view of what the demo made: kept up until Ctrl-C on a terminal, closed at once otherwise.
  const fleet = await openFleet(new FleetStorage({ connectionString: azurite.connectionString }), systemClock);
  const consoleServer = await startConsole({ fleet, policies: demoPolicies, settings: consoleSettings({}), env });
  say(`\nThe console: ${consoleServer.entryUrl}`);
  if (process.stdout.isTTY) {
    say("  open it in a browser; Ctrl-C stops the console, Azurite and the emulator");
    await new Promise((resolve) => process.once("SIGINT", resolve));
  }
  await consoleServer.close();
} finally {
  await emulator.stop();
}
