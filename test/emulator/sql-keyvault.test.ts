import { SqlManagementClient } from "@azure/arm-sql";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { BlobServiceClient, ContainerSASPermissions } from "@azure/storage-blob";
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SampleWorld, seedSampleWorld } from "./seed.ts";
import { type RunningAzureEmulator, startAzureEmulator } from "./server.ts";

let emulator: RunningAzureEmulator;
let sample: SampleWorld;
let sql: SqlManagementClient;
const kvOptions = { disableChallengeResourceVerification: true };

beforeAll(async () => {
  emulator = await startAzureEmulator({ azurite: true });
  sample = await seedSampleWorld(emulator);
  sql = new SqlManagementClient(emulator.credential(), emulator.subscriptionId, { endpoint: emulator.armEndpoint });
});

afterAll(async () => {
  await emulator?.stop();
});

async function transientSas(): Promise<{ containerUrl: string; token: string }> {
  const container = BlobServiceClient.fromConnectionString(emulator.env.AZURE_STORAGE_CONNECTION_STRING!).getContainerClient("transient");
  await container.createIfNotExists();
  const url = await container.generateSasUrl({ permissions: ContainerSASPermissions.parse("rcw"), expiresOn: new Date(Date.now() + 3600_000) });
  return { containerUrl: container.url, token: new URL(url).search.slice(1) };
}

describe("Azure SQL", () => {
  it("copies, exports to a BACPAC in blob storage and imports it back with the rows of copy time", async () => {
    const { resourceGroup: rg, sqlServerName: server, databaseName } = sample;
    const before = emulator.control.databaseContent(sample.databaseId);
    const copy = await sql.databases.beginCreateOrUpdateAndWait(rg, server, "orders-copy", {
      location: sample.location, createMode: "Copy", sourceDatabaseId: sample.databaseId,
    });
    expect(copy.status).toBe("Online");
    // Changes after the copy do not reach it.
    emulator.control.setTableRows(sample.databaseId, "customers", [{ id: 999, name: "Late", country: "NL" }]);

    const { containerUrl, token } = await transientSas();
    const admin = { administratorLogin: sample.sqlAdministratorLogin, administratorLoginPassword: sample.sqlAdministratorPassword };
    const exported = await sql.databases.beginExportAndWait(rg, server, "orders-copy", {
      storageKeyType: "SharedAccessKey", storageKey: `?${token}`, storageUri: `${containerUrl}/orders.bacpac`, ...admin,
    });
    expect(exported.requestType).toBe("Export");
    expect(exported.status).toBe("Completed");
    const blob = BlobServiceClient.fromConnectionString(emulator.env.AZURE_STORAGE_CONNECTION_STRING!).getContainerClient("transient").getBlobClient("orders.bacpac");
    const file = await blob.downloadToBuffer();
    expect(file.subarray(0, 4).toString("latin1")).toBe("PK\u0003\u0004");
    expect(file.includes(Buffer.from("model.xml"))).toBe(true);

    await sql.servers.beginImportDatabaseAndWait(rg, server, {
      databaseName: "orders-restored", storageKeyType: "SharedAccessKey", storageKey: `?${token}`, storageUri: `${containerUrl}/orders.bacpac`, ...admin,
    });
    const restored = await sql.databases.get(rg, server, "orders-restored");
    expect(restored.status).toBe("Online");
    expect(emulator.control.databaseContent(restored.id!)).toEqual(before);

    await expect(sql.servers.beginImportDatabaseAndWait(rg, server, {
      databaseName: "orders-restored", storageKeyType: "SharedAccessKey", storageKey: `?${token}`, storageUri: `${containerUrl}/orders.bacpac`, ...admin,
    })).rejects.toMatchObject({ statusCode: 409 });
    await expect(sql.databases.beginExportAndWait(rg, server, databaseName, {
      storageKeyType: "SharedAccessKey", storageKey: `?${token}`, storageUri: `${containerUrl}/x.bacpac`, administratorLogin: "admin", administratorLoginPassword: "wrong",
    })).rejects.toMatchObject({ statusCode: 400 });

    await sql.databases.beginDeleteAndWait(rg, server, "orders-copy");
    await sql.databases.beginDeleteAndWait(rg, server, "orders-restored");
    const names: string[] = [];
    for await (const database of sql.databases.listByServer(rg, server)) names.push(database.name!);
    expect(names).toEqual(["orders"]);
  });

  it("fails an export whose SAS cannot write, and a copy that fails midway leaves no database", async () => {
    const { containerUrl } = await transientSas();
    const admin = { administratorLogin: sample.sqlAdministratorLogin, administratorLoginPassword: sample.sqlAdministratorPassword };
    await expect(sql.databases.beginExportAndWait(sample.resourceGroup, sample.sqlServerName, sample.databaseName, {
      storageKeyType: "SharedAccessKey", storageKey: "?sv=2020-02-10&sig=bogus", storageUri: `${containerUrl}/denied.bacpac`, ...admin,
    })).rejects.toThrow(/could not be written/);
    emulator.control.failOperation({ method: "PUT", path: "/databases/copy-fails", times: 1 });
    await expect(sql.databases.beginCreateOrUpdateAndWait(sample.resourceGroup, sample.sqlServerName, "copy-fails", {
      location: sample.location, createMode: "Copy", sourceDatabaseId: sample.databaseId,
    })).rejects.toThrow(/failed midway/);
    expect(emulator.control.inventory().databases.map((d) => d.id)).not.toContain(`${sample.databaseId.replace(/orders$/, "copy-fails")}`);
  });
});

