/**
 * Every way a bridge message or a job can be refused. The codes are the API: they travel in
 * `nack` and `error` messages, the Agent records them, tests assert them.
 */
export const PROTOCOL_ERROR_CODES = [
  /** The frame is not JSON. */
  'MALFORMED',
  /** The frame is JSON but not a message this protocol version knows. */
  'INVALID_MESSAGE',
  /** The environment does not match the schema. */
  'ENVIRONMENT_INVALID',
] as const;

export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];

/** Thrown by the parsers of this package; anything else is a bug. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ProtocolErrorCode;

  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Why a job was turned away at admission. */
export const JOB_REJECTION_CODES = [
  /** The job is not an object with the fields a job needs. */
  'JOB_INVALID',
  /** The job asks for more tokens than `job.max_tokens` allows. */
  'MAX_TOKENS_EXCEEDED',
  /** The job names a model that is not among the active models. */
  'MODEL_NOT_ALLOWED',
  /** The job breaks one of the `job.validation` rules. */
  'VALIDATION_FAILED',
] as const;

export type JobRejectionCode = (typeof JOB_REJECTION_CODES)[number];

/** A job refused by `validateJob`; `rule` is set when a `job.validation` rule failed. */
export class JobRejectedError extends Error {
  override readonly name = 'JobRejectedError';
  readonly code: JobRejectionCode;
  readonly field: string | undefined;
  readonly rule: { field: string; op: string; value: unknown } | undefined;

  constructor(
    code: JobRejectionCode,
    message: string,
    details: { field?: string; rule?: { field: string; op: string; value: unknown }; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.field = details.field;
    this.rule = details.rule;
  }
}

export function isJobRejectedError(error: unknown): error is JobRejectedError {
  return error instanceof JobRejectedError;
}

export function isProtocolError(error: unknown): error is ProtocolError {
  return error instanceof ProtocolError;
}

/** Why a bearer token or its file was refused. */
export type TokenErrorCode = 'TOKEN_FILE_PERMISSIONS' | 'TOKEN_FILE_UNREADABLE' | 'TOKEN_INVALID';

/** Thrown when the shared bearer token cannot be used; both sides read the same file the same way. */
export class TokenError extends Error {
  override readonly name = 'TokenError';
  readonly code: TokenErrorCode;

  constructor(code: TokenErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
