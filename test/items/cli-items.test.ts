/**
 * Item-level restore through the real command line (issue 11): a GPT disk made by sgdisk with an
 * EFI system partition (mkfs.vfat, filled by mtools), an ext4 root (mke2fs -d from a folder made
 * here), an NTFS data partition (mkntfs, ntfscp) and an XFS one (mkfs.xfs with a protofile) is
 * backed up as a disk point; `bulwark ls`, `find`, `restore --path` and `mount` then work
 * on the point alone: listings and restored files equal the source folder (bytes, modes, owners,
 * times, symlinks, hard links, holes), only a small part of the vault is read, an existing file is
 * never replaced without --overwrite, a damaged block fails only the file it belongs to (nothing
 * half-written is left), and the disk served over NBD copies out (nbdcopy) equal to the image.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { once } from "node:events";
import { chmod, chown, link, lstat, mkdir, readFile, readlink, stat, symlink, truncate, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CHUNK_TREE } from "../../runtime/engine/chunk-codec.ts";
import { ID_BYTES } from "../../runtime/engine/crypto.ts";
import { packKey } from "../../runtime/engine/pack.ts";
import type { BlockLayout } from "../../runtime/engine/point.ts";
import { finished, startCli } from "../support/cli.ts";
import { allocatedBytes } from "../support/sparse.ts";
import { MIB, pseudoRandom, sha256, sha256File, tempFolder, text } from "../cli/vaults.ts";
import { PointVault } from "./disk-points.ts";

const SECTOR = 512;
const ESP_START = 1 * MIB;
const ESP_SIZE = 34 * MIB;
const ROOT_START = ESP_START + ESP_SIZE;
const ROOT_SIZE = 48 * MIB;
const DATA_START = ROOT_START + ROOT_SIZE;
const DATA_SIZE = 16 * MIB;
const XFS_START = DATA_START + DATA_SIZE;
/** mkfs.xfs 6.1 makes nothing smaller; the image is sparse, and so is its point. */
const XFS_SIZE = 300 * MIB;
const DISK_SIZE = XFS_START + XFS_SIZE + MIB;
const BLOCK = 64 * 1024;
const MTIME = new Date("2024-05-06T07:08:09Z");

interface LsEntry {
  name: string;
  path: string;
  type: string;
  size: number;
  mode?: number;
  mtime?: string;
  uid?: number;
  gid?: number;
  target?: string;
  filesystem?: string;
  label?: string;
}

interface RestoreReport {
  files: number;
  directories: number;
  symlinks: number;
  hardLinks: number;
  bytesWritten: number;
  bytesRead: number;
  skipped: unknown[];
  damaged: Array<{ path: string; error: string }>;
}

