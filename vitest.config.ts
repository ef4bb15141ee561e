import path from "node:path";
import { defineConfig } from "vitest/config";

/**
 * Test folders whose files run in-process only (no module state a file leaves behind matters to the
 * next: Pulumi mocks are cleared per deploy, vaults and emulators are per file): their files share
 * one module graph per worker instead of evaluating the Pulumi and Azure SDKs again for each file
 * (measured: test/infra and test/policies 117 → 76 CPU s). The rest (CLI processes, agents, fleets,
 * Azurite, signals, process.env) keep a fresh process per file.
 */
const SHARED_MODULES = ["infra", "policies", "policy", "retention", "bench", "image", "emulator", "items", "tree", "engine"];

export default defineConfig({
  test: {
    pool: "forks",
    // Two cores here: suites that start Azurite or spawn the CLI are heavy, so run two at once.
    maxWorkers: 2,
    // Limits that only bound a hang: tests wait on events, never on time. Heavy suites took over
    // 120 s with the machine's cores busy elsewhere.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // One temporary folder for the whole run; the run fails if anything is left in it.
    globalSetup: ["test/support/tmp-guard.ts"],
    // Kills a test's leftover child processes after it, and removes scratch folders after each file.
    setupFiles: ["test/support/cleanup-hooks.ts"],
    // For the CLI and agent processes the tests start (they inherit this environment): Node's
    // compile cache (a third of each start-up) and a cheap scrypt for the vaults tests create
    // (runtime/keys/passphrase.ts honours it only under vitest). The product's cost is unchanged.
    env: {
      NODE_COMPILE_CACHE: path.resolve("node_modules/.cache/node-compile-cache"),
      BULWARK_TEST_SCRYPT_N: String(1 << 10),
    },
    projects: [
      {
        extends: true,
        test: { name: "shared-modules", include: SHARED_MODULES.map((folder) => `test/${folder}/**/*.test.ts`), isolate: false },
      },
      {
        extends: true,
        test: { name: "isolated", include: ["test/**/*.test.ts"], exclude: SHARED_MODULES.map((folder) => `test/${folder}/**`) },
      },
    ],
  },
});
