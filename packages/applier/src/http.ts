import http from 'node:http';
import https from 'node:https';

import { ApplyError, fail } from './errors.js';
import type { DownloadResponse, Downloader } from './ports.js';

/** Options of the default HTTP downloader. */
export interface HttpDownloaderOptions {
  /** A connection silent for this long is dropped (and the download resumes), default 30 s. */
  idleTimeoutMs?: number;
  maxRedirects?: number;
}

/** Whether an HTTP failure could go away on a retry (the server, not the file, is at fault). */
export class HttpStatusError extends Error {
  override readonly name = 'HttpStatusError';
  constructor(
    readonly status: number,
    readonly url: string,
  ) {
    super(`GET ${url} answered HTTP ${status}`);
  }
  get transient(): boolean {
    return this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

function parseContentRange(header: string | undefined): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header ?? '');
  if (!m) return null;
  return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) };
}

/** The default Downloader: node's http/https with Range requests, an idle timeout and redirects. */
export class HttpDownloader implements Downloader {
  private readonly idleTimeoutMs: number;
  private readonly maxRedirects: number;

  constructor(options: HttpDownloaderOptions = {}) {
    this.idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
    this.maxRedirects = options.maxRedirects ?? 5;
  }

  open(url: string, options: { offset: number; signal?: AbortSignal }): Promise<DownloadResponse> {
    return this.request(url, options, 0);
  }

  private request(url: string, options: { offset: number; signal?: AbortSignal }, redirects: number): Promise<DownloadResponse> {
    const target = new URL(url);
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      fail('DOWNLOAD_FAILED', `expected an http(s) URL, found ${target.protocol}`);
    }
    const client = target.protocol === 'https:' ? https : http;
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (options.offset > 0) headers.range = `bytes=${options.offset}-`;
    return new Promise<DownloadResponse>((resolve, reject) => {
      const req = client.get(target, { headers, signal: options.signal }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location !== undefined) {
          res.resume();
          if (redirects >= this.maxRedirects) {
            reject(new ApplyError('DOWNLOAD_FAILED', `GET ${url}: more than ${this.maxRedirects} redirects`));
            return;
          }
          resolve(this.request(new URL(res.headers.location, target).toString(), options, redirects + 1));
          return;
        }
        const length = res.headers['content-length'] === undefined ? null : Number(res.headers['content-length']);
        if (status === 200) {
          resolve({ offset: 0, totalBytes: length, body: res });
        } else if (status === 206) {
          const range = parseContentRange(res.headers['content-range']);
          if (range === null || range.start !== options.offset) {
            res.destroy();
            reject(
              new ApplyError(
                'DOWNLOAD_FAILED',
                `GET ${url}: asked for bytes from ${options.offset}, got Content-Range ${res.headers['content-range'] ?? '(none)'}`,
              ),
            );
            return;
          }
          resolve({ offset: range.start, totalBytes: range.total, body: res });
        } else {
          res.resume();
          reject(new HttpStatusError(status, url));
        }
      });
      req.setTimeout(this.idleTimeoutMs, () => req.destroy(new Error(`GET ${url}: no data for ${this.idleTimeoutMs} ms`)));
      req.on('error', reject);
    });
  }
}
