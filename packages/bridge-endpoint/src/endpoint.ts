import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { lstat, chmod, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type IncomingMessage, type Server, createServer } from 'node:http';
import { connect as connectSocket } from 'node:net';
import type { Duplex } from 'node:stream';

import {
  BRIDGE_SUBPROTOCOL,
  CLOSE_CODES,
  type HelloMessage,
  ProtocolError,
  type RuntimeEnvironment,
  type RuntimeMessage,
  checkToken,
  encodeEnvironmentFrame,
  encodeMessage,
  parseRuntimeEnvironment,
  parseRuntimeMessage,
} from '@resultity/bridge-protocol';
import { bearerMatches, isLoopbackHost, tokenDigest as sha256 } from '@resultity/node-kit';
import { type WebSocket, WebSocketServer } from 'ws';

import { EndpointError } from './errors.js';
import { type Clock, TokenBucket, systemClock } from './rate-limit.js';

/** Where the endpoint listens: a loopback TCP address or a unix socket, never anything else. */
export type ListenAddress = { host: string; port: number } | { socketPath: string };

/** A pino-compatible logger; the endpoint logs refusals and connections, never tokens. */
export interface EndpointLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** How the Agent starts its endpoint; every limit has a default safe for a single node. */
export interface BridgeEndpointOptions {
  listen: ListenAddress;
  /** The bearer token bridges must present (the Agent reads it with `readTokenFile`). */
  token: string;
  logger?: EndpointLogger;
  /** Largest frame accepted, in bytes; a larger one closes the connection with 1009. Default 1 MiB. */
  maxFrameBytes?: number;
  /**
   * Sustained unsolicited messages per second per connection (hello, ping, anything unexpected);
   * a burst of twice that is allowed. Acks to pending environments and awaited pongs are exempt,
   * since their pace is the Agent's. Default 50.
   */
  messagesPerSecond?: number;
  /** Malformed messages tolerated per connection before it is closed with 1008. Default 5. */
  maxMalformed?: number;
  /** Connections held at once; more are refused with 503 at the upgrade. Default 256. */
  maxConnections?: number;
  /** How often each bridge is pinged; one that has not answered the previous ping is closed. Default 10 s. */
  pingIntervalMs?: number;
  /** How long setEnvironment waits for each bridge's answer. Default 10 s. */
  ackTimeoutMs?: number;
  /** How long a new connection has to say hello. Default 5 s. */
  helloTimeoutMs?: number;
  clock?: Clock;
}

/** One bridge's answer to an environment (or the endpoint's stand-in when none came). */
export interface BridgeAck {
  runtimeId: string;
  digest: string;
  ok: boolean;
  code?: string;
  message?: string;
}

/** Counters of what the endpoint refused, for metrics and tests. */
export interface EndpointStats {
  /** WebSocket connections accepted since start (authenticated ones only). */
  connections: number;
  /** Upgrades refused for a missing or wrong token. */
  unauthorized: number;
  /** Messages answered with an `error`. */
  malformed: number;
  /** Connections closed for exceeding the message rate. */
  rateLimited: number;
  /** Connections closed for a frame over `maxFrameBytes`. */
  oversized: number;
  /** Answers to environments, including made-up ACK_TIMEOUT / DISCONNECTED nacks. */
  acks: number;
  nacks: number;
  /** Answers that came after their ACK_TIMEOUT: ignored, never counted as an ack. */
  late: number;
}

/** The endpoint as the Agent holds it. */
export interface BridgeEndpoint {
  /** `ws://host:port` for TCP, the socket path for a unix socket. */
  readonly address: string;
  /**
   * Makes `env` current and sends it to every bridge whose digest differs. Resolves with one
   * answer per connected bridge: theirs, `ok` for those that already had it, or a nack with
   * code ACK_TIMEOUT / DISCONNECTED made up when none came.
   */
  setEnvironment(env: RuntimeEnvironment): Promise<BridgeAck[]>;
  /** The environment last set, if any. */
  environment(): RuntimeEnvironment | null;
  /** The bridges that have said hello, and the digest each has confirmed. */
  connected(): { runtimeId: string; digest: string | null }[];
  stats(): EndpointStats;
  /** Every answer as it arrives, including those of bridges that (re)connect later. */
  on(event: 'ack', listener: (ack: BridgeAck) => void): void;
  off(event: 'ack', listener: (ack: BridgeAck) => void): void;
  close(): Promise<void>;
}

