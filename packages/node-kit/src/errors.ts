/** Options every coded error takes: what caused it, and whether trying again may succeed. */
export interface CodedErrorOptions {
  cause?: unknown;
  /** Default false: a failure is final unless its thrower says a retry may help. */
  retryable?: boolean;
}

// A registered symbol, not `instanceof`: node-kit is bundled into each consumer's dist, so an
// error thrown by one package's copy of this class is not an instance of another's.
const CODED = Symbol.for('@resultity/node-kit/CodedError');

/**
 * The base of each package's error type: a stable `code` (the API: the CLI prints it, tests
 * assert it, the audit log records it), whether a retry may help, the `cause`, and a `name`
 * each subclass overrides.
 */
export class CodedError<Code extends string = string> extends Error {
  override readonly name: string = 'CodedError';
  readonly code: Code;
  readonly retryable: boolean;

  constructor(code: Code, message: string, options?: CodedErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }

  get [CODED](): true {
    return true;
  }
}

/** True for a CodedError from any copy of node-kit. */
export function isCodedError(error: unknown): error is CodedError {
  return typeof error === 'object' && error !== null && (error as { [CODED]?: unknown })[CODED] === true;
}

/** Whether trying the failed operation again may succeed; anything not a CodedError is not. */
export function isRetryable(error: unknown): boolean {
  return isCodedError(error) && error.retryable;
}
