import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

import { LONG_POLL_HEADER, type LatestHint, originPaths, parseLatestHint } from '@resultity/snapshot/origin';

import { AgentError } from './errors.js';

/** The codes the origin client throws, each with whether a later try may succeed. */
export const ORIGIN_ERROR_RETRYABLE = {
  FETCH_FAILED: true,
  TIMEOUT: true,
  ABORTED: true,
  /**
   * Any status other than the one expected: 404 (a CDN not caught up), 429, 5xx, but also 403 or
   * 410. None of them is a refusal of verified bytes, so none spends a snapshot's retry budget
   * (SPEC §5); the Agent backs off and asks again.
   */
  HTTP_STATUS: true,
  /** More bytes than the limit are not the content of the digest asked for: the origin is at fault. */
  TOO_LARGE: true,
  LATEST_INVALID: true,
  /** A long-poll origin holding as many requests as it will (503 marked with the long-poll header). */
  LONG_POLL_FULL: true,
} as const;

export type OriginErrorCode = keyof typeof ORIGIN_ERROR_RETRYABLE;

/** A failure to talk to the origin; `status` is set for HTTP_STATUS and LONG_POLL_FULL. */
export class OriginError extends AgentError {
  override readonly name = 'OriginError';
  readonly status: number | null;
  /** LONG_POLL_FULL: the origin's Retry-After, in milliseconds, when it gave one. */
  readonly retryAfterMs: number | null;

  constructor(code: OriginErrorCode, message: string, options: { cause?: unknown; status?: number; retryAfterMs?: number | null } = {}) {
    super(code, message, { ...(options.cause === undefined ? {} : { cause: options.cause }), retryable: ORIGIN_ERROR_RETRYABLE[code] });
    this.status = options.status ?? null;
    this.retryAfterMs = options.retryAfterMs ?? null;
  }
}

/**
 * What a poll of latest.json found: nothing new since the ETag, or a hint of what to fetch.
 * `longPoll` is set only on an answer to a `wait` request: true when the origin marked it
 * with the long-poll header (it held the request), false when it ignored the wait (a static
 * server, a CDN) and answered at once.
 */
export type LatestResult =
  | { readonly status: 'not-modified'; readonly longPoll?: boolean }
  | { readonly status: 'ok'; readonly hint: LatestHint; readonly etag: string | null; readonly bytes: number; readonly longPoll?: boolean };

/** latest.json as it was answered in full (a 200). */
export type LatestAnswer = Extract<LatestResult, { readonly status: 'ok' }>;

/** How to ask for latest.json: at once (the default), or held by the origin for up to `waitS` seconds (SPEC §5 long-poll). */
export interface LatestOptions {
  readonly waitS?: number;
}

/** The origin as the sync loop sees it (SPEC §5); the default adapter is HTTP, tests may fake it. */
export interface Origin {
  /**
   * latest.json, conditional on `etag`. With `waitS` the request may be held (long-poll); an
   * origin that cannot hold one (a fake, a static file tree) may ignore it and answer at once,
   * which the caller reads as "long-poll not supported".
   */
  latest(etag: string | null, signal?: AbortSignal, options?: LatestOptions): Promise<LatestResult>;
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
  /** How requests are sent; node:http(s) by default. */
  readonly transport?: HttpTransport;
}

/** One HTTP answer as the origin client reads it. */
export interface HttpReply {
  readonly status: number;
  header(name: string): string | null;
  /** The body in chunks; leaving the loop early drops the rest. */
  readonly body: AsyncIterable<Uint8Array>;
  /** Drops the body without reading it. */
  discard(): void;
}

/** Sends one request; rejects when the request cannot be made or `signal` aborts it. */
export type HttpTransport = (
  url: URL,
  init: { readonly method: 'GET' | 'POST'; readonly headers: Record<string, string>; readonly body?: string; readonly signal: AbortSignal },
) => Promise<HttpReply>;

/** An unread body up to this size is drained rather than cutting the connection. */
const SMALL_BODY_BYTES = 4096;

/**
 * The default transport, on node:http and node:https. Not the global fetch: its HTTP stack is
 * loaded on first use and costs the daemon about 12 MB of resident memory, for requests this
 * plain (a GET with an ETag, a bounded body, a small POST).
 */
