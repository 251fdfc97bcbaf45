import type { Step } from './types.js';

/**
 * Every way an apply can fail. The codes are the API: the Agent's CLI prints them, its audit
 * log records them, tests assert them.
 */
export const APPLY_ERROR_CODES = [
  'PULL_FAILED',
  'DIGEST_MISMATCH',
  'REGISTRY_NOT_ALLOWED',
  'POLICY_DENIED',
  'CONTAINER_FAILED',
  'HEALTH_TIMEOUT',
  'DOWNLOAD_FAILED',
  'HASH_MISMATCH',
  'SIZE_MISMATCH',
  'INSUFFICIENT_SPACE',
  'ABORTED',
  'ENGINE_UNAVAILABLE',
  'ENGINE_FAILED',
  'STORE_FAILED',
  'INVALID_STEP',
  'GPUS_UNAVAILABLE',
] as const;

export type ApplyErrorCode = (typeof APPLY_ERROR_CODES)[number];

/** The one error type this package throws on purpose; anything else is a bug. */
export class ApplyError extends Error {
  override readonly name = 'ApplyError';
  readonly code: ApplyErrorCode;
  /** The step that failed, when the failure belongs to one. */
  readonly step: Step | undefined;
  /** True when the executor put the previous containers, model index and flags back. */
  readonly rolledBack: boolean;
  /** Set when restoring the previous state failed too: the node needs attention. */
  readonly rollbackError: unknown;

  constructor(
    code: ApplyErrorCode,
    message: string,
    options: { cause?: unknown; step?: Step; rolledBack?: boolean; rollbackError?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.step = options.step;
    this.rolledBack = options.rolledBack ?? false;
    this.rollbackError = options.rollbackError;
  }

  /** The same failure, now naming its step and whether the previous state was restored. */
  withOutcome(step: Step | undefined, rolledBack: boolean, rollbackError?: unknown): ApplyError {
    const copy = new ApplyError(this.code, this.message, {
      cause: this.cause,
      step: this.step ?? step,
      rolledBack,
      rollbackError,
    });
    copy.stack = this.stack;
    return copy;
  }
}

export function isApplyError(error: unknown): error is ApplyError {
  return error instanceof ApplyError;
}

/** Shorthand: throw an ApplyError with a stable code. */
export function fail(code: ApplyErrorCode, message: string, cause?: unknown): never {
  throw new ApplyError(code, message, cause === undefined ? {} : { cause });
}

/** The message of anything thrown, for error texts. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
