/**
 * Every way a snapshot, an envelope or a trust root can be refused. The codes are the API:
 * the CLI prints them, the Agent records them in its audit log, tests assert them.
 */
export const REFUSAL_CODES = [
  'TOO_LARGE',
  'MALFORMED',
  'PAYLOAD_TYPE',
  'SIGNATURE_THRESHOLD',
  'NOT_CANONICAL',
  'SCHEMA_INVALID',
  'UNSUPPORTED_SCHEMA',
  'NETWORK_MISMATCH',
  'EXPIRED',
  'ROLLBACK',
  'SEQUENCE_CONFLICT',
  'DIGEST_MISMATCH',
  'ROOT_ROTATION_INVALID',
  'ROOT_EXPIRED',
  'CHUNK_LIST_INVALID',
  'CHUNK_COUNT_MISMATCH',
] as const;

export type RefusalCode = (typeof REFUSAL_CODES)[number];

/** Errors of the publisher's tooling that are not refusals of a received envelope. */
export type ToolCode = 'KEY_INVALID' | 'USAGE' | 'IO' | 'PUBLISH_CONFLICT';

export type SnapshotErrorCode = RefusalCode | ToolCode;

/** The one error type this package throws on purpose; anything else is a bug. */
export class SnapshotError extends Error {
  override readonly name = 'SnapshotError';
  readonly code: SnapshotErrorCode;

  constructor(code: SnapshotErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isSnapshotError(error: unknown): error is SnapshotError {
  return error instanceof SnapshotError;
}

/** Shorthand used by the checks: throw a refusal with a stable code. */
export function refuse(code: SnapshotErrorCode, message: string, cause?: unknown): never {
  throw new SnapshotError(code, message, cause === undefined ? undefined : { cause });
}
