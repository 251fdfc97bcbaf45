import { CodedError } from '@resultity/node-kit';
import { ApplyError } from '@resultity/applier';
import { SnapshotError } from '@resultity/snapshot';
import { describe, expect, it } from 'vitest';

import { AgentError, errorMessage, escapeControl, isRetryable } from './errors.js';
import { OriginError } from './origin-client.js';

describe('isRetryable', () => {
  it("takes the error's own classification", () => {
    expect(isRetryable(new AgentError('FETCH_FAILED', 'down'))).toBe(true);
    expect(isRetryable(new AgentError('STATE_CORRUPT', 'bad'))).toBe(false);
    // One failure type across packages: a CodedError (from any bundled copy of node-kit) is
    // believed; an error that only looks like one is not.
    expect(isRetryable(new CodedError('ROLLBACK', 'x', { retryable: true }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('x'), { code: 'ROLLBACK', retryable: true }))).toBe(false);
  });

  it('treats every HTTP status and an oversized body as transport failures: neither is a refusal of verified bytes', () => {
    for (const status of [400, 401, 403, 404, 408, 410, 429, 500, 502, 503, 504])
      expect(isRetryable(new OriginError('HTTP_STATUS', 'x', { status }))).toBe(true);
    expect(isRetryable(new OriginError('TOO_LARGE', 'x'))).toBe(true);
    expect(isRetryable(new OriginError('LATEST_INVALID', 'x'))).toBe(true);
  });

  it('keeps the transport codes retryable for errors that do not carry the field yet, and nothing else', () => {
    for (const code of ['FETCH_FAILED', 'TIMEOUT', 'ABORTED']) expect(isRetryable(Object.assign(new Error('x'), { code }))).toBe(true);
    expect(isRetryable(new SnapshotError('SIGNATURE_THRESHOLD', 'x'))).toBe(false);
    expect(isRetryable(new ApplyError('INVALID_STEP', 'x'))).toBe(false);
    expect(isRetryable(new Error('a bug'))).toBe(false);
  });
});

describe('escapeControl', () => {
  it('escapes C0, DEL and C1 control characters and keeps the rest', () => {
    expect(escapeControl('a\u001b[31mb\u0007c\u007f\u009bd\nü')).toBe('a\\x1b[31mb\\x07c\\x7f\\x9bd\\x0aü');
  });

  it('is what errorMessage returns', () => {
    expect(errorMessage(new Error('type "\u001b]0;x\u0007"'))).toBe('type "\\x1b]0;x\\x07"');
  });
});
