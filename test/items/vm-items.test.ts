/**
 * Item-level restore from a VM point (issue 11): a VM in the Azure emulator whose OS disk is an MBR
 * disk (sfdisk) with an ext4 root in a primary partition and a FAT volume in a logical partition of
 * an extended one, and whose data disk at LUN 0 is an NTFS volume on the whole disk (mkntfs,
 * filled by ntfscp), is backed up by the real CLI. `bulwark ls` shows the VM's disks, each with its
 * volumes; `restore --path` takes files from both disks in one run; and the agents' files restore
 * job writes them into one tar archive in transient storage that the system's `tar` extracts equal
 * to the source.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmod, mkdir, readFile, stat, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { NotFoundError } from "../../runtime/errors.ts";
import type { StepContext } from "../../runtime/jobs/machine.ts";
import { workloadEnvironment } from "../../runtime/workloads/environment.ts";
import { restoreFilesMachine } from "../../runtime/workloads/restore-files-machine.ts";
import { PASSPHRASE } from "../support/cli.ts";
import { MIB, pseudoRandom, sha256File, tempFolder, text } from "../cli/vaults.ts";
import { nicIdIn, startWorld, type AzureWorld } from "../azure/harness.ts";

const OS_DISK = 24 * MIB;
const DATA_DISK = 20 * MIB;
const MTIME = new Date("2025-01-02T03:04:05Z");

interface LsEntry {
  name: string;
  path: string;
  type: string;
  size: number;
  filesystem?: string;
  label?: string;
}

function run(tool: string, args: string[], input?: string): string {
  const result = spawnSync(tool, args, { encoding: "utf8", input });
  if (result.error) throw new Error(`${tool} is needed to make this test's disks (CI installs it): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

/** Start and size in bytes of each partition sfdisk made, by number. */
function partitions(image: string): Map<number, { start: number; size: number }> {
  const table = JSON.parse(run("sfdisk", ["--json", image])) as { partitiontable: { partitions: Array<{ node: string; start: number; size: number }> } };
  return new Map(table.partitiontable.partitions.map((p) => [Number(/(\d+)$/.exec(p.node)![1]), { start: p.start * 512, size: p.size * 512 }]));
}

