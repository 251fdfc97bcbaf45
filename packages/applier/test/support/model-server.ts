import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A file the test server serves: bytes in memory or a file on disk. */
export type ServedFile = { bytes: Buffer } | { path: string };

/** What one request asked for, so tests can see resumes. */
export interface SeenRequest {
  path: string;
  range: string | undefined;
}

/** A real HTTP server on 127.0.0.1 serving model files with Range support, able to cut a body short. */
export interface ModelServer {
  url(path: string): string;
  serve(path: string, file: ServedFile): void;
  /** The next `times` responses for `path` stop after `afterBytes` bytes of body, and the socket is destroyed. */
  cut(path: string, afterBytes: number, times?: number): void;
  /** Sends nothing after the headers for `path` until the client gives up (to test cancellation). */
  stall(path: string): void;
  readonly requests: SeenRequest[];
  close(): Promise<void>;
}

/** Deterministic pseudo-random bytes, so a test knows the sha256 of what it serves. */
export function generatedBytes(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export async function startModelServer(): Promise<ModelServer> {
  const files = new Map<string, ServedFile>();
  const cuts = new Map<string, { afterBytes: number; times: number }>();
  const stalled = new Set<string>();
  const requests: SeenRequest[] = [];

  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({ path, range: req.headers.range });
    const file = files.get(path);
    if (file === undefined) {
      res.writeHead(404).end();
      return;
    }
    const size = 'bytes' in file ? file.bytes.length : (await stat(file.path)).size;
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      if (start >= size) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, { 'content-length': size - start, 'content-range': `bytes ${start}-${size - 1}/${size}` });
    } else {
      res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' });
    }
    if (stalled.has(path)) {
      res.flushHeaders();
      return;
    }
    const cut = cuts.get(path);
    if (cut !== undefined && cut.times > 0) {
      cut.times--;
      const end = Math.min(size, start + cut.afterBytes);
      const part = 'bytes' in file ? file.bytes.subarray(start, end) : await readRange(file.path, start, end);
      res.write(part, () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if ('bytes' in file) res.end(file.bytes.subarray(start));
    else createReadStream(file.path, { start, highWaterMark: 1 << 20 }).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    serve: (path, file) => files.set(path, file),
    cut: (path, afterBytes, times = 1) => cuts.set(path, { afterBytes, times }),
    stall: (path) => stalled.add(path),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readRange(path: string, start: number, end: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of createReadStream(path, { start, end: end - 1 })) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
