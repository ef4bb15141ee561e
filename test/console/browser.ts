/**
 * Debian's Chromium, driven by playwright-core (which downloads no browser): headless, no sandbox
 * (CI runs as root in a container), nothing fetched in the background, a fresh profile each launch.
 */
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { trackFolder } from "../support/cleanup.ts";

export const CHROMIUM = "/usr/bin/chromium";

const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** A browser context with its own user-data-dir; close it after the file. */
export async function launchChromium(): Promise<BrowserContext> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`the console's browser tests need Debian's Chromium at ${CHROMIUM}: install it with \`apt-get install chromium\` (.ci/run does)`);
  }
  const profile = trackFolder(await mkdtemp(path.join(os.tmpdir(), "bulwark-chromium-")));
  return chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: ARGS, headless: true, viewport: { width: 1280, height: 800 } });
}