describe("files out of a VM point: an MBR OS disk with ext4 and a logical FAT volume, an NTFS data disk", () => {
  let world: AzureWorld;
  let work: string;
  let root: string;
  let vault: string;
  let pointId: string;
  const bootConfig = text("boot.cfg", 3000);
  const report = pseudoRandom("report", 300_000);

  beforeAll(async () => {
    world = await startWorld({ seed: false });
    work = await tempFolder("vm-items");
    root = path.join(work, "root");
    await mkdir(path.join(root, "etc/ssh"), { recursive: true });
    await writeFile(path.join(root, "etc/hostname"), "app-vm\n");
    await writeFile(path.join(root, "etc/ssh/sshd_config"), text("sshd", 4000));
    await chmod(path.join(root, "etc/ssh/sshd_config"), 0o600);
    await symlink("ssh/sshd_config", path.join(root, "etc/sshd.link"));
    for (const file of ["etc/hostname", "etc/ssh/sshd_config"]) await utimes(path.join(root, file), MTIME, MTIME);

    // OS disk: MBR, part1 ext4 (primary), part2 extended holding part5 (FAT).
    const osImage = path.join(work, "os.img");
    run("truncate", ["-s", String(OS_DISK), osImage]);
    run("sfdisk", ["--quiet", osImage], "label: dos\n,12MiB,83\n,,5\n,,c\n");
    const parts = partitions(osImage);
    const ext = path.join(work, "ext.img");
    run("mke2fs", ["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root", "-d", root, ext, `${parts.get(1)!.size / 1024}k`]);
    const fat = path.join(work, "fat.img");
    run("truncate", ["-s", String(parts.get(5)!.size), fat]);
    run("mkfs.vfat", ["-n", "BOOT", fat]);
    await writeFile(path.join(work, "boot.cfg"), bootConfig);
    run("mcopy", ["-i", fat, path.join(work, "boot.cfg"), "::/boot.cfg"]);
    for (const [image, part] of [[ext, 1], [fat, 5]] as const) {
      run("dd", [`if=${image}`, `of=${osImage}`, "bs=512", `seek=${parts.get(part)!.start / 512}`, "conv=notrunc", "status=none"]);
    }
    // Data disk: NTFS on the whole disk.
    const dataImage = path.join(work, "data.img");
    run("truncate", ["-s", String(DATA_DISK), dataImage]);
    run("mkntfs", ["-F", "-Q", "-q", "-L", "DATA", dataImage]);
    await writeFile(path.join(work, "report.bin"), report);
    run("ntfscp", ["-f", dataImage, path.join(work, "report.bin"), "report.bin"]);

    const compute = world.emulator.compute;
    const osDisk = compute.createDisk(world.group, "app-vm-os", OS_DISK, { osType: "Linux" });
    const dataDisk = compute.createDisk(world.group, "app-vm-data", DATA_DISK);
    world.emulator.control.writeDisk(osDisk.id, 0, await readFile(osImage));
    world.emulator.control.writeDisk(dataDisk.id, 0, await readFile(dataImage));
    const { vm } = compute.createVirtualMachine(world.group, "app-vm", {
      location: world.location,
      properties: {
        hardwareProfile: { vmSize: "Standard_D2s_v5" },
        storageProfile: {
          osDisk: { osType: "Linux", createOption: "Attach", caching: "ReadWrite", managedDisk: { id: osDisk.id } },
          dataDisks: [{ lun: 0, caching: "None", createOption: "Attach", managedDisk: { id: dataDisk.id } }],
        },
        networkProfile: { networkInterfaces: [{ id: nicIdIn(world, world.group, "app-vm-nic"), properties: { primary: true } }] },
      },
    });
    vm.provisioningState = "Succeeded";
    vault = await world.newVault("vault");
    pointId = (await world.json(["backup", vm.id, "--vault", vault])).id as string;
  }, 180_000);

  afterAll(async () => {
    await world?.stop();
  });

  test("ls shows the VM's disks, the volumes on each (primary, logical, whole-disk) and their files", async () => {
    const disks = await world.json<LsEntry[]>(["ls", pointId, "--vault", vault]);
    expect(disks.map((d) => [d.name, d.type, d.size])).toEqual([
      ["os", "disk", OS_DISK],
      ["lun0", "disk", DATA_DISK],
    ]);
    const osVolumes = await world.json<LsEntry[]>(["ls", pointId, "/os", "--vault", vault]);
    expect(osVolumes.map((v) => [v.name, v.filesystem, v.label])).toEqual([
      ["part1", "ext4", "root"],
      ["part5", "vfat", "BOOT"],
    ]);
    const data = await world.json<LsEntry[]>(["ls", pointId, "/lun0/volume", "--vault", vault]);
    expect(data.map((e) => [e.name, e.type, e.size])).toEqual([["report.bin", "file", report.length]]);
  });

  test("restore --path takes files from both disks in one run, equal to what was written", async () => {
    const out = await tempFolder("vm-items-out");
    const result = await world.json(["restore", pointId, "--vault", vault, "--to", out, "--path", "/os/part1/etc", "--path", "/os/part5/boot.cfg", "--path", "/lun0/volume/report.bin"]);
    expect(result).toMatchObject({ files: 4, symlinks: 1, skipped: [], damaged: [] });
    expect(await sha256File(path.join(out, "os/part1/etc/ssh/sshd_config"))).toBe(await sha256File(path.join(root, "etc/ssh/sshd_config")));
    expect((await stat(path.join(out, "os/part1/etc/ssh/sshd_config"))).mode & 0o7777).toBe(0o600);
    expect(await readFile(path.join(out, "os/part5/boot.cfg"))).toEqual(bootConfig);
    expect(await readFile(path.join(out, "lun0/volume/report.bin"))).toEqual(report);
  });

  test("the agents' files restore job writes the paths into one tar archive in transient storage, which tar extracts equal to the source", async () => {
    const env = await workloadEnvironment({ ...world.env, BULWARK_PASSPHRASE: PASSPHRASE });
    const machine = restoreFilesMachine(env);
    const jobId = `9999999999999-${Math.random().toString(16).slice(2, 10)}`;
    const ctx = { jobId, job: { jobId, runs: 1 }, signal: new AbortController().signal, clock: { now: () => Date.now() }, log: () => {} } as unknown as StepContext;
    const paths = ["/os/part1/etc", "/lun0/volume/report.bin"];
    const done = await machine.states.restore!.step(ctx, machine.start({ vault, pointId, paths }));
    expect("done" in done && done.done).toBe(true);
    expect(done.data.archive).toBe(`jobs/${jobId}/files.tar`);
    expect(done.data.restored).toMatchObject({ files: 3, symlinks: 1, notRestored: [] });
    expect(machine.metrics!(done.data).output).toBe(world.transient.getBlobClient(`jobs/${jobId}/files.tar`).url);

    const archive = path.join(await tempFolder("vm-items-tar"), "files.tar");
    await world.transient.getBlobClient(done.data.archive!).downloadToFile(archive);
    const extracted = await tempFolder("vm-items-extracted");
    execFileSync("tar", ["-xf", archive, "-C", extracted]);
    expect(await sha256File(path.join(extracted, "os/part1/etc/ssh/sshd_config"))).toBe(await sha256File(path.join(root, "etc/ssh/sshd_config")));
    const sshd = await stat(path.join(extracted, "os/part1/etc/ssh/sshd_config"));
    expect([sshd.mode & 0o7777, sshd.mtimeMs]).toEqual([0o600, MTIME.getTime()]);
    expect(await readFile(path.join(extracted, "os/part1/etc/hostname"), "utf8")).toBe("app-vm\n");
    expect(await readFile(path.join(extracted, "lun0/volume/report.bin"))).toEqual(report);
    expect(execFileSync("readlink", [path.join(extracted, "os/part1/etc/sshd.link")], { encoding: "utf8" }).trim()).toBe("ssh/sshd_config");

    // A path the point does not hold fails the job at once (no retries), naming it.
    const missing = machine.states.restore!.step(ctx, machine.start({ vault, pointId, paths: ["/os/part1/etc/nope"] }));
    await expect(missing).rejects.toThrow(NotFoundError);
    await expect(missing).rejects.toThrow("/os/part1/etc/nope is not in point");
    expect(machine.retryable!(await missing.catch((e: unknown) => e))).toBe(false);
    expect(() => machine.start({ vault, pointId, paths: ["etc/../../x"] })).toThrow(/absolute paths/);
  });
});
