/**
 * The copy case (issue 12): `bulwark copy` between two Azure Blob vaults, server-side (Copy Blob
 * From URL with the authenticated bytes' MD5: the process reads each pack once and uploads none)
 * against through the process (read, authenticate, upload), and the bytes an incremental copy
 * moves after a small change. Both vaults live in one local Azurite, so its numbers compare the
 * two paths on this machine; they are not Azure's throughput (there a server-side copy does not
 * cross the client's network at all).
 *
 * Setup (not timed): a source vault with one point of a pseudo-random file of --size (default
 * 256 MiB), and two destinations made like it. Measured: the full copy each way (wall time, pack
 * bytes landed, bytes uploaded by the process); then 1% of the file rewritten, backed up again,
 * and copied incrementally server-side (packs and bytes moved against the point's size).
 */
import { writeFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { backupFileStream } from "../runtime/engine/backup.ts";
import { copyPoints, type CopyReport } from "../runtime/engine/copy.ts";
import { Vault } from "../runtime/engine/vault.ts";
import { PassphraseProvider } from "../runtime/keys/passphrase.ts";
import { openStore } from "../runtime/store/open.ts";
import { Azurite } from "../test/support/azurite.ts";
import { Keystream, formatBytes } from "./image.ts";

const MiB = 1024 * 1024;
const PASSPHRASE = "bench passphrase, long enough";

export const COPY_DEFAULT_SIZE = 256 * MiB;

export interface CopySettings {
  sizeBytes: number;
  seed: string;
  outPath: string;
  log: (line: string) => void;
}

interface CopyRun {
  path: "server-side" | "through the process" | "incremental, server-side";
  seconds: number;
  mibPerSecond: number;
  report: CopyReport;
}

/** Pseudo-random content of `size` bytes in 4 MiB pieces (never all in memory). */
async function* content(seed: string, size: number, changedAt?: number): AsyncIterable<Uint8Array> {
  const stream = new Keystream(seed, "copy");
  for (let at = 0, n = 0; at < size; at += 4 * MiB, n++) {
    const piece = stream.fill(Buffer.alloc(Math.min(4 * MiB, size - at)), n);
    // The incremental run rewrites 1% of the file, one contiguous stretch from `changedAt`.
    if (changedAt !== undefined && at + piece.length > changedAt && at < changedAt + size / 100) {
      for (let i = Math.max(0, changedAt - at); i < piece.length && at + i < changedAt + size / 100; i++) piece[i] ^= 0x5a;
    }
    yield piece;
  }
}

async function timedCopy(path: CopyRun["path"], from: Vault, to: Vault, serverSide: boolean): Promise<CopyRun> {
  const started = performance.now();
  const report = await copyPoints(from, to, { serverSide });
  const seconds = (performance.now() - started) / 1000;
  return { path, seconds, mibPerSecond: report.bytesCopied / MiB / seconds, report };
}

export async function runCopyBench(settings: CopySettings): Promise<boolean> {
  const { log } = settings;
  log("copy: starting Azurite (both vaults in one account, as two containers)");
  const azurite = await Azurite.start();
  try {
    const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    const provider = new PassphraseProvider(PASSPHRASE);
    const vaultAt = async (name: string) => {
      const opened = await openStore(`${azurite.blobEndpoint}/${name}`, env);
      await opened.prepare();
      return opened.store;
    };
    const source = await Vault.init(await vaultAt("source"), provider);
    const like = async (name: string) => Vault.init(await vaultAt(name), provider, {}, source.master);
    const [serverSideVault, throughVault] = [await like("server-side"), await like("through")];
    log(`copy: backing up ${formatBytes(settings.sizeBytes)} of pseudo-random data into the source vault`);
    const description = { kind: "file" as const, source: { type: "file", path: "/bench/copy.bin" } };
    await backupFileStream(source, content(settings.seed, settings.sizeBytes), description);

    const runs: CopyRun[] = [];
    runs.push(await timedCopy("server-side", source, serverSideVault, true));
    runs.push(await timedCopy("through the process", source, throughVault, false));
    await backupFileStream(source, content(settings.seed, settings.sizeBytes, Math.floor(settings.sizeBytes / 2)), description);
    await source.reloadIndex();
    runs.push(await timedCopy("incremental, server-side", source, serverSideVault, true));

    log("");
    log("| copy | time | pack bytes landed | bytes uploaded by the process | packs | throughput |");
    log("|---|---:|---:|---:|---:|---:|");
    for (const run of runs) {
      log(
        `| ${run.path} | ${run.seconds.toFixed(1)} s | ${formatBytes(run.report.bytesCopied)} | ${formatBytes(run.report.bytesUploaded)} | ` +
          `${run.report.packsCopied} | ${run.mibPerSecond.toFixed(0)} MiB/s |`,
      );
    }
    const incremental = runs[2].report;
    log(`\nincremental copy: ${formatBytes(incremental.bytesCopied)} moved for a ${formatBytes(settings.sizeBytes)} point with 1% changed`);
    await mkdir(dirname(settings.outPath), { recursive: true });
    await writeFile(settings.outPath, JSON.stringify({ case: "copy", sizeBytes: settings.sizeBytes, at: new Date().toISOString(), runs }, null, 1));
    log(`results: ${settings.outPath}`);
    return true;
  } finally {
    await azurite.stop();
  }
}
