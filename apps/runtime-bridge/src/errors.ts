import { CodedError } from '@resultity/node-kit';

export { JobRejectedError, isJobRejectedError, TokenError } from '@resultity/bridge-protocol';
export type { JobRejectionCode } from '@resultity/bridge-protocol';

/** Why the bridge could not connect or stopped. */
export type BridgeErrorCode =
  /** The Agent URL is not ws://, ws+unix: or a socket path. */
  | 'URL_INVALID'
  /** The Agent URL points off this host; the token never leaves loopback. */
  | 'NOT_LOOPBACK'
  /** The endpoint refused the bearer token (HTTP 401). */
  | 'UNAUTHORIZED'
  /** The endpoint refused the handshake for another reason (wrong subprotocol, full). */
  | 'HANDSHAKE_REFUSED'
  /** No environment arrived within `connectTimeoutMs`. */
  | 'CONNECT_TIMEOUT'
  /** The caller's AbortSignal fired before the first environment. */
  | 'ABORTED'
  /** The bridge was closed. */
  | 'CLOSED'
  /** The sidecar was started without anywhere to deliver the environment, or with a bad target. */
  | 'SIDECAR_CONFIG'
  /** The sidecar could not write or POST the environment. */
  | 'APPLY_FAILED'
  /** The example runtime was given options it cannot use. */
  | 'RUNTIME_CONFIG';

/** The one error type this package throws on purpose (besides job rejections). */
export class BridgeError extends CodedError<BridgeErrorCode> {
  override readonly name = 'BridgeError';

  constructor(code: BridgeErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export function isBridgeError(error: unknown): error is BridgeError {
  return error instanceof BridgeError;
}
