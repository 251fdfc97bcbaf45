import { type LookupAddress, lookup as dnsLookup } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { type LookupFunction, isIP } from 'node:net';
import { Transform, pipeline } from 'node:stream';

import { refusedAddress } from './address.js';
import { ApplyError, messageOf } from './errors.js';
import { BatchPool, type RangeReadRequest, type RangeSink, readRange } from './range-reader.js';
import type { DownloadResponse, Downloader } from './ports.js';

/** Options of the default HTTP downloader. */
export interface HttpDownloaderOptions {
  /** A mirror silent for this long, before or during the body, is abandoned (MIRROR_STALLED), default 30 s. */
  idleTimeoutMs?: number;
  /** Redirects followed for one request, default 5. */
  maxRedirects?: number;
  /**
   * A mirror that delivers less than this on average over a whole `rateWindowMs` is abandoned
   * (MIRROR_TOO_SLOW), so one that drips a byte at a time cannot hold an apply; default 64 KiB/s, 0 turns it off.
   */
  minBytesPerSecond?: number;
  /** The window the rate is averaged over, default 30 s. */
  rateWindowMs?: number;
  /**
   * Lets mirrors (and redirects) reach loopback, private and link-local addresses. Only for
   * development and tests: a node in production must never fetch from its own networks. Default false.
   */
  allowPrivateAddresses?: boolean;
  /** Bandwidth of everything this downloader fetches, shared by all its connections (bytes/s); unlimited when absent or 0. */
  maxBytesPerSecond?: number;
}

export const DEFAULT_MIN_BYTES_PER_SECOND = 64 * 1024;

/**
 * A token bucket shared by every request of one downloader: the bandwidth limit of model
 * downloads, however many connections they use. Takers may run it into debt; each then waits
 * for its own share to be paid back, so the aggregate holds the rate and no connection starves.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly bytesPerSecond: number,
    /** What may pass at once after a quiet spell, default a quarter second's worth (at least 64 KiB). */
    private readonly burst = Math.max(64 * 1024, bytesPerSecond / 4),
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes `bytes`; returns how many milliseconds the taker must wait before using them (0: at once). */
  take(bytes: number): number {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.bytesPerSecond) / 1000);
    this.last = t;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.bytesPerSecond;
  }
}
export const DEFAULT_RATE_WINDOW_MS = 30_000;

/** A mirror's HTTP answer other than 200/206; whether it could go away on a retry (the server, not the file, is at fault). */
export class HttpStatusError extends ApplyError {
  constructor(
    readonly status: number,
    host: string,
  ) {
    super('MIRROR_HTTP_STATUS', `${host} answered HTTP ${status}`);
  }
  get transient(): boolean {
    return this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

function parseContentRange(header: string | undefined): { start: number; end: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header ?? '');
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
}

/** The host of a URL without its port or path: what a per-mirror detail may name. */
function hostOf(url: URL): string {
  return url.hostname;
}

/**
 * A resolver that only answers with addresses a mirror may be reached on. http.request connects
 * to what this returns, so the check holds for the address actually used, whatever the name
 * resolves to next time (no DNS rebinding between a check and the connect).
 */
export function confinedLookup(host: string): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) {
        callback(error, '', 0);
        return;
      }
      const allowed = addresses.filter((a) => refusedAddress(a.address) === null);
      const first = allowed[0];
      if (first === undefined) {
        const refused = new ApplyError('MIRROR_ADDRESS_REFUSED', `${host} resolves only to internal addresses (${addresses.map((a) => a.address).join(', ')})`);
        callback(refused as NodeJS.ErrnoException, '', 0);
        return;
      }
      if (options.all) callback(null, allowed);
      else callback(null, first.address, first.family);
    });
  };
}

/**
 * The body of a response, watched: a mirror silent for `idleMs` fails it with MIRROR_STALLED, one
 * below `minBytesPerSecond` over a whole window with MIRROR_TOO_SLOW. The error reaches whoever
 * reads the body; nothing is thrown from a timer.
 */
