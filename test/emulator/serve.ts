/**
 * `npm run emulator`: starts Azurite and the Azure emulator on loopback in the foreground, seeds the
 * sample world, creates the transient container, prints the environment README's examples use (as
 * `export NAME=value` lines: environment.ts) that points `bulwark` and the Azure SDK clients at
 * them, and runs until Ctrl-C.
 */
import { exampleEnvironment } from "./environment.ts";
import { seedSampleWorld } from "./seed.ts";
import { startAzureEmulator } from "./server.ts";

const emulator = await startAzureEmulator({ azurite: true, lro: { retryAfterSeconds: 1, pollsBeforeDone: 1 } });
const sample = await seedSampleWorld(emulator);
const env = await exampleEnvironment(emulator, sample);
const quote = (value: string) => (/^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`);
process.stderr.write(
  `Azure emulator on ${emulator.armEndpoint} (tenant ${emulator.tenantId}, subscription ${emulator.subscriptionId});\n` +
    `sample VM ${sample.vmName} in ${sample.resourceGroup}, SQL ${sample.sqlServerName}/${sample.databaseName}, Key Vault ${sample.keyVaultUrl};\n` +
    `transient container (SQL exports) ${env.BULWARK_TRANSIENT}.\n` +
    `Paste the lines below into another shell (or eval them), then run bulwark there. Ctrl-C stops everything.\n`,
);
process.stdout.write(Object.entries(env).map(([name, value]) => `export ${name}=${quote(value)}`).join("\n") + "\n");

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  process.stderr.write("stopping the emulator and Azurite...\n");
  await emulator.stop();
  process.exit(0);
};
process.on("SIGINT", () => void shutdown());
process.on("SIGTERM", () => void shutdown());
setInterval(() => {}, 1 << 30);
