import type { Snapshot } from '@resultity/snapshot';

/** The loop's timers: from the applied snapshot's `ttl`, or the configuration's defaults before any. */
export interface LoopTimers {
  readonly pollMs: number;
  readonly heartbeatMs: number;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  readonly jitter: number;
}

export function timersFrom(
  snapshot: Pick<Snapshot, 'ttl'> | null,
  fallback: { poll_interval_s: number; heartbeat_interval_s: number; retry_initial_ms: number; retry_max_ms: number; jitter: number },
): LoopTimers {
  const ttl = snapshot?.ttl;
  return {
    pollMs: (ttl?.poll_interval_s ?? fallback.poll_interval_s) * 1000,
    heartbeatMs: (ttl?.heartbeat_interval_s ?? fallback.heartbeat_interval_s) * 1000,
    retryInitialMs: ttl?.retry_initial_ms ?? fallback.retry_initial_ms,
    retryMaxMs: ttl?.retry_max_ms ?? fallback.retry_max_ms,
    jitter: fallback.jitter,
  };
}

/** The poll interval spread by ±jitter, so a fleet does not poll in lockstep. `random` is in [0, 1). */
export function pollDelay(timers: LoopTimers, random: number): number {
  return Math.max(1, Math.round(timers.pollMs * (1 + timers.jitter * (2 * random - 1))));
}

/** How the loop long-polls (SPEC §5), from the configuration's `long_poll`; absent: it only polls. */
export interface LongPollSettings {
  readonly waitS: number;
  readonly spreadMs: number;
  readonly recheckMs: number;
}

export function longPollFrom(config: { enabled: boolean; wait_s: number; spread_ms: number; recheck_s: number }): LongPollSettings | null {
  return config.enabled ? { waitS: config.wait_s, spreadMs: config.spread_ms, recheckMs: config.recheck_s * 1000 } : null;
}

/** The random delay before fetching what a long-poll announced, in [0, spreadMs]: a fleet told at once spreads its fetches. */
export function spreadDelay(settings: LongPollSettings, random: number): number {
  return Math.round(settings.spreadMs * random);
}

/** When to ask again whether an origin long-polls, spread like the poll interval so a fleet does not recheck together. */
export function recheckDelay(settings: LongPollSettings, timers: LoopTimers, random: number): number {
  return Math.max(1, Math.round(settings.recheckMs * (1 + timers.jitter * (2 * random - 1))));
}

/** Exponential backoff after the n-th consecutive failure (n ≥ 1), capped, with downward jitter only. */
export function backoffDelay(timers: LoopTimers, failures: number, random: number): number {
  const exp = timers.retryInitialMs * 2 ** Math.min(Math.max(failures - 1, 0), 40);
  const capped = Math.min(timers.retryMaxMs, exp);
  return Math.max(1, Math.round(capped * (1 - timers.jitter * random)));
}

/** Health: the last successful check is recent enough, or an apply (a long download) is in progress. */
export function isHealthy(input: { now: number; startedAt: number; lastSuccessAt: number | null; pollMs: number; applying: boolean }): boolean {
  if (input.applying) return true;
  const since = input.lastSuccessAt ?? input.startedAt;
  return input.now - since <= 2 * input.pollMs;
}
