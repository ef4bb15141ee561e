/**
 * The pack starts the way `pulumi preview --policy-pack policies` starts it: Node runs
 * policies/index.ts (PulumiPolicy.yaml) in the pack's folder, the PolicyPack reads its version from
 * that folder's package.json, builds every policy (reading Azure's published operations) and serves
 * them, printing the port the engine connects to.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { parse } from "yaml";

const PACK = fileURLToPath(new URL("../../policies/", import.meta.url));
let child: ReturnType<typeof spawn> | undefined;

afterEach(() => {
  child?.kill("SIGKILL");
  child = undefined;
});

describe("the policy pack as Pulumi runs it", () => {
  it("starts from its folder and serves on a port", async () => {
    const runtime = parse(readFileSync(`${PACK}PulumiPolicy.yaml`, "utf8")) as { main: string; runtime: { options: { nodeargs: string } } };
    child = spawn(process.execPath, [...runtime.runtime.options.nodeargs.split(" "), runtime.main], { cwd: PACK, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    const port = await new Promise<string>((resolve, reject) => {
      let stdout = "";
      child!.stdout!.on("data", (d) => {
        stdout += d;
        const line = /^(\d+)\s*$/m.exec(stdout);
        if (line) resolve(line[1]);
      });
      child!.on("exit", (code) => reject(new Error(`the pack exited (${code}) before serving: ${stderr}`)));
    });
    expect(Number(port)).toBeGreaterThan(0);
  });
});
