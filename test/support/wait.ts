/** Waiting on a condition (an object appearing, a line logged), never on a fixed time. */
export async function waitFor(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 60_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
