import { CodedError } from '@resultity/node-kit';

/** Why the endpoint would not start or would not take an environment. */
export type EndpointErrorCode =
  /** The listen address is not loopback; the endpoint never listens where another host could reach it. */
  | 'NOT_LOOPBACK'
  /** The unix socket path is taken by something that is not a socket. */
  | 'SOCKET_PATH_IN_USE'
  /** The unix socket's directory is not ours alone: someone else could put a socket at the path. */
  | 'SOCKET_DIR_UNSAFE'
  /** The server could not listen (port taken, no permission). */
  | 'LISTEN_FAILED'
  /** The bearer token is missing or unusable. */
  | 'TOKEN_INVALID'
  /** setEnvironment got an environment that does not match the schema. */
  | 'ENVIRONMENT_INVALID'
  /** The endpoint is closed. */
  | 'CLOSED';

/** The one error type this package throws on purpose. */
export class EndpointError extends CodedError<EndpointErrorCode> {
  override readonly name = 'EndpointError';

  // None of these is retryable: each is a setup mistake or a closed endpoint.
  constructor(code: EndpointErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export function isEndpointError(error: unknown): error is EndpointError {
  return error instanceof EndpointError;
}
