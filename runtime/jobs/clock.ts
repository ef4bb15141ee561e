/**
 * Time as a dependency. Everything in the job runtime asks a Clock, so the scheduler and retention
 * can be driven through a simulated month, and tests never sleep longer than a lease needs.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after ms (or at once when the signal aborts; never rejects). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      }
      signal?.addEventListener("abort", done, { once: true });
    }),
};

/** A clock that moves only when told to; sleeping advances it. For single-process simulations. */
export class ManualClock implements Clock {
  private time: number;

  constructor(start: Date | number) {
    this.time = typeof start === "number" ? start : start.getTime();
  }

  now(): number {
    return this.time;
  }

  set(time: Date | number): void {
    this.time = typeof time === "number" ? time : time.getTime();
  }

  advance(ms: number): void {
    this.time += ms;
  }

  async sleep(ms: number): Promise<void> {
    this.time += ms;
    await Promise.resolve();
  }
}