export const nodeHttpTransport: HttpTransport = async (url, init) => {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<HttpReply>((resolve, reject) => {
    const req = request(url, { method: init.method, headers: init.headers, signal: init.signal }, (res) => {
      resolve({
        status: res.statusCode ?? 0,
        header: (name) => {
          const value = res.headers[name.toLowerCase()];
          return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
        },
        body: res,
        // An empty or small answer (a 304, the root chain's 404) is drained so its connection is
        // kept for the next request; a body that is (or turns out to be) larger is cut off, never
        // downloaded just to be thrown away.
        discard: () => {
          const length = res.headers['content-length'];
          if (length !== undefined && Number(length) > SMALL_BODY_BYTES) return void res.destroy();
          let seen = 0;
          res.on('data', (chunk: Buffer) => {
            seen += chunk.byteLength;
            if (seen > SMALL_BODY_BYTES) res.destroy();
          });
          res.resume();
        },
      });
    });
    req.once('error', reject);
    req.end(init.body);
  });
};

const MAX_LATEST_BYTES = 64 * 1024;

/**
 * Reads a response body as a stream and stops as soon as it passes `maxBytes`, so a hostile or
 * broken origin can never make the Agent buffer more than its limit (TOO_LARGE).
 */
export async function readBounded(reply: HttpReply, maxBytes: number, what: string): Promise<Uint8Array> {
  const declared = reply.header('content-length');
  if (declared !== null && Number(declared) > maxBytes) {
    reply.discard();
    throw new OriginError('TOO_LARGE', `${what} is ${declared} bytes, the limit is ${maxBytes}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of reply.body) {
    total += chunk.byteLength;
    if (total > maxBytes) {
      reply.discard();
      throw new OriginError('TOO_LARGE', `${what} is more than ${maxBytes} bytes, the limit`);
    }
    chunks.push(chunk);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** The default Origin: node:http(s), a timeout on every request, bounded bodies. */
export function createHttpOrigin(options: HttpOriginOptions): Origin {
  const transport = options.transport ?? nodeHttpTransport;
  const base = options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`;
  const headers = { 'user-agent': options.userAgent ?? 'resultity-agent' };

  /** A reply and the deadline that bounds the whole exchange, body included. */
  interface Exchange {
    readonly reply: HttpReply;
    readonly deadline: Deadline;
    readonly timeoutMs: number;
  }

  async function request(
    path: string,
    init: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; signal?: AbortSignal | undefined; heldMs?: number },
    what: string,
  ): Promise<Exchange> {
    // A long-poll is held by design for up to its wait: only what comes after that is slow.
    const timeoutMs = options.timeoutMs + (init.heldMs ?? 0);
    const deadline = startDeadline(timeoutMs, init.signal);
    try {
      const reply = await transport(new URL(path, base), {
        method: init.method,
        headers: { ...headers, ...init.headers },
        ...(init.body === undefined ? {} : { body: init.body }),
        signal: deadline.signal,
      });
      return { reply, deadline, timeoutMs };
    } catch (cause) {
      deadline.end();
      if (init.signal?.aborted) throw new OriginError('ABORTED', `${what}: aborted`, { cause });
      if (deadline.timedOut()) throw new OriginError('TIMEOUT', `${what}: no answer within ${timeoutMs} ms`, { cause });
      throw new OriginError('FETCH_FAILED', `${what}: ${(cause as Error).message}${describeCause(cause)}`, { cause });
    }
  }

  /** Drops an answer's body unread; the deadline still bounds the drain, the caller's signal no longer does. */
  function drop(exchange: Exchange): void {
    exchange.reply.discard();
    exchange.deadline.release();
  }

  async function body(exchange: Exchange, limit: number, what: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    try {
      const bytes = await readBounded(exchange.reply, limit, what);
      options.onBytes?.(bytes.byteLength);
      return bytes;
    } catch (cause) {
      if (cause instanceof AgentError) throw cause;
      if (signal?.aborted) throw new OriginError('ABORTED', `${what}: aborted`, { cause });
      if (exchange.deadline.timedOut()) throw new OriginError('TIMEOUT', `${what}: body not read within ${exchange.timeoutMs} ms`, { cause });
      throw new OriginError('FETCH_FAILED', `${what}: ${(cause as Error).message}`, { cause });
    } finally {
      exchange.deadline.end();
    }
  }

  return {
    async latest(etag, signal, latestOptions = {}) {
      const waitS = latestOptions.waitS;
      const path = originPaths.latest(options.network) + (waitS === undefined ? '' : `?wait=${waitS}`);
      const what = `GET ${path}`;
      const exchange = await request(
        path,
        { method: 'GET', headers: etag ? { 'if-none-match': etag } : {}, signal, ...(waitS === undefined ? {} : { heldMs: waitS * 1000 }) },
        what,
      );
      const { reply } = exchange;
      // Only an answer to a wait request says whether the origin long-polls; plain polls stay as they were.
      const marked = waitS === undefined ? {} : { longPoll: reply.header(LONG_POLL_HEADER) === '1' };
      if (reply.status === 304) {
        drop(exchange);
        return { status: 'not-modified', ...marked };
      }
      if (reply.status === 503 && marked.longPoll === true) {
        drop(exchange);
        const retryAfterMs = parseRetryAfter(reply.header('retry-after'));
        throw new OriginError(
          'LONG_POLL_FULL',
          `${what}: the origin holds all the long-poll requests it will (503, Retry-After ${reply.header('retry-after') ?? 'none'})`,
          {
            status: 503,
            retryAfterMs,
          },
        );
      }
      if (reply.status !== 200) {
        drop(exchange);
        throw new OriginError('HTTP_STATUS', `${what}: expected 200 or 304, got ${reply.status}`, { status: reply.status });
      }
      const bytes = await body(exchange, MAX_LATEST_BYTES, what, signal);
      let value: unknown;
      try {
        value = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        value = null;
      }
      const hint = parseLatestHint(value);
      if (hint === null) throw new OriginError('LATEST_INVALID', `${what}: expected { config_digest: "sha256:<64 hex>", sequence }, got something else`);
      return { status: 'ok', hint, etag: reply.header('etag'), bytes: bytes.byteLength, ...marked };
    },

    async snapshot(digest, signal) {
      const hex = digest.replace(/^sha256:/, '');
      const path = originPaths.snapshot(options.network, hex);
      const what = `GET ${path}`;
      const exchange = await request(path, { method: 'GET', signal }, what);
      if (exchange.reply.status !== 200) {
        drop(exchange);
        throw new OriginError('HTTP_STATUS', `${what}: expected 200, got ${exchange.reply.status}`, { status: exchange.reply.status });
      }
      return body(exchange, options.maxBytes, what, signal);
    },

    async root(version, signal) {
      const path = originPaths.root(options.network, version);
      const what = `GET ${path}`;
      const exchange = await request(path, { method: 'GET', signal }, what);
      if (exchange.reply.status === 404) {
        drop(exchange);
        return null;
      }
      if (exchange.reply.status !== 200) {
        drop(exchange);
        throw new OriginError('HTTP_STATUS', `${what}: expected 200 or 404, got ${exchange.reply.status}`, { status: exchange.reply.status });
      }
      return body(exchange, options.maxBytes, what, signal);
    },

    async heartbeat(payload, signal) {
      const path = originPaths.heartbeat(options.network, options.nodeId);
      const what = `POST ${path}`;
      const exchange = await request(path, { method: 'POST', body: JSON.stringify(payload), headers: { 'content-type': 'application/json' }, signal }, what);
      drop(exchange);
      if (exchange.reply.status < 200 || exchange.reply.status >= 300) {
        throw new OriginError('HTTP_STATUS', `${what}: expected 2xx, got ${exchange.reply.status}`, { status: exchange.reply.status });
      }
    },
  };
}

/** What bounds one exchange: a signal that aborts at the deadline or with the caller's own. */
interface Deadline {
  readonly signal: AbortSignal;
  timedOut(): boolean;
  /** The exchange is over: the timer and the listener on the caller's signal go now. */
  end(): void;
  /** Only the listener on the caller's signal goes (a body dropped unread: the timer bounds its drain). */
  release(): void;
}

/**
 * One timer and one listener per request, rather than AbortSignal.timeout() joined to the
 * caller's signal by AbortSignal.any(): those cost several times as much CPU per request and
 * keep weak references until they are collected, and an apply makes three requests. An
 * exchange whose body is dropped unread (a 304, the root chain's 404) only releases the
 * caller's signal: the timer still bounds the drain.
 */
function startDeadline(timeoutMs: number, outer: AbortSignal | undefined): Deadline {
  const controller = new AbortController();
  let timedOut = false;
  const onOuterAbort = () => {
    clearTimeout(timer);
    controller.abort(outer?.reason);
  };
  const release = () => outer?.removeEventListener('abort', onOuterAbort);
  const end = () => {
    clearTimeout(timer);
    release();
  };
  const timer = setTimeout(() => {
    timedOut = true;
    release();
    controller.abort(new DOMException(`no answer within ${timeoutMs} ms`, 'TimeoutError'));
  }, timeoutMs);
  // Like AbortSignal.timeout(): a pending deadline never keeps the process alive.
  timer.unref();
  if (outer?.aborted) onOuterAbort();
  else outer?.addEventListener('abort', onOuterAbort, { once: true });
  return { signal: controller.signal, timedOut: () => timedOut, end, release };
}

/** Retry-After in seconds (the only form an origin of SPEC §5 sends); null for a date or anything else. */
function parseRetryAfter(value: string | null): number | null {
  if (value === null || !/^[0-9]{1,6}$/.test(value.trim())) return null;
  return Number(value.trim()) * 1000;
}

function describeCause(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ? ` (${cause.code})` : '';
}
