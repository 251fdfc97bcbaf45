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
