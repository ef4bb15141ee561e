/**
 * `npm run emulator`: starts Azurite and the Azure emulator on loopback in the foreground, seeds the
 * sample world, prints the environment (as `export NAME=value` lines) that points `bulwark` and the
 * Azure SDK clients at them, and runs until Ctrl-C.
 */
import { seedSampleWorld } from "./seed.ts";
import { startAzureEmulator } from "./server.ts";

const emulator = await startAzureEmulator({ azurite: true, lro: { retryAfterSeconds: 1, pollsBeforeDone: 1 } });
const sample = await seedSampleWorld(emulator);
const env: Record<string, string> = {
  ...emulator.env,
  AZURE_LOCATION: sample.location,
  BULWARK_RESOURCE_GROUP: sample.resourceGroup,
  BULWARK_SAMPLE_VM: sample.vmName,
  BULWARK_SQL_SERVER: sample.sqlServerName,
  BULWARK_SQL_DATABASE: sample.databaseName,
  BULWARK_SQL_ADMIN_LOGIN: sample.sqlAdministratorLogin,
  BULWARK_SQL_ADMIN_PASSWORD: sample.sqlAdministratorPassword,
  BULWARK_KEY_VAULT_URL: sample.keyVaultUrl,
  BULWARK_KEY_NAME: sample.keyName,
};
const quote = (value: string) => (/^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`);
process.stderr.write(
  `Azure emulator on ${emulator.armEndpoint} (tenant ${emulator.tenantId}, subscription ${emulator.subscriptionId});\n` +
    `sample VM ${sample.vmName} in ${sample.resourceGroup}, SQL ${sample.sqlServerName}/${sample.databaseName}, Key Vault ${sample.keyVaultUrl}.\n` +
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
