import { createHash } from 'node:crypto';

import { refuse } from './errors.js';

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/** Strict UTF-8: invalid sequences are refused rather than replaced. */
export function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch (cause) {
    return refuse('MALFORMED', `${what} is not valid UTF-8`, cause);
  }
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const STANDARD_OR_URL_SAFE = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * Decodes standard or URL-safe base64 (SPEC §2 accepts both), padded or not. Node's own
 * decoder silently skips characters it does not know, so the alphabet is checked first.
 */
export function decodeBase64(text: string, what: string): Uint8Array {
  if (!STANDARD_OR_URL_SAFE.test(text) || text.length % 4 === 1) {
    refuse('MALFORMED', `${what} is not base64 (standard or URL-safe)`);
  }
  const unpadded = text.replace(/=+$/, '');
  if (text.length !== unpadded.length && text.length % 4 !== 0) {
    refuse('MALFORMED', `${what} has misplaced base64 padding`);
  }
  if (/[+/]/.test(unpadded) && /[-_]/.test(unpadded)) {
    refuse('MALFORMED', `${what} mixes the standard and URL-safe base64 alphabets`);
  }
  const standard = unpadded.replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Buffer.from(standard, 'base64');
  // Node ignores set bits after the last full byte; refusing them keeps one encoding per value.
  if (bytes.toString('base64').replace(/=+$/, '') !== standard) {
    refuse('MALFORMED', `${what} is not canonical base64 (stray bits after the last byte)`);
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
