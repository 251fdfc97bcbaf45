import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a hostile mirror answers on one path. */
export type HostileAnswer =
  | { kind: 'redirect'; location: string; status?: number }
  /** Redirects to itself, forever. */
  | { kind: 'redirect-loop' }
  | { kind: 'status'; status: number }
  /** Sends the headers of `bytes`, then one byte every `everyMs`. */
  | { kind: 'drip'; bytes: Buffer; everyMs: number }
  /** Sends the headers, then nothing. */
  | { kind: 'stall'; size: number }
  /** Reads the request and never answers it. */
  | { kind: 'silent' }
  | { kind: 'bytes'; bytes: Buffer };

/** A real HTTP server on 127.0.0.1 that misbehaves in the ways a model mirror can. */
export interface HostileMirror {
  url(path: string): string;
  answer(path: string, answer: HostileAnswer): void;
  /** Paths in the order they were asked for. */
  readonly requests: string[];
  close(): Promise<void>;
}

export async function startHostileMirror(): Promise<HostileMirror> {
  const answers = new Map<string, HostileAnswer>();
  const requests: string[] = [];
  const timers = new Set<NodeJS.Timeout>();

  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push(path);
    const answer = answers.get(path);
    if (answer === undefined) {
      res.writeHead(404).end();
      return;
    }
    switch (answer.kind) {
      case 'redirect':
        res.writeHead(answer.status ?? 302, { location: answer.location }).end();
        return;
      case 'redirect-loop':
        res.writeHead(302, { location: path }).end();
        return;
      case 'status':
        res.writeHead(answer.status).end();
        return;
      case 'drip': {
        res.writeHead(200, { 'content-length': answer.bytes.length });
        let at = 0;
        const timer = setInterval(() => {
          if (at >= answer.bytes.length) {
            clearInterval(timer);
            res.end();
            return;
          }
          res.write(answer.bytes.subarray(at, at + 1));
          at++;
        }, answer.everyMs);
        timers.add(timer);
        res.on('close', () => clearInterval(timer));
        return;
      }
      case 'stall':
        res.writeHead(200, { 'content-length': answer.size });
        res.flushHeaders();
        return;
      case 'silent':
        return;
      case 'bytes':
        res.writeHead(200, { 'content-length': answer.bytes.length }).end(answer.bytes);
        return;
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    answer: (path, answer) => answers.set(path, answer),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearInterval(timer);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
