import { describe, expect, it } from 'vitest';

import { APPLY_ERROR_CODES, ApplyError } from './errors.js';

describe('ApplyError', () => {
  it('is retryable exactly for transport and environment failures', () => {
    const retryable = APPLY_ERROR_CODES.filter((code) => new ApplyError(code, 'x').retryable);
    const final = APPLY_ERROR_CODES.filter((code) => !new ApplyError(code, 'x').retryable);
    expect(final.sort()).toEqual([
      'CHUNK_LIST_INVALID',
      'CONTAINER_FAILED',
      'GPUS_UNAVAILABLE',
      'HEALTH_TIMEOUT',
      'INVALID_STEP',
      'POLICY_DENIED',
      'REGISTRY_NOT_ALLOWED',
    ]);
    expect(retryable).toEqual(expect.arrayContaining(['CHUNK_LIST_UNAVAILABLE', 'MIRROR_CHUNK_MISMATCH', 'MIRROR_NO_RANGES']));
    expect(retryable).toEqual(
      expect.arrayContaining(['DOWNLOAD_FAILED', 'HASH_MISMATCH', 'PULL_FAILED', 'ABORTED', 'INSUFFICIENT_SPACE', 'ENGINE_UNAVAILABLE']),
    );
    expect(retryable.filter((code) => code.startsWith('MIRROR_'))).toHaveLength(APPLY_ERROR_CODES.filter((c) => c.startsWith('MIRROR_')).length);
  });

  it('keeps its code, retryability and mirror failures when it learns its outcome', () => {
    const mirrors = [{ index: 0, code: 'MIRROR_STALLED' as const, detail: 'cdn.example sent nothing for 30000 ms' }];
    const error = new ApplyError('DOWNLOAD_FAILED', 'model m@1: the only mirror failed (MIRROR_STALLED)', { mirrors });
    const copy = error.withOutcome(undefined, true);
    expect(copy).toMatchObject({ code: 'DOWNLOAD_FAILED', retryable: true, rolledBack: true, mirrors });
    expect(new ApplyError('POLICY_DENIED', 'x').withOutcome(undefined, false).retryable).toBe(false);
  });
});
