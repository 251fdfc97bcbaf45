import { describe, expect, it } from 'vitest';

import { CodedError, isCodedError, isRetryable } from './errors.js';

class ExampleError extends CodedError<'BUSY' | 'BROKEN'> {
  override readonly name = 'ExampleError';
}

describe('CodedError', () => {
  it('carries its code, name, cause and retryability', () => {
    const cause = new Error('underneath');
    const error = new ExampleError('BUSY', 'try later', { cause, retryable: true });
    expect(error).toMatchObject({ code: 'BUSY', name: 'ExampleError', message: 'try later', retryable: true });
    expect(error.cause).toBe(cause);
    expect(error).toBeInstanceOf(Error);
  });

  it('is not retryable unless its thrower says so', () => {
    expect(new ExampleError('BROKEN', 'no').retryable).toBe(false);
    expect(isRetryable(new ExampleError('BROKEN', 'no'))).toBe(false);
    expect(isRetryable(new ExampleError('BUSY', 'later', { retryable: true }))).toBe(true);
  });

  it('is recognised by its brand, and anything else is not retryable', () => {
    expect(isCodedError(new ExampleError('BUSY', 'x'))).toBe(true);
    expect(isCodedError(Object.assign(new Error('x'), { code: 'BUSY', retryable: true }))).toBe(false);
    expect(isRetryable(Object.assign(new Error('x'), { code: 'BUSY', retryable: true }))).toBe(false);
    expect(isRetryable('BUSY')).toBe(false);
  });
});
