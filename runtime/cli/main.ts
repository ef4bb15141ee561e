#!/usr/bin/env node
/**
 * The `bulwark` command's entry point; the command itself is run.ts.
 *
 * Node strips the TypeScript types of every module it loads, at every start: about half of a
 * command's start-up (0.45 s of 0.9 s measured here). Node's module compile cache keeps what it
 * compiled between runs and checks each entry against its source's checksum, so an edited module
 * is compiled again (Node's documentation, "Module compile cache"). The cache lives in the user's
 * own cache folder, made private, never in a shared temporary folder another user could fill with
 * code; where there is none, commands run without it.
 */
import { mkdirSync } from "node:fs";
import { enableCompileCache } from "node:module";
import os from "node:os";
import path from "node:path";

function privateCacheFolder(): string | undefined {
  const base = process.env.XDG_CACHE_HOME || (os.homedir() ? path.join(os.homedir(), ".cache") : "");
  if (!path.isAbsolute(base)) return undefined;
  const folder = path.join(base, "bulwark", "node-compile-cache");
  try {
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    return folder;
  } catch {
    return undefined;
  }
}

const cache = privateCacheFolder();
if (cache) {
  try {
    enableCompileCache(cache);
  } catch {
    // Only start-up time is lost.
  }
}
await import("./run.ts");
