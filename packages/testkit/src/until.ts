/**
 * Polls `probe` until it gives a truthy value and returns it; fails naming `what` after `ms`.
 * A probe that throws (a server not listening yet, a container not created yet) counts as
 * "not yet"; its last error is named in the timeout so a real failure is not hidden.
 * A liveness bound for tests and tools that drive real processes, not a timing assertion.
 */
export async function until<T>(what: string, probe: () => T | null | undefined | false | Promise<T | null | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const cause = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new Error(`timed out waiting for ${what}${cause}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
