import path from "node:path";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
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
  },
});
