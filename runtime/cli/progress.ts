/** Progress on a terminal (bytes, rate, ETA) on stderr; silent when not on one or with --json. */
export interface Progress {
  update(bytesDone: number): void;
  done(): void;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function createProgress(label: string, total: number | undefined, enabled: boolean): Progress {
  if (!enabled) return { update() {}, done() {} };
  const started = Date.now();
  let lastDraw = 0;
  let last = 0;
  const draw = (final: boolean) => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? last / seconds : 0;
    const parts = [`${label} ${formatBytes(last)}${total ? ` / ${formatBytes(total)}` : ""}`, `${formatBytes(rate)}/s`];
    if (total && rate > 0 && !final) parts.push(`ETA ${Math.max(0, Math.round((total - last) / rate))}s`);
    process.stderr.write(`\r\x1b[2K${parts.join("  ")}${final ? "\n" : ""}`);
  };
  return {
    update(bytesDone) {
      last = bytesDone;
      const now = Date.now();
      if (now - lastDraw >= 250) {
        lastDraw = now;
        draw(false);
      }
    },
    done() {
      draw(true);
    },
  };
}
