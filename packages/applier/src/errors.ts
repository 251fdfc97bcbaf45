import { CodedError } from '@resultity/node-kit';

import type { Step } from './types.js';

/**
 * Every way an apply can fail, and whether the failure is retryable. The codes are the API:
 * the Agent's CLI prints them, its audit log records them, tests assert them.
 *
 * `retryable` answers one question for the Agent: does this failure say anything about the
 * verified snapshot? A transport or environment failure (a mirror, a registry, the engine, the
 * disk) does not, so it must not spend the snapshot's retry budget (SPEC §5: "only a refusal
 * of the verified bytes themselves does"). A failure of what the snapshot itself asks for does.
 */
export const APPLY_ERRORS = {
  // A registry outage or a network failure during a pull; the signed digest is not in question.
  PULL_FAILED: { retryable: true },
  // The registry (or something in the middle) served other bytes than the signed digest: the
  // source is at fault, exactly like a mirror's HASH_MISMATCH, and another try may reach an honest one.
  DIGEST_MISMATCH: { retryable: true },
  // The snapshot names a registry this node's policy refuses: trying again changes nothing.
  REGISTRY_NOT_ALLOWED: { retryable: false },
  // The snapshot asks for something the policy forbids: trying again changes nothing.
  POLICY_DENIED: { retryable: false },
  // The container the snapshot defines exits, restarts or cannot be created: its content is at fault.
  CONTAINER_FAILED: { retryable: false },
  // The container the snapshot defines never became healthy in the time it was given.
  HEALTH_TIMEOUT: { retryable: false },
  // Every mirror of a model failed, each for its own reason: the mirrors are at fault, not the snapshot.
  DOWNLOAD_FAILED: { retryable: true },
  // A mirror served bytes that do not hash to the signed sha256: the mirror is at fault, not the snapshot.
  HASH_MISMATCH: { retryable: true },
  // A mirror announced or sent another size than the signed one: the mirror is at fault.
  SIZE_MISMATCH: { retryable: true },
  // The node's disk is too small or filled up: an environment condition an operator can fix.
  INSUFFICIENT_SPACE: { retryable: true },
  // The apply was cancelled (shutdown, a newer snapshot): nothing was learned about this one.
  ABORTED: { retryable: true },
  // The container engine cannot be reached: an environment condition.
  ENGINE_UNAVAILABLE: { retryable: true },
  // The engine failed a stop, remove or list call: the engine's trouble, not the snapshot's.
  ENGINE_FAILED: { retryable: true },
  // The node's own model index, flags file or disk failed: an environment condition.
  STORE_FAILED: { retryable: true },
  // A step that is not well formed: the plan or its input is wrong and stays wrong.
  INVALID_STEP: { retryable: false },
  // One mirror redirected to a URL we will not follow (unparsable, another scheme, a downgrade, too many hops).
  MIRROR_REDIRECT_REFUSED: { retryable: true },
  // One mirror (or a redirect) resolved to a loopback, private, link-local or otherwise internal address.
  MIRROR_ADDRESS_REFUSED: { retryable: true },
  // One mirror answered an HTTP status other than 200/206 (or an unusable partial answer).
  MIRROR_HTTP_STATUS: { retryable: true },
  // One mirror could not be reached or kept cutting the connection.
  MIRROR_UNREACHABLE: { retryable: true },
  // One mirror sent nothing for the idle timeout.
  MIRROR_STALLED: { retryable: true },
  // One mirror sent less than the minimum rate over a whole window.
  MIRROR_TOO_SLOW: { retryable: true },
  // The snapshot asks for more GPUs than this node's configuration offers: trying again changes nothing.
  GPUS_UNAVAILABLE: { retryable: false },
  // One mirror served a chunk whose bytes do not hash to the chunk list's entry: that mirror is
  // no longer asked for anything in this download, and its chunks come from the others.
  MIRROR_CHUNK_MISMATCH: { retryable: true },
  // One mirror answered a ranged request with the whole file (or another range): it cannot take
  // part in a chunked download, though it may serve a whole-file one.
  MIRROR_NO_RANGES: { retryable: true },
  // The origin could not serve a model's chunk list, or served bytes that are not the list the
  // snapshot names: the origin's trouble, not the snapshot's.
  CHUNK_LIST_UNAVAILABLE: { retryable: true },
  // The chunk list the signed snapshot names is not well formed, has the wrong number of
  // entries, or its verified chunks do not make the file the snapshot's sha256 names: every
  // origin and mirror would give the same answer, so the snapshot itself is at fault.
  CHUNK_LIST_INVALID: { retryable: false },
} as const satisfies Record<string, { readonly retryable: boolean }>;

export type ApplyErrorCode = keyof typeof APPLY_ERRORS;

/** Every code, in the table's order. */
export const APPLY_ERROR_CODES = Object.keys(APPLY_ERRORS) as ApplyErrorCode[];

/** Whether a code is a transport or environment failure that must not count against a snapshot. */
export function isRetryableCode(code: ApplyErrorCode): boolean {
  return APPLY_ERRORS[code].retryable;
}

/**
 * What one mirror of a model did wrong. `detail` may name the mirror's host, an HTTP status or
 * sizes: it is for the node's local audit log, never for a message that leaves the node.
 */
export interface MirrorFailure {
  /** The position of the URL in the model's `urls`. */
  readonly index: number;
  readonly code: ApplyErrorCode;
  readonly detail: string;
}

/** The one error type this package throws on purpose; anything else is a bug. */
export class ApplyError extends CodedError<ApplyErrorCode> {
  override readonly name = 'ApplyError';
  /** The step that failed, when the failure belongs to one. */
  readonly step: Step | undefined;
  /** True when the executor put the previous containers, model index and flags back. */
  readonly rolledBack: boolean;
  /** Set when restoring the previous state failed too: the node needs attention. */
  readonly rollbackError: unknown;
  /** For a model download: what each mirror tried did wrong, for the local audit log only. */
  readonly mirrors: readonly MirrorFailure[] | undefined;

  constructor(
    code: ApplyErrorCode,
    message: string,
    options: { cause?: unknown; step?: Step; rolledBack?: boolean; rollbackError?: unknown; mirrors?: readonly MirrorFailure[] } = {},
  ) {
    // `retryable` is read from the code table, so it cannot drift from the code.
    super(code, message, { cause: options.cause, retryable: isRetryableCode(code) });
    this.step = options.step;
    this.rolledBack = options.rolledBack ?? false;
    this.rollbackError = options.rollbackError;
    this.mirrors = options.mirrors;
  }

  /** The same failure, now naming its step and whether the previous state was restored. */
  withOutcome(step: Step | undefined, rolledBack: boolean, rollbackError?: unknown): ApplyError {
    const copy = new ApplyError(this.code, this.message, {
      cause: this.cause,
      step: this.step ?? step,
      rolledBack,
      rollbackError,
      ...(this.mirrors === undefined ? {} : { mirrors: this.mirrors }),
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
