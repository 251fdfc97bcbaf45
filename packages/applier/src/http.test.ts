import { describe, expect, it } from 'vitest';

import { redirectTarget } from './http.js';

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
