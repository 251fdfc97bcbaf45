/** A source of the current time in milliseconds, so rate limits can be tested without waiting. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };

/**
 * A token bucket: `capacity` messages at once, refilled at `perSecond`. Pure apart from the
 * clock it is handed, so a flood is judged the same on a slow machine as on a fast one.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly capacity: number,
    private readonly clock: Clock,
  ) {
    this.tokens = capacity;
    this.last = clock.now();
  }

  /** Takes one token; false when the bucket is empty. */
  take(): boolean {
    const now = this.clock.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
