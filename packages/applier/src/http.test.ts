import { describe, expect, it } from 'vitest';

import { TokenBucket, redirectTarget } from './http.js';

const refusal = { code: 'MIRROR_REDIRECT_REFUSED' };

describe('redirectTarget', () => {
  it('follows http to http or https, https to https, and resolves a relative Location', () => {
    expect(redirectTarget(new URL('http://a.example/m'), 'http://b.example/m', 0, 5).href).toBe('http://b.example/m');
    expect(redirectTarget(new URL('http://a.example/m'), 'https://b.example/m', 0, 5).href).toBe('https://b.example/m');
    expect(redirectTarget(new URL('https://a.example/x/m'), '../n', 4, 5).href).toBe('https://a.example/n');
  });

  it('refuses a downgrade from https to http', () => {
    expect(() => redirectTarget(new URL('https://a.example/m'), 'http://a.example/m', 0, 5)).toThrow(expect.objectContaining(refusal));
  });

  it('refuses other schemes and a Location that does not parse', () => {
    for (const location of ['file:///etc/passwd', 'ftp://a.example/m', 'data:text/plain,x', 'javascript:alert(1)', 'http://[::1', 'http://exa mple/']) {
      expect(() => redirectTarget(new URL('http://a.example/m'), location, 0, 5), location).toThrow(expect.objectContaining(refusal));
    }
  });

  it('refuses the hop past the limit', () => {
    expect(() => redirectTarget(new URL('http://a.example/m'), '/n', 5, 5)).toThrow(expect.objectContaining(refusal));
  });
});

describe('TokenBucket', () => {
  it('lets a burst through, then makes takers wait for what they take at the rate', () => {
    let now = 0;
    const bucket = new TokenBucket(1000, 500, () => now);
    expect(bucket.take(500)).toBe(0);
    // 250 bytes of debt at 1000 bytes/s: a quarter second.
    expect(bucket.take(250)).toBe(250);
    // Debt is shared: the next taker waits for both.
    expect(bucket.take(250)).toBe(500);
    now = 2000;
    // Refilled, but never beyond the burst.
    expect(bucket.take(500)).toBe(0);
    expect(bucket.take(1)).toBe(1);
  });
});
