/**
 * Setup file of every test file (vitest.config.ts setupFiles): whatever a test started and did
 * not stop (a CLI or worker process still running because an assertion failed first) is killed
 * after that test; processes and scratch folders of the whole file after the file.
 */
import { afterAll, afterEach, beforeEach } from "vitest";
import { enterScope, killChildren, removeFolders } from "./cleanup.ts";

beforeEach(() => enterScope("test"));

afterEach(async (context) => {
  enterScope("file");
  const killed = await killChildren("test");
  if (killed.length > 0) console.warn(`[cleanup] killed ${killed.length} process(es) still running after "${context.task.name}": ${killed.join("; ")}`);
});

afterAll(async () => {
  await killChildren("file");
  await removeFolders();
});
