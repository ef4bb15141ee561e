/**
 * The emulator's Azure SQL and Key Vault keys against Azure's own references (issue 10, items 1-5):
 * the REST specification's examples (fixtures/specs/sql and fixtures/specs/keyvault, sources in their
 * SOURCES.md) are replayed as raw HTTP, the recorded SDK traffic fixes the shape of the status URLs,
 * and the rules Azure's documentation states for import/export and for key versions are enforced.
 * What Azure does is taken from those references, never from the emulator or the runtime.
 */
import { BlobServiceClient, ContainerSASPermissions } from "@azure/storage-blob";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SampleWorld, seedSampleWorld } from "./seed.ts";
import { type RunningAzureEmulator, startAzureEmulator } from "./server.ts";
import { type ArmReply, armCall } from "./arm-call.ts";

let emulator: RunningAzureEmulator;
let sample: SampleWorld;
let token = "";

const specs = path.join(import.meta.dirname, "fixtures", "specs");
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const example = (file: string): any => JSON.parse(readFileSync(path.join(specs, file), "utf8"));

beforeAll(async () => {
  emulator = await startAzureEmulator({ azurite: true });
  sample = await seedSampleWorld(emulator);
  token = (await emulator.credential().getToken("https://management.azure.com/.default"))!.token;
});

afterAll(async () => {
  await emulator?.stop();
});

type Reply = ArmReply;

function arm(method: string, pathAndQuery: string, body?: unknown): Promise<Reply> {
  return armCall(emulator.armEndpoint, token, method, pathAndQuery, body);
}

const API = "api-version=2022-08-01-preview";
const serverPath = () => `/subscriptions/${emulator.subscriptionId}/resourceGroups/${sample.resourceGroup}/providers/Microsoft.Sql/servers/${sample.sqlServerName}`;

/** The resource-group-scoped status URLs of recorded SQL traffic (fixtures/specs/sql/recorded-lro-headers.json). */
function expectResourceGroupScoped(url: string | null, kind: string): void {
  const recorded = example("sql/recorded-lro-headers.json").databaseCreate.headers as Record<string, string>;
  // ["", "subscriptions", S, "resourceGroups", G, "providers", "Microsoft.Sql", "locations", L, KIND, ID]
  const shape = (u: string) => new URL(u).pathname.split("/").map((s, i) => ([1, 3, 5, 6, 7].includes(i) ? s.toLowerCase() : "*"));
  expect(url, kind).toBeTruthy();
  expect(shape(url!)).toEqual(shape(recorded["Azure-AsyncOperation"]!));
  const segments = new URL(url!).pathname.split("/");
  expect(segments[4]).toBe(sample.resourceGroup);
  expect(segments[8]).toBe(sample.location);
  expect(segments[9]).toBe(kind);
}

/**
 * Export and import are polled under the database (the result's id in ExportDatabase.json and
 * ImportNewDatabase.json; Az.Sql's OperationStatusLink; the published servers/databases/importExport*
 * status operations): .../servers/S/databases/D/KIND/ID. See test/emulator/arm/sql.ts for where the
 * references disagree.
 */
function expectDatabaseScoped(url: string | null, kind: string, databaseId: string): void {
  expect(url, kind).toBeTruthy();
  const segments = new URL(url!).pathname.split("/");
  expect(segments.slice(0, -2).join("/").toLowerCase()).toBe(databaseId.toLowerCase());
  expect(segments.at(-2)).toBe(kind);
}

