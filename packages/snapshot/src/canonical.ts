import canonicalize from 'canonicalize';

import { bytesEqual, decodeUtf8, sha256Hex, utf8 } from './bytes.js';
import { refuse } from './errors.js';

/** The RFC 8785 (JCS) serialization of a JSON value, as UTF-8 bytes (SPEC §1). */
export function canonicalBytes(value: unknown): Uint8Array {
  assertWellFormedStrings(value);
  const text = canonicalize(value);
  if (text === undefined) refuse('MALFORMED', 'value has no JSON representation');
  return utf8(text);
}

/** `config_digest` of a payload: "sha256:" + lowercase hex SHA-256 of its bytes. */
export function configDigest(payload: Uint8Array): string {
  return `sha256:${sha256Hex(payload)}`;
}

/**
 * Parses payload bytes and insists they are already canonical, so that one configuration has
 * exactly one digest whoever produced it (SPEC §1). Duplicate keys, numbers out of the double
 * range, extra whitespace or another key order all fail the byte comparison.
 */
export function parseCanonical(payload: Uint8Array, what = 'payload'): unknown {
  const text = decodeUtf8(payload, what);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    refuse('MALFORMED', `${what} is not JSON: ${(cause as Error).message}`, cause);
  }
  if (isCanonicalFast(value, text)) {
    // includes() is a native scan; the regular expression only runs on text with escapes.
    if (text.includes('\\u') && LONE_SURROGATE_ESCAPE.test(text)) refuse('MALFORMED', `${what} holds a lone UTF-16 surrogate`);
    return value;
  }

  // The reference path: the RFC 8785 implementation's own output, compared byte for byte.
  let canonical: Uint8Array;
  try {
    canonical = canonicalBytes(value);
  } catch (cause) {
    refuse('NOT_CANONICAL', `${what} cannot be canonicalized: ${(cause as Error).message}`, cause);
  }
  if (!bytesEqual(canonical, payload)) {
    refuse(
      'NOT_CANONICAL',
      `${what} is not in RFC 8785 canonical form (expected ${canonical.byteLength} canonical bytes, found ${payload.byteLength} other bytes)`,
    );
  }
  return value;
}

/**
 * Valid UTF-8 decodes to well-formed text, so the only way a lone surrogate reaches a parsed
 * value is a \uD800–\uDFFF escape; a canonical payload never escapes a valid pair, so any such
 * escape (not itself preceded by an escaping backslash) is a lone one.
 */
const LONE_SURROGATE_ESCAPE = /(?:^|[^\\])(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}/;

/**
 * A sufficient, cheaper test than re-serializing: RFC 8785 is JSON.stringify with every
 * object's keys sorted by UTF-16 code units (its numbers and string escapes are ECMAScript's).
 * So when the parsed value's keys already iterate in that order and JSON.stringify reproduces
 * the text, the text is canonical. A false answer proves nothing (JavaScript puts integer-like
 * keys first), and the caller falls back to the reference implementation.
 */
function isCanonicalFast(value: unknown, text: string): boolean {
  return keysInCodeUnitOrder(value) && JSON.stringify(value) === text;
}

function keysInCodeUnitOrder(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return true;
  if (Array.isArray(value)) {
    for (const item of value) if (!keysInCodeUnitOrder(item)) return false;
    return true;
  }
  let previous: string | undefined;
  for (const key in value) {
    // Plain < on strings compares UTF-16 code units, which is the order RFC 8785 sorts by.
    if (previous !== undefined && !(previous < key)) return false;
    previous = key;
    if (!keysInCodeUnitOrder((value as Record<string, unknown>)[key])) return false;
  }
  return true;
}

/**
 * RFC 8785 builds on I-JSON, which has no lone surrogates; JSON.stringify would escape them
 * and make bytes no UTF-8 decoder round-trips, so they are refused instead.
 */
function assertWellFormedStrings(value: unknown): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    if (typeof item === 'string') {
      if (!item.isWellFormed()) refuse('MALFORMED', 'a string holds a lone UTF-16 surrogate');
    } else if (Array.isArray(item)) {
      stack.push(...item);
    } else if (item !== null && typeof item === 'object') {
      for (const [key, child] of Object.entries(item)) {
        stack.push(key, child);
      }
    }
  }
}
