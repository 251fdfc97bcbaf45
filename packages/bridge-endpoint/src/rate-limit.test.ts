import { describe, expect, it } from 'vitest';

import { type Clock, TokenBucket } from './rate-limit.js';

function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0;
  return { now: () => now, advance: (ms) => (now += ms) };
}

describe('TokenBucket', () => {
  it('allows a burst up to its capacity, then refuses', () => {
    const bucket = new TokenBucket(10, 3, manualClock());
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, true, false]);
  });

  it('refills at its rate and never above its capacity', () => {
    const clock = manualClock();
    const bucket = new TokenBucket(10, 2, clock);
    bucket.take();
    bucket.take();
    clock.advance(100);
    expect(bucket.take()).toBe(true);
    expect(bucket.take()).toBe(false);
    clock.advance(60_000);
    expect([bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, false]);
  });
});
