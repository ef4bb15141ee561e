/**
 * Bulwark's Azure credentials go to Azure Storage only (issue 8, item 5, the host half). Without a
 * connection string, blob URLs are reached with the Azure credential chain, whose bearer token the
 * storage SDK would send to any https host: a vault URL on some other https server is refused with
 * one clear line, and that server never sees a request carrying an Authorization header.
 */
import https from "node:https";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { makeCertificates, type EmulatorCertificates } from "../emulator/tls.ts";
import { startAzureEmulator, type RunningAzureEmulator } from "../emulator/server.ts";
import { runCli } from "../support/cli.ts";

describe("blob URLs outside Azure Storage", () => {
  let emulator: RunningAzureEmulator;
  let certificates: EmulatorCertificates;
  let server: https.Server;
  let scratch: string;
  let env: Record<string, string>;
  let foreignVault: string;
  const seen: { method: string; url: string; authorization: string | undefined }[] = [];

  beforeAll(async () => {
    emulator = await startAzureEmulator({ azurite: false });
    certificates = await makeCertificates();
    server = https.createServer({ cert: certificates.certPem, key: certificates.keyPem }, (request, response) => {
      seen.push({ method: request.method ?? "", url: request.url ?? "", authorization: request.headers.authorization });
      response.writeHead(404, { "content-type": "application/xml", "x-ms-error-code": "ContainerNotFound" });
      response.end("<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code></Error>");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    foreignVault = `https://127.0.0.1:${(server.address() as AddressInfo).port}/collector/backups`;
    // The child trusts both the emulator (for its token) and the foreign server (so TLS is no excuse).
    scratch = await mkdtemp(path.join(os.tmpdir(), "bulwark-blob-hosts-"));
    const bundle = path.join(scratch, "ca-bundle.pem");
    await writeFile(bundle, `${emulator.caPem}\n${certificates.caPem}\n`);
    env = { ...emulator.env, NODE_EXTRA_CA_CERTS: bundle };
    delete env.AZURE_STORAGE_CONNECTION_STRING;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await certificates?.remove();
    await emulator?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test.each([["init"], ["points"]])("%s with a vault on a local https server is refused, and the server receives no Authorization header", async (command) => {
    const from = seen.length;
    const result = await runCli([command, "--vault", foreignVault], { ...env, AZURE_STORAGE_CONNECTION_STRING: "" });
    expect(seen.slice(from).filter((r) => r.authorization !== undefined)).toEqual([]);
    const lines = result.stderr.trimEnd().split("\n");
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^bulwark ${command}: `));
    expect(lines[0]).toMatch(/127\.0\.0\.1:\d+ is not an Azure Storage blob endpoint/);
    expect(lines[0]).toMatch(/blob\.core\.windows\.net/);
    expect(result.code).toBe(2);
  });

  test("a restore to a page blob URL on a local https server is refused, and the server receives no Authorization header", async () => {
    const vault = path.join(scratch, "vault");
    const image = path.join(scratch, "small.img");
    await writeFile(image, Buffer.alloc(1024 * 1024, 7));
    expect((await runCli(["init", "--vault", vault], env)).code).toBe(0);
    const point = JSON.parse((await runCli(["backup", image, "--vault", vault, "--json"], env)).stdout).id as string;
    const from = seen.length;
    const result = await runCli(["restore", point, "--vault", vault, "--to", `${foreignVault}/disk.vhd`], env);
    expect(seen.slice(from).filter((r) => r.authorization !== undefined)).toEqual([]);
    const lines = result.stderr.trimEnd().split("\n");
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^bulwark restore: the restore target .* is not an Azure Storage blob endpoint/);
    expect(result.code).toBe(2);
  });
});
