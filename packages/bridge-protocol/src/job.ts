import type { ValidationRule } from '@resultity/snapshot';
import { z } from 'zod';

import type { RuntimeEnvironment } from './environment.js';
import { JobRejectedError } from './errors.js';

/**
 * A job request as a runtime receives it. Only the fields the limits need are typed; any other
 * field is kept so that `job.validation` rules can name it by dot path.
 */
export const JobRequestSchema = z.looseObject({
  model: z.string().min(1).max(128),
  max_tokens: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  prompt: z.string().optional(),
});

/** A request before admission. */
export type JobRequestInput = z.input<typeof JobRequestSchema>;
/** A request after admission: `max_tokens` is always set (the environment's when the job left it out). */
export type JobRequest = z.output<typeof JobRequestSchema> & { max_tokens: number };

/**
 * Admits or refuses a job against an environment (pure): the shape, the active models, the
 * `max_tokens` limit, then every `job.validation` rule in order. A job that leaves out
 * `max_tokens` gets the environment's, and the rules see that value.
 */
export function validateJob(job: unknown, environment: RuntimeEnvironment): JobRequest {
  const parsed = JobRequestSchema.safeParse(job);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(top)';
    throw new JobRejectedError('JOB_INVALID', `expected a job object with a model name: ${where}: ${issue?.message ?? 'invalid'}`, {
      field: where,
      cause: parsed.error,
    });
  }
  const request: JobRequest = { ...parsed.data, max_tokens: parsed.data.max_tokens ?? environment.job.max_tokens };

  const allowed = environment.models.map((model) => model.name);
  if (!allowed.includes(request.model)) {
    throw new JobRejectedError(
      'MODEL_NOT_ALLOWED',
      `expected a model among the active ones (${allowed.length > 0 ? allowed.join(', ') : 'none'}), found "${request.model.slice(0, 128)}"`,
      { field: 'model' },
    );
  }
  if (request.max_tokens > environment.job.max_tokens) {
    throw new JobRejectedError('MAX_TOKENS_EXCEEDED', `expected max_tokens <= ${environment.job.max_tokens}, found ${request.max_tokens}`, {
      field: 'max_tokens',
    });
  }
  for (const rule of environment.job.validation ?? []) {
    const found = readPath(request, rule.field);
    if (!ruleHolds(rule, found)) {
      throw new JobRejectedError(
        'VALIDATION_FAILED',
        `expected ${rule.field} ${rule.op} ${JSON.stringify(rule.value)}, found ${found.present ? show(found.value) : 'no such field'}`,
        { field: rule.field, rule: { field: rule.field, op: rule.op, value: rule.value } },
      );
    }
  }
  return request;
}

type Lookup = { present: true; value: unknown } | { present: false };

/** Follows a dot path through own properties only, so `__proto__` and friends never resolve. */
export function readPath(value: unknown, path: string): Lookup {
  let current: unknown = value;
  for (const key of path.split('.')) {
    if (typeof current !== 'object' || current === null || Array.isArray(current) || !Object.hasOwn(current, key)) {
      return { present: false };
    }
    current = (current as Record<string, unknown>)[key];
  }
  return { present: true, value: current };
}

/**
 * Whether a rule holds for a field's value. An absent field fails every rule except `ne` and
 * `not_in` (nothing is equal to what is not there); comparisons need numbers, `max_length`
 * a string (counted in code points) or an array.
 */
export function ruleHolds(rule: Pick<ValidationRule, 'op' | 'value'>, found: Lookup): boolean {
  if (!found.present) return rule.op === 'ne' || rule.op === 'not_in';
  const actual = found.value;
  const expected = rule.value;
  switch (rule.op) {
    case 'eq':
      return actual === expected;
    case 'ne':
      return actual !== expected;
    case 'lt':
    case 'lte':
    case 'gt':
    case 'gte': {
      if (typeof actual !== 'number' || !Number.isFinite(actual) || typeof expected !== 'number') return false;
      if (rule.op === 'lt') return actual < expected;
      if (rule.op === 'lte') return actual <= expected;
      if (rule.op === 'gt') return actual > expected;
      return actual >= expected;
    }
    case 'in':
      return Array.isArray(expected) && expected.some((item) => item === actual);
    case 'not_in':
      return Array.isArray(expected) && !expected.some((item) => item === actual);
    case 'max_length': {
      if (typeof expected !== 'number') return false;
      if (typeof actual === 'string') return [...actual].length <= expected;
      if (Array.isArray(actual)) return actual.length <= expected;
      return false;
    }
    default:
      return false;
  }
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}
