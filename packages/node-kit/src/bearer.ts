import { createHash, timingSafeEqual } from 'node:crypto';

/** The SHA-256 of a token, computed once and handed to `bearerMatches`. */
export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * Compares the presented Authorization header with the token in constant time. The stricter of
 * the two former copies: the token must be 1 to 1024 printable ASCII characters without spaces
 * (a superset of what `checkToken` lets a token file hold), so a header that could never match
 * is refused by its form, and the header must have matched that form at all.
 */
export function bearerMatches(header: string | undefined, expectedDigest: Buffer): boolean {
  const match = /^Bearer ([\x21-\x7e]{1,1024})$/.exec(header ?? '');
  // Hashing first gives buffers of equal length whatever was presented, so length leaks nothing.
  const presented = tokenDigest(match?.[1] ?? '');
  return timingSafeEqual(presented, expectedDigest) && match !== null;
}
