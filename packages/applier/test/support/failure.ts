import { expect } from 'vitest';

import { ApplyError } from '../../src/errors.js';

/** Awaits a promise that must reject with an ApplyError, and returns that error. */
export async function failure(promise: Promise<unknown>): Promise<ApplyError> {
  const outcome = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(outcome).toBeInstanceOf(ApplyError);
  return outcome as ApplyError;
}
