import { describe, expect, it } from 'vitest';

import { backoffDelay, isHealthy, longPollFrom, pollDelay, recheckDelay, spreadDelay, timersFrom } from './schedule.js';

const fallback = { poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 10_000, jitter: 0.1 };

describe('timersFrom', () => {
  it('uses the configuration before any snapshot and the snapshot ttl after', () => {
    expect(timersFrom(null, fallback).pollMs).toBe(60_000);
    const ttl = { poll_interval_s: 5, heartbeat_interval_s: 2, retry_initial_ms: 10, retry_max_ms: 20, cache_ttl_s: 1 };
    expect(timersFrom({ ttl }, fallback)).toMatchObject({ pollMs: 5000, heartbeatMs: 2000, retryInitialMs: 10, retryMaxMs: 20 });
  });
});

describe('pollDelay', () => {
  it('stays within the jitter band around the poll interval', () => {
    const t = timersFrom(null, fallback);
    expect(pollDelay(t, 0)).toBe(54_000);
    expect(pollDelay(t, 0.5)).toBe(60_000);
    expect(pollDelay(t, 0.999999)).toBeLessThanOrEqual(66_000);
  });
});

describe('backoffDelay', () => {
  it('doubles from the initial delay and never passes the maximum', () => {
    const t = { ...timersFrom(null, fallback), jitter: 0 };
    expect([1, 2, 3, 4, 5, 60].map((n) => backoffDelay(t, n, 0))).toEqual([1000, 2000, 4000, 8000, 10_000, 10_000]);
  });
});

describe('isHealthy', () => {
  const base = { now: 1_000_000, startedAt: 0, pollMs: 60_000, applying: false };
  it('is healthy while the last successful check is within twice the poll interval', () => {
    expect(isHealthy({ ...base, lastSuccessAt: 1_000_000 - 120_000 })).toBe(true);
    expect(isHealthy({ ...base, lastSuccessAt: 1_000_000 - 120_001 })).toBe(false);
  });
  it('is never unhealthy because a long apply (a download) is in progress', () => {
    expect(isHealthy({ ...base, lastSuccessAt: 0, applying: true })).toBe(true);
  });
  it('gives a fresh start two poll intervals before the first success', () => {
    expect(isHealthy({ ...base, now: 100_000, lastSuccessAt: null })).toBe(true);
    expect(isHealthy({ ...base, lastSuccessAt: null })).toBe(false);
  });
});

describe('long-poll settings', () => {
  const settings = longPollFrom({ enabled: true, wait_s: 30, spread_ms: 250, recheck_s: 600 });
  it('are absent when long-poll is turned off', () => {
    expect(longPollFrom({ enabled: false, wait_s: 30, spread_ms: 250, recheck_s: 600 })).toBeNull();
  });
  it('spread the fetch after a change over 0..spread_ms', () => {
    if (settings === null) throw new Error('expected settings');
    expect([0, 0.5, 0.999999].map((r) => spreadDelay(settings, r))).toEqual([0, 125, 250]);
  });
  it('spread the recheck of an origin like the poll interval', () => {
    if (settings === null) throw new Error('expected settings');
    const t = timersFrom(null, fallback);
    expect(recheckDelay(settings, t, 0)).toBe(540_000);
    expect(recheckDelay(settings, t, 0.5)).toBe(600_000);
  });
});