describe("Key Vault keys", () => {
  it("wraps and unwraps with RSA-OAEP-256, and a rotated key still unwraps with the old version", async () => {
    const keys = new KeyClient(sample.keyVaultUrl, emulator.credential(), kvOptions);
    const key = await keys.getKey(sample.keyName);
    expect(key.keyType).toBe("RSA");
    const dataKey = Buffer.from(crypto.getRandomValues(new Uint8Array(32)));
    const oldCrypto = new CryptographyClient(key.id!, emulator.credential(), kvOptions);
    const wrapped = await oldCrypto.wrapKey("RSA-OAEP-256", dataKey);
    expect(wrapped.keyID).toBe(key.id);
    expect(Buffer.from(wrapped.result).equals(dataKey)).toBe(false);

    const rotated = await keys.rotateKey(sample.keyName);
    expect(rotated.properties.version).not.toBe(key.properties.version);
    expect((await keys.getKey(sample.keyName)).id).toBe(rotated.id);

    const unwrapped = await new CryptographyClient(key.id!, emulator.credential(), kvOptions).unwrapKey("RSA-OAEP-256", wrapped.result);
    expect(Buffer.from(unwrapped.result).equals(dataKey)).toBe(true);
    // The new version cannot open what the old one wrapped.
    await expect(new CryptographyClient(rotated.id!, emulator.credential(), kvOptions).unwrapKey("RSA-OAEP-256", wrapped.result)).rejects.toMatchObject({ statusCode: 400 });

    const created = await keys.createRsaKey("another", { keySize: 2048 });
    expect(created.name).toBe("another");
    await expect(keys.getKey("missing")).rejects.toMatchObject({ statusCode: 404, code: "KeyNotFound" });
  });

  it("answers an unauthenticated request with the bearer challenge", async () => {
    const response = await fetch(`${sample.keyVaultUrl}/keys/${sample.keyName}?api-version=7.5`);
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate")).toContain(`authorization="${emulator.authorityHost}/${emulator.tenantId}"`);
    expect(response.headers.get("www-authenticate")).toContain('resource="https://vault.azure.net"');
  });
});

describe("the sample world and its environment", () => {
  it("holds a VM whose disks carry real content, and its env works in a child process", async () => {
    const os = emulator.control.readImage(sample.osDiskId);
    expect(os.length).toBe(64 * 1024 * 1024);
    expect(os.some((b) => b !== 0)).toBe(true);
    const data = emulator.control.readImage(sample.dataDiskId);
    expect(data.length).toBe(32 * 1024 * 1024);
    expect(data.some((b) => b !== 0)).toBe(true);

    // A child process trusts the emulator through NODE_EXTRA_CA_CERTS and signs in from the env alone.
    const script = path.join(import.meta.dirname, "fixtures", "list-vms.ts");
    const { stdout } = await promisify(execFile)(process.execPath, [script], {
      env: { ...process.env, ...emulator.env, BULWARK_RESOURCE_GROUP: sample.resourceGroup },
    });
    const vm = JSON.parse(stdout);
    expect(vm.name).toBe("demo-vm");
    expect(vm.osDiskId).toBe(sample.osDiskId);
    expect(vm.dataDiskIds).toEqual([sample.dataDiskId]);
  });
});
