/**
 * The runtime image installs only production dependencies and copies only runtime/ and bin/: so
 * everything the runtime imports must be a production dependency or a Node built-in, and it must
 * never reach into test/, infra/ or bench/. (No Docker engine runs here; this is what a build would
 * break on at start-up.)
 */
import { readdir, readFile } from "node:fs/promises";
import { builtinModules } from "node:module";
import path from "node:path";
import { describe, expect, test } from "vitest";

const root = path.resolve(import.meta.dirname, "../..");

async function sources(folder: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) {
      if (path.relative(root, full) === path.join("runtime", "demo")) continue; // removed from the image
      out.push(...(await sources(full)));
    } else if (entry.name.endsWith(".ts") || entry.name.endsWith(".js")) out.push(full);
  }
  return out;
}

/** Module specifiers that exist at run time (type-only imports are erased by type stripping). */
function specifiers(text: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(/(?:import|export)\s(?!type\s)[^'"]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|^import\s+["']([^"']+)["']/gm)) {
    found.push(match[1] ?? match[2] ?? match[3]);
  }
  return found;
}

function packageOf(specifier: string): string {
  return specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0];
}

describe("the runtime image", () => {
  test("imports only Node built-ins, production dependencies, and files inside runtime/", async () => {
    const manifest = JSON.parse(await readFile(path.join(root, "package.json"), "utf8")) as { dependencies: Record<string, string> };
    const production = new Set(Object.keys(manifest.dependencies));
    const problems: string[] = [];
    const files = [...(await sources(path.join(root, "runtime"))), path.join(root, "bin", "bulwark.js")];
    expect(files.length).toBeGreaterThan(20);
    for (const file of files) {
      for (const specifier of specifiers(await readFile(file, "utf8"))) {
        const where = path.relative(root, file);
        if (specifier.startsWith(".")) {
          const target = path.relative(root, path.resolve(path.dirname(file), specifier));
          if (!target.startsWith(`runtime${path.sep}`)) problems.push(`${where} imports ${specifier}, outside runtime/`);
        } else if (specifier.startsWith("node:") || builtinModules.includes(specifier)) {
          continue;
        } else if (!production.has(packageOf(specifier))) {
          problems.push(`${where} imports ${specifier}, which is not a production dependency`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  test("the Dockerfile builds on Node 24 slim, installs production dependencies only, runs as a non-root user, and starts bulwark", async () => {
    const dockerfile = await readFile(path.join(root, "Dockerfile"), "utf8");
    const stages = dockerfile.match(/^FROM\s+(\S+)/gm) ?? [];
    expect(stages.length).toBeGreaterThan(0);
    for (const stage of stages) expect(stage).toMatch(/node:24-slim/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/^USER\s+(?!root)\w+/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "\/app\/runtime\/cli\/main\.ts"\]/m);
    expect(dockerfile).toMatch(/^CMD \["agent", "worker"\]/m);
  });
});