function watchedBody(
  res: http.IncomingMessage,
  host: string,
  limits: { idleMs: number; minBytesPerSecond: number; windowMs: number; bucket: TokenBucket | null },
): Transform {
  let windowBytes = 0;
  // Time this body spent held back by our own bandwidth limit in the current window: not the
  // mirror's slowness. A hold may span two windows, so each gets only its own part of it.
  let windowStart = performance.now();
  let throttledMs = 0;
  let heldSince: number | null = null;
  const body = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      windowBytes += chunk.length;
      idle.refresh();
      const wait = limits.bucket?.take(chunk.length) ?? 0;
      if (wait <= 0) {
        done(null, chunk);
        return;
      }
      // Holding the chunk back stops reading the socket, so the mirror is slowed by TCP itself.
      heldSince = performance.now();
      setTimeout(() => {
        throttledMs += performance.now() - Math.max(heldSince ?? windowStart, windowStart);
        heldSince = null;
        idle.refresh();
        done(null, chunk);
      }, wait);
    },
  });
  const idle = setTimeout(() => body.destroy(new ApplyError('MIRROR_STALLED', `${host} sent nothing for ${limits.idleMs} ms`)), limits.idleMs);
  const needed = Math.ceil((limits.minBytesPerSecond * limits.windowMs) / 1000);
  const rate =
    needed > 0
      ? setInterval(() => {
          // Only the time the mirror was free to send counts towards its minimum.
          const now = performance.now();
          const held = throttledMs + (heldSince === null ? 0 : now - Math.max(heldSince, windowStart));
          const free = Math.max(0, Math.round(now - windowStart - held));
          const expected = Math.floor((limits.minBytesPerSecond * free) / 1000);
          if (windowBytes < expected) {
            body.destroy(new ApplyError('MIRROR_TOO_SLOW', `${host} sent ${windowBytes} bytes in ${free} ms, expected at least ${expected}`));
          }
          windowBytes = 0;
          throttledMs = 0;
          windowStart = now;
        }, limits.windowMs)
      : null;
  body.once('close', () => {
    clearTimeout(idle);
    if (rate !== null) clearInterval(rate);
  });
  // Errors of either side end up on `body`, where the reader sees them.
  pipeline(res, body, () => undefined);
  return body;
}

/** A mirror address the downloader will try: a URL that parses, over http or https. */
function mirrorUrl(url: string): URL {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new ApplyError('MIRROR_ADDRESS_REFUSED', 'the mirror URL does not parse');
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    throw new ApplyError('MIRROR_ADDRESS_REFUSED', `expected an http(s) mirror, found ${target.protocol}`);
  }
  return target;
}

/**
 * The default Downloader: node's http/https with Range requests, confined redirects, mirrors
 * only on public addresses, an idle timeout and a minimum rate. Every failure is an ApplyError
 * with a mirror code (or a plain error for a cut connection, which the caller resumes); nothing
 * is thrown inside a callback.
 */
export class HttpDownloader implements Downloader {
  private readonly idleTimeoutMs: number;
  private readonly maxRedirects: number;
  private readonly minBytesPerSecond: number;
  private readonly rateWindowMs: number;
  private readonly allowPrivateAddresses: boolean;
  private readonly bucket: TokenBucket | null;
  private readonly batches = new BatchPool();

  constructor(options: HttpDownloaderOptions = {}) {
    this.bucket = options.maxBytesPerSecond ? new TokenBucket(options.maxBytesPerSecond) : null;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
    this.maxRedirects = options.maxRedirects ?? 5;
    this.minBytesPerSecond = options.minBytesPerSecond ?? DEFAULT_MIN_BYTES_PER_SECOND;
    this.rateWindowMs = options.rateWindowMs ?? DEFAULT_RATE_WINDOW_MS;
    this.allowPrivateAddresses = options.allowPrivateAddresses ?? false;
  }

  async open(url: string, options: { offset: number; end?: number; signal?: AbortSignal }): Promise<DownloadResponse> {
    return this.request(mirrorUrl(url), options, 0);
  }

  /** A chunk over a bare socket into reused buffers (see range-reader.ts), under this downloader's rules. */
  async readRange(url: string, request: RangeReadRequest, sink: RangeSink): Promise<void> {
    const target = mirrorUrl(url);
    const bucket = this.bucket;
    return readRange(target, request, sink, {
      idleMs: this.idleTimeoutMs,
      minBytesPerSecond: this.minBytesPerSecond,
      windowMs: this.rateWindowMs,
      maxRedirects: this.maxRedirects,
      allowPrivateAddresses: this.allowPrivateAddresses,
      take: bucket === null ? null : (bytes) => bucket.take(bytes),
      lookup: confinedLookup,
      redirect: redirectTarget,
      statusError: (status, host) => new HttpStatusError(status, host),
      batches: this.batches,
    });
  }

