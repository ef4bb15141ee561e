/**
 * The `bulwark` command line. Every command exits 0 on success; on failure it prints one message
 * on stderr that says what went wrong and what to do, and exits with the error's code (see
 * runtime/errors.ts). --json makes output machine-readable; progress appears only on a terminal.
 */
import { BulwarkError } from "../errors.ts";
import { commands } from "./commands.ts";
import { parseCommandLine, type CommandLine } from "./parse.ts";
import { failureReport, formatFailure, interruptedReport, wantsJson } from "./error-report.ts";
import { INTERRUPTED_EXIT_CODES, InterruptedError, interrupt, interruptedBy, removeLeftoversSync } from "../interruption.ts";
import { releaseHeldLocks } from "../engine/locks.ts";

/** How long an interrupted command may take to release what it holds before the exit is forced. */
const INTERRUPT_GRACE_MS = 60_000;
/**
 * How long a forced exit waits for the vault locks it still holds to be deleted. A lock left behind
 * makes the vault look busy to everyone until it expires, so this is generous: on a loaded machine
 * a local delete waited behind the command's reads for over 3 s (test/cli/interrupt.test.ts).
 */
const LOCK_RELEASE_MS = 10_000;

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
    let locksRemoved = false;
    const locksGone = releaseHeldLocks().then(() => (locksRemoved = true));
    const bound = new Promise((resolve) => setTimeout(resolve, LOCK_RELEASE_MS).unref());
    await Promise.race([Promise.allSettled([unwound, locksGone]), bound]);
    removeLeftoversSync();
    const lock = locksRemoved
      ? "the vault lock removed"
      : `the vault lock not removed within ${LOCK_RELEASE_MS / 1000}s (if nothing else uses the vault, \`bulwark unlock\` removes it; it expires by itself otherwise)`;
    process.stderr.write(`${clearProgressLine()}bulwark ${name}: interrupted by ${signal}; ${why.replace("{lock}", lock)}\n`);
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
        void forceExit(first, `${signal} again: stopped at once; temporary files removed, {lock}; anything else is removed by the next run or \`bulwark agent bridge\``);
        return;
      }
      interrupt(signal);
      setTimeout(
        () => void forceExit(signal, `cleanup did not finish within ${INTERRUPT_GRACE_MS / 1000}s: temporary files removed, {lock}; the next run or \`bulwark agent bridge\` removes the rest`),
        INTERRUPT_GRACE_MS,
      ).unref();
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  const json = wantsJson(argv);
  let line: CommandLine;
  try {
    line = parseCommandLine(argv, commands);
  } catch (error) {
    const known = argv[0] !== undefined && Object.hasOwn(commands, argv[0]);
    process.stderr.write(formatFailure(failureReport(error), known ? `bulwark ${argv[0]}` : "bulwark", json));
    return 2;
  }
  if (line.kind === "help") {
    process.stdout.write(line.text);
    return line.exitCode;
  }
  if (line.kind === "version") {
    process.stdout.write("bulwark 0.1.0\n");
    return 0;
  }
  const { name, command } = line;
  // The agents stop on SIGTERM in their own way (the step in flight is committed, see runtime/jobs);
  // `jobs` and `status` only read tables and hold nothing: a signal ends them as usual.
  let unwound!: () => void;
  if (!["agent", "jobs", "status"].includes(name)) handleSignals(name, new Promise<void>((resolve) => (unwound = resolve)));
  try {
    return (await command.run(line.values, line.positionals)) ?? 0;
  } catch (error) {
    const signal = interruptedBy();
    if (signal) {
      const exitCode = INTERRUPTED_EXIT_CODES[signal] ?? 130;
      const report = interruptedReport(`interrupted by ${signal}; ${RELEASED}`, exitCode);
      if (!forcingExit) process.stderr.write(`${clearProgressLine()}${formatFailure(report, `bulwark ${name}`, json)}`);
      return exitCode;
    }
    const report = failureReport(error);
    process.stderr.write(`${clearProgressLine()}${formatFailure(report, `bulwark ${name}`, json)}`);
    if (!(error instanceof BulwarkError) && process.env.BULWARK_DEBUG) console.error(error);
    return report.exitCode;
  } finally {
    unwound?.();
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
