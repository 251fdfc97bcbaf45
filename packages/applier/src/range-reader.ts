import net, { isIP } from 'node:net';
import tls from 'node:tls';

import { refusedAddress } from './address.js';
import { ApplyError } from './errors.js';

/** Receives a ranged body in batches, in order; a batch may be reused once the returned promise settles. */
export type RangeSink = (batch: Uint8Array) => Promise<void> | void;

/** What one ranged read asks for and under which rules. */
export interface RangeReadRequest {
  /** First byte and the byte after the last (exclusive), and the size the whole file must have. */
  start: number;
  end: number;
  size: number;
  signal?: AbortSignal;
}

/** The rules of the downloader a read runs under (the same as its streamed requests). */
export interface RangeReadRules {
  idleMs: number;
  minBytesPerSecond: number;
  windowMs: number;
  maxRedirects: number;
  allowPrivateAddresses: boolean;
  /** Shared bandwidth: how long to hold back before reading on after `bytes` arrived. */
  take: ((bytes: number) => number) | null;
  lookup: (host: string) => net.LookupFunction;
  redirect: (from: URL, location: string, redirects: number, maxRedirects: number) => URL;
  statusError: (status: number, host: string) => ApplyError;
  /** Where batches come from and go back to; without one, each request allocates its own. */
  batches?: BatchPool;
}

/** Bytes received straight into one of these per connection, then handed on whole. */
const BATCH_BYTES = 1 << 20;

/**
 * Batches kept between requests of one downloader. A chunked download makes a request per
 * piece; fresh 1 MiB buffers for each would be page-faulted in and garbage-collected again and
 * again (measured: a fifth of the main thread's time on a loopback download).
 */
export class BatchPool {
  private readonly free: Buffer[] = [];

  constructor(private readonly keep = 32) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
  }

  give(batch: Buffer): void {
    if (this.free.length < this.keep && batch.length === BATCH_BYTES) this.free.push(batch);
  }
}
/** Batches per connection: one filling while the others are hashed and written. */
const BATCHES = 3;
const HEADER_LIMIT = 16 * 1024;
const HEADER_END = Buffer.from('\r\n\r\n');

/**
 * A ranged GET over a bare socket. node's HTTP client allocates a fresh buffer for every read
 * and passes each through a stream; at several hundred MB/s that garbage, not the network, is
 * what a download costs (measured: 256 MiB over loopback in 0.69 s and 0.46 CPU-s through
 * http.get, 0.24 s and 0.13 CPU-s like this). Here the kernel copies straight into a few reused
 * 1 MiB batches (net's `onread`), and only a full batch goes on to be hashed and written. The
 * request is the simplest HTTP/1.1 (one range, `Connection: close`); the answer must be exactly
 * that range (206 with the matching Content-Range and length, or 200 for a range that is the
 * whole file), never chunked or compressed. Redirects, addresses, the idle timeout and the
 * minimum rate follow the downloader's rules; every failure is a typed per-mirror error, or a
 * plain Error for a cut connection.
 */