/** Polls an Azure-AsyncOperation monitor until it leaves InProgress; returns its last body. */
async function settle(monitor: string): Promise<{ status: string; error?: { code: string; message: string }; name: string }> {
  for (;;) {
    const reply = await arm("GET", monitor);
    expect(reply.status).toBe(200);
    if (reply.body.status !== "InProgress") return reply.body;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function transient(): Promise<{ containerUrl: string; sas: string; accountKey: string }> {
  const service = BlobServiceClient.fromConnectionString(emulator.env.AZURE_STORAGE_CONNECTION_STRING!);
  const container = service.getContainerClient("conformance");
  await container.createIfNotExists();
  const url = await container.generateSasUrl({ permissions: ContainerSASPermissions.parse("rcw"), expiresOn: new Date(Date.now() + 3600_000) });
  const accountKey = /AccountKey=([^;]+)/.exec(emulator.env.AZURE_STORAGE_CONNECTION_STRING!)![1]!;
  return { containerUrl: container.url, sas: new URL(url).search.slice(1), accountKey };
}

function keysOf(value: Record<string, unknown>): string[] {
  return Object.keys(value).sort();
}

describe("Azure SQL against the REST specification's examples", () => {
  it("Databases_Get answers with every field of the example's body that Bulwark reads, typed as in the example", async () => {
    const expected = example("sql/GetVCoreDatabase.json").responses["200"].body;
    const reply = await arm("GET", `${serverPath()}/databases/${sample.databaseName}?${API}`);
    expect(reply.status).toBe(200);
    for (const key of ["id", "name", "type", "location", "sku", "kind", "properties"]) expect(typeof reply.body[key], key).toBe(typeof expected[key]);
    for (const key of ["collation", "maxSizeBytes", "status", "databaseId", "creationDate", "currentServiceObjectiveName", "currentSku", "catalogCollation", "zoneRedundant"]) {
      expect(typeof reply.body.properties[key], key).toBe(typeof expected.properties[key]);
    }
    expect(reply.body.type).toBe(expected.type);
  });

  it("Databases_CreateOrUpdate (createMode Copy) accepts the example's body and answers 202 with resource-group-scoped status URLs, as recorded", async () => {
    const request = example("sql/CreateDatabaseCopyMode.json").parameters.parameters;
    const body = { ...request, location: sample.location, properties: { ...request.properties, sourceDatabaseId: sample.databaseId } };
    const reply = await arm("PUT", `${serverPath()}/databases/conformance-copy?${API}`, body);
    expect(reply.status).toBe(202);
    expectResourceGroupScoped(reply.headers.get("azure-asyncoperation"), "databaseAzureAsyncOperation");
    expectResourceGroupScoped(reply.headers.get("location"), "databaseOperationResults");
    const recordedMonitor = example("sql/recorded-lro-headers.json").databaseCreate.monitorBody;
    const done = await settle(reply.headers.get("azure-asyncoperation")!);
    expect(keysOf(done)).toEqual(expect.arrayContaining(keysOf(recordedMonitor)));
    expect(done.status).toBe("Succeeded");
    // As recorded, the SDK then reads the database itself (the PUT's URL), not the Location.
    const result = await arm("GET", `${serverPath()}/databases/conformance-copy?${API}`);
    expect(result.status).toBe(200);
    const expected = example("sql/CreateDatabaseCopyMode.json").responses["200"].body;
    expect(result.body.properties.status).toBe(expected.properties.status);
    expect(result.body.type).toBe(expected.type);
  });

  it("Databases_Delete answers 202 with resource-group-scoped status URLs, and 204 for a database that is gone, as the example lists", async () => {
    const statuses = Object.keys(example("sql/DeleteDatabase.json").responses);
    const reply = await arm("DELETE", `${serverPath()}/databases/conformance-copy?${API}`);
    expect(statuses).toContain(String(reply.status));
    expect(reply.status).toBe(202);
    expectResourceGroupScoped(reply.headers.get("azure-asyncoperation"), "databaseAzureAsyncOperation");
    expect((await settle(reply.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
    const again = await arm("DELETE", `${serverPath()}/databases/conformance-copy?${API}`);
    expect(statuses).toContain(String(again.status));
    expect(again.status).toBe(204);
  });

  it("Databases_Export takes the example's StorageAccessKey body, answers 202 with status URLs under the database and ends with the example's result shape", async () => {
    const { containerUrl, accountKey } = await transient();
    const request = example("sql/ExportDatabase.json").parameters.parameters;
    const body = {
      ...request, storageKey: accountKey, storageUri: `${containerUrl}/example-export.bacpac`,
      administratorLogin: sample.sqlAdministratorLogin, administratorLoginPassword: sample.sqlAdministratorPassword,
    };
    const reply = await arm("POST", `${serverPath()}/databases/${sample.databaseName}/export?${API}`, body);
    expect(reply.status).toBe(202);
    expectDatabaseScoped(reply.headers.get("azure-asyncoperation"), "importExportAzureAsyncOperation", sample.databaseId);
    expectDatabaseScoped(reply.headers.get("location"), "importExportOperationResults", sample.databaseId);
    expect((await settle(reply.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
    const result = await arm("GET", reply.headers.get("location")!);
    const expected = example("sql/ExportDatabase.json").responses["200"].body;
    expect(result.status).toBe(200);
    expect(keysOf(result.body)).toEqual(expect.arrayContaining(keysOf(expected)));
    expect(keysOf(result.body.properties)).toEqual(expect.arrayContaining(keysOf(expected.properties)));
    expect(result.body.type).toBe(expected.type);
    expect(result.body.properties).toMatchObject({ requestType: "Export", status: "Completed", serverName: `${sample.sqlServerName}.database.windows.net`, databaseName: sample.databaseName });
  });

  it("Servers_ImportDatabase takes the example's body and answers 202 with status URLs under the new database and the example's result shape", async () => {
    const { containerUrl, accountKey } = await transient();
    const request = example("sql/ImportNewDatabase.json").parameters.parameters;
    const body = {
      ...request, databaseName: "conformance-imported", storageKey: accountKey, storageUri: `${containerUrl}/example-export.bacpac`,
      administratorLogin: sample.sqlAdministratorLogin, administratorLoginPassword: sample.sqlAdministratorPassword,
    };
    const reply = await arm("POST", `${serverPath()}/import?${API}`, body);
    expect(reply.status).toBe(202);
    expectDatabaseScoped(reply.headers.get("azure-asyncoperation"), "importExportAzureAsyncOperation", `${serverPath()}/databases/conformance-imported`);
    expectDatabaseScoped(reply.headers.get("location"), "importExportOperationResults", `${serverPath()}/databases/conformance-imported`);
    expect((await settle(reply.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
    const result = await arm("GET", reply.headers.get("location")!);
    const expected = example("sql/ImportNewDatabase.json").responses["200"].body;
    expect(keysOf(result.body.properties)).toEqual(expect.arrayContaining(keysOf(expected.properties)));
    expect(result.body.properties).toMatchObject({ requestType: "Import", status: "Completed", databaseName: "conformance-imported" });
    expect(emulator.control.databaseContent(`${serverPath()}/databases/conformance-imported`)).toEqual(emulator.control.databaseContent(sample.databaseId));
  });
});

describe("Azure SQL import/export rules from Azure's documentation", () => {
  const admin = () => ({ administratorLogin: sample.sqlAdministratorLogin, administratorLoginPassword: sample.sqlAdministratorPassword, authenticationType: "Sql" });
  const exportTo = async (blob: string, storageKey: string, extra: Record<string, unknown> = {}) => {
    const { containerUrl } = await transient();
    return arm("POST", `${serverPath()}/databases/${sample.databaseName}/export?${API}`, {
      storageKeyType: "SharedAccessKey", storageKey, storageUri: `${containerUrl}/${blob}`, ...admin(), ...extra,
    });
  };

  it("refuses a SAS storage key without the leading '?' (the spec's only SharedAccessKey example has it; the Import/Export API requires it) and takes it with one", async () => {
    expect(example("sql/DatabaseExportSasKey.json").parameters.parameters.storageKey.startsWith("?")).toBe(true);
    const { sas } = await transient();
    const refused = await exportTo("no-question-mark.bacpac", sas);
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/invalid storage key format/i);
    const accepted = await exportTo("with-question-mark.bacpac", `?${sas}`);
    expect(accepted.status).toBe(202);
    expect((await settle(accepted.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
  });

  it("fails an export to a blob that already exists, as Azure reports it", async () => {
    const { sas } = await transient();
    const first = await exportTo("exists.bacpac", `?${sas}`);
    expect((await settle(first.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
    const second = await exportTo("exists.bacpac", `?${sas}`);
    const done = await settle(second.headers.get("azure-asyncoperation")!);
    expect(done.status).toBe("Failed");
    expect(done.error!.message).toMatch(/storage blob already exists/);
  });

  it("refuses a BACPAC blob name of 128 characters or more", async () => {
    const { sas } = await transient();
    const refused = await exportTo(`${"n".repeat(121)}.bacpac`, `?${sas}`);
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/128 characters/);
  });

  it("fails an export from a server that does not allow Azure services with a gateway timeout", async () => {
    const server = emulator.sql.server(sample.databaseId);
    const rules = new Map(server.firewallRules);
    server.firewallRules.delete("AllowAllWindowsAzureIps");
    try {
      const { sas } = await transient();
      const reply = await exportTo("firewalled.bacpac", `?${sas}`);
      const done = await settle(reply.headers.get("azure-asyncoperation")!);
      expect(done.status).toBe("Failed");
      expect(done.error!.code).toBe("GatewayTimeout");
    } finally {
      server.firewallRules = rules;
    }
  });

  it("an Entra-only server refuses SQL authentication and exports with the managed-identity variant through its own user-assigned identity", async () => {
    const server = emulator.sql.server(sample.databaseId);
    const identity = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${sample.resourceGroup}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/sql-export`;
    server.azureADOnlyAuthentication = true;
    server.userAssignedIdentities = [identity];
    try {
      const { sas } = await transient();
      const sqlLogin = await exportTo("entra-only-sql.bacpac", `?${sas}`);
      const failed = sqlLogin.status === 202 ? await settle(sqlLogin.headers.get("azure-asyncoperation")!) : sqlLogin.body;
      expect(JSON.stringify(failed)).toMatch(/Microsoft Entra/);
      const stranger = await exportTo("entra-only-other.bacpac", `?${sas}`, { authenticationType: "ManagedIdentity", administratorLogin: `${identity}-other`, administratorLoginPassword: undefined });
      expect(stranger.status).toBe(400);
      const managed = await exportTo("entra-only-mi.bacpac", `?${sas}`, { authenticationType: "ManagedIdentity", administratorLogin: identity, administratorLoginPassword: undefined });
      expect(managed.status).toBe(202);
      expect((await settle(managed.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
      const reply = await arm("GET", `${serverPath()}?${API}`);
      expect(reply.body.properties.administrators.azureADOnlyAuthentication).toBe(true);
      expect(Object.keys(reply.body.identity.userAssignedIdentities)).toEqual([identity]);
    } finally {
      server.azureADOnlyAuthentication = false;
      server.userAssignedIdentities = [];
    }
  });

  it("refuses a second import or export of a database while one is running (Conflict)", async () => {
    const { sas } = await transient();
    const first = await exportTo("running-1.bacpac", `?${sas}`);
    expect(first.status).toBe(202);
    const second = await exportTo("running-2.bacpac", `?${sas}`);
    expect(second.status).toBe(409);
    expect(second.body.error.message).toMatch(/import or export operation in progress on the database/);
    expect((await settle(first.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
    const after = await exportTo("running-3.bacpac", `?${sas}`);
    expect(after.status).toBe(202);
    expect((await settle(after.headers.get("azure-asyncoperation")!)).status).toBe("Succeeded");
  });

  it("fails an export whose BACPAC would exceed 200 GB in blob storage", async () => {
    const database = emulator.sql.database(sample.databaseId);
    database.usedBytes = 201 * 1024 ** 3;
    try {
      const { sas } = await transient();
      const reply = await exportTo("too-big.bacpac", `?${sas}`);
      const done = await settle(reply.headers.get("azure-asyncoperation")!);
      expect(done.status).toBe("Failed");
      expect(done.error!.message).toMatch(/200 GB/);
    } finally {
      database.usedBytes = undefined;
    }
  });

  it("lists the server's firewall rules with the Allow Azure services rule (0.0.0.0) by default", async () => {
    const reply = await arm("GET", `${serverPath()}/firewallRules?${API}`);
    expect(reply.status).toBe(200);
    expect(reply.body.value).toContainEqual(expect.objectContaining({
      name: "AllowAllWindowsAzureIps", type: "Microsoft.Sql/servers/firewallRules", properties: { startIpAddress: "0.0.0.0", endIpAddress: "0.0.0.0" },
    }));
  });
});

describe("Key Vault keys against the REST specification's examples and Key Vault's rules for expiry", () => {
  let vaultUrl = "";
  let kvToken = "";
  const kv = async (method: string, pathAndQuery: string, body?: unknown): Promise<Reply> => {
    const response = await fetch(`${vaultUrl}${pathAndQuery}`, {
      method, headers: { authorization: `Bearer ${kvToken}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
  };

  beforeAll(async () => {
    const created = await emulator.createKeyVault("conformance-kv");
    vaultUrl = created.vaultUrl;
    created.vault.createKey("sdktestkey");
    kvToken = (await emulator.credential().getToken("https://vault.azure.net/.default"))!.token;
  });

  it("GetKey, WrapKey and UnwrapKey take the examples' requests and answer in their shapes", async () => {
    const get = await kv("GET", "/keys/sdktestkey?api-version=7.5");
    const expected = example("keyvault/GetKey-example.json").responses["200"].body;
    expect(get.status).toBe(200);
    expect(keysOf(get.body.key)).toEqual(expect.arrayContaining(keysOf(expected.key)));
    expect(keysOf(get.body.attributes)).toEqual(expect.arrayContaining(keysOf(expected.attributes)));
    const kid: string = get.body.key.kid;
    const version = kid.split("/").at(-1);

    const wrapExample = example("keyvault/wrapKey-example.json");
    const wrapped = await kv("POST", `/keys/sdktestkey/${version}/wrapkey?api-version=7.5`, wrapExample.parameters.parameters);
    expect(wrapped.status).toBe(200);
    expect(keysOf(wrapped.body)).toEqual(keysOf(wrapExample.responses["200"].body));
    expect(wrapped.body.kid).toBe(kid);

    const unwrapExample = example("keyvault/unwrapKey-example.json");
    const unwrapped = await kv("POST", `/keys/sdktestkey/${version}/unwrapkey?api-version=7.5`, { ...unwrapExample.parameters.parameters, value: wrapped.body.value });
    expect(unwrapped.status).toBe(200);
    expect(unwrapped.body).toEqual({ kid, value: unwrapExample.responses["200"].body.value });
  });

  it("a key version past its expiry refuses wrapKey and still unwraps (Key Vault: exp does not apply to decrypt, release, unwrap and verify)", async () => {
    const get = await kv("GET", "/keys/sdktestkey?api-version=7.5");
    const version = (get.body.key.kid as string).split("/").at(-1)!;
    const wrapped = await kv("POST", `/keys/sdktestkey/${version}/wrapkey?api-version=7.5`, { alg: "RSA-OAEP-256", value: "AAECAwQFBgcICQoLDA0ODw" });
    const vault = emulator.vaults.get("conformance-kv")!.vault;
    vault.setExpiry("sdktestkey", version, new Date(Date.now() - 1000));
    const bundle = await kv("GET", `/keys/sdktestkey/${version}?api-version=7.5`);
    expect(bundle.body.attributes.exp).toBeLessThan(Date.now() / 1000);
    const refused = await kv("POST", `/keys/sdktestkey/${version}/wrapkey?api-version=7.5`, { alg: "RSA-OAEP-256", value: "AAECAwQFBgcICQoLDA0ODw" });
    expect(refused.status).toBe(403);
    expect(refused.body.error.message).toMatch(/expired/);
    const unwrapped = await kv("POST", `/keys/sdktestkey/${version}/unwrapkey?api-version=7.5`, { alg: "RSA-OAEP-256", value: wrapped.body.value });
    expect(unwrapped.status).toBe(200);
    expect(unwrapped.body.value).toBe("AAECAwQFBgcICQoLDA0ODw");
  });

  it("a deleted key answers KeyNotFound for every version", async () => {
    const vault = emulator.vaults.get("conformance-kv")!.vault;
    const version = vault.versions("sdktestkey")[0]!;
    vault.deleteKey("sdktestkey");
    const gone = await kv("POST", `/keys/sdktestkey/${version}/unwrapkey?api-version=7.5`, { alg: "RSA-OAEP-256", value: "AA" });
    expect(gone.status).toBe(404);
    expect(gone.body.error.code).toBe("KeyNotFound");
  });
});
