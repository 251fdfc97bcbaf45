/** How reconnects are spaced: exponential from `initialMs` up to `maxMs`, with a random part. */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Share of each delay that is random, 0..1: 0.5 means a delay falls between half and all of the step. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 10_000, factor: 2, jitter: 0.5 };

/**
 * The delay before reconnect attempt `attempt` (0 for the first). Jitter keeps a hundred
 * runtimes that lost the same Agent from knocking on its door at the same instant.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const step = Math.min(options.maxMs, options.initialMs * options.factor ** Math.max(0, attempt));
  const jitter = Math.min(1, Math.max(0, options.jitter));
  return Math.round(step * (1 - jitter * random()));
}

/** Fills in defaults and refuses settings that would spin or never retry. */
export function backoffOptions(partial: Partial<BackoffOptions> = {}): BackoffOptions {
  const options = { ...DEFAULT_BACKOFF, ...partial };
  if (!(options.initialMs >= 1 && options.maxMs >= options.initialMs && options.factor >= 1)) {
    throw new RangeError(
      `expected backoff initialMs >= 1, maxMs >= initialMs and factor >= 1, found ${options.initialMs}, ${options.maxMs}, ${options.factor}`,
    );
  }
  return options;
}
