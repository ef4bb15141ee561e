/**
 * `npm start`: Bulwark end to end on embedded defaults, with no cloud account. It starts Azurite
 * and the local Azure emulator (a subscription with a sample VM and an Azure SQL database), then
 * drives the real `bulwark` command: a vault in (emulated) Blob storage, a VM backup, the VM's
 * disks changing, an incremental backup that reads only what changed, a database backup, a
 * restore as an alternate VM and of the database, a full verify, and a summary.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { seedSampleWorld } from "../../test/emulator/seed.ts";
import { startAzureEmulator } from "../../test/emulator/server.ts";

const CLI = new URL("../cli/main.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function bulwark(args: string[], env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  say(`  $ bulwark ${args.map((a) => (a.length > 90 ? `${a.slice(0, 40)}…${a.slice(-40)}` : a)).join(" ")}`);
  const child = spawn(process.execPath, [CLI, ...args, "--json"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  if (code !== 0) throw new Error(`bulwark ${args[0]} failed (exit ${code}): ${stderr.trim()}`);
  return JSON.parse(stdout) as Record<string, unknown>;
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

  say("\n1. A vault in the customer's isolated storage");
  await bulwark(["init", "--vault", vaultUrl], env);

  say("\n2. First backup of the VM: both disks snapshotted together, allocated ranges read");
  const first = await bulwark(["backup", sample.vmId, "--vault", vaultUrl, "--tag", "policy=demo"], env);
  const osBefore = emulator.control.readImage(sample.osDiskId);
  const dataBefore = emulator.control.readImage(sample.dataDiskId);

  say("\n3. The VM writes: 2 MiB of new data on its data disk");
  emulator.control.writeDisk(sample.dataDiskId, 8 * MiB, randomBytes(2 * MiB));
  const dataAfter = emulator.control.readImage(sample.dataDiskId);

  say("\n4. Incremental backup: only the changed page ranges are read");
  const second = await bulwark(["backup", sample.vmId, "--vault", vaultUrl, "--tag", "policy=demo"], env);

  say("\n5. Azure SQL: a consistent copy, exported as BACPAC through transient storage, deduplicated");
  const database = await bulwark(["backup", sample.databaseId, "--vault", vaultUrl], env);

  say("\n6. Restore the latest VM point as an alternate VM, and the database as a new one");
  const restoredVm = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${sample.resourceGroup}/providers/Microsoft.Compute/virtualMachines/${sample.vmName}-restored`;
  const nic = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${sample.resourceGroup}/providers/Microsoft.Network/networkInterfaces/${sample.vmName}-restored-nic`;
  const vmRestore = await bulwark(["restore", String(second.id), "--vault", vaultUrl, "--to", restoredVm, "--nic", nic], env);
  const restoredDb = sample.databaseId.replace(/databases\/[^/]+$/, `databases/${sample.databaseName}-restored`);
  await bulwark(["restore", String(database.id), "--vault", vaultUrl, "--to", restoredDb], env);

  const restoredDisks = (vmRestore.disks as string[]).map((id) => emulator.control.readImage(id));
  const osSame = restoredDisks.some((d) => d.equals(osBefore));
  const dataSame = restoredDisks.some((d) => d.equals(dataAfter));
  const rowsSame =
    JSON.stringify(emulator.control.databaseContent(restoredDb)) === JSON.stringify(emulator.control.databaseContent(sample.databaseId));

  say("\n7. Verify every object in the vault");
  const verify = await bulwark(["verify", "--vault", vaultUrl, "--read-data"], env);

  const inventory = emulator.control.inventory();
  const disks = second.disks as { disk: string; mode: string; bytesFetched: number; changedBytes: number }[];
  const firstDisks = first.disks as { disk: string; bytesFetched: number }[];
  say("\nSummary");
  say(`  VM backup 1 (first):        read ${(firstDisks.reduce((s, d) => s + d.bytesFetched, 0) / MiB).toFixed(1)} MiB of ${((osBefore.length + dataBefore.length) / MiB).toFixed(0)} MiB of disks, stored ${(Number(first.bytesStored) / MiB).toFixed(1)} MiB`);
  say(`  VM backup 2 (${disks.map((d) => d.mode).join("/")}): read ${(disks.reduce((s, d) => s + d.bytesFetched, 0) / MiB).toFixed(1)} MiB for ${(disks.reduce((s, d) => s + d.changedBytes, 0) / MiB).toFixed(1)} MiB changed, stored ${(Number(second.bytesStored) / MiB).toFixed(1)} MiB`);
  say(`  SQL backup:                 BACPAC of ${(Number(database.size) / 1024).toFixed(1)} KiB, stored ${(Number(database.bytesStored) / 1024).toFixed(1)} KiB`);
  say(`  alternate VM restored:      OS disk identical: ${osSame}, data disk identical: ${dataSame}`);
  say(`  database restored:          rows identical: ${rowsSame}`);
  say(`  verify --read-data:         ${verify.ok ? "no problems" : `${(verify.problems as string[]).length} problems`}`);
  say(`  left in the subscription:   ${inventory.snapshots.length} snapshots (one golden per disk), ${inventory.activeSasGrants.length} open SAS grants`);
  say(`  done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (!osSame || !dataSame || !rowsSame || !verify.ok) process.exitCode = 1;
} finally {
  await emulator.stop();
}
