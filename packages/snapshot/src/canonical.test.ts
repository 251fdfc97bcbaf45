import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { canonicalBytes, configDigest, parseCanonical } from './canonical.js';
import { codeOf } from './code-of.test-support.js';

// RFC 8785 vectors vendored into the package (test/vectors/jcs/README.md names their source).
const vectors = fileURLToPath(new URL('../test/vectors/jcs/', import.meta.url));
const names = readdirSync(`${vectors}input`).filter((name) => name.endsWith('.json'));
const utf8 = (text: string) => new TextEncoder().encode(text);

describe('canonicalBytes', () => {
  it('has RFC 8785 vectors to check against', () => {
    expect(names.length).toBeGreaterThanOrEqual(4);
  });

  it.each(names)('produces the RFC 8785 output for %s', (name) => {
    const input = JSON.parse(readFileSync(`${vectors}input/${name}`, 'utf8'));
    const expected = readFileSync(`${vectors}output/${name}`);
    expect(Buffer.from(canonicalBytes(input))).toEqual(expected);
  });

  it.each(names)('accepts the RFC 8785 output of %s as already canonical', (name) => {
    const expected = new Uint8Array(readFileSync(`${vectors}output/${name}`));
    expect(() => parseCanonical(expected)).not.toThrow();
  });

  it('refuses a lone surrogate rather than inventing bytes for it', () => {
    expect(codeOf(() => canonicalBytes({ a: '\ud800' }))).toBe('MALFORMED');
  });
});

describe('parseCanonical', () => {
  it.each([
    ['extra whitespace', '{"a": 1}'],
    ['keys out of order', '{"b":1,"a":2}'],
    ['a duplicate key', '{"a":1,"a":1}'],
    ['a number written another way', '{"a":1.0}'],
    ['an integer beyond 2^53', '{"a":9007199254740993}'],
    ['an escaped character that needs no escape', '{"a":"\\u0041"}'],
    ['a trailing newline', '{"a":1}\n'],
  ])('refuses %s with NOT_CANONICAL', (_, text) => {
    expect(codeOf(() => parseCanonical(utf8(text)))).toBe('NOT_CANONICAL');
  });

  it.each([
    ['truncated JSON', '{"a":'],
    ['a byte order mark before the JSON', '\ufeff{"a":1}'],
  ])('refuses %s with MALFORMED', (_, text) => {
    expect(codeOf(() => parseCanonical(utf8(text)))).toBe('MALFORMED');
  });

  it('refuses invalid UTF-8 with MALFORMED', () => {
    expect(codeOf(() => parseCanonical(new Uint8Array([0x22, 0xff, 0x22])))).toBe('MALFORMED');
  });

  it('returns the parsed value of canonical bytes', () => {
    expect(parseCanonical(utf8('{"a":[1,"x"],"b":null}'))).toEqual({ a: [1, 'x'], b: null });
  });
});

describe('configDigest', () => {
  it('is sha256: and the lowercase hex SHA-256 of the payload bytes', () => {
    // sha256("{}") computed independently: echo -n '{}' | sha256sum
    expect(configDigest(utf8('{}'))).toBe('sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a');
  });
});

describe('parseCanonical, fast path and reference path', () => {
  it('accepts integer-like keys in code-unit order, which JavaScript iterates in another order', () => {
    expect(parseCanonical(utf8('{"10":1,"9":2}'))).toEqual({ 10: 1, 9: 2 });
    expect(codeOf(() => parseCanonical(utf8('{"9":2,"10":1}')))).toBe('NOT_CANONICAL');
  });

  it('refuses an escaped lone surrogate, even where the rest is canonical', () => {
    expect(codeOf(() => parseCanonical(utf8('{"a":"\\ud800"}')))).toBe('MALFORMED');
    expect(codeOf(() => parseCanonical(utf8('{"a":"x\\\\ud800"}')))).toBeUndefined();
  });

  it('refuses an escaped valid surrogate pair as not canonical (RFC 8785 writes it raw)', () => {
    expect(codeOf(() => parseCanonical(utf8('{"a":"\\ud83d\\ude00"}')))).toBe('NOT_CANONICAL');
    expect(parseCanonical(utf8('{"a":"😀"}'))).toEqual({ a: '😀' });
  });

  it('agrees with the RFC 8785 implementation on any JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.boolean(), (value, pretty) => {
        const text = JSON.stringify(value, null, pretty ? 1 : undefined);
        const reference = Buffer.from(canonicalBytes(JSON.parse(text))).toString('utf8') === text;
        expect(codeOf(() => parseCanonical(utf8(text))) === undefined).toBe(reference);
      }),
      { numRuns: 2000 },
    );
  });
});
