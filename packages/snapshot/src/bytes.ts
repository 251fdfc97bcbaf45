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

const BASE64_VALUE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_TEXT = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * Decodes standard or URL-safe base64 (SPEC §2 accepts both), padded or not, but not a mix of
 * the two alphabets. Node's own decoder silently skips characters it does not know and ignores
 * stray bits, so both are refused first: one value, one accepted encoding per alphabet.
 */
export function decodeBase64(text: string, what: string): Uint8Array {
  if (text.length % 4 === 1 || !BASE64_TEXT.test(text)) {
    refuse('MALFORMED', `${what} is not base64 (standard or URL-safe)`);
  }
  if ((text.includes('+') || text.includes('/')) && (text.includes('-') || text.includes('_'))) {
    refuse('MALFORMED', `${what} mixes the standard and URL-safe base64 alphabets`);
  }
  const unpadded = text.endsWith('=') ? text.replace(/=+$/, '') : text;
  if (text.length !== unpadded.length && text.length % 4 !== 0) {
    refuse('MALFORMED', `${what} has misplaced base64 padding`);
  }
  // Only the last character can carry stray bits: 4 of them when 2 characters end the text,
  // 2 when 3 do.
  const tail = unpadded.length % 4;
  if (tail !== 0) {
    const ch = unpadded[unpadded.length - 1] ?? 'A';
    const last = ch === '-' ? 62 : ch === '_' ? 63 : BASE64_VALUE.indexOf(ch);
    if ((tail === 2 && (last & 0x0f) !== 0) || (tail === 3 && (last & 0x03) !== 0)) {
      refuse('MALFORMED', `${what} is not canonical base64 (stray bits after the last byte)`);
    }
  }
  // Node's base64 decoder reads both alphabets.
  const bytes = Buffer.from(unpadded, 'base64');
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
