import { describe, expect, it } from 'vitest';

import { decodeBase64 } from './bytes.js';
import { codeOf } from './code-of.test-support.js';

describe('decodeBase64', () => {
  const bytes = new Uint8Array([0xfb, 0xff, 0xbf, 0x00, 0x01]);

  it('decodes standard base64, padded or not', () => {
    expect(decodeBase64('+/+/AAE=', 'x')).toEqual(bytes);
    expect(decodeBase64('+/+/AAE', 'x')).toEqual(bytes);
  });

  it('decodes URL-safe base64, padded or not', () => {
    expect(decodeBase64('-_-_AAE=', 'x')).toEqual(bytes);
    expect(decodeBase64('-_-_AAE', 'x')).toEqual(bytes);
  });

  it.each([
    ['characters outside both alphabets', 'ab$c'],
    ['a mix of both alphabets', '+_+_AAE='],
    ['stray bits after the last byte', 'e31='],
    ['an impossible length', 'abcde'],
    ['misplaced padding', 'ab=c'],
  ])('refuses %s with MALFORMED', (_, text) => {
    expect(codeOf(() => decodeBase64(text, 'x'))).toBe('MALFORMED');
  });
});
