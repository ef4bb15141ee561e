/**
 * What a test file leaves behind, tracked so that it is removed even when a test fails: child
 * processes (the CLI, agents, Azurite) and scratch folders. test/support/cleanup-hooks.ts (a vitest
 * setup file) kills a test's children after that test, and every child and folder after the file.
 */
import type { ChildProcess } from "node:child_process";
import { rm } from "node:fs/promises";

type Scope = "test" | "file";

const children = new Map<ChildProcess, Scope>();
const folders = new Set<string>();
let scope: Scope = "file";

/** Set by the setup file: children started from now on belong to the running test. */
export function enterScope(next: Scope): void {
  scope = next;
}

/** Tracks a child process: killed (SIGKILL) after the test that started it, or after the file. */
export function trackChild(child: ChildProcess, lifetime: Scope = scope): ChildProcess {
  if (child.exitCode !== null || child.signalCode !== null) return child;
  children.set(child, lifetime);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Tracks a scratch folder, removed after the file. */
export function trackFolder(folder: string): string {
  folders.add(folder);
  return folder;
}

/** Kills the tracked children of a scope (both scopes when "file"), waiting until they exited. */
export async function killChildren(of: Scope): Promise<string[]> {
  const killed: string[] = [];
  const waits: Promise<void>[] = [];
  for (const [child, lifetime] of children) {
    if (of === "test" && lifetime !== "test") continue;
    children.delete(child);
    if (child.exitCode !== null || child.signalCode !== null) continue;
    killed.push(`${child.pid} ${child.spawnargs.slice(1, 4).join(" ")}`);
    waits.push(new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      if (!child.kill("SIGKILL")) resolve();
    }));
  }
  await Promise.all(waits);
  return killed;
}

export async function removeFolders(): Promise<void> {
  const all = [...folders];
  folders.clear();
  await Promise.all(all.map((f) => rm(f, { recursive: true, force: true, maxRetries: 3 })));
}
