import {
  type AgentMessage,
  BRIDGE_SUBPROTOCOL,
  CLOSE_CODES,
  type EnvironmentMessage,
  type JobRequest,
  type RuntimeEnvironment,
  checkToken,
  encodeMessage,
  parseAgentMessage,
  parseRuntimeEnvironment,
  readTokenFile,
  validateJob as validateJobAgainst,
} from '@resultity/bridge-protocol';
import { isLoopbackHost } from '@resultity/node-kit';
import WebSocket from 'ws';

import { type BackoffOptions, backoffDelay, backoffOptions } from './backoff.js';
import { BridgeError, TokenError } from './errors.js';
import { deepFreeze } from './freeze.js';

/** A pino-compatible logger; the bridge logs connections and refusals, never the token. */
export interface BridgeLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/**
 * Called with each new environment before it is acknowledged. Throwing (or rejecting) makes
 * the bridge nack with LISTENER_FAILED and keep the previous environment.
 */
export type EnvironmentListener = (next: RuntimeEnvironment, previous: RuntimeEnvironment | null) => void | Promise<void>;

/**
 * The environment variables a runtime container is given (SPEC §6): the bridge's unix socket
 * and the file holding its bearer token. With them a runtime needs no other configuration.
 */
export const BRIDGE_ENV = { socket: 'RESULTITY_BRIDGE_SOCKET', tokenFile: 'RESULTITY_BRIDGE_TOKEN_FILE' } as const;

/** How a runtime connects to its Agent. */
export interface ConnectOptions {
  /** `ws://127.0.0.1:PORT`, `ws+unix:/path/to.sock`, or just the socket path. Default: $RESULTITY_BRIDGE_SOCKET. */
  url?: string;
  /**
   * The bearer token, or the 0600 file holding it (re-read on every reconnect, so it can rotate).
   * Default: the file named by $RESULTITY_BRIDGE_TOKEN_FILE.
   */
  token?: string;
  tokenFile?: string;
  /** Where the defaults are read from; `process.env` unless given. */
  env?: Readonly<Record<string, string | undefined>>;
  /** What the Agent knows this runtime by. */
  runtimeId: string;
  /**
   * The runtime's own acceptance check, run before any listener; throwing nacks with
   * ENVIRONMENT_REJECTED (for example: a model path that does not exist).
   */
  check?: (env: RuntimeEnvironment) => void | Promise<void>;
  /** A listener that takes part in the first environment too (one added later only sees changes). */
  onChange?: EnvironmentListener;
  backoff?: Partial<BackoffOptions>;
  /** Silence after which the Agent is taken for gone and the bridge reconnects. Default three ping intervals. */
  keepaliveTimeoutMs?: number;
  /** How long connect() waits for the first environment; 0 waits until `signal` aborts. Default 0. */
  connectTimeoutMs?: number;
  /** Largest frame the bridge accepts from the Agent. Default 4 MiB. */
  maxFrameBytes?: number;
  signal?: AbortSignal;
  logger?: BridgeLogger;
  random?: () => number;
}

/** A job admitted under an environment: the request with its limits filled in, and that environment. */
export interface AdmittedJob {
  request: JobRequest;
  /** The environment at admission; the job runs under it to the end, whatever changes meanwhile. */
  environment: RuntimeEnvironment;
}

/** The live bridge a runtime embeds. */
export interface RuntimeBridge {
  /** The environment in force: deeply frozen, replaced (never mutated) on each change. */
  readonly environment: RuntimeEnvironment;
  /** Whether the WebSocket to the Agent is open right now. */
  readonly connected: boolean;
  /** Adds a listener for changes; returns a function that removes it. */
  onChange(listener: EnvironmentListener): () => void;
  /** Admits a job under the current environment or throws JobRejectedError. */
  validateJob(job: unknown): AdmittedJob;
  close(): Promise<void>;
}

const noopLogger: BridgeLogger = { info() {}, warn() {} };

