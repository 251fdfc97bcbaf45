import { CodedError } from '@resultity/node-kit';

/** What a caller may do about one kind of refusal or tool error. */
export interface CodeInfo {
  /**
   * True when the failure is transport-like: it says nothing about the content published at
   * the digest that was asked for, so fetching again (later, or from another mirror) may
   * succeed. False when the bytes that failed are what the network published at that digest
   * (or the failure lies in this node's own state), so the same request can only fail again.
   */
  readonly retryable: boolean;
}

/**
 * Every way a snapshot, an envelope, a trust root or a chunk list can be refused, and whether
 * it is worth another try. The codes are the API: the CLI prints them, the Agent records them
 * in its audit log, tests assert them. Verification checks the digest asked for before
 * anything else in the payload, so every non-retryable refusal below is about bytes whose
 * digest matches.
 */
export const REFUSALS = {
  // The bound is the reader's, and a conforming publisher's envelope fits in it; a larger
  // answer was not read at all, so it says nothing about what is published at the digest.
  TOO_LARGE: { retryable: true },
  // Raised mostly on the envelope (not JSON, not base64, not UTF-8) before its payload digest
  // is known: a truncated or mangled transfer. Marking the digest bad for that would strand the
  // node on a transient fault, whereas retrying the rare signed non-JSON payload only costs a
  // bounded number of fetches.
  MALFORMED: { retryable: true },
  // The payload type is signed along with the payload (PAE) and checked once the digest
  // matches: this is what was published at that digest.
  PAYLOAD_TYPE: { retryable: false },
  // snapshots/{hex}.json is immutable: an envelope of the asked digest without enough trusted
  // signatures is what the network published, and will be again.
  SIGNATURE_THRESHOLD: { retryable: false },
  // Canonical form is a property of the payload bytes, which the digest pins.
  NOT_CANONICAL: { retryable: false },
  // Schema is a property of the payload bytes, which the digest pins.
  SCHEMA_INVALID: { retryable: false },
  // Only a newer Agent can read this payload; fetching it again cannot help.
  UNSUPPORTED_SCHEMA: { retryable: false },
  // The signed payload (or the trusted root) names another network; that is content.
  NETWORK_MISMATCH: { retryable: false },
  // The signed expiry has passed; only a newer snapshot (another digest) can help.
  EXPIRED: { retryable: false },
  // The signed sequence is below what this node applied; the same bytes stay behind.
  ROLLBACK: { retryable: false },
  // The signed sequence is applied under another digest; the same bytes stay in conflict.
  SEQUENCE_CONFLICT: { retryable: false },
  // The origin served bytes other than the ones asked for: a cache, a mirror or a transfer
  // fault. The bytes at the digest may be fine, so another fetch may succeed.
  DIGEST_MISMATCH: { retryable: true },
  // Root N+1 as published does not chain from root N (version or signatures); the same file
  // will fail the same way.
  ROOT_ROTATION_INVALID: { retryable: false },
  // The node's newest trusted root has expired: fetching the snapshot again cannot change
  // that, only a new root can.
  ROOT_EXPIRED: { retryable: false },
  // A chunk list whose digest matches but whose entries are not 64 lowercase hex: that is
  // what the publisher put in the snapshot.
  CHUNK_LIST_INVALID: { retryable: false },
  // A chunk list whose digest matches but whose length disagrees with the model's size and
  // chunk size: the signed snapshot and its chunk list disagree, on every mirror.
  CHUNK_COUNT_MISMATCH: { retryable: false },
} as const satisfies Record<string, CodeInfo>;

export type RefusalCode = keyof typeof REFUSALS;

/** The refusal codes, in the order of the table. */
export const REFUSAL_CODES: readonly RefusalCode[] = Object.keys(REFUSALS) as RefusalCode[];

/** Errors of the publisher's tooling that are not refusals of a received envelope. */
export const TOOL_ERRORS = {
  // A key file that does not decode stays broken until someone replaces it.
  KEY_INVALID: { retryable: false },
  // The command line is wrong; running it again unchanged does the same.
  USAGE: { retryable: false },
  // A file system or network fault on the publisher's side may pass.
  IO: { retryable: true },
  // The origin already serves this sequence or a later one; publishing it again conflicts again.
  PUBLISH_CONFLICT: { retryable: false },
} as const satisfies Record<string, CodeInfo>;

export type ToolCode = keyof typeof TOOL_ERRORS;

export type SnapshotErrorCode = RefusalCode | ToolCode;

const CODE_INFO: Readonly<Record<SnapshotErrorCode, CodeInfo>> = { ...REFUSALS, ...TOOL_ERRORS };

/** Whether an error with this code is worth another try (see CodeInfo.retryable). */
export function isRetryableCode(code: SnapshotErrorCode): boolean {
  return CODE_INFO[code].retryable;
}

/** The one error type this package throws on purpose; anything else is a bug. */
export class SnapshotError extends CodedError<SnapshotErrorCode> {
  override readonly name = 'SnapshotError';

  /** `retryable` comes from the code's row in REFUSALS or TOOL_ERRORS, so it cannot drift. */
  constructor(code: SnapshotErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, { ...options, retryable: isRetryableCode(code) });
  }
}

export function isSnapshotError(error: unknown): error is SnapshotError {
  return error instanceof SnapshotError;
}

/** Shorthand used by the checks: throw a refusal with a stable code. */
export function refuse(code: SnapshotErrorCode, message: string, cause?: unknown): never {
  throw new SnapshotError(code, message, cause === undefined ? undefined : { cause });
}
