import { CodedError, isCodedError } from '@resultity/node-kit';

/**
 * Codes of the Agent's own failures, each with whether it is retryable: a retryable failure
 * says nothing about a snapshot's bytes (the network, a timeout, a cancellation), so it backs
 * off without spending any digest's retry budget. Refusals of an envelope keep the snapshot
 * package's codes (ROLLBACK, EXPIRED, ...) and failures of an apply keep the applier's
 * (PULL_FAILED, ...); the Agent records whichever code it was given.
 */
export const AGENT_ERROR_RETRYABLE = {
  // The configuration file is wrong; only an operator's edit changes that.
  CONFIG_INVALID: false,
  // The origin could not be reached or cut the connection.
  FETCH_FAILED: true,
  // The origin answered a status other than the one expected (404, 429, 5xx, ...).
  HTTP_STATUS: true,
  // The origin did not answer within the request timeout.
  TIMEOUT: true,
  // The origin sent more bytes than the limit: they are not the digest's content, whatever they are.
  TOO_LARGE: true,
  // latest.json did not parse: an unsigned hint, so nothing is known about any snapshot.
  LATEST_INVALID: true,
  // A long-poll origin at its bound of held requests (SPEC §5): it answers, it only asks to wait.
  LONG_POLL_FULL: true,
  // The runtime refused the verified snapshot's environment: it counts against that digest.
  RUNTIME_NACK: false,
  // The digest already spent its budget.
  RETRY_BUDGET_EXHAUSTED: false,
  // The state directory does not parse; the Agent rebuilds it, retrying does not help.
  STATE_CORRUPT: false,
  // An operator named a digest the Agent does not keep.
  NOT_IN_HISTORY: false,
  // Applying the verified snapshot failed.
  APPLY_FAILED: false,
  // Every restart died inside the same apply: the snapshot is the likely cause.
  APPLY_INTERRUPTED: false,
  // Cancelled by shutdown or a newer snapshot: nothing was learned.
  ABORTED: true,
  // The audit log fails its hash chain, or takes no more bytes; an operator must look.
  AUDIT_BROKEN: false,
  // The container engine cannot be reached: an environment condition.
  ENGINE_UNAVAILABLE: true,
  // Another Agent holds the state directory.
  LOCKED: false,
  // The daemon holding the state directory did not answer the CLI.
  DAEMON_UNREACHABLE: true,
  // The runtime bridge endpoint could not listen; the Agent does not run without it.
  BRIDGE_BIND_FAILED: false,
  // The status and control endpoint could not listen; the Agent does not run without it.
  STATUS_BIND_FAILED: false,
  // The Agent runs in a container and the directories it mounts into runtime containers are not the host's same paths.
  PATHS_NOT_SHARED: false,
  // A command was called wrongly.
  USAGE: false,
} as const satisfies Record<string, boolean>;

export type AgentErrorCode = keyof typeof AGENT_ERROR_RETRYABLE;

/** The one error type the Agent throws on purpose; anything else is a bug. */
export class AgentError extends CodedError<AgentErrorCode> {
  override readonly name: string = 'AgentError';

  /** `retryable` defaults to the code's row above; the origin client may decide per failure. */
  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(code, message, { cause: options?.cause, retryable: options?.retryable ?? AGENT_ERROR_RETRYABLE[code] });
  }
}

/**
 * Codes that meant "the transport failed" before every error carried `retryable`; an error
 * of another package without the field is classified by these, as the origin client does.
 */
const TRANSPORT_CODES_WITHOUT_FIELD: ReadonlySet<string> = new Set(['FETCH_FAILED', 'TIMEOUT', 'ABORTED']);

/**
 * Whether an error is a transient failure that must not count against a snapshot: the error's
 * own `retryable` decides; an error without the field is not retryable, except the transport
 * codes above.
 */
export function isRetryable(error: unknown): boolean {
  if (isCodedError(error)) return error.retryable;
  return TRANSPORT_CODES_WITHOUT_FIELD.has(errorCode(error));
}

/** The stable code of any error: the Agent's, the snapshot package's, the applier's, or INTERNAL. */
export function errorCode(error: unknown): string {
  if (error !== null && typeof error === 'object' && 'code' in error) {
    const code = (error as { code: unknown }).code;
    if (typeof code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(code)) return code;
  }
  if (error instanceof Error && error.name === 'AbortError') return 'ABORTED';
  if (error instanceof Error && error.name === 'TimeoutError') return 'TIMEOUT';
  return 'INTERNAL';
}

/** An error's message, with control characters escaped: messages quote what the network sent. */
export function errorMessage(error: unknown): string {
  return escapeControl(error instanceof Error ? error.message : String(error));
}

/**
 * Escapes C0 and C1 control characters (and DEL) as \xNN / \uNNNN, so text that came from the
 * network (a payloadType, a header) can never drive a terminal or split a log line. Applied
 * wherever a message is recorded or printed; escaping twice is harmless (backslashes are kept).
 */
export function escapeControl(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
