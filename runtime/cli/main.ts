#!/usr/bin/env node
/**
 * The `bulwark` command line. Every command exits 0 on success; on failure it prints one message
 * on stderr that says what went wrong and what to do, and exits with the error's code (see
 * runtime/errors.ts). --json makes output machine-readable; progress appears only on a terminal.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { BulwarkError, UsageError, describeError } from "../errors.ts";
import { commands } from "./commands.ts";
import { isRetryable } from "../store/retry.ts";
import { INTERRUPTED_EXIT_CODES, InterruptedError, interrupt, interruptedBy, removeLeftoversSync } from "../interruption.ts";
import { heldLocks } from "../engine/locks.ts";

/** How long an interrupted command may take to release what it holds before the exit is forced. */
const INTERRUPT_GRACE_MS = 60_000;
/** How long a forced exit waits for the vault locks it still holds to be deleted. */
const LOCK_RELEASE_MS = 3_000;

const HELP = `bulwark: encrypted, deduplicated backups of disks, files, Azure VMs and Azure SQL

Usage: bulwark COMMAND [options]

Vault:
  init     --vault V                          create a vault (a folder, or an Azure Blob container URL)
  init     --vault V2 --like V1               a vault sharing V1's master keys (V1's key: --from-passphrase-file F,
                                              BULWARK_FROM_PASSPHRASE or --from-key-vault-key K), so points copy as they are
  copy     --from V1 --to V2 [POINT]... [--json]
                                              copy points (all by default) and the data they need; V1 opens with the
                                              --from-* key, V2 with the usual one; server-side between Azure vaults
  seed journal --vault FOLDER --for AZURE-VAULT [--json]
                                              list and sign a seed folder's objects before shipping it (README, seeding)
  backup   SOURCE --vault V [--tag k=v]... [--as disk|file] [--json]
                                              back up a file, raw disk image or block device
  points   --vault V [--json]                 list recovery points
  restore  POINT --vault V --to PATH [--overwrite] [--source SOURCE] [--json]
                                              restore a point (id, unique id prefix, or "latest")
  ls       POINT [PATH] --vault V [--long] [--json]
                                              browse a disk or VM point: its disks, volumes, folders and files
  find     POINT PATTERN --vault V [--json]   find names (a glob: '*.conf', '**/etc/*') across a point's volumes
  restore  POINT --vault V --path PATH [--path PATH]... --to DIR [--overwrite] [--json]
                                              restore files and folders of a point under DIR at their path
  mount    POINT --vault V --nbd HOST:PORT [--disk os|lunN]
                                              serve a point's disk read-only over NBD until Ctrl-C
  verify   --vault V [--read-data | --read-data-subset PCT] [--json]
  forget   --vault V --keep-last N --keep-hourly N --keep-daily N --keep-weekly N
           --keep-monthly N --keep-yearly N [--prune] [--dry-run] [--json]
  prune    --vault V [--dry-run] [--json]
  key      list|add|remove|passwd --vault V [KEY-ID]
  unlock   --vault V                          remove lock objects left by killed processes

Agents (Container Apps jobs; configuration from the environment, see infra/README.md):
  agent schedule [--policies P] [--agent-regions a,b]   one scheduler tick: enqueue due items per region
  agent worker   [--region R] [--until-drained]         run queued jobs until the region's queue is empty
  agent prune    [--policies P]                         each policy's retention, then prune, per vault
  agent bridge                                          in-tenant inventory; retire snapshots nothing needs
  jobs           [--limit N] [--json]                   recent jobs and their state
  status         [--policies P] [--json]                each protected item's last good point and RPO

The vault key: a recovery passphrase of at least 16 characters, from BULWARK_PASSPHRASE or
--passphrase-file F (never stored). For key add/passwd the new one comes from
BULWARK_NEW_PASSPHRASE or --new-passphrase-file F.
Azure Blob vaults use AZURE_STORAGE_CONNECTION_STRING if set, else the Azure default credential chain.

Exit codes: 0 ok, 1 failure, 2 bad usage, 3 wrong key, 4 not found, 5 damaged data,
6 unreadable source, 7 vault busy, 8 storage or Azure service failure,
130 interrupted (Ctrl-C, SIGINT), 143 stopped by SIGTERM: what the command held is released.
`;

