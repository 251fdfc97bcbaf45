// Shared helpers of the fleet benchmarks: percentiles and a liveness wait with its own poll period.
// nginx comes from the testkit (`startNginx` with an access log whose $msec has millisecond resolution).

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export async function waitFor(what: string, probe: () => Promise<boolean> | boolean, ms: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A free TCP port on 127.0.0.1. */
export { freeLoopbackPort as freePort } from '@resultity/testkit';
