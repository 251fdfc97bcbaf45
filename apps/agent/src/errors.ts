/**
 * Codes of the Agent's own failures. Refusals of an envelope keep the snapshot package's codes
 * (ROLLBACK, EXPIRED, ...) and failures of an apply keep the applier's (PULL_FAILED, ...); the
 * Agent records whichever code it was given, so the audit log and the CLI speak one language.
 */
export type AgentErrorCode =
  | 'CONFIG_INVALID'
  | 'FETCH_FAILED'
  | 'HTTP_STATUS'
  | 'TIMEOUT'
  | 'TOO_LARGE'
  | 'LATEST_INVALID'
  | 'RUNTIME_NACK'
  | 'RETRY_BUDGET_EXHAUSTED'
  | 'STATE_CORRUPT'
  | 'NOT_IN_HISTORY'
  | 'APPLY_FAILED'
  | 'APPLY_INTERRUPTED'
  | 'ABORTED'
  | 'AUDIT_BROKEN'
  | 'ENGINE_UNAVAILABLE'
  | 'LOCKED'
  | 'DAEMON_UNREACHABLE'
  /** The runtime bridge endpoint could not listen; the Agent does not run without it. */
  | 'BRIDGE_BIND_FAILED'
  /** The status and control endpoint could not listen; the Agent does not run without it. */
  | 'STATUS_BIND_FAILED'
  | 'USAGE';

/** The one error type the Agent throws on purpose; anything else is a bug. */
export class AgentError extends Error {
  override readonly name = 'AgentError';
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
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

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
