/**
 * The sample world `npm run emulator` and the demo start with: a resource group holding a VM whose
 * OS disk (64 MiB) and data disk (32 MiB) carry real ext4 file systems with files in them (made with
 * mke2fs -d when it is installed, otherwise a deterministic pattern), a SQL server with a database
 * with rows, and a Key Vault with an RSA key.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { DiskRecord } from "./arm/compute.ts";
import type { RunningAzureEmulator } from "./server.ts";

const run = promisify(execFile);
const MiB = 1024 * 1024;

export interface SampleWorld {
  resourceGroup: string;
  location: string;
  vmName: string;
  vmId: string;
  osDiskId: string;
  dataDiskId: string;
  sqlServerName: string;
  databaseName: string;
  databaseId: string;
  sqlAdministratorLogin: string;
  sqlAdministratorPassword: string;
  keyVaultUrl: string;
  keyName: string;
}

/** A file-system image of `sizeBytes` holding `files`, or a deterministic pattern without mke2fs. */
async function fileSystemImage(sizeBytes: number, label: string, files: Record<string, string | Buffer>): Promise<Buffer> {
  const folder = await mkdtemp(path.join(os.tmpdir(), "bulwark-seed-"));
  try {
    const root = path.join(folder, "root");
    for (const [name, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(root, name)), { recursive: true });
      await writeFile(path.join(root, name), content);
    }
    const image = path.join(folder, "disk.img");
    await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0", "-d", root, image, `${sizeBytes / 1024}k`], {
      env: { ...process.env, E2FSPROGS_FAKE_TIME: "1767225600", MKE2FS_DEVICE_SECTSIZE: "512" },
    });
    const bytes = await readFile(image);
    if (bytes.length !== sizeBytes) throw new Error(`mke2fs made ${bytes.length} bytes, not ${sizeBytes}`);
    return bytes;
  } catch {
    const bytes = Buffer.alloc(sizeBytes);
    let state = label.length * 2654435761;
    for (let offset = 0; offset < sizeBytes; offset += 64 * 1024) {
      if (offset % (256 * 1024) !== 0) continue; // a quarter of the disk written, the rest never touched
      for (let i = 0; i < 64 * 1024; i += 4) {
        state = (Math.imul(state, 1103515245) + 12345) >>> 0;
        bytes.writeUInt32LE(state, offset + i);
      }
    }
    return bytes;
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

/** Writes only the non-zero 64 KiB pieces, as a VM that never touched the rest would leave it. */
function fill(emulator: RunningAzureEmulator, disk: DiskRecord, bytes: Buffer): void {
  const piece = 64 * 1024;
  for (let offset = 0; offset < bytes.length; offset += piece) {
    const part = bytes.subarray(offset, offset + piece);
    if (part.some((b) => b !== 0)) emulator.control.writeDisk(disk.id, offset, part);
  }
}

function sampleFiles(kind: "os" | "data"): Record<string, string | Buffer> {
  if (kind === "os") {
    return {
      "etc/hostname": "demo-vm\n",
      "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
      "etc/fstab": "LABEL=cloudimg-rootfs / ext4 defaults 0 1\nLABEL=data /data ext4 defaults,nofail 0 2\n",
      "var/log/syslog": Array.from({ length: 2000 }, (_, i) => `Jan  1 00:${String(i % 60).padStart(2, "0")}:00 demo-vm app[42]: request ${i} served\n`).join(""),
      "usr/lib/app/blob.bin": Buffer.from(Array.from({ length: 3 * MiB }, (_, i) => (i * 7919) % 251)),
    };
  }
  return {
    "orders/2025-12.csv": "id,customer,total\n" + Array.from({ length: 5000 }, (_, i) => `${i},customer-${i % 97},${(i * 13) % 1000}.00`).join("\n") + "\n",
    "reports/summary.txt": "Quarterly summary: all systems nominal.\n",
    "media/photo.raw": Buffer.from(Array.from({ length: 2 * MiB }, (_, i) => (i * 104729) % 256)),
  };
}

export async function seedSampleWorld(emulator: RunningAzureEmulator, options: { location?: string } = {}): Promise<SampleWorld> {
  const location = options.location ?? "westeurope";
  const resourceGroup = "bulwark-demo";
  emulator.world.addResourceGroup(resourceGroup, location);

  const osDisk = emulator.compute.createDisk(resourceGroup, "demo-vm-osdisk", 64 * MiB, { osType: "Linux" });
  osDisk.hyperVGeneration = "V2";
  fill(emulator, osDisk, await fileSystemImage(64 * MiB, "cloudimg-rootfs", sampleFiles("os")));
  const dataDisk = emulator.compute.createDisk(resourceGroup, "demo-vm-datadisk", 32 * MiB);
  fill(emulator, dataDisk, await fileSystemImage(32 * MiB, "data", sampleFiles("data")));
  const { vm } = emulator.compute.createVirtualMachine(resourceGroup, "demo-vm", {
    location,
    properties: {
      hardwareProfile: { vmSize: "Standard_B2s" },
      storageProfile: {
        osDisk: { osType: "Linux", createOption: "Attach", managedDisk: { id: osDisk.id } },
        dataDisks: [{ lun: 0, createOption: "Attach", managedDisk: { id: dataDisk.id } }],
      },
      networkProfile: {
        networkInterfaces: [{ id: `/subscriptions/${emulator.subscriptionId}/resourceGroups/${resourceGroup}/providers/Microsoft.Network/networkInterfaces/demo-vm-nic`, properties: { primary: true } }],
      },
    },
  });
  vm.provisioningState = "Succeeded";

  const sqlAdministratorLogin = "bulwarkadmin";
  const sqlAdministratorPassword = `Emu-${crypto.randomUUID()}`;
  const server = emulator.sql.createServer(resourceGroup, "bulwark-demo-sql", sqlAdministratorLogin, sqlAdministratorPassword, location);
  const database = emulator.sql.createDatabase(server, "orders", {
    customers: Array.from({ length: 20 }, (_, i) => ({ id: i + 1, name: `Customer ${i + 1}`, country: ["NL", "DE", "FR", "SE"][i % 4] })),
    orders: Array.from({ length: 100 }, (_, i) => ({ id: i + 1, customerId: (i % 20) + 1, total: ((i * 37) % 500) + 0.99, placedAt: new Date(Date.UTC(2025, 11, 1 + (i % 28))).toISOString() })),
  });

  const { vaultUrl, vault } = await emulator.createKeyVault("bulwark-demo-kv");
  const keyName = "bulwark-cmk";
  vault.createKey(keyName);

  return {
    resourceGroup, location, vmName: vm.name, vmId: vm.id, osDiskId: osDisk.id, dataDiskId: dataDisk.id,
    sqlServerName: server.name, databaseName: database.name, databaseId: database.id,
    sqlAdministratorLogin, sqlAdministratorPassword, keyVaultUrl: vaultUrl, keyName,
  };
}