  private request(target: URL, options: { offset: number; end?: number; signal?: AbortSignal }, redirects: number): Promise<DownloadResponse> {
    const host = hostOf(target);
    const literal = host.startsWith('[') ? host.slice(1, -1) : host;
    // http.request skips the resolver for an IP literal, so a literal is checked here.
    if (!this.allowPrivateAddresses && isIP(literal) !== 0) {
      const why = refusedAddress(literal);
      if (why !== null) return Promise.reject(new ApplyError('MIRROR_ADDRESS_REFUSED', `${host} is ${why}`));
    }
    const client = target.protocol === 'https:' ? https : http;
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (options.end !== undefined) headers.range = `bytes=${options.offset}-${options.end - 1}`;
    else if (options.offset > 0) headers.range = `bytes=${options.offset}-`;
    return new Promise<DownloadResponse>((resolve, reject) => {
      const requestOptions: http.RequestOptions = {
        headers,
        // A connection of its own: a pooled socket opened under another downloader's rules must not be reused.
        agent: false,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(this.allowPrivateAddresses ? {} : { lookup: confinedLookup(host) }),
      };
      const req = client.get(target, requestOptions, (res) => {
        clearTimeout(waiting);
        // answer() is async: whatever a hostile answer makes it throw becomes a rejection, never
        // an exception inside this callback (which would take the whole process down).
        this.answer(res, target, options, redirects).then(resolve, reject);
      });
      const waiting = setTimeout(
        () => req.destroy(new ApplyError('MIRROR_STALLED', `${host} did not answer within ${this.idleTimeoutMs} ms`)),
        this.idleTimeoutMs,
      );
      req.on('error', (error) => {
        clearTimeout(waiting);
        reject(error);
      });
    });
  }

  /** Turns a response into a body, a followed redirect or a typed refusal. */
  private async answer(
    res: http.IncomingMessage,
    target: URL,
    options: { offset: number; end?: number; signal?: AbortSignal },
    redirects: number,
  ): Promise<DownloadResponse> {
    const host = hostOf(target);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location !== undefined) {
      res.resume();
      return this.request(redirectTarget(target, res.headers.location, redirects, this.maxRedirects), options, redirects + 1);
    }
    const length = res.headers['content-length'] === undefined ? null : Number(res.headers['content-length']);
    const limits = { idleMs: this.idleTimeoutMs, minBytesPerSecond: this.minBytesPerSecond, windowMs: this.rateWindowMs, bucket: this.bucket };
    if (status === 200) {
      // A bounded request answered with the whole file is only usable when the range was the whole file.
      if (options.end !== undefined && !(options.offset === 0 && length === options.end)) {
        res.destroy();
        throw new ApplyError('MIRROR_NO_RANGES', `${host} answered a request for bytes ${options.offset}-${options.end - 1} with the whole file`);
      }
      return { offset: 0, totalBytes: length !== null && Number.isSafeInteger(length) ? length : null, body: watchedBody(res, host, limits) };
    }
    if (status === 206) {
      const range = parseContentRange(res.headers['content-range']);
      // A bounded request must get exactly its range: a shorter one would look like a cut connection.
      const endOk = options.end === undefined || range?.end === options.end - 1;
      if (range === null || range.start !== options.offset || !endOk) {
        res.destroy();
        const asked = options.end === undefined ? `from ${options.offset}` : `${options.offset}-${options.end - 1}`;
        throw new ApplyError('MIRROR_HTTP_STATUS', `${host}: asked for bytes ${asked}, got Content-Range ${res.headers['content-range'] ?? '(none)'}`);
      }
      return { offset: range.start, totalBytes: range.total, body: watchedBody(res, host, limits) };
    }
    res.resume();
    throw new HttpStatusError(status, host);
  }
}

/**
 * Where a redirect may lead: a parsable http(s) URL, never from https down to http, within the
 * hop limit. Throws a MIRROR_REDIRECT_REFUSED ApplyError otherwise. The address it names is
 * checked like any mirror's when it is connected to.
 */
export function redirectTarget(from: URL, location: string, redirects: number, maxRedirects: number): URL {
  const host = hostOf(from);
  if (redirects >= maxRedirects) throw new ApplyError('MIRROR_REDIRECT_REFUSED', `${host}: more than ${maxRedirects} redirects`);
  let next: URL;
  try {
    next = new URL(location, from);
  } catch (cause) {
    throw new ApplyError('MIRROR_REDIRECT_REFUSED', `${host} redirected to an unparsable Location`, { cause: messageOf(cause) });
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw new ApplyError('MIRROR_REDIRECT_REFUSED', `${host} redirected to a ${next.protocol} URL`);
  }
  if (from.protocol === 'https:' && next.protocol !== 'https:') {
    throw new ApplyError('MIRROR_REDIRECT_REFUSED', `${host} redirected from https down to ${next.protocol}`);
  }
  return next;
}
