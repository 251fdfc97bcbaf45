import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { backoffDelay, backoffOptions } from './backoff.js';

const options = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };

describe('backoffDelay', () => {
  it('doubles from the initial delay and stops at the maximum', () => {
    const none = () => 0;
    expect([0, 1, 2, 3, 4, 10].map((attempt) => backoffDelay(attempt, options, none))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('takes at most the jitter share off each step', () => {
    expect(backoffDelay(2, options, () => 0.999_999)).toBe(200);
    expect(backoffDelay(2, options, () => 0.5)).toBe(300);
    expect(backoffDelay(2, { ...options, jitter: 0 }, () => 0.9)).toBe(400);
  });

  it('spreads a crowd of reconnecting bridges over the window', () => {
    const delays = new Set(Array.from({ length: 100 }, () => backoffDelay(3, options)));
    expect(delays.size).toBeGreaterThan(10);
    for (const delay of delays) {
      expect(delay).toBeGreaterThanOrEqual(400);
      expect(delay).toBeLessThanOrEqual(800);
    }
  });
});

describe('backoffOptions', () => {
  it('refuses settings that would spin', () => {
    expect(() => backoffOptions({ initialMs: 0 })).toThrow(RangeError);
    expect(() => backoffOptions({ initialMs: 500, maxMs: 100 })).toThrow(/maxMs >= initialMs/);
  });
});

describe('a reconnect schedule driven by the delays', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('fires attempts at the cumulative delays', () => {
    const fired: number[] = [];
    let attempt = 0;
    const schedule = () =>
      setTimeout(
        () => {
          fired.push(Date.now());
          attempt += 1;
          if (attempt < 4) schedule();
        },
        backoffDelay(attempt, { ...options, jitter: 0 }),
      );
    const start = Date.now();
    schedule();
    vi.advanceTimersByTime(100 + 200 + 400 + 800);
    expect(fired.map((t) => t - start)).toEqual([100, 300, 700, 1500]);
  });
});
