import { describe, expect, it } from 'vitest';

import { parseWait } from './long-poll.js';

describe('parseWait', () => {
  it('is null without wait, so the request is served as a static server would', () => {
    expect(parseWait(new URLSearchParams(''))).toBeNull();
    expect(parseWait(new URLSearchParams('other=1'))).toBeNull();
  });

  it.each([
    ['1', 1],
    ['9', 9],
    ['60', 60],
  ])('reads wait=%s as %i seconds', (text, seconds) => {
    expect(parseWait(new URLSearchParams({ wait: text }))).toBe(seconds);
  });

  it.each(['0', '61', '99', '100', '-1', '+5', '1.0', '1.5', '05', ' 5', '5s', '1e1', '', 'abc'])('refuses wait=%j', (text) => {
    expect(parseWait(new URLSearchParams({ wait: text }))).toBe('invalid');
  });

  it('refuses two wait parameters rather than picking one', () => {
    expect(parseWait(new URLSearchParams('wait=5&wait=5'))).toBe('invalid');
  });
});
