import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** How a range mirror misbehaves; it serves the file honestly otherwise. */
export interface RangeMirrorFaults {
  /** Ranges starting at these offsets come back with their first byte flipped. */
  corruptAt?: number[];
  /** Every request is answered with this status. */
  status?: number;
  /** The first `times` requests are answered with `status`, then the mirror behaves. */
  failFirst?: { times: number; status: number };
  /** Ranges starting at these offsets get their headers and then nothing. */
  stallAt?: number[];
  /** Ranged requests are answered 200 with the whole file. */
  ignoreRanges?: boolean;
  /** Bytes per 20 ms tick: a mirror much slower than the others (0 or absent: full speed). */
  bytesPerTick?: number;
  /** Every request is redirected (302) to this URL. */
  redirectTo?: string;
}

/** One request a range mirror saw. */
export interface RangeRequest {
  path: string;
  range: string | undefined;
}

/** A real HTTP server on 127.0.0.1 with `bytes=a-b` Range support that can misbehave on purpose. */
export interface RangeMirror {
  url(path: string): string;
  serve(path: string, bytes: Uint8Array): void;
  faults: RangeMirrorFaults;
  readonly requests: RangeRequest[];
  /** The ranges asked for, as [start, endInclusive]. */
  ranges(): [number, number][];
  close(): Promise<void>;
}

export async function startRangeMirror(faults: RangeMirrorFaults = {}): Promise<RangeMirror> {
  const files = new Map<string, Uint8Array>();
  const requests: RangeRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let failed = 0;
  const mirror: { faults: RangeMirrorFaults } = { faults };

  const server = http.createServer((req, res) => {
    const f = mirror.faults;
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({ path, range: req.headers.range });
    if (f.status !== undefined) {
      res.writeHead(f.status).end();
      return;
    }
    if (f.redirectTo !== undefined) {
      res.writeHead(302, { location: f.redirectTo }).end();
      return;
    }
    if (f.failFirst !== undefined && failed < f.failFirst.times) {
      failed++;
      res.writeHead(f.failFirst.status).end();
      return;
    }
    const file = files.get(path);
    if (file === undefined) {
      res.writeHead(404).end();
      return;
    }
    const size = file.length;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = size - 1;
    if (m && !f.ignoreRanges) {
      start = Number(m[1]);
      end = m[2] === '' ? size - 1 : Math.min(size - 1, Number(m[2]));
      if (start >= size) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` });
    } else {
      res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' });
    }
    if (f.stallAt?.includes(start)) {
      res.flushHeaders();
      return;
    }
    let body = Buffer.from(file.subarray(start, end + 1));
    if (f.corruptAt?.includes(start)) {
      body = Buffer.from(body);
      body[0] = body[0]! ^ 0xff;
    }
    const perTick = f.bytesPerTick ?? 0;
    if (perTick <= 0) {
      res.end(body);
      return;
    }
    let at = 0;
    const timer = setInterval(() => {
      if (res.destroyed) {
        clearInterval(timer);
        timers.delete(timer);
        return;
      }
      const next = Math.min(body.length, at + perTick);
      res.write(body.subarray(at, next));
      at = next;
      if (at >= body.length) {
        clearInterval(timer);
        timers.delete(timer);
        res.end();
      }
    }, 20);
    timers.add(timer);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    serve: (path, bytes) => files.set(path, bytes),
    get faults() {
      return mirror.faults;
    },
    set faults(value: RangeMirrorFaults) {
      mirror.faults = value;
    },
    requests,
    ranges: () =>
      requests.flatMap((r) => {
        const m = /^bytes=(\d+)-(\d+)$/.exec(r.range ?? '');
        return m ? [[Number(m[1]), Number(m[2])] as [number, number]] : [];
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearInterval(t);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
