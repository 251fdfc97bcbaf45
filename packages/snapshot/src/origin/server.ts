import { createHash } from 'node:crypto';
import { mkdir, readFile, realpath } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, sep } from 'node:path';

import { NAME_PATTERN } from '../schema.js';
import { LONG_POLL_HEADER, type LatestFile, LatestWatch, type WatchDirectory, parseWait, watchDirectory } from './long-poll.js';

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
  /**
   * Bound on long-poll requests held at once (SPEC §5), over all networks; one more is
   * answered 503 with Retry-After at once. Each held request keeps a socket open.
   */
  readonly maxHeldRequests?: number;
  /** How often a held latest.json is stat'ed in case fs.watch misses a change. */
  readonly longPollStatIntervalMs?: number;
  /** The directory watch behind long-poll; fs.watch unless a test replaces it. */
  readonly watch?: WatchDirectory;
}

/** A running dev origin. */
export interface OriginServer {
  readonly url: string;
  readonly server: Server;
  heartbeats(network: string): HeartbeatRecord[];
  /** How many long-poll requests are held now. */
  heldRequests(): number;
  close(): Promise<void>;
}

const STATIC = /^\/v1\/([^/]+)\/(latest\.json|(?:snapshots|chunks)\/[0-9a-f]{64}\.json|root\/[1-9][0-9]{0,9}\.json)$/;
const HEARTBEAT = /^\/v1\/([^/]+)\/nodes\/([^/]+)\/heartbeat$/;
const NODES = /^\/v1\/([^/]+)\/nodes$/;
const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** What a full origin tells a long-poll client: come back after this many seconds. */
const HELD_FULL_RETRY_AFTER_S = 5;

/**
 * The dev origin of SPEC §5: the published static tree with ETag and If-None-Match → 304,
 * long-poll on latest.json (`?wait=S`), and heartbeats kept in memory, listed at
 * GET /v1/{network}/nodes. Only the published layout is served; any other path is 404, so
 * nothing outside it can leak.
 */
export async function startOriginServer(options: OriginServerOptions, listen: { host?: string; port?: number } = {}): Promise<OriginServer> {
  const clock = options.clock ?? (() => new Date());
  const maxBody = options.maxHeartbeatBytes ?? 64 * 1024;
  const maxNodes = options.maxNodes ?? 10_000;
  const nodes = new Map<string, HeartbeatRecord>();
  // An origin may start before its first publish; it then serves 404s until files appear.
  await mkdir(options.dir, { recursive: true });
  const root = await realpath(options.dir);

  const maxHeld = options.maxHeldRequests ?? 1024;
  const statIntervalMs = options.longPollStatIntervalMs ?? 1000;
  const watchDir = options.watch ?? watchDirectory;
  const watches = new Map<string, LatestWatch>();

  async function readStatic(relative: string): Promise<LatestFile | null> {
    const path = join(root, relative);
    try {
      const real = await realpath(path);
      if (!real.startsWith(root + sep)) return null;
      const body = await readFile(real);
      return { body, etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"` };
    } catch {
      return null;
    }
  }

  async function serveStatic(req: IncomingMessage, res: ServerResponse, relative: string, immutable: boolean) {
    const file = await readStatic(relative);
    if (file === null) return send(res, 404, { error: 'not found' });
    res.setHeader('ETag', file.etag);
    res.setHeader('Cache-Control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    if (matchesEtag(req, file.etag)) {
      res.writeHead(304).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': file.body.byteLength });
    res.end(req.method === 'HEAD' ? undefined : file.body);
  }

  function heldRequests(): number {
    let held = 0;
    for (const watch of watches.values()) held += watch.size;
    return held;
  }

  /**
   * SPEC §5 long-poll: a request whose If-None-Match still matches latest.json is held until
   * the file changes or `wait` seconds pass; anything else is answered at once, as without
   * `wait`. Every answer carries the long-poll header, so the client knows it was heard.
   */
  async function serveLatest(req: IncomingMessage, res: ServerResponse, network: string, relative: string, wait: number) {
    res.setHeader(LONG_POLL_HEADER, '1');
    const file = await readStatic(relative);
    if (file === null || !matchesEtag(req, file.etag)) return serveStatic(req, res, relative, false);
    // A client gone during the read would never free its place: its 'close' has already fired.
    if (req.socket.destroyed) return;
    if (heldRequests() >= maxHeld) {
      res.setHeader('Retry-After', String(HELD_FULL_RETRY_AFTER_S));
      return send(res, 503, { error: `the origin holds ${maxHeld} long-poll requests already; retry after ${HELD_FULL_RETRY_AFTER_S} s` });
    }
    let watch = watches.get(network);
    if (watch === undefined) {
      const created: LatestWatch = new LatestWatch({
        file: join(root, relative),
        dir: dirname(join(root, relative)),
        read: () => readStatic(relative),
        watch: watchDir,
        statIntervalMs,
        onIdle: () => {
          if (watches.get(network) === created) watches.delete(network);
        },
      });
      watch = created;
      watches.set(network, watch);
    }
    // What the client holds, not '*': the request is answered when the file differs from it.
    watch.hold(res, file.etag, wait, req.method === 'HEAD');
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
        const network = match[1] ?? '';
        if (!NAME_PATTERN.test(network)) return send(res, 404, { error: 'not found' });
        const isLatest = path.endsWith('/latest.json');
        const wait = isLatest ? parseWait(url.searchParams) : null;
        if (wait === 'invalid') {
          res.setHeader(LONG_POLL_HEADER, '1');
          return send(res, 400, { error: 'wait must be a whole number of seconds from 1 to 60' });
        }
        if (wait !== null) return serveLatest(req, res, network, path.slice(1), wait);
        return serveStatic(req, res, path.slice(1), !isLatest);
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
    heldRequests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const watch of [...watches.values()]) watch.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** If-None-Match, with its list form and `*`. */
function matchesEtag(req: IncomingMessage, etag: string): boolean {
  const inm = req.headers['if-none-match'];
  return inm?.split(',').some((tag) => tag.trim() === etag || tag.trim() === '*') ?? false;
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
