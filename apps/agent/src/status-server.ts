import { type IncomingMessage, type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { bearerMatches, tokenDigest as digestOfToken } from '@resultity/node-kit';
import type { Registry } from 'prom-client';

import type { ListenAddress } from './config.js';
import { isConfigDigest } from './digest.js';
import { errorCode, errorMessage } from './errors.js';

/** The local endpoint for operators and scrapers: /healthz, /metrics, /status, and the control routes. */
export interface StatusServer {
  readonly url: string;
  close(): Promise<void>;
}

/** What an operator may ask of the running daemon (the loop's Daemon provides both). */
export interface OperatorControl {
  rollback(to: string | undefined): Promise<unknown>;
  /** Ends an operator's pin, so the daemon follows the network's latest again. */
  unpin(): Promise<unknown>;
}

/** Where the status endpoint listens and what it serves. */
export interface StatusServerOptions {
  readonly listen: ListenAddress;
  readonly registry: Registry;
  readonly healthy: () => boolean;
  readonly status: () => Promise<unknown>;
  /**
   * POST /v1/rollback and /v1/unpin, allowed with the operator's bearer token only. It is its
   * own credential: the bridge token is readable by every runtime, and a runtime must not be
   * able to move its node to another snapshot or hold it there.
   */
  readonly control?: { readonly token: string; readonly actions: OperatorControl };
}

const MAX_CONTROL_BODY = 4096;

class BodyError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > MAX_CONTROL_BODY) throw new BodyError(413, `body larger than ${MAX_CONTROL_BODY} bytes\n`);
    chunks.push(chunk);
  }
  if (chunks.length === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new BodyError(400, 'body is not JSON\n');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new BodyError(400, 'expected a JSON object\n');
  return body as Record<string, unknown>;
}

export async function startStatusServer(options: StatusServerOptions): Promise<StatusServer> {
  const control = options.control;
  const tokenDigest = control ? digestOfToken(control.token) : null;
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://agent.invalid').pathname;
    const reply = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const act = async (run: () => Promise<unknown>) => {
      try {
        return reply(200, 'application/json', `${JSON.stringify({ outcome: await run() })}\n`);
      } catch (error) {
        return reply(409, 'application/json', `${JSON.stringify({ code: errorCode(error), message: errorMessage(error) })}\n`);
      }
    };
    const handle = async () => {
      if ((path === '/v1/rollback' || path === '/v1/unpin') && req.method === 'POST' && control && tokenDigest) {
        // The token is checked before the body is read: nothing an unauthenticated caller sends is parsed.
        if (!bearerMatches(req.headers.authorization, tokenDigest)) return reply(401, 'text/plain', 'expected Authorization: Bearer <operator token>\n');
        let body: Record<string, unknown>;
        try {
          body = await readJson(req);
        } catch (error) {
          if (error instanceof BodyError) return reply(error.status, 'text/plain', error.message);
          throw error;
        }
        if (path === '/v1/unpin') return act(() => control.actions.unpin());
        // The same digest check as the CLI and the engine: the digest names a file in the state directory.
        if (body.to !== undefined && (typeof body.to !== 'string' || !isConfigDigest(body.to))) {
          return reply(400, 'text/plain', 'expected { "to"?: "sha256:<64 lowercase hex>" }\n');
        }
        return act(() => control.actions.rollback(body.to as string | undefined));
      }
      if (req.method !== 'GET') return reply(405, 'text/plain', 'method not allowed\n');
      if (path === '/healthz') {
        const ok = options.healthy();
        return reply(ok ? 200 : 503, 'text/plain', ok ? 'ok\n' : 'stale: no successful check within twice the poll interval\n');
      }
      if (path === '/metrics') return reply(200, options.registry.contentType, await options.registry.metrics());
      if (path === '/status') return reply(200, 'application/json', `${JSON.stringify(await options.status(), null, 2)}\n`);
      return reply(404, 'text/plain', 'not found\n');
    };
    handle().catch((error: unknown) => reply(500, 'text/plain', `${(error as Error).message}\n`));
  });
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('socketPath' in options.listen) server.listen(options.listen.socketPath, () => resolve());
    else server.listen(options.listen.port, options.listen.host, () => resolve());
  });
  const address = server.address();
  const url =
    typeof address === 'string'
      ? `unix:${address}`
      : `http://${(address as AddressInfo).family === 'IPv6' ? `[${(address as AddressInfo).address}]` : (address as AddressInfo).address}:${(address as AddressInfo).port}`;
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
