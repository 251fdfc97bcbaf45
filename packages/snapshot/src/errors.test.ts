import { describe, expect, it } from 'vitest';

import { REFUSALS, REFUSAL_CODES, SnapshotError, TOOL_ERRORS, isRetryableCode, refuse } from './errors.js';

describe('the refusal table', () => {
  it('lists every refusal code once, in REFUSAL_CODES too', () => {
    expect(REFUSAL_CODES).toEqual(Object.keys(REFUSALS));
    expect(new Set(REFUSAL_CODES).size).toBe(REFUSAL_CODES.length);
  });

  it('calls retryable exactly the refusals that say nothing about the content at the digest', () => {
    const retryable = REFUSAL_CODES.filter((code) => REFUSALS[code].retryable).sort();
    expect(retryable).toEqual(['DIGEST_MISMATCH', 'MALFORMED', 'TOO_LARGE']);
  });

  it.each(['SIGNATURE_THRESHOLD', 'NOT_CANONICAL', 'SCHEMA_INVALID', 'NETWORK_MISMATCH', 'EXPIRED', 'ROLLBACK', 'SEQUENCE_CONFLICT'] as const)(
    'does not retry %s',
    (code) => {
      expect(isRetryableCode(code)).toBe(false);
    },
  );

  it('retries only IO among the tool errors', () => {
    expect(
      Object.entries(TOOL_ERRORS)
        .filter(([, info]) => info.retryable)
        .map(([code]) => code),
    ).toEqual(['IO']);
  });
});

describe('SnapshotError', () => {
  it('carries retryable from its code', () => {
    expect(new SnapshotError('DIGEST_MISMATCH', 'x').retryable).toBe(true);
    expect(new SnapshotError('TOO_LARGE', 'x').retryable).toBe(true);
    expect(new SnapshotError('SIGNATURE_THRESHOLD', 'x').retryable).toBe(false);
    expect(new SnapshotError('USAGE', 'x').retryable).toBe(false);
  });

  it('is what refuse throws, code, retryable and cause included', () => {
    const cause = new Error('underneath');
    try {
      refuse('ROLLBACK', 'went back', cause);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(SnapshotError);
      expect(error).toMatchObject({ code: 'ROLLBACK', retryable: false, cause, name: 'SnapshotError' });
    }
  });
});