const noopLogger: EndpointLogger = { info() {}, warn() {} };

interface Peer {
  ws: WebSocket;
  remote: string;
  runtimeId: string | null;
  digest: string | null;
  bucket: TokenBucket;
  malformed: number;
  closing: boolean;
  awaitingPong: number | null;
  helloTimer: NodeJS.Timeout | undefined;
  /** Sends waiting for an answer, by nonce. */
  pending: Map<string, { digest: string; settle: (ack: BridgeAck) => void }>;
  /** The answer being awaited for a digest, so the same environment is never in flight twice. */
  inflight: Map<string, Promise<BridgeAck>>;
  /** Nonces whose answer timed out (oldest first, at most EXPIRED_NONCES), so a late answer is known for what it is. */
  expired: Map<string, string>;
}

/** How many timed-out nonces a peer remembers; an older late answer is treated as unknown. */
const EXPIRED_NONCES = 32;

// isLoopbackHost and bearerMatches live in @resultity/node-kit; re-exported for this package's users.
export { bearerMatches, isLoopbackHost };

function rejectUpgrade(socket: Duplex, status: number, reason: string, body: string): void {
  // Destroy only once the answer is flushed, so the client learns why it was refused.
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** Starts the Agent's side of the bridge; refuses a non-loopback address before listening. */
export async function startBridgeEndpoint(options: BridgeEndpointOptions): Promise<BridgeEndpoint> {
  const logger = options.logger ?? noopLogger;
  const clock = options.clock ?? systemClock;
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const perSecond = options.messagesPerSecond ?? 50;
  const maxMalformed = options.maxMalformed ?? 5;
  const maxConnections = options.maxConnections ?? 256;
  const pingIntervalMs = options.pingIntervalMs ?? 10_000;
  const ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
  const helloTimeoutMs = options.helloTimeoutMs ?? 5_000;

  if ('host' in options.listen && !isLoopbackHost(options.listen.host)) {
    throw new EndpointError('NOT_LOOPBACK', `expected a loopback host (127.0.0.1, ::1 or localhost), found ${options.listen.host}`);
  }
  try {
    checkToken(options.token);
  } catch (error) {
    throw new EndpointError('TOKEN_INVALID', (error as Error).message, { cause: error });
  }
  const tokenDigest = sha256(options.token);
  const socketPath = 'socketPath' in options.listen ? options.listen.socketPath : null;
  if (socketPath !== null) {
    await checkSocketDirectory(socketPath);
    await clearStaleSocket(socketPath);
  }

  const events = new EventEmitter();
  const peers = new Set<Peer>();
  const stats: EndpointStats = { connections: 0, unauthorized: 0, malformed: 0, rateLimited: 0, oversized: 0, acks: 0, nacks: 0, late: 0 };
  let current: RuntimeEnvironment | null = null;
  let closed = false;
  let pingId = 0;

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxFrameBytes,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has(BRIDGE_SUBPROTOCOL) ? BRIDGE_SUBPROTOCOL : false),
  });

  const server: Server = createServer((_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
    res.end(`expected a WebSocket upgrade with subprotocol ${BRIDGE_SUBPROTOCOL}\n`);
  });

  // A client that dribbles its upgrade headers is cut off rather than held open.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const remote = socketPath ?? `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    // Authentication comes first: nothing a client sends is read before its token checks out.
    if (!bearerMatches(req.headers.authorization, tokenDigest)) {
      stats.unauthorized += 1;
      logger.warn({ remote }, 'bridge refused: missing or wrong bearer token');
      rejectUpgrade(socket, 401, 'Unauthorized', 'expected Authorization: Bearer <token>\n');
      return;
    }
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(BRIDGE_SUBPROTOCOL)) {
      logger.warn({ remote, offered }, 'bridge refused: wrong subprotocol');
      rejectUpgrade(socket, 400, 'Bad Request', `expected subprotocol ${BRIDGE_SUBPROTOCOL}, found ${offered.join(', ') || 'none'}\n`);
      return;
    }
    if (closed || peers.size >= maxConnections) {
      rejectUpgrade(socket, 503, 'Service Unavailable', `expected at most ${maxConnections} bridges\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => accept(ws, remote));
  });

  function send(peer: Peer, message: Parameters<typeof encodeMessage>[0]): void {
    if (peer.ws.readyState === peer.ws.OPEN) peer.ws.send(encodeMessage(message));
  }

  function closePeer(peer: Peer, code: number, reason: string): void {
    if (peer.closing) return;
    peer.closing = true;
    logger.warn({ runtimeId: peer.runtimeId, remote: peer.remote, code, reason }, 'bridge connection closed by the endpoint');
    peer.ws.close(code, reason);
    // A peer that does not finish the closing handshake is cut off.
    setTimeout(() => peer.ws.terminate(), 1000).unref();
  }

  function accept(ws: WebSocket, remote: string): void {
    const peer: Peer = {
      ws,
      remote,
      runtimeId: null,
      digest: null,
      bucket: new TokenBucket(perSecond, perSecond * 2, clock),
      malformed: 0,
      closing: false,
      awaitingPong: null,
      helloTimer: undefined,
      pending: new Map(),
      inflight: new Map(),
      expired: new Map(),
    };
    peers.add(peer);
    stats.connections += 1;
    peer.helloTimer = setTimeout(() => closePeer(peer, CLOSE_CODES.HELLO_TIMEOUT, 'expected hello'), helloTimeoutMs);
    peer.helloTimer.unref();

    ws.on('message', (data, isBinary) => {
      if (peer.closing) return;
      let message: RuntimeMessage | null = null;
      let failure: ProtocolError | null = null;
      try {
        if (isBinary) throw new ProtocolError('MALFORMED', 'expected a text frame, found a binary one');
        message = parseRuntimeMessage(data as Buffer);
      } catch (error) {
        failure = error instanceof ProtocolError ? error : new ProtocolError('MALFORMED', (error as Error).message);
      }
      // Answers the endpoint asked for (an ack to a pending environment, the awaited pong) are
      // as frequent as the Agent makes them; everything else the bridge says on its own counts.
      if (!(message !== null && solicited(peer, message)) && !peer.bucket.take()) {
        stats.rateLimited += 1;
        closePeer(peer, CLOSE_CODES.POLICY_VIOLATION, `rate limit: expected at most ${perSecond} messages per second`);
        return;
      }
      if (message === null) malformed(peer, (failure as ProtocolError).code, (failure as ProtocolError).message);
      else handle(peer, message);
    });
    ws.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') stats.oversized += 1;
      logger.warn({ runtimeId: peer.runtimeId, remote, err: error.message }, 'bridge connection error');
    });
    ws.on('close', () => {
      peers.delete(peer);
      clearTimeout(peer.helloTimer);
      for (const [, waiting] of peer.pending) {
        waiting.settle({
          runtimeId: peer.runtimeId ?? 'unknown',
          digest: waiting.digest,
          ok: false,
          code: 'DISCONNECTED',
          message: 'the bridge disconnected before answering',
        });
      }
      peer.pending.clear();
      logger.info({ runtimeId: peer.runtimeId, remote }, 'bridge disconnected');
    });
  }

  function solicited(peer: Peer, message: RuntimeMessage): boolean {
    if (message.type === 'pong') return message.id === peer.awaitingPong;
    if (message.type === 'ack' || message.type === 'nack') return peer.pending.get(message.nonce)?.digest === message.digest;
    return false;
  }

  function malformed(peer: Peer, code: string, message: string): void {
    peer.malformed += 1;
    stats.malformed += 1;
    send(peer, { type: 'error', code, message: message.slice(0, 2048) });
    if (peer.malformed > maxMalformed) {
      closePeer(peer, CLOSE_CODES.POLICY_VIOLATION, `expected at most ${maxMalformed} malformed messages`);
    }
  }

  function handle(peer: Peer, message: RuntimeMessage): void {
    if (message.type === 'ping') {
      send(peer, { type: 'pong', id: message.id });
      return;
    }
    if (message.type === 'hello') {
      hello(peer, message);
      return;
    }
    if (peer.runtimeId === null) {
      malformed(peer, 'HELLO_REQUIRED', `expected hello first, found ${message.type}`);
      return;
    }
    if (message.type === 'pong') {
      if (message.id === peer.awaitingPong) peer.awaitingPong = null;
      return;
    }
    const waiting = peer.pending.get(message.nonce);
    if (waiting === undefined && peer.expired.get(message.nonce) === message.digest) {
      // An answer after the timeout: the attempt it belongs to was already answered ACK_TIMEOUT
      // (and the Agent may have rolled back since), so it counts for nothing. The runtime may
      // have taken that environment after all: what it runs stays unknown until it answers an
      // environment in time, so the next setEnvironment sends and waits even for this digest.
      peer.expired.delete(message.nonce);
      peer.digest = null;
      stats.late += 1;
      logger.warn({ runtimeId: peer.runtimeId, digest: message.digest, answer: message.type }, 'ignored a bridge answer that came after its ACK timeout');
      return;
    }
    if (waiting === undefined || waiting.digest !== message.digest) {
      malformed(peer, 'UNKNOWN_NONCE', `expected an answer to an environment sent, found nonce ${message.nonce.slice(0, 128)} for ${message.digest}`);
      return;
    }
    peer.pending.delete(message.nonce);
    if (message.type === 'ack') {
      peer.digest = message.digest;
      waiting.settle({ runtimeId: peer.runtimeId, digest: message.digest, ok: true });
    } else {
      waiting.settle({ runtimeId: peer.runtimeId, digest: message.digest, ok: false, code: message.code, message: message.message });
    }
  }

  function hello(peer: Peer, message: HelloMessage): void {
    if (peer.runtimeId !== null) {
      malformed(peer, 'UNEXPECTED_MESSAGE', 'expected one hello per connection, found a second');
      return;
    }
    clearTimeout(peer.helloTimer);
    for (const other of peers) {
      // A runtime that reconnects before its old connection timed out replaces it.
      if (other !== peer && other.runtimeId === message.runtimeId) closePeer(other, CLOSE_CODES.REPLACED, 'replaced by a newer connection');
    }
    peer.runtimeId = message.runtimeId;
    peer.digest = message.digest;
    logger.info({ runtimeId: peer.runtimeId, remote: peer.remote, digest: message.digest }, 'bridge connected');
    send(peer, { type: 'welcome', digest: current?.digest ?? null, pingIntervalMs });
    if (current !== null && current.digest !== peer.digest) void deliver(peer, current);
  }

  const serializedCache = new WeakMap<RuntimeEnvironment, string>();
  function serialized(env: RuntimeEnvironment): string {
    let json = serializedCache.get(env);
    if (json === undefined) {
      json = JSON.stringify(env);
      serializedCache.set(env, json);
    }
    return json;
  }

  /** Sends an environment to one bridge and resolves with its answer (never rejects). */
  function deliver(peer: Peer, env: RuntimeEnvironment): Promise<BridgeAck> {
    const runtimeId = peer.runtimeId ?? 'unknown';
    if (peer.digest === env.digest) return Promise.resolve({ runtimeId, digest: env.digest, ok: true });
    const existing = peer.inflight.get(env.digest);
    if (existing !== undefined) return existing;
    const nonce = randomUUID();
    const answer = new Promise<BridgeAck>((resolve) => {
      const timer = setTimeout(() => {
        peer.pending.delete(nonce);
        peer.expired.set(nonce, env.digest);
        if (peer.expired.size > EXPIRED_NONCES) peer.expired.delete(peer.expired.keys().next().value as string);
        // No answer in time does not mean the runtime kept what it had: it may take this
        // environment late. Until it answers one in time, its environment is unknown, so a
        // rollback's environment is sent (and waited for) rather than taken as already there.
        peer.digest = null;
        settle({ runtimeId, digest: env.digest, ok: false, code: 'ACK_TIMEOUT', message: `expected an answer within ${ackTimeoutMs} ms` });
      }, ackTimeoutMs);
      timer.unref();
      let settled = false;
      function settle(ack: BridgeAck): void {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        peer.inflight.delete(env.digest);
        if (ack.ok) stats.acks += 1;
        else stats.nacks += 1;
        if (!ack.ok) logger.warn({ ...ack }, 'bridge did not take the environment');
        events.emit('ack', ack);
        resolve(ack);
      }
      peer.pending.set(nonce, { digest: env.digest, settle });
    });
    peer.inflight.set(env.digest, answer);
    if (peer.ws.readyState === peer.ws.OPEN) peer.ws.send(encodeEnvironmentFrame(nonce, env.digest, serialized(env)));
    return answer;
  }

  const pinger = setInterval(() => {
    for (const peer of peers) {
      if (peer.runtimeId === null || peer.closing) continue;
      if (peer.awaitingPong !== null) {
        closePeer(peer, CLOSE_CODES.KEEPALIVE_TIMEOUT, `expected a pong within ${pingIntervalMs} ms`);
        continue;
      }
      pingId += 1;
      peer.awaitingPong = pingId;
      send(peer, { type: 'ping', id: pingId });
    }
  }, pingIntervalMs);
  pinger.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(new EndpointError('LISTEN_FAILED', `cannot listen on ${describeListen(options.listen)}: ${error.message}`, { cause: error })),
    );
    if (socketPath !== null) server.listen(socketPath, resolve);
    else server.listen((options.listen as { port: number }).port, (options.listen as { host: string }).host, resolve);
  }).catch((error: unknown) => {
    clearInterval(pinger);
    throw error;
  });
  if (socketPath !== null) await chmod(socketPath, 0o600);

  const bound = server.address();
  const address =
    socketPath ?? (typeof bound === 'object' && bound !== null ? `ws://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}` : '');
  logger.info({ address }, 'bridge endpoint listening');

  return {
    address,
    async setEnvironment(env) {
      if (closed) throw new EndpointError('CLOSED', 'expected an open endpoint, found it closed');
      let parsed: RuntimeEnvironment;
      try {
        parsed = parseRuntimeEnvironment(env);
      } catch (error) {
        throw new EndpointError('ENVIRONMENT_INVALID', (error as Error).message, { cause: error });
      }
      current = parsed;
      const ready = [...peers].filter((peer) => peer.runtimeId !== null && !peer.closing);
      return Promise.all(ready.map((peer) => deliver(peer, parsed)));
    },
    environment: () => current,
    connected: () =>
      [...peers].filter((peer) => peer.runtimeId !== null && !peer.closing).map((peer) => ({ runtimeId: peer.runtimeId as string, digest: peer.digest })),
    stats: () => ({ ...stats }),
    on: (event, listener) => void events.on(event, listener),
    off: (event, listener) => void events.off(event, listener),
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(pinger);
      const closing = [...peers].map(
        (peer) =>
          new Promise<void>((resolve) => {
            if (peer.ws.readyState === peer.ws.CLOSED) return resolve();
            peer.ws.once('close', () => resolve());
            closePeer(peer, CLOSE_CODES.GOING_AWAY, 'endpoint closing');
          }),
      );
      await Promise.all(closing);
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (socketPath !== null) await unlink(socketPath).catch(() => undefined);
      logger.info({ address }, 'bridge endpoint closed');
    },
  };
}