export function readRange(url: URL, request: RangeReadRequest, sink: RangeSink, rules: RangeReadRules, redirects = 0): Promise<void> {
  const host = url.hostname;
  const literal = host.startsWith('[') ? host.slice(1, -1) : host;
  if (!rules.allowPrivateAddresses && isIP(literal) !== 0) {
    const why = refusedAddress(literal);
    if (why !== null) return Promise.reject(new ApplyError('MIRROR_ADDRESS_REFUSED', `${host} is ${why}`));
  }
  const https = url.protocol === 'https:';
  const port = Number(url.port || (https ? 443 : 80));
  const length = request.end - request.start;

  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const header = Buffer.allocUnsafe(HEADER_LIMIT);
    let headerFill = 0;
    let inBody = false;
    const free: Buffer[] = [];
    let batch: Buffer | null = null;
    let fill = 0;
    let received = 0;
    let pending: Promise<void>[] = [];
    let sinkError: Error | null = null;
    // Reading stops for our own reasons only: no batch free (the disk is behind) or the
    // bandwidth limit. That time is never the mirror's: the idle timer is off meanwhile, and
    // the minimum rate only counts the time the mirror was free to send.
    let paused = false;
    let holding = false;
    let pausedSince = 0;
    let pausedMs = 0;
    let windowBytes = 0;
    let windowStart = performance.now();
    const stopReading = (): false => {
      if (!paused) {
        paused = true;
        pausedSince = performance.now();
        socket.setTimeout(0);
      }
      return false;
    };
    const resumeReading = () => {
      if (!paused || settled || holding) return;
      if (batch === null && free.length === 0 && pending.length + 1 >= BATCHES) return;
      paused = false;
      pausedMs += performance.now() - Math.max(pausedSince, windowStart);
      socket.setTimeout(rules.idleMs);
      socket.resume();
    };

    /** Every batch is back from the sink by now: they go to the pool for the next request. */
    const release = () => {
      if (rules.batches === undefined) return;
      for (const b of free.splice(0)) rules.batches.give(b);
      if (batch !== null) rules.batches.give(batch);
      batch = null;
    };
    const finish = (error: Error | null) => {
      if (settled) return;
      settled = true;
      clearInterval(rate);
      request.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (error !== null) {
        // Whatever was handed on is let finish first: a batch still being written must not race a refetch.
        void Promise.allSettled(pending).then(() => {
          release();
          reject(error);
        });
        return;
      }
      Promise.all(pending).then(() => {
        release();
        if (sinkError === null) resolve();
        else reject(sinkError);
      }, reject);
    };

    const nextBatch = (): Buffer | null => {
      const b = free.pop();
      if (b !== undefined) return b;
      if (pending.length + 1 >= BATCHES) return null;
      return rules.batches?.take() ?? Buffer.allocUnsafe(Math.min(BATCH_BYTES, length));
    };

    /** Hands the filled batch on; false when no batch is free to read into (the socket then waits). */
    const deliver = (): boolean => {
      if (batch === null || fill === 0) return true;
      const full = batch;
      const bytes = full.subarray(0, fill);
      batch = null;
      fill = 0;
      let done: Promise<void>;
      try {
        done = Promise.resolve(sink(bytes));
      } catch (error) {
        done = Promise.reject(error);
      }
      const tracked = done.then(
        () => {
          pending = pending.filter((p) => p !== tracked);
          free.push(full);
          resumeReading();
        },
        (error: unknown) => {
          sinkError ??= error instanceof Error ? error : new Error(String(error));
          finish(sinkError);
        },
      );
      pending.push(tracked);
      batch = nextBatch();
      return batch !== null;
    };

    const onHeader = (): boolean => {
      const at = header.subarray(0, headerFill).indexOf(HEADER_END);
      if (at < 0) {
        if (headerFill >= HEADER_LIMIT) finish(new ApplyError('MIRROR_HTTP_STATUS', `${host} sent more than ${HEADER_LIMIT} bytes of headers`));
        return true;
      }
      const lines = header.subarray(0, at).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
      const fields = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      if (status >= 300 && status < 400 && fields.has('location')) {
        let next: URL;
        try {
          next = rules.redirect(url, fields.get('location') ?? '', redirects, rules.maxRedirects);
        } catch (error) {
          finish(error as Error);
          return false;
        }
        settled = true;
        clearInterval(rate);
        request.signal?.removeEventListener('abort', onAbort);
        socket.destroy();
        readRange(next, request, sink, rules, redirects + 1).then(resolve, reject);
        return false;
      }
      const asked = `${request.start}-${request.end - 1}`;
      const declared = Number(fields.get('content-length') ?? Number.NaN);
      if (fields.has('transfer-encoding') || (fields.get('content-encoding') ?? 'identity') !== 'identity') {
        finish(new ApplyError('MIRROR_HTTP_STATUS', `${host} answered bytes ${asked} with an encoded body`));
        return false;
      }
      if (status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(fields.get('content-range') ?? '');
        if (m === null || Number(m[1]) !== request.start || Number(m[2]) !== request.end - 1 || declared !== length) {
          finish(new ApplyError('MIRROR_HTTP_STATUS', `${host}: asked for bytes ${asked}, got Content-Range ${fields.get('content-range') ?? '(none)'}`));
          return false;
        }
        if (m[3] !== '*' && Number(m[3]) !== request.size) {
          finish(new ApplyError('SIZE_MISMATCH', `${host}: expected ${request.size} bytes, the server has ${m[3]}`));
          return false;
        }
      } else if (status === 200) {
        if (!(request.start === 0 && request.end === request.size && declared === request.size)) {
          finish(
            declared === request.size || Number.isNaN(declared)
              ? new ApplyError('MIRROR_NO_RANGES', `${host} answered a request for bytes ${asked} with the whole file`)
              : new ApplyError('SIZE_MISMATCH', `${host}: expected ${request.size} bytes, the server has ${declared}`),
          );
          return false;
        }
      } else {
        finish(rules.statusError(status, host));
        return false;
      }
      inBody = true;
      windowStart = performance.now();
      rate = startRateClock();
      batch = nextBatch();
      const rest = header.subarray(at + HEADER_END.length, headerFill);
      if (rest.length > 0) return onBody(rest.length, rest);
      return true;
    };

    /** `n` new body bytes, already in `batch` at `fill` (or, just after the headers, in `from`). */
    const onBody = (n: number, from?: Buffer): boolean => {
      if (received + n > length) {
        finish(new ApplyError('SIZE_MISMATCH', `${host}: more than the ${length} bytes asked for arrived`));
        return false;
      }
      if (from !== undefined && batch !== null) from.copy(batch, fill, 0, n);
      fill += n;
      received += n;
      windowBytes += n;
      const hold = rules.take?.(n) ?? 0;
      let more = true;
      if (fill === batch?.length || received === length) more = deliver();
      if (received === length) {
        finish(null);
        return false;
      }
      if (hold > 0) {
        // Holding the socket back slows the mirror through TCP itself.
        holding = true;
        setTimeout(() => {
          holding = false;
          resumeReading();
        }, hold);
        return stopReading();
      }
      return more ? true : stopReading();
    };

    // node asks for the next read's buffer right after each read, even one after which the
    // socket pauses: with no batch free then, the read after the resume lands in this spare and
    // is copied over (rare: it takes the disk falling behind the network).
    const spare = Buffer.allocUnsafe(64 * 1024);
    let intoSpare = false;
    const onread = {
      buffer: (): Uint8Array => {
        intoSpare = false;
        if (!inBody) return header.subarray(headerFill);
        if (batch === null) batch = nextBatch();
        if (batch === null) {
          intoSpare = true;
          return spare.subarray(0, Math.min(spare.length, length - received));
        }
        return batch.subarray(fill, Math.min(batch.length, fill + (length - received)));
      },
      callback: (n: number): boolean => {
        if (settled) return false;
        socket.setTimeout(rules.idleMs);
        if (!inBody) {
          headerFill += n;
          return onHeader();
        }
        if (intoSpare) {
          batch ??= nextBatch();
          if (batch === null) {
            finish(new ApplyError('STORE_FAILED', `no buffer free for bytes from ${host}`));
            return false;
          }
          return onBody(n, spare);
        }
        return onBody(n);
      },
    };

    const connectOptions = {
      host: literal,
      port,
      onread,
      ...(rules.allowPrivateAddresses ? {} : { lookup: rules.lookup(host) }),
    };
    const socket: net.Socket = https
      ? tls.connect({ ...connectOptions, servername: isIP(literal) === 0 ? literal : undefined, ALPNProtocols: ['http/1.1'] } as tls.ConnectionOptions)
      : net.connect(connectOptions as net.NetConnectOpts);
    const target = `${url.pathname}${url.search}`;
    const hostHeader = url.port ? `${host}:${url.port}` : host;
    socket.once(https ? 'secureConnect' : 'connect', () => {
      socket.write(
        `GET ${target} HTTP/1.1\r\nHost: ${hostHeader}\r\nRange: bytes=${request.start}-${request.end - 1}\r\nAccept-Encoding: identity\r\nConnection: close\r\nUser-Agent: resultity-applier\r\n\r\n`,
      );
    });
    socket.setTimeout(rules.idleMs, () => finish(new ApplyError('MIRROR_STALLED', `${host} sent nothing for ${rules.idleMs} ms`)));
    socket.on('error', (error) => finish(error));
    socket.on('end', () => finish(new Error(`connection closed after ${received} of ${length} bytes`)));
    socket.on('close', () => finish(new Error(`connection closed after ${received} of ${length} bytes`)));

    // The minimum rate is measured from the first body byte: connecting and waiting for the
    // answer are the idle timeout's business.
    const startRateClock = () =>
      rules.minBytesPerSecond > 0
        ? setInterval(() => {
            const now = performance.now();
            const held = pausedMs + (paused ? now - Math.max(pausedSince, windowStart) : 0);
            const sendable = Math.max(0, Math.round(now - windowStart - held));
            const expected = Math.floor((rules.minBytesPerSecond * sendable) / 1000);
            if (inBody && windowBytes < expected) {
              finish(new ApplyError('MIRROR_TOO_SLOW', `${host} sent ${windowBytes} bytes in ${sendable} ms, expected at least ${expected}`));
            }
            windowBytes = 0;
            pausedMs = 0;
            windowStart = now;
          }, rules.windowMs)
        : undefined;
    let rate: NodeJS.Timeout | undefined;

    const onAbort = () => finish(request.signal?.reason instanceof Error ? request.signal.reason : new Error('aborted'));
    if (request.signal?.aborted) onAbort();
    else request.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
