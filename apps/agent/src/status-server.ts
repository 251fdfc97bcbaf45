import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { bearerMatches, tokenDigest } from '@resultity/node-kit';
import type { Registry } from 'prom-client';

import type { ListenAddress } from './config.js';
import { errorCode, errorMessage } from './errors.js';

/** The local endpoint for operators and scrapers: /healthz, /metrics, /status. */
export interface StatusServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Where the status endpoint listens and what it serves. */
export interface StatusServerOptions {
  readonly listen: ListenAddress;
  readonly registry: Registry;
  readonly healthy: () => boolean;
  readonly status: () => Promise<unknown>;
  /** The operator's control: POST /v1/rollback, allowed with the bearer token (the 0600 bridge token file). */
  readonly control?: { readonly token: string; rollback(to: string | undefined): Promise<unknown> };
}

const MAX_CONTROL_BODY = 4096;

export async function startStatusServer(options: StatusServerOptions): Promise<StatusServer> {
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://agent.invalid').pathname;
    const reply = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const handle = async () => {
      if (path === '/v1/rollback' && req.method === 'POST' && options.control) {
        if (!bearerMatches(req.headers.authorization, tokenDigest(options.control.token))) return reply(401, 'text/plain', 'expected Authorization: Bearer <token>\n');
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of req as AsyncIterable<Buffer>) {
          size += chunk.byteLength;
          if (size > MAX_CONTROL_BODY) return reply(413, 'text/plain', `body larger than ${MAX_CONTROL_BODY} bytes\n`);
          chunks.push(chunk);
        }
        let body: { to?: unknown };
        try {
          body = chunks.length === 0 ? {} : (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { to?: unknown });
        } catch {
          return reply(400, 'text/plain', 'body is not JSON\n');
        }
        if (body === null || typeof body !== 'object' || (body.to !== undefined && typeof body.to !== 'string')) {
          return reply(400, 'text/plain', 'expected { "to"?: "sha256:<hex>" }\n');
        }
        try {
          const outcome = await options.control.rollback(body.to as string | undefined);
          return reply(200, 'application/json', `${JSON.stringify({ outcome })}\n`);
        } catch (error) {
          return reply(409, 'application/json', `${JSON.stringify({ code: errorCode(error), message: errorMessage(error) })}\n`);
        }
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