function describeListen(listen: ListenAddress): string {
  return 'socketPath' in listen ? listen.socketPath : `${listen.host}:${listen.port}`;
}

/**
 * The socket's directory must be ours and writable by nobody else: in a directory others can
 * write, anyone could put their own socket at the path (or swap ours) between two runs and
 * collect the bearer token of every runtime that connects.
 */
async function checkSocketDirectory(path: string): Promise<void> {
  const dir = dirname(path);
  const info = await lstat(dir).catch((error: NodeJS.ErrnoException) => {
    throw new EndpointError('SOCKET_DIR_UNSAFE', `expected the directory ${dir} of the socket to exist: ${error.message}`, { cause: error });
  });
  if (!info.isDirectory()) throw new EndpointError('SOCKET_DIR_UNSAFE', `expected ${dir} to be a directory, found another kind of file`);
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) {
    throw new EndpointError('SOCKET_DIR_UNSAFE', `expected the socket directory ${dir} to belong to uid ${uid}, found uid ${info.uid}`);
  }
  const mode = info.mode & 0o777;
  if ((mode & 0o022) !== 0) {
    throw new EndpointError('SOCKET_DIR_UNSAFE', `expected the socket directory ${dir} to be writable by its owner only (0700), found 0${mode.toString(8)}`);
  }
}

/** A socket left by a previous run is removed; a live socket or any other file at the path is refused. */
async function clearStaleSocket(path: string): Promise<void> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? null : Promise.reject(error)));
  if (info === null) return;
  if (!info.isSocket()) throw new EndpointError('SOCKET_PATH_IN_USE', `expected ${path} to be free or a stale socket, found another kind of file`);
  // A socket someone still answers on belongs to a running endpoint: never steal it.
  const live = await new Promise<boolean>((resolve) => {
    const probe = connectSocket(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new EndpointError('SOCKET_PATH_IN_USE', `expected ${path} to be free or a stale socket, found one that is listening`);
  await unlink(path);
}
