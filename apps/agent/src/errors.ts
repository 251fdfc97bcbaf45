/**
 * Codes of the Agent's own failures, each with whether it is retryable: a retryable failure
 * says nothing about a snapshot's bytes (the network, a timeout, a cancellation), so it backs
 * off without spending any digest's retry budget. Refusals of an envelope keep the snapshot
 * package's codes (ROLLBACK, EXPIRED, ...) and failures of an apply keep the applier's
 * (PULL_FAILED, ...); the Agent records whichever code it was given.
 */
export const AGENT_ERROR_RETRYABLE = {
  CONFIG_INVALID: false,
  FETCH_FAILED: true,
  HTTP_STATUS: true,
  TIMEOUT: true,
  TOO_LARGE: false,
  LATEST_INVALID: true,
  // A long-poll origin at its bound of held requests (SPEC §5): it answers, it only asks to wait.
  LONG_POLL_FULL: true,
  RUNTIME_NACK: false,
  RETRY_BUDGET_EXHAUSTED: false,
  STATE_CORRUPT: false,
  NOT_IN_HISTORY: false,
  APPLY_FAILED: false,
  APPLY_INTERRUPTED: false,
  ABORTED: true,
  AUDIT_BROKEN: false,
  ENGINE_UNAVAILABLE: true,
  LOCKED: false,
  DAEMON_UNREACHABLE: true,
  // The runtime bridge endpoint could not listen; the Agent does not run without it.
  BRIDGE_BIND_FAILED: false,
  // The status and control endpoint could not listen; the Agent does not run without it.
  STATUS_BIND_FAILED: false,
  USAGE: false,
} as const satisfies Record<string, boolean>;

export type AgentErrorCode = keyof typeof AGENT_ERROR_RETRYABLE;

/** The one error type the Agent throws on purpose; anything else is a bug. */
export class AgentError extends Error {
  override readonly name: string = 'AgentError';
  readonly code: AgentErrorCode;
  /** True when trying again later may succeed and the failure says nothing about a snapshot's bytes. */
  readonly retryable: boolean;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options?.retryable ?? AGENT_ERROR_RETRYABLE[code];
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
  if (error !== null && typeof error === 'object' && 'retryable' in error && typeof (error as { retryable: unknown }).retryable === 'boolean') {
    return (error as { retryable: boolean }).retryable;
  }
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
