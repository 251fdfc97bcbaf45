import { describe, expect, it } from 'vitest';

import { bearerMatches, tokenDigest } from './bearer.js';

const TOKEN = 'a'.repeat(32);

describe('bearerMatches', () => {
  it('accepts the token as a bearer', () => {
    expect(bearerMatches(`Bearer ${TOKEN}`, tokenDigest(TOKEN))).toBe(true);
  });

  it('refuses another token, a missing header and a header of another form', () => {
    const digest = tokenDigest(TOKEN);
    expect(bearerMatches(`Bearer ${'b'.repeat(32)}`, digest)).toBe(false);
    expect(bearerMatches(undefined, digest)).toBe(false);
    expect(bearerMatches(TOKEN, digest)).toBe(false);
    expect(bearerMatches(`Bearer  ${TOKEN}`, digest)).toBe(false);
  });

  it('refuses an empty header even when the expected token is empty', () => {
    expect(bearerMatches('', tokenDigest(''))).toBe(false);
    expect(bearerMatches('Bearer ', tokenDigest(''))).toBe(false);
  });
});
