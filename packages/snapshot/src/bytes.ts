import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';

import { refuse } from './errors.js';

const utf8Encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/**
 * Strict UTF-8: invalid sequences are refused rather than replaced. isUtf8 and Buffer's own
 * decoder are native and several times faster than a fatal TextDecoder on the envelope sizes
 * the accept pipeline sees; a byte order mark is kept (as ignoreBOM would), so JSON.parse
 * refuses it.
 */
export function decodeUtf8(bytes: Uint8Array, what: string): string {
  if (!isUtf8(bytes)) refuse('MALFORMED', `${what} is not valid UTF-8`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const BASE64_VALUE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const EQUALS = 0x3d;

/**
 * Decodes standard or URL-safe base64 (SPEC §2 accepts both), padded or not, but not a mix of
 * the two alphabets. Node's own decoder silently skips characters it does not know and ignores
 * stray bits, so both are refused: one value, one accepted encoding per alphabet.
 */
export function decodeBase64(text: string, what: string): Uint8Array {
  if (text.length % 4 === 1) refuse('MALFORMED', `${what} is not base64 (standard or URL-safe)`);
  if ((text.includes('+') || text.includes('/')) && (text.includes('-') || text.includes('_'))) {
    refuse('MALFORMED', `${what} mixes the standard and URL-safe base64 alphabets`);
  }
  // At most two '=' end the text; any other '=' is left in and refused as a foreign character.
  let end = text.length;
  while (end > 0 && end > text.length - 2 && text.charCodeAt(end - 1) === EQUALS) end--;
  if (end !== text.length && text.length % 4 !== 0) refuse('MALFORMED', `${what} has misplaced base64 padding`);
  const unpadded = end === text.length ? text : text.slice(0, end);
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
  // Node's decoder reads both alphabets and skips (or stops at) anything else, and every
  // character it skips costs output: so the text is pure base64 exactly when the output has
  // the length the text implies. That replaces a regular expression over the whole text, which
  // cost as much as the decoding itself on a 188 KB envelope.
  const bytes = Buffer.from(unpadded, 'base64');
  if (bytes.byteLength !== Math.floor((unpadded.length * 3) / 4)) {
    refuse('MALFORMED', `${what} is not base64 (standard or URL-safe)`);
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