/** Turns the URL forms the bridge accepts into what `ws` dials, refusing anything off this host. */
export function resolveAgentUrl(url: string): string {
  if (url.startsWith('/')) return `ws+unix:${url}`;
  if (url.startsWith('ws+unix:')) return url;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new BridgeError('URL_INVALID', `expected ws://HOST:PORT, ws+unix:PATH or a socket path, found ${url}`, { cause: error });
  }
  if (parsed.protocol !== 'ws:') {
    throw new BridgeError('URL_INVALID', `expected a ws: or ws+unix: URL, found ${parsed.protocol}`);
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  const loopback = isLoopbackHost(host);
  if (!loopback) throw new BridgeError('NOT_LOOPBACK', `expected the Agent on a loopback address, found ${host}`);
  return url;
}

/**
 * Where to connect and with what: the options first, then the environment. The socket named by
 * the environment must be an absolute path, since a relative one depends on the working directory.
 */
export function bridgeTarget(
  options: Pick<ConnectOptions, 'url' | 'token' | 'tokenFile'>,
  env: Readonly<Record<string, string | undefined>> = process.env,
): { url: string; token?: string; tokenFile?: string } {
  let url = options.url;
  if (url === undefined || url === '') {
    const socket = env[BRIDGE_ENV.socket];
    if (socket === undefined || socket === '') {
      throw new BridgeError('URL_INVALID', `expected a bridge URL or ${BRIDGE_ENV.socket} naming the Agent's socket, found neither`);
    }
    if (!socket.startsWith('/')) throw new BridgeError('URL_INVALID', `expected ${BRIDGE_ENV.socket} to be an absolute socket path, found ${socket}`);
    url = socket;
  }
  if (options.token !== undefined) return { url, token: options.token };
  const tokenFile = options.tokenFile ?? env[BRIDGE_ENV.tokenFile];
  if (tokenFile === undefined || tokenFile === '') {
    throw new TokenError('TOKEN_INVALID', `expected a token, a tokenFile or ${BRIDGE_ENV.tokenFile}, found none`);
  }
  return { url, tokenFile };
}

/**
 * Connects to the Agent and resolves once the first environment has been taken (checked,
 * passed through `onChange`, acknowledged). Afterwards the bridge reconnects on its own with
 * backoff and jitter, saying which digest it has so the Agent re-sends only on a difference.
 */