function run(tool: string, args: string[]): string {
  const result = spawnSync(tool, args, { encoding: "utf8" });
  if (result.error) throw new Error(`${tool} is needed to make this test's disk (CI installs it): ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

/** The folder the ext4 root is made from: what every listing and restore is compared with. */
async function makeRootFolder(root: string): Promise<void> {
  await mkdir(path.join(root, "etc/app"), { recursive: true });
  await mkdir(path.join(root, "data"), { recursive: true });
  await writeFile(path.join(root, "etc/hosts"), "127.0.0.1 localhost\n10.0.0.4 db\n");
  await writeFile(path.join(root, "etc/app.conf"), text("app.conf", 5000));
  await writeFile(path.join(root, "etc/app/secret.key"), pseudoRandom("secret", 700));
  await chmod(path.join(root, "etc/app/secret.key"), 0o600);
  await chown(path.join(root, "etc/app/secret.key"), 1234, 5678);
  await symlink("../hosts", path.join(root, "etc/app/hosts-link"));
  await link(path.join(root, "etc/hosts"), path.join(root, "etc/hosts.hardlink"));
  await writeFile(path.join(root, "data/big.bin"), pseudoRandom("big", 3 * MIB));
  // Holes before, between and after two pieces of data.
  const sparse = path.join(root, "data/sparse.bin");
  await writeFile(sparse, "");
  await truncate(sparse, 6 * MIB);
  const handle = await (await import("node:fs/promises")).open(sparse, "r+");
  await handle.write(pseudoRandom("sparse-a", 100_000), 0, 100_000, 2 * MIB);
  await handle.write(pseudoRandom("sparse-b", 50_000), 0, 50_000, 4 * MIB);
  await handle.close();
  for (const file of ["etc/hosts", "etc/app.conf", "etc/app/secret.key", "data/big.bin", "data/sparse.bin"]) await utimes(path.join(root, file), MTIME, MTIME);
}

describe("item-level restore on the command line: a GPT disk with an EFI partition and an ext4 root", () => {
  let vaults: PointVault;
  let work: string;
  let source: string;
  let disk: string;
  let pointId: string;

  beforeAll(async () => {
    work = await tempFolder("cli-items");
    source = path.join(work, "rootfs");
    await makeRootFolder(source);
    const esp = path.join(work, "esp.img");
    const rootImage = path.join(work, "root.img");
    run("truncate", ["-s", String(ESP_SIZE), esp]);
    run("mkfs.vfat", ["-F", "32", "-s", "1", "-n", "EFI", esp]);
    await writeFile(path.join(work, "bootx64.efi"), pseudoRandom("bootloader", 200_000));
    run("mmd", ["-i", esp, "::/EFI", "::/EFI/BOOT"]);
    run("mcopy", ["-i", esp, path.join(work, "bootx64.efi"), "::/EFI/BOOT/bootx64.efi"]);
    run("mke2fs", ["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "rootfs", "-d", source, rootImage, `${ROOT_SIZE / 1024}k`]);
    // A Windows data partition (NTFS, a file put there by ntfscp) and an XFS one (mkfs.xfs's protofile).
    const ntfs = path.join(work, "data.img");
    run("truncate", ["-s", String(DATA_SIZE), ntfs]);
    run("mkntfs", ["-F", "-Q", "-q", "-L", "DATA", ntfs]);
    await writeFile(path.join(work, "ledger.bin"), pseudoRandom("ledger", 1_500_000));
    run("ntfscp", ["-f", ntfs, path.join(work, "ledger.bin"), "ledger.bin"]);
    const xfs = path.join(work, "xfs.img");
    await writeFile(path.join(work, "readme.txt"), text("readme", 9000));
    await writeFile(path.join(work, "proto"), `/dev/null\n0 0\nd--755 0 0\ndocs d--750 1234 5678\nreadme.txt ---640 1234 5678 ${path.join(work, "readme.txt")}\n$\n$\n`);
    run("truncate", ["-s", String(XFS_SIZE), xfs]);
    run("mkfs.xfs", ["-q", "-L", "archive", "-p", path.join(work, "proto"), xfs]);
    disk = path.join(work, "disk.img");
    run("truncate", ["-s", String(DISK_SIZE), disk]);
    run("sgdisk", [
      ...["-n", `1:${ESP_START / SECTOR}:+${ESP_SIZE / 1024}K`, "-t", "1:EF00"],
      ...["-n", `2:${ROOT_START / SECTOR}:+${ROOT_SIZE / 1024}K`, "-t", "2:8300"],
      ...["-n", `3:${DATA_START / SECTOR}:+${DATA_SIZE / 1024}K`, "-t", "3:0700"],
      ...["-n", `4:${XFS_START / SECTOR}:+${XFS_SIZE / 1024}K`, "-t", "4:8300"],
      disk,
    ]);
    for (const [image, start] of [[esp, ESP_START], [rootImage, ROOT_START], [ntfs, DATA_START], [xfs, XFS_START]] as const) {
      run("dd", [`if=${image}`, `of=${disk}`, "bs=1M", `seek=${start / MIB}`, "conv=notrunc,sparse", "status=none"]);
    }
    vaults = await PointVault.create("cli-items");
    pointId = (await vaults.backup(disk)).id;
  }, 120_000);

  afterAll(async () => {
    await vaults?.close();
  });

  test("ls lists the disk's volumes with their filesystems and labels, and a folder's entries as the source has them", async () => {
    const volumes = await vaults.json<LsEntry[]>(["ls", pointId]);
    expect(volumes.map((v) => [v.name, v.type, v.filesystem, v.label])).toEqual([
      ["part1", "volume", "vfat", "EFI"],
      ["part2", "volume", "ext4", "rootfs"],
      ["part3", "volume", "ntfs", "DATA"],
      ["part4", "volume", "xfs", "archive"],
    ]);
    const etc = await vaults.json<LsEntry[]>(["ls", pointId, "/part2/etc"]);
    const byName = new Map(etc.map((e) => [e.name, e]));
    expect([...byName.keys()].sort()).toEqual(["app", "app.conf", "hosts", "hosts.hardlink"]);
    const hosts = byName.get("hosts")!;
    expect(hosts).toMatchObject({ path: "/part2/etc/hosts", type: "file", size: (await stat(path.join(source, "etc/hosts"))).size, mode: 0o644, mtime: MTIME.toISOString() });
    const secret = (await vaults.json<LsEntry[]>(["ls", pointId, "/part2/etc/app/secret.key"]))[0];
    expect(secret).toMatchObject({ type: "file", size: 700, mode: 0o600, uid: 1234, gid: 5678 });
    const linkEntry = (await vaults.json<LsEntry[]>(["ls", pointId, "/part2/etc/app/hosts-link"]))[0];
    expect(linkEntry).toMatchObject({ type: "symlink", target: "../hosts" });
    const long = await vaults.run(["ls", pointId, "/part2/etc/app", "--long"]);
    expect(long.code).toBe(0);
    expect(long.stdout).toMatch(/^-rw-------\s+1234\s+5678\s+700\s+2024-05-06T07:08:09.000Z\s+secret\.key$/m);
    const missing = await vaults.run(["ls", pointId, "/part2/etc/nope"]);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toContain("/part2/etc/nope is not in point");
  });

  test("files on the NTFS and XFS partitions list and restore as their tools made them", async () => {
    const docs = await vaults.json<LsEntry[]>(["ls", pointId, "/part4/docs"]);
    expect(docs).toEqual([expect.objectContaining({ name: "readme.txt", type: "file", size: 9000, mode: 0o640, uid: 1234, gid: 5678 })]);
    const out = await tempFolder("cli-items-ntfs-xfs");
    const report = await vaults.json<RestoreReport>(["restore", pointId, "--path", "/part3/ledger.bin", "--path", "/part4/docs", "--to", out]);
    expect(report).toMatchObject({ files: 2, skipped: [], damaged: [] });
    expect(sha256(await readFile(path.join(out, "part3/ledger.bin")))).toBe(sha256(pseudoRandom("ledger", 1_500_000)));
    expect(sha256(await readFile(path.join(out, "part4/docs/readme.txt")))).toBe(sha256(text("readme", 9000)));
    const docsFolder = await stat(path.join(out, "part4/docs"));
    expect([docsFolder.mode & 0o7777, docsFolder.uid, docsFolder.gid]).toEqual([0o750, 1234, 5678]);
  });

  test("find matches names across the volumes", async () => {
    const conf = await vaults.json<LsEntry[]>(["find", pointId, "*.conf"]);
    expect(conf.map((e) => e.path)).toEqual(["/part2/etc/app.conf"]);
    const efi = await vaults.json<LsEntry[]>(["find", pointId, "*.efi"]);
    expect(efi.map((e) => [e.path, e.size])).toEqual([["/part1/EFI/BOOT/bootx64.efi", 200_000]]);
  });

  test("restore --path writes the chosen files and folders under --to at their paths, equal to the source, reading a small part of the vault", async () => {
    const out = path.join(await tempFolder("cli-items-out"), "restored");
    const report = await vaults.json<RestoreReport>(["restore", pointId, "--path", "/part2/etc", "--path", "/part2/data/sparse.bin", "--path", "/part1/EFI/BOOT/bootx64.efi", "--to", out]);
    expect(report).toMatchObject({ files: 5, symlinks: 1, hardLinks: 1, skipped: [], damaged: [] });
    for (const file of ["etc/hosts", "etc/app.conf", "etc/app/secret.key", "data/sparse.bin"]) {
      const restored = path.join(out, "part2", file);
      expect(await sha256File(restored), file).toBe(await sha256File(path.join(source, file)));
      const [a, b] = [await stat(restored), await stat(path.join(source, file))];
      expect([a.mode & 0o7777, a.uid, a.gid, a.mtimeMs], file).toEqual([b.mode & 0o7777, b.uid, b.gid, b.mtimeMs]);
    }
    expect(await readlink(path.join(out, "part2/etc/app/hosts-link"))).toBe("../hosts");
    expect((await stat(path.join(out, "part2/etc/hosts.hardlink"))).ino).toBe((await stat(path.join(out, "part2/etc/hosts"))).ino);
    expect(await allocatedBytes(path.join(out, "part2/data/sparse.bin"))).toBeLessThan(1 * MIB);
    expect(sha256(await readFile(path.join(out, "part1/EFI/BOOT/bootx64.efi")))).toBe(sha256(pseudoRandom("bootloader", 200_000)));
    // Every byte of content, and of the sparse file's two pieces of data at most the rest of their last 4 KiB blocks (ext4 allocates whole blocks).
    const content = (await stat(path.join(source, "etc/hosts"))).size + 5000 + 700 + 150_000 + 200_000;
    expect(report.bytesWritten).toBeGreaterThanOrEqual(content);
    expect(report.bytesWritten).toBeLessThan(content + 2 * 4096);
    // The 3 MiB file and most of the disk were not read.
    expect(report.bytesRead).toBeGreaterThan(0);
    expect(report.bytesRead).toBeLessThan(3 * MIB);
  });

  test("an existing file is not replaced without --overwrite (nothing is written), and is with it", async () => {
    const out = await tempFolder("cli-items-exists");
    const restored = path.join(out, "part2/etc/hosts");
    await mkdir(path.dirname(restored), { recursive: true });
    await writeFile(restored, "mine\n");
    const refused = await vaults.run(["restore", pointId, "--path", "/part2/etc", "--to", out]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${restored} exists`);
    expect(await readFile(restored, "utf8")).toBe("mine\n");
    await expect(lstat(path.join(out, "part2/etc/app.conf"))).rejects.toThrow();
    const replaced = await vaults.json<RestoreReport>(["restore", pointId, "--path", "/part2/etc/hosts", "--to", out, "--overwrite"]);
    expect(replaced.files).toBe(1);
    expect(await readFile(restored, "utf8")).toBe(await readFile(path.join(source, "etc/hosts"), "utf8"));
  });

  test("a damaged block fails only the file it belongs to: the others are restored, no partial file is left, exit 5", async () => {
    // Where ext4 put the big file's 257th block, as debugfs says: the point's 64 KiB block holding it.
    const physical = Number(execFileSync("debugfs", ["-R", "bmap /data/big.bin 256", path.join(work, "root.img")], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    const blockIndex = Math.floor((ROOT_START + physical * 4096) / BLOCK);
    const { vault } = await vaults.open();
    const layout = (await vault.readPoint(pointId)).content as BlockLayout;
    const node = await vault.readChunk(CHUNK_TREE, Buffer.from(layout.tree[Math.floor(blockIndex / layout.blocksPerNode)], "hex"));
    const at = (blockIndex % layout.blocksPerNode) * ID_BYTES;
    const where = vault.locate(node.subarray(at, at + ID_BYTES));
    const key = packKey(where.pack);
    const original = await vaults.readObject(key);
    const damaged = Buffer.from(original);
    damaged[where.offset + Math.floor(where.length / 2)] ^= 0x01;
    await vaults.replaceObject(key, damaged);
    try {
      const out = await tempFolder("cli-items-damaged");
      const result = await vaults.run(["restore", pointId, "--path", "/part2/data", "--to", out]);
      expect(result.code).toBe(5);
      expect(result.stderr).toContain("/part2/data/big.bin was not restored");
      expect(await sha256File(path.join(out, "part2/data/sparse.bin"))).toBe(await sha256File(path.join(source, "data/sparse.bin")));
      const { readdir } = await import("node:fs/promises");
      expect(await readdir(path.join(out, "part2/data"))).toEqual(["sparse.bin"]);
    } finally {
      await vaults.replaceObject(key, original);
    }
  });

  test("mount serves the disk read-only over NBD: nbdcopy copies out the image, and Ctrl-C stops it", async () => {
    const server = startCli(["mount", pointId, "--nbd", "127.0.0.1:0", "--json", "--vault", vaults.location]);
    const done = finished(server);
    const [line] = (await once(server.stdout!, "data")) as [Buffer];
    const { uri } = JSON.parse(line.toString().split("\n")[0]) as { uri: string };
    expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\//);
    const copy = path.join(await tempFolder("cli-items-nbd"), "copy.img");
    run("nbdcopy", [uri, copy]);
    expect(await sha256File(copy)).toBe(await sha256File(disk));
    server.kill("SIGINT");
    expect((await done).code).toBe(0);
  });
});
