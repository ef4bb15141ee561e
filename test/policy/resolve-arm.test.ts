/**
 * ArmItemResolver against a small loopback HTTPS server that answers the two ARM operations it
 * uses (GET a resource by id; list a subscription's resources with a tag filter, paged by
 * nextLink). The Azure SDK refuses bearer tokens over plain HTTP, so the server has a throwaway
 * self-signed certificate and this test process skips certificate checks.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { NotFoundError } from "../../runtime/errors.ts";
import { parsePolicy } from "../../runtime/policy/policy.ts";
import { ArmItemResolver } from "../../runtime/policy/resolve-arm.ts";

const SUB = "00000000-0000-0000-0000-000000000001";
const rg = `/subscriptions/${SUB}/resourceGroups/rg`;
const VM = `${rg}/providers/Microsoft.Compute/virtualMachines/web1`;
const DISK_A = `${rg}/providers/Microsoft.Compute/disks/data-a`;
const DISK_B = `${rg}/providers/Microsoft.Compute/disks/data-b`;
const TAGGED_VM = `${rg}/providers/Microsoft.Compute/virtualMachines/tagged-vm`;

let server: https.Server;
let endpoint: string;
let folder: string;
const requests: { path: string; authorization: string | undefined }[] = [];
const previousTlsSetting = process.env.NODE_TLS_REJECT_UNAUTHORIZED;

beforeAll(async () => {
  folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-arm-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
    "-keyout", path.join(folder, "key.pem"), "-out", path.join(folder, "cert.pem"),
  ], { stdio: "ignore" });
  server = https.createServer(
    { key: await readFile(path.join(folder, "key.pem")), cert: await readFile(path.join(folder, "cert.pem")) },
    (req, res) => {
      requests.push({ path: req.url ?? "", authorization: req.headers.authorization });
      const url = new URL(req.url ?? "/", endpoint);
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (url.pathname === VM) return json(200, { id: VM, name: "web1", type: "Microsoft.Compute/virtualMachines", location: "West Europe" });
      if (url.pathname === `/subscriptions/${SUB}/resources`) {
        if (url.searchParams.get("page") === "2") {
          return json(200, { value: [{ id: DISK_B, name: "data-b", type: "Microsoft.Compute/disks", location: "northeurope" }] });
        }
        return json(200, {
          value: [
            { id: DISK_A, name: "data-a", type: "Microsoft.Compute/disks", location: "northeurope" },
            { id: TAGGED_VM, name: "tagged-vm", type: "Microsoft.Compute/virtualMachines", location: "northeurope" },
          ],
          nextLink: `${endpoint}/subscriptions/${SUB}/resources?page=2&api-version=${url.searchParams.get("api-version")}`,
        });
      }
      json(404, { error: { code: "ResourceNotFound", message: `The Resource '${url.pathname}' was not found.` } });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
});

afterAll(async () => {
  if (previousTlsSetting === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  else process.env.NODE_TLS_REJECT_UNAUTHORIZED = previousTlsSetting;
  await new Promise((resolve) => server?.close(resolve));
  await rm(folder, { recursive: true, force: true });
});

const credential = { getToken: async () => ({ token: "test-token", expiresOnTimestamp: Date.now() + 3_600_000 }) };

test("resolves explicit ids by GET and tagged resources by a paged tag-filtered list, keeping the selected type", async () => {
  const policy = parsePolicy(
    JSON.stringify({
      name: "arm",
      vault: "/v",
      protect: { resources: [VM], tagged: { type: "Microsoft.Compute/disks", tag: "backup=it's gold", subscriptions: [SUB] } },
      schedule: { every: "1d" },
      retention: { daily: 7 },
    }),
    "arm.json",
  );
  const items = await new ArmItemResolver(credential, { endpoint }).resolve(policy);
  expect(items).toEqual([
    { id: VM, kind: "vm", region: "westeurope" },
    { id: DISK_A, kind: "disk", region: "northeurope" },
    { id: DISK_B, kind: "disk", region: "northeurope" },
  ]);
  const list = requests.find((r) => r.path.startsWith(`/subscriptions/${SUB}/resources?`))!;
  expect(new URL(list.path, endpoint).searchParams.get("$filter")).toBe("tagName eq 'backup' and tagValue eq 'it''s gold'");
  expect(requests.some((r) => r.path.startsWith(`${VM}?api-version=2024-07-01`))).toBe(true);
  expect(requests.every((r) => r.authorization === "Bearer test-token")).toBe(true);
});

test("an explicit id that does not exist is a NotFoundError naming the policy", async () => {
  const missing = `${rg}/providers/Microsoft.Compute/virtualMachines/gone`;
  const policy = parsePolicy(
    JSON.stringify({ name: "gone", vault: "/v", protect: { resources: [missing] }, schedule: { every: "1d" }, retention: { daily: 7 } }),
    "gone.json",
  );
  await expect(new ArmItemResolver(credential, { endpoint }).resolve(policy)).rejects.toThrow(NotFoundError);
  await expect(new ArmItemResolver(credential, { endpoint }).resolve(policy)).rejects.toThrow(/policy gone \(gone\.json\) protects .*gone, which does not exist/);
});

test("an explicit id that does not exist is reported to onMissing and the policy's other resources still resolve", async () => {
  const missing = `${rg}/providers/Microsoft.Compute/disks/deleted-disk`;
  const policy = parsePolicy(
    JSON.stringify({ name: "partly-gone", vault: "/v", protect: { resources: [missing, VM] }, schedule: { every: "1d" }, retention: { daily: 7 } }),
    "partly-gone.json",
  );
  const reported: { id: string; kind: string; reason: string }[] = [];
  const items = await new ArmItemResolver(credential, { endpoint }).resolve(policy, { onMissing: (m) => reported.push(m) });
  expect(items).toEqual([{ id: VM, kind: "vm", region: "westeurope" }]);
  expect(reported).toEqual([{ id: missing, kind: "disk", reason: expect.stringMatching(/policy partly-gone \(partly-gone\.json\) protects .*deleted-disk, which does not exist/) }]);
});