export async function connect(options: ConnectOptions): Promise<RuntimeBridge> {
  const { url, token: givenToken, tokenFile } = bridgeTarget(options, options.env);
  const target = resolveAgentUrl(url);
  if (givenToken !== undefined) checkToken(givenToken);
  const backoff = backoffOptions(options.backoff);
  const logger = options.logger ?? noopLogger;
  const random = options.random ?? Math.random;
  const maxFrameBytes = options.maxFrameBytes ?? 4 * 1024 * 1024;

  let current: RuntimeEnvironment | null = null;
  const listeners = new Set<EnvironmentListener>();
  if (options.onChange) listeners.add(options.onChange);
  let socket: WebSocket | null = null;
  let attempt = 0;
  let closed = false;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let keepaliveTimer: NodeJS.Timeout | undefined;
  let keepaliveMs = options.keepaliveTimeoutMs ?? 30_000;
  // Environments are taken one at a time, in the order they arrived.
  let queue: Promise<void> = Promise.resolve();

  let settleFirst: { resolve: (bridge: RuntimeBridge) => void; reject: (error: Error) => void } | null = null;
  const first = new Promise<RuntimeBridge>((resolve, reject) => {
    settleFirst = { resolve, reject };
  });

  const bridge: RuntimeBridge = {
    get environment(): RuntimeEnvironment {
      if (current === null) throw new BridgeError('CLOSED', 'expected an environment, found none yet');
      return current;
    },
    get connected() {
      return socket?.readyState === WebSocket.OPEN;
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    validateJob(job) {
      const environment = bridge.environment;
      return { request: validateJobAgainst(job, environment), environment };
    },
    async close() {
      if (closed) return;
      closed = true;
      rejectFirst(new BridgeError('CLOSED', 'the bridge was closed before the first environment arrived'));
      clearTimeout(reconnectTimer);
      clearTimeout(keepaliveTimer);
      const open = socket;
      if (open !== null && open.readyState !== WebSocket.CLOSED) {
        await new Promise<void>((resolve) => {
          open.once('close', () => resolve());
          open.close(1001, 'runtime closing');
          setTimeout(() => open.terminate(), 1000).unref();
        });
      }
      await queue;
    },
  };

  function rejectFirst(error: Error): boolean {
    if (settleFirst === null) return false;
    const { reject } = settleFirst;
    settleFirst = null;
    reject(error);
    return true;
  }

  /** Gives up before the first environment: connect() rejects and nothing keeps retrying. */
  function fail(error: Error): void {
    if (rejectFirst(error)) void bridge.close();
  }

  const connectTimeoutMs = options.connectTimeoutMs ?? 0;
  const connectTimer =
    connectTimeoutMs > 0
      ? setTimeout(() => fail(new BridgeError('CONNECT_TIMEOUT', `expected an environment within ${connectTimeoutMs} ms, found none`)), connectTimeoutMs)
      : undefined;
  const onAbort = () => fail(new BridgeError('ABORTED', 'connect was aborted before the first environment arrived'));
  if (options.signal?.aborted) queueMicrotask(onAbort);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  void first
    .finally(() => {
      clearTimeout(connectTimer);
      options.signal?.removeEventListener('abort', onAbort);
    })
    .catch(() => undefined);

  function scheduleReconnect(): void {
    if (closed) return;
    const delay = backoffDelay(attempt, backoff, random);
    attempt = Math.min(attempt + 1, 64);
    logger.info({ delayMs: delay, attempt }, 'reconnecting to the Agent');
    reconnectTimer = setTimeout(() => void open(), delay);
  }

  function armKeepalive(ws: WebSocket): void {
    clearTimeout(keepaliveTimer);
    keepaliveTimer = setTimeout(() => {
      logger.warn({ timeoutMs: keepaliveMs }, 'the Agent went quiet; reconnecting');
      ws.terminate();
    }, keepaliveMs);
  }

  async function open(): Promise<void> {
    if (closed) return;
    let token: string;
    try {
      token = givenToken ?? (await readTokenFile(tokenFile as string));
    } catch (error) {
      // The token file is the operator's to fix; before the first environment that is fatal.
      if (settleFirst !== null && current === null) return fail(error as Error);
      logger.warn({ err: (error as Error).message }, 'cannot read the token file');
      return scheduleReconnect();
    }
    if (closed) return;
    const ws = new WebSocket(target, BRIDGE_SUBPROTOCOL, {
      headers: { authorization: `Bearer ${token}` },
      maxPayload: maxFrameBytes,
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
    });
    socket = ws;
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      const error =
        status === 401
          ? new BridgeError('UNAUTHORIZED', 'the Agent refused the bearer token (HTTP 401)')
          : new BridgeError('HANDSHAKE_REFUSED', `expected a WebSocket upgrade, found HTTP ${status}`);
      logger.warn({ status, code: error.code }, 'the Agent refused the connection');
      // A wrong token will not become right by retrying before anything has ever worked.
      if (status === 401 && current === null) fail(error);
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      logger.info({ url }, 'connected to the Agent');
      ws.send(encodeMessage({ type: 'hello', runtimeId: options.runtimeId, digest: current?.digest ?? null }));
      armKeepalive(ws);
    });
    ws.on('message', (data, isBinary) => {
      armKeepalive(ws);
      let message: AgentMessage;
      try {
        if (isBinary) throw new Error('expected a text frame, found a binary one');
        message = parseAgentMessage(data as Buffer);
      } catch (error) {
        logger.warn({ err: (error as Error).message }, 'ignored a message from the Agent');
        return;
      }
      receive(ws, message);
    });
    ws.on('error', (error) => logger.warn({ err: error.message }, 'bridge connection error'));
    ws.on('close', (code, reason) => {
      // Only the connection in use decides about reconnecting; an older one closing late does not.
      if (socket !== ws) return;
      socket = null;
      clearTimeout(keepaliveTimer);
      if (closed) return;
      logger.warn({ code, reason: String(reason) }, 'disconnected from the Agent');
      if (code === CLOSE_CODES.REPLACED) {
        // Another runtime says hello with our id: wait the longest delay rather than fight over it.
        logger.warn({ runtimeId: options.runtimeId }, 'another connection uses this runtime id');
        attempt = Number.MAX_SAFE_INTEGER;
      }
      scheduleReconnect();
    });
  }

  function receive(ws: WebSocket, message: AgentMessage): void {
    switch (message.type) {
      case 'welcome':
        attempt = 0;
        if (options.keepaliveTimeoutMs === undefined) keepaliveMs = message.pingIntervalMs * 3;
        armKeepalive(ws);
        return;
      case 'ping':
        ws.send(encodeMessage({ type: 'pong', id: message.id }));
        return;
      case 'pong':
        return;
      case 'error':
        logger.warn({ code: message.code, message: message.message }, 'the Agent reported an error');
        return;
      case 'environment':
        queue = queue.then(() => take(ws, message));
        return;
    }
  }

  async function take(ws: WebSocket, message: EnvironmentMessage): Promise<void> {
    const reply = (answer: { ok: true } | { ok: false; code: string; text: string }) => {
      if (!answer.ok) logger.warn({ digest: message.digest, code: answer.code, message: answer.text }, 'refused an environment; keeping the previous one');
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(
        encodeMessage(
          answer.ok
            ? { type: 'ack', nonce: message.nonce, digest: message.digest }
            : { type: 'nack', nonce: message.nonce, digest: message.digest, code: answer.code, message: answer.text.slice(0, 2048) },
        ),
      );
    };
    let next: RuntimeEnvironment;
    try {
      next = parseRuntimeEnvironment(message.environment);
      if (next.digest !== message.digest) {
        throw new Error(`expected the environment digest ${message.digest}, found ${next.digest}`);
      }
    } catch (error) {
      return reply({ ok: false, code: 'ENVIRONMENT_INVALID', text: (error as Error).message });
    }
    if (current !== null && current.digest === next.digest) return reply({ ok: true });
    // The parsed environment is a fresh object nobody else holds, so it can be frozen as it is.
    const frozen = deepFreeze(next);
    try {
      await options.check?.(frozen);
    } catch (error) {
      return reply({ ok: false, code: 'ENVIRONMENT_REJECTED', text: describe(error) });
    }
    const previous = current;
    for (const listener of [...listeners]) {
      try {
        await listener(frozen, previous);
      } catch (error) {
        return reply({ ok: false, code: nackCodeOf(error, 'LISTENER_FAILED'), text: describe(error) });
      }
    }
    current = frozen;
    logger.info({ digest: frozen.digest, sequence: frozen.sequence }, 'environment taken');
    reply({ ok: true });
    if (settleFirst !== null) {
      const { resolve } = settleFirst;
      settleFirst = null;
      resolve(bridge);
    }
  }

  void open();
  return first;
}

/** A listener may say why it failed with a protocol nack code (the sidecar says APPLY_FAILED). */
function nackCodeOf(error: unknown, fallback: string): string {
  const code = error instanceof Error && 'code' in error ? error.code : undefined;
  return code === 'APPLY_FAILED' || code === 'ENVIRONMENT_REJECTED' ? code : fallback;
}

function describe(error: unknown): string {
  if (error instanceof Error) return 'code' in error && typeof error.code === 'string' ? `${error.code}: ${error.message}` : error.message;
  return String(error);
}
