/**
 * Ctrl-C (SIGINT) and SIGTERM in the `bulwark` command. The signal does not kill the process: it
 * marks it interrupted, and the next read or write of a source, a store or a restore target throws
 * InterruptedError, so the command unwinds through the same cleanup as any failure (the vault lock
 * released, open writers aborted, a restore's partial file removed, an Azure backup's read access
 * revoked and its new snapshots deleted). Files that must not outlive the process are also tracked
 * here, so that an exit forced before the unwinding finished (a second signal, or a cleanup that
 * hangs) still removes them. The agents handle SIGTERM themselves (runtime/jobs).
 */
import { unlinkSync } from "node:fs";
import { BulwarkError } from "./errors.ts";

/** Exit codes of an interrupted command: 128 + the signal's number, as shells report it. */
export const INTERRUPTED_EXIT_CODES: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143 };

export class InterruptedError extends BulwarkError {
  readonly signal: NodeJS.Signals;

  constructor(signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`, INTERRUPTED_EXIT_CODES[signal] ?? 130);
    this.signal = signal;
  }
}

let received: NodeJS.Signals | undefined;
const waiting: Array<(signal: NodeJS.Signals) => void> = [];

/** Marks the process interrupted (the first signal counts). */
export function interrupt(signal: NodeJS.Signals): void {
  received ??= signal;
  for (const wake of waiting.splice(0)) wake(received);
}

/** Resolves with the signal once the process is interrupted: how a command that serves until Ctrl-C (`bulwark mount`) learns to stop. */
export function interrupted(): Promise<NodeJS.Signals> {
  if (received) return Promise.resolve(received);
  return new Promise((resolve) => waiting.push(resolve));
}

/** The signal that interrupted this process, if one did. */
export function interruptedBy(): NodeJS.Signals | undefined {
  return received;
}

/** Called before each unit of work that can be given up: throws once the process is interrupted. */
export function throwIfInterrupted(): void {
  if (received) throw new InterruptedError(received);
}

const leftovers = new Set<string>();

/** A file to remove if the process exits before its owner removed or committed it; returns the untrack function. */
export function trackLeftover(file: string): () => void {
  leftovers.add(file);
  return () => {
    leftovers.delete(file);
  };
}

/** Removes every tracked file now (synchronously: the process is about to exit). */
export function removeLeftoversSync(): void {
  for (const file of leftovers) {
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  }
  leftovers.clear();
}

/** Whether a process of this id runs on this host (EPERM: it runs, as someone else). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
