import { type LatestHint, originPaths, parseLatestHint } from '@resultity/snapshot/origin';

import { AgentError } from './errors.js';

/** The codes the origin client throws, each with whether a later try may succeed. */
export const ORIGIN_ERROR_RETRYABLE = {
  FETCH_FAILED: true,
  TIMEOUT: true,
  ABORTED: true,
  /** Decided by the status: see httpStatusRetryable. */
  HTTP_STATUS: true,
  TOO_LARGE: false,
  LATEST_INVALID: true,
} as const;

export type OriginErrorCode = keyof typeof ORIGIN_ERROR_RETRYABLE;

/**
 * A status that a mirror, a cache or an overloaded origin gives while the content is fine:
 * not found yet (404, a CDN that has not caught up), timeouts (408), rate limits (429) and
 * server errors (5xx). Other statuses (400, 403, ...) are not going to change by waiting.
 */
export function httpStatusRetryable(status: number): boolean {
  return status === 404 || status === 408 || status === 429 || (status >= 500 && status <= 599);
}

/** A failure to talk to the origin; `status` is set for HTTP_STATUS. */
export class OriginError extends AgentError {
  override readonly name = 'OriginError';
  readonly status: number | null;

  constructor(code: OriginErrorCode, message: string, options: { cause?: unknown; status?: number } = {}) {
    const retryable = code === 'HTTP_STATUS' && options.status !== undefined ? httpStatusRetryable(options.status) : ORIGIN_ERROR_RETRYABLE[code];
    super(code, message, { ...(options.cause === undefined ? {} : { cause: options.cause }), retryable });
    this.status = options.status ?? null;
  }
}

/** What a poll of latest.json found: nothing new since the ETag, or a hint of what to fetch. */
export type LatestResult =
  | { readonly status: 'not-modified' }
  | { readonly status: 'ok'; readonly hint: LatestHint; readonly etag: string | null; readonly bytes: number };

/** The origin as the sync loop sees it (SPEC §5); the default adapter is HTTP, tests may fake it. */
export interface Origin {
  latest(etag: string | null, signal?: AbortSignal): Promise<LatestResult>;
  /** The envelope bytes published under a digest ("sha256:<hex>"), bounded by the size limit. */
  snapshot(digest: string, signal?: AbortSignal): Promise<Uint8Array>;
  /** Root envelope of a version, or null when the origin has none (404: the chain ends). */
  root(version: number, signal?: AbortSignal): Promise<Uint8Array | null>;
  heartbeat(body: Record<string, unknown>, signal?: AbortSignal): Promise<void>;
}

/** The HTTP origin's settings: where, for which network and node, and the bounds on every request. */
export interface HttpOriginOptions {
  readonly baseUrl: string;
  readonly network: string;
  readonly nodeId: string;
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly userAgent?: string;
  /** Called with the size of every body read, for the bytes-downloaded metric. */
  readonly onBytes?: (bytes: number) => void;
  readonly fetch?: typeof fetch;
}

const MAX_LATEST_BYTES = 64 * 1024;

/**
 * Reads a response body as a stream and stops as soon as it passes `maxBytes`, so a hostile or
 * broken origin can never make the Agent buffer more than its limit (TOO_LARGE).
 */
export async function readBounded(res: Response, maxBytes: number, what: string): Promise<Uint8Array> {
  const declared = res.headers.get('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new OriginError('TOO_LARGE', `${what} is ${declared} bytes, the limit is ${maxBytes}`);
  }
  if (res.body === null) return new Uint8Array(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new OriginError('TOO_LARGE', `${what} is more than ${maxBytes} bytes, the limit`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** The default Origin: node's fetch, a timeout on every request, bounded bodies. */
export function createHttpOrigin(options: HttpOriginOptions): Origin {
  const doFetch = options.fetch ?? fetch;
  const base = options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`;
  const headers = { 'user-agent': options.userAgent ?? 'resultity-agent' };

  async function request(path: string, init: RequestInit & { signal?: AbortSignal | undefined }, what: string): Promise<Response> {
    const timeout = AbortSignal.timeout(options.timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    try {
      return await doFetch(new URL(path, base), { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) }, signal });
    } catch (cause) {
      if (init.signal?.aborted) throw new OriginError('ABORTED', `${what}: aborted`, { cause });
      if (timeout.aborted) throw new OriginError('TIMEOUT', `${what}: no answer within ${options.timeoutMs} ms`, { cause });
      throw new OriginError('FETCH_FAILED', `${what}: ${(cause as Error).message}${describeCause(cause)}`, { cause });
    }
  }

  async function body(res: Response, limit: number, what: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    try {
      const bytes = await readBounded(res, limit, what);
      options.onBytes?.(bytes.byteLength);
      return bytes;
    } catch (cause) {
      if (cause instanceof AgentError) throw cause;
      if (signal?.aborted) throw new OriginError('ABORTED', `${what}: aborted`, { cause });
      if ((cause as Error).name === 'TimeoutError') throw new OriginError('TIMEOUT', `${what}: body not read within ${options.timeoutMs} ms`, { cause });
      throw new OriginError('FETCH_FAILED', `${what}: ${(cause as Error).message}`, { cause });
    }
  }

  return {
    async latest(etag, signal) {
      const what = `GET ${originPaths.latest(options.network)}`;
      const res = await request(
        originPaths.latest(options.network),
        { method: 'GET', headers: etag ? { 'if-none-match': etag } : {}, signal },
        what,
      );
      if (res.status === 304) {
        await res.body?.cancel().catch(() => undefined);
        return { status: 'not-modified' };
      }
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw new OriginError('HTTP_STATUS', `${what}: expected 200 or 304, got ${res.status}`, { status: res.status });
      }
      const bytes = await body(res, MAX_LATEST_BYTES, what, signal);
      let value: unknown;
      try {
        value = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        value = null;
      }
      const hint = parseLatestHint(value);
      if (hint === null) throw new OriginError('LATEST_INVALID', `${what}: expected { config_digest: "sha256:<64 hex>", sequence }, got something else`);
      return { status: 'ok', hint, etag: res.headers.get('etag'), bytes: bytes.byteLength };
    },

    async snapshot(digest, signal) {
      const hex = digest.replace(/^sha256:/, '');
      const path = originPaths.snapshot(options.network, hex);
      const what = `GET ${path}`;
      const res = await request(path, { method: 'GET', signal }, what);
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw new OriginError('HTTP_STATUS', `${what}: expected 200, got ${res.status}`, { status: res.status });
      }
      return body(res, options.maxBytes, what, signal);
    },

    async root(version, signal) {
      const path = originPaths.root(options.network, version);
      const what = `GET ${path}`;
      const res = await request(path, { method: 'GET', signal }, what);
      if (res.status === 404) {
        await res.body?.cancel().catch(() => undefined);
        return null;
      }
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw new OriginError('HTTP_STATUS', `${what}: expected 200 or 404, got ${res.status}`, { status: res.status });
      }
      return body(res, options.maxBytes, what, signal);
    },

    async heartbeat(payload, signal) {
      const path = originPaths.heartbeat(options.network, options.nodeId);
      const what = `POST ${path}`;
      const res = await request(
        path,
        { method: 'POST', body: JSON.stringify(payload), headers: { 'content-type': 'application/json' }, signal },
        what,
      );
      await res.body?.cancel().catch(() => undefined);
      if (res.status < 200 || res.status >= 300) throw new OriginError('HTTP_STATUS', `${what}: expected 2xx, got ${res.status}`, { status: res.status });
    },
  };
}

function describeCause(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ? ` (${cause.code})` : '';
}
