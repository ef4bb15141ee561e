/**
 * Starts a real Azurite (Blob, Queue, Table) on 127.0.0.1 with free ports and a temporary folder,
 * for tests, the demo and the emulator. It can be stopped and started again on the same ports and
 * folder, which is how tests simulate a storage outage in the middle of an operation.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { trackChild, trackFolder } from "./cleanup.ts";

export const AZURITE_ACCOUNT = "devstoreaccount1";
// Azurite's well-known development key (public, documented by Microsoft; not a secret).
export const AZURITE_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

class AzuriteExited extends Error {}

/** Waits until the port accepts connections; fails at once if Azurite exited, and after `deadline` (a hang). */
async function waitForPort(port: number, deadline: number, child?: ChildProcess): Promise<void> {
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) throw new AzuriteExited(`Azurite exited (${child.exitCode ?? child.signalCode}) before opening port ${port}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Azurite did not open port ${port} in time`);
}

export class Azurite {
  readonly folder: string;
  readonly blobPort: number;
  readonly queuePort: number;
  readonly tablePort: number;
  private child: ChildProcess | undefined;
  private readonly ownsFolder: boolean;

  private constructor(folder: string, ports: [number, number, number], ownsFolder: boolean) {
    this.folder = folder;
    [this.blobPort, this.queuePort, this.tablePort] = ports;
    this.ownsFolder = ownsFolder;
  }

  static async start(options: { folder?: string } = {}): Promise<Azurite> {
    const folder = options.folder ?? trackFolder(await mkdtemp(path.join(os.tmpdir(), "bulwark-azurite-")));
    // A port found free can be taken before Azurite binds it (another process's listener, or an
    // outgoing connection's ephemeral port on a busy machine): Azurite then exits with EADDRINUSE,
    // and another set of ports is tried.
    for (let attempt = 1; ; attempt++) {
      const ports: [number, number, number] = [await freePort(), await freePort(), await freePort()];
      const azurite = new Azurite(folder, ports, options.folder === undefined);
      try {
        await azurite.resume();
        return azurite;
      } catch (error) {
        if (attempt >= 4 || !(error instanceof AzuriteExited)) throw error;
      }
    }
  }

  get blobEndpoint(): string {
    return `http://127.0.0.1:${this.blobPort}/${AZURITE_ACCOUNT}`;
  }

  get queueEndpoint(): string {
    return `http://127.0.0.1:${this.queuePort}/${AZURITE_ACCOUNT}`;
  }

  get tableEndpoint(): string {
    return `http://127.0.0.1:${this.tablePort}/${AZURITE_ACCOUNT}`;
  }

  get connectionString(): string {
    return (
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
      `BlobEndpoint=${this.blobEndpoint};QueueEndpoint=${this.queueEndpoint};TableEndpoint=${this.tableEndpoint};`
    );
  }

  /** Starts (again) on the same ports and folder. */
  async resume(): Promise<void> {
    if (this.child) return;
    const require = createRequire(import.meta.url);
    const main = path.join(path.dirname(require.resolve("azurite/package.json")), "dist/src/azurite.js");
    const child = spawn(
      process.execPath,
      [
        main,
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--location",
        this.folder,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        String(this.blobPort),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        String(this.queuePort),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        String(this.tablePort),
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    this.child = child;
    trackChild(child, "file"); // killed after the file even if its afterAll never stops it
    child.once("exit", () => {
      if (this.child === child) this.child = undefined;
    });
    // Azurite opens its ports in a few seconds, but it took over 30 s with the machine's cores busy
    // elsewhere: the deadline only bounds a hang.
    const deadline = Date.now() + 120_000;
    await waitForPort(this.blobPort, deadline, child);
    await waitForPort(this.queuePort, deadline, child);
    await waitForPort(this.tablePort, deadline, child);
  }

  /** Stops the server (it saves its metadata on SIGTERM); the folder and ports stay for resume(). */
  async halt(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  }

  /** Stops for good. A folder of our own is deleted anyway, so nothing needs saving: kill at once
   * (a graceful stop takes Azurite ~15 s). A folder we were given is stopped gracefully. */
  async stop(): Promise<void> {
    if (!this.ownsFolder) {
      await this.halt();
      return;
    }
    const child = this.child;
    this.child = undefined;
    if (child) {
      await new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGKILL");
      });
    }
    await rm(this.folder, { recursive: true, force: true });
  }
}
