import fc from 'fast-check';
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

describe('decodeBase64, against a plain reading of the rules', () => {
  // The rules as a regular expression: the implementation checks them another (cheaper) way.
  const pure = /^(?:[A-Za-z0-9+/]*|[A-Za-z0-9_-]*)$/;
  const reference = (text: string): boolean => {
    const unpadded = text.replace(/={1,2}$/, '');
    if (text.length % 4 === 1 || !pure.test(unpadded)) return false;
    if (unpadded !== text && text.length % 4 !== 0) return false;
    const canonical = Buffer.from(unpadded, 'base64').toString('base64').replace(/=+$/, '');
    return canonical === unpadded.replace(/-/g, '+').replace(/_/g, '/');
  };
  const char = fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_= .\n$é\u0000😀'.split(''));

  it('accepts exactly the texts the rules accept, and decodes them as Node does', () => {
    fc.assert(
      fc.property(
        fc.array(char, { maxLength: 14 }).map((chars) => chars.join('')),
        (text) => {
          const accepted = codeOf(() => decodeBase64(text, 'x')) === undefined;
          expect(accepted).toBe(reference(text));
          if (accepted) expect(Buffer.from(decodeBase64(text, 'x'))).toEqual(Buffer.from(text, 'base64'));
        },
      ),
      { numRuns: 20000 },
    );
  });
});
