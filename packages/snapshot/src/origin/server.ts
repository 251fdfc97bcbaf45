import { createHash } from 'node:crypto';
import { mkdir, readFile, realpath } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, sep } from 'node:path';

import { NAME_PATTERN } from '../schema.js';

/** One node's last heartbeat, as the dev origin keeps it in memory. */
export interface HeartbeatRecord {
  readonly node_id: string;
  readonly network: string;
  readonly received_at: string;
  readonly body: Record<string, unknown>;
}

export interface OriginServerOptions {
  /** The directory publishSnapshot writes to. */
  readonly dir: string;
  readonly clock?: () => Date;
  /** Bound on heartbeat bodies and on how many nodes are remembered. */
  readonly maxHeartbeatBytes?: number;
  readonly maxNodes?: number;
}

/** A running dev origin. */
export interface OriginServer {
  readonly url: string;
  readonly server: Server;
  heartbeats(network: string): HeartbeatRecord[];
  close(): Promise<void>;
}

const STATIC = /^\/v1\/([^/]+)\/(latest\.json|snapshots\/[0-9a-f]{64}\.json|root\/[1-9][0-9]{0,9}\.json)$/;
const HEARTBEAT = /^\/v1\/([^/]+)\/nodes\/([^/]+)\/heartbeat$/;
const NODES = /^\/v1\/([^/]+)\/nodes$/;
const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The dev origin of SPEC §5: the published static tree with ETag and If-None-Match → 304, and
 * heartbeats kept in memory, listed at GET /v1/{network}/nodes. Only the published layout is
 * served; any other path is 404, so nothing outside it can leak.
 */
export async function startOriginServer(
  options: OriginServerOptions,
  listen: { host?: string; port?: number } = {},
): Promise<OriginServer> {
  const clock = options.clock ?? (() => new Date());
  const maxBody = options.maxHeartbeatBytes ?? 64 * 1024;
  const maxNodes = options.maxNodes ?? 10_000;
  const nodes = new Map<string, HeartbeatRecord>();
  // An origin may start before its first publish; it then serves 404s until files appear.
  await mkdir(options.dir, { recursive: true });
  const root = await realpath(options.dir);

  async function serveStatic(req: IncomingMessage, res: ServerResponse, relative: string, immutable: boolean) {
    const path = join(root, relative);
    let body: Buffer;
    try {
      const real = await realpath(path);
      if (!real.startsWith(root + sep)) return send(res, 404, { error: 'not found' });
      body = await readFile(real);
    } catch {
      return send(res, 404, { error: 'not found' });
    }
    const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`;
    res.setHeader('ETag', etag);
    res.setHeader('Cache-Control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    const inm = req.headers['if-none-match'];
    if (inm?.split(',').some((tag) => tag.trim() === etag || tag.trim() === '*')) {
      res.writeHead(304).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.byteLength });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  async function receiveHeartbeat(req: IncomingMessage, res: ServerResponse, network: string, nodeId: string) {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.byteLength;
      if (size > maxBody) return send(res, 413, { error: `heartbeat larger than ${maxBody} bytes` }, true);
      chunks.push(chunk);
    }
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(res, 400, { error: 'heartbeat is not JSON' });
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return send(res, 400, { error: 'heartbeat must be a JSON object' });
    }
    const key = `${network}/${nodeId}`;
    if (!nodes.has(key) && nodes.size >= maxNodes) return send(res, 503, { error: 'too many nodes' });
    nodes.set(key, { node_id: nodeId, network, received_at: clock().toISOString(), body: body as Record<string, unknown> });
    send(res, 204);
  }

  function listNodes(network: string): HeartbeatRecord[] {
    return [...nodes.values()].filter((n) => n.network === network);
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://origin.invalid');
    const path = url.pathname;
    const handle = async () => {
      let match = STATIC.exec(path);
      if (match && (req.method === 'GET' || req.method === 'HEAD')) {
        if (!NAME_PATTERN.test(match[1] ?? '')) return send(res, 404, { error: 'not found' });
        return serveStatic(req, res, path.slice(1), !path.endsWith('/latest.json'));
      }
      match = HEARTBEAT.exec(path);
      if (match && req.method === 'POST') {
        const network = match[1] ?? '';
        const nodeId = decodeURIComponent(match[2] ?? '');
        if (!NAME_PATTERN.test(network) || !NODE_ID.test(nodeId)) return send(res, 400, { error: 'bad network or node id' });
        return receiveHeartbeat(req, res, network, nodeId);
      }
      match = NODES.exec(path);
      if (match && req.method === 'GET') return send(res, 200, { nodes: listNodes(match[1] ?? '') });
      return send(res, 404, { error: 'not found' });
    };
    handle().catch(() => send(res, 500, { error: 'internal error' }));
  });
  // Slow clients must not hold the dev origin's sockets forever.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port ?? 0, listen.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    server,
    heartbeats: listNodes,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, body?: unknown, close = false): void {
  if (res.headersSent) return;
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...(close ? { Connection: 'close' } : {}),
  });
  res.end(text);
}