const RELEASED = "stopped and released what it held (vault lock, temporary and partial files, snapshots and read access it made); nothing half-done was committed";

/** On a terminal a progress line may be drawn (without a newline): the message replaces it. */
function clearProgressLine(): string {
  return process.stderr.isTTY ? "\r\x1b[2K" : "";
}

/** Set once a forced exit is under way: it prints the one line, not the command's own catch. */
let forcingExit = false;

/**
 * SIGINT/SIGTERM: the command is marked interrupted and unwinds through its own cleanup (see
 * runtime/interruption.ts); a second signal, or a cleanup that outlasts the grace period, exits at
 * once after removing the tracked temporary files and (for a few seconds at most) the vault locks
 * still held.
 */
function handleSignals(name: string, unwound: Promise<unknown>): void {
  const forceExit = async (signal: NodeJS.Signals, why: string) => {
    if (forcingExit) return;
    forcingExit = true;
    removeLeftoversSync();
    // The locks not yet released, and the command's own unwinding (which may be deleting one now).
    const released = Promise.allSettled([unwound, ...heldLocks().map((lock) => lock.release())]);
    await Promise.race([released, new Promise((resolve) => setTimeout(resolve, LOCK_RELEASE_MS).unref())]);
    removeLeftoversSync();
    process.stderr.write(`${clearProgressLine()}bulwark ${name}: interrupted by ${signal}; ${why}\n`);
    process.exit(INTERRUPTED_EXIT_CODES[signal] ?? 130);
  };
  // Reads started ahead of their use reject with InterruptedError after the signal while nothing
  // awaits them any more: expected, not a crash. Any other unhandled rejection stays fatal.
  process.on("unhandledRejection", (reason) => {
    if (reason instanceof InterruptedError) return;
    throw reason;
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      const first = interruptedBy();
      if (first) {
        void forceExit(first, `${signal} again: stopped at once; temporary files and the vault lock removed, anything else is removed by the next run or \`bulwark agent bridge\``);
        return;
      }
      interrupt(signal);
      setTimeout(
        () => void forceExit(signal, `cleanup did not finish within ${INTERRUPT_GRACE_MS / 1000}s: temporary files and the vault lock removed; the next run or \`bulwark agent bridge\` removes the rest`),
        INTERRUPT_GRACE_MS,
      ).unref();
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(HELP);
    return name ? 0 : 2;
  }
  if (name === "--version") {
    process.stdout.write("bulwark 0.1.0\n");
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`bulwark: unknown command "${name}"; run \`bulwark --help\` for the list\n`);
    return 2;
  }
  // The agents stop on SIGTERM in their own way (the step in flight is committed, see runtime/jobs);
  // `jobs` and `status` only read tables and hold nothing: a signal ends them as usual.
  let unwound!: () => void;
  if (!["agent", "jobs", "status"].includes(name)) handleSignals(name, new Promise<void>((resolve) => (unwound = resolve)));
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options: command.options, allowPositionals: true, strict: true } as ParseArgsConfig);
    } catch (error) {
      throw new UsageError(`${describeError(error)}; run \`bulwark --help\``);
    }
    return (await command.run(parsed.values as Record<string, unknown>, parsed.positionals)) ?? 0;
  } catch (error) {
    const signal = interruptedBy();
    if (signal) {
      if (!forcingExit) process.stderr.write(`${clearProgressLine()}bulwark ${name}: interrupted by ${signal}; ${RELEASED}\n`);
      return INTERRUPTED_EXIT_CODES[signal] ?? 130;
    }
    // A dropped connection or an outage that outlasted every retry: a service failure, not a bug.
    const unreachable = !(error instanceof BulwarkError) && isRetryable(error);
    const code = error instanceof BulwarkError ? error.exitCode : unreachable ? 8 : 1;
    const message =
      error instanceof BulwarkError
        ? error.message
        : unreachable
          ? `a storage or Azure service did not answer (${describeError(error).split("\n")[0]}); check that it is reachable and retry: nothing half-written was committed`
          : `unexpected failure: ${describeError(error)}`;
    process.stderr.write(`${clearProgressLine()}bulwark ${name}: ${message}\n`);
    if (!(error instanceof BulwarkError) && process.env.BULWARK_DEBUG) console.error(error);
    return code;
  } finally {
    unwound?.();
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
