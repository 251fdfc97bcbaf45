import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { RuntimeEnvironment } from './environment.js';
import { JobRejectedError } from './errors.js';
import { readPath, ruleHolds, validateJob } from './job.js';

const HEX = 'a'.repeat(64);

function environment(job: Partial<RuntimeEnvironment['job']> = {}): RuntimeEnvironment {
  return {
    digest: `sha256:${HEX}`,
    sequence: 1,
    job: { max_tokens: 100, max_queue_size: 4, execution_timeout_ms: 1000, ...job },
    models: [{ name: 'tiny', version: '1', sha256: HEX, path: '/models/tiny' }],
    participation: { mode: 'testnet', subclouds: [] },
  };
}

function rejection(job: unknown, env: RuntimeEnvironment): JobRejectedError {
  try {
    validateJob(job, env);
  } catch (error) {
    if (error instanceof JobRejectedError) return error;
    throw error;
  }
  throw new Error('the job was admitted');
}

describe('validateJob', () => {
  it('admits a job within the limits and fills in the environment max_tokens when left out', () => {
    expect(validateJob({ model: 'tiny', prompt: 'hi' }, environment())).toEqual({ model: 'tiny', prompt: 'hi', max_tokens: 100 });
  });

  it('refuses a job that is not an object with JOB_INVALID', () => {
    expect(rejection('run this', environment()).code).toBe('JOB_INVALID');
    expect(rejection({ prompt: 'no model' }, environment()).field).toBe('model');
  });

  it('refuses a model that is not active with MODEL_NOT_ALLOWED and names the active ones', () => {
    const error = rejection({ model: 'huge' }, environment());
    expect(error.code).toBe('MODEL_NOT_ALLOWED');
    expect(error.message).toContain('tiny');
  });

  it('refuses more tokens than the environment allows with MAX_TOKENS_EXCEEDED', () => {
    const error = rejection({ model: 'tiny', max_tokens: 101 }, environment());
    expect(error.code).toBe('MAX_TOKENS_EXCEEDED');
    expect(error.message).toBe('expected max_tokens <= 100, found 101');
  });

  it('refuses a job that breaks a validation rule with VALIDATION_FAILED and the rule', () => {
    const env = environment({ validation: [{ field: 'options.temperature', op: 'lte', value: 1 }] });
    const error = rejection({ model: 'tiny', options: { temperature: 1.5 } }, env);
    expect(error.code).toBe('VALIDATION_FAILED');
    expect(error.rule).toEqual({ field: 'options.temperature', op: 'lte', value: 1 });
    expect(validateJob({ model: 'tiny', options: { temperature: 0.5 } }, env).model).toBe('tiny');
  });

  it('applies rules on max_tokens to the filled-in value', () => {
    const env = environment({ validation: [{ field: 'max_tokens', op: 'lte', value: 50 }] });
    expect(rejection({ model: 'tiny' }, env).code).toBe('VALIDATION_FAILED');
  });
});

describe('ruleHolds', () => {
  const present = (value: unknown) => ({ present: true as const, value });
  const absent = { present: false as const };

  it.each([
    ['eq', 'a', 'a', true],
    ['eq', 'a', 'b', false],
    ['ne', 'a', 'b', true],
    ['lt', 1, 2, true],
    ['lt', 2, 2, false],
    ['lte', 2, 2, true],
    ['gt', 3, 2, true],
    ['gte', 2, 2, true],
    ['gte', '3', 2, false],
    ['in', 'x', ['x', 'y'], true],
    ['in', 'z', ['x', 'y'], false],
    ['not_in', 'z', ['x', 'y'], true],
    ['max_length', 'abc', 3, true],
    ['max_length', 'abcd', 3, false],
    ['max_length', [1, 2], 2, true],
    ['max_length', 5, 3, false],
  ] as const)('%s with %j against %j holds: %s', (op, actual, value, holds) => {
    expect(ruleHolds({ op, value: value as never }, present(actual))).toBe(holds);
  });

  it('treats an absent field as failing every op but ne and not_in', () => {
    expect(ruleHolds({ op: 'eq', value: 1 }, absent)).toBe(false);
    expect(ruleHolds({ op: 'lte', value: 1 }, absent)).toBe(false);
    expect(ruleHolds({ op: 'ne', value: 1 }, absent)).toBe(true);
    expect(ruleHolds({ op: 'not_in', value: [1] }, absent)).toBe(true);
  });

  it('agrees with plain comparison for every pair of numbers', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.double({ noNaN: true, noDefaultInfinity: true }), (a, b) => {
        expect(ruleHolds({ op: 'lte', value: b }, present(a))).toBe(a <= b);
        expect(ruleHolds({ op: 'gt', value: b }, present(a))).toBe(a > b);
      }),
    );
  });
});

describe('readPath', () => {
  it('follows own properties and never the prototype chain', () => {
    expect(readPath({ a: { b: 1 } }, 'a.b')).toEqual({ present: true, value: 1 });
    expect(readPath({ a: {} }, 'a.toString')).toEqual({ present: false });
    expect(readPath({}, '__proto__')).toEqual({ present: false });
  });
});
