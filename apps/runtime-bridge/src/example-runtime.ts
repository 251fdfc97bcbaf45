import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { isAbsolute, relative } from 'node:path';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';

import { JobRejectedError, type JobRequest, type RuntimeEnvironment } from '@resultity/bridge-protocol';

import type { BackoffOptions } from './backoff.js';
import { type BridgeLogger, type RuntimeBridge, connect } from './bridge.js';
import { BridgeError } from './errors.js';

/** How the example runtime is started; the dev network and the tests pass a bridge URL and a token. */
export interface ExampleRuntimeOptions {
  /** Default: $RESULTITY_BRIDGE_SOCKET (and the token file $RESULTITY_BRIDGE_TOKEN_FILE), as in a runtime container. */
  bridgeUrl?: string;
  token?: string;
  tokenFile?: string;
  runtimeId: string;
  /** Where its HTTP API listens; loopback only. Default 127.0.0.1 on a free port. */
  http?: { host: string; port: number };
  /** The pretend time to generate one token. Default 5 ms. */
  tokenDelayMs?: number;
  /** Jobs generated at once; the rest wait in the queue. Default 2. */
  concurrency?: number;
  /**
   * Open and hash every model file an environment names before taking it, as a real runtime
   * would load them: a missing, unreadable or different file is a NACK. Default false.
   */
  verifyModels?: boolean;
  /** Where the model store is (RESULTITY_MODELS_DIR in a container); a model path outside it is a NACK. */
  modelsDir?: string;
  backoff?: Partial<BackoffOptions>;
  connectTimeoutMs?: number;
  logger?: BridgeLogger;
}

/** What a finished job returns: the limits it ran under show that a reload never touched it. */
export interface JobResult {
  id: number;
  model: string;
  tokens: number;
  text: string;
  /** The digest of the environment the job was admitted under. */
  digest: string;
  limits: { max_tokens: number; execution_timeout_ms: number };
}

/** Counters the tests and the dev network read to see that no job was lost. */
export interface ExampleRuntimeStats {
  digest: string;
  queued: number;
  running: number;
  admitted: number;
  completed: number;
  failed: number;
  rejected: Record<string, number>;
}

/** A running example runtime. */
export interface ExampleRuntime {
  /** http://host:port of its API. */
  readonly url: string;
  readonly bridge: RuntimeBridge;
  stats(): ExampleRuntimeStats;
  /** Stops taking jobs, lets every admitted one finish, then closes the bridge. */
  close(): Promise<void>;
}

interface QueuedJob {
  id: number;
  request: JobRequest;
  environment: RuntimeEnvironment;
  done: (result: { ok: true; value: JobResult } | { ok: false; code: string; message: string }) => void;
}

const MAX_BODY_BYTES = 64 * 1024;

/**
 * A stand-in inference server that embeds the bridge: it admits jobs under the environment in
 * force, queues them, and "generates" tokens with a delay. Each job keeps the environment it
 * was admitted under; the queue limit is checked only at admission, so shrinking it refuses
 * new jobs but never drops queued ones.
 */
export async function startExampleRuntime(options: ExampleRuntimeOptions): Promise<ExampleRuntime> {
  const host = options.http?.host ?? '127.0.0.1';
  if (!['127.0.0.1', '::1', 'localhost'].includes(host)) {
    throw new BridgeError('RUNTIME_CONFIG', `expected the runtime API on 127.0.0.1, ::1 or localhost, found ${host}`);
  }
  const tokenDelayMs = options.tokenDelayMs ?? 5;
  const concurrency = options.concurrency ?? 2;
  const logger = options.logger;

  const bridge = await connect({
    ...(options.bridgeUrl !== undefined ? { url: options.bridgeUrl } : {}),
    ...(options.token !== undefined ? { token: options.token } : {}),
    ...(options.tokenFile !== undefined ? { tokenFile: options.tokenFile } : {}),
    runtimeId: options.runtimeId,
    ...(options.backoff ? { backoff: options.backoff } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
    ...(logger ? { logger } : {}),
    check: options.verifyModels || options.modelsDir !== undefined ? modelCheck(options.modelsDir) : undefined,
  });

  const queue: QueuedJob[] = [];
  let running = 0;
  let nextId = 1;
  let accepting = true;
  const counters = { admitted: 0, completed: 0, failed: 0, rejected: {} as Record<string, number> };
  let drained: (() => void) | null = null;

  function countRejection(code: string): void {
    counters.rejected[code] = (counters.rejected[code] ?? 0) + 1;
  }

  function pump(): void {
    while (running < concurrency && queue.length > 0) {
      const job = queue.shift() as QueuedJob;
      running += 1;
      void generate(job).finally(() => {
        running -= 1;
        pump();
      });
    }
    if (running === 0 && queue.length === 0) drained?.();
  }

  async function generate(job: QueuedJob): Promise<void> {
    // The limits come from the environment at admission, whatever has changed since.
    const { max_tokens: maxTokens, execution_timeout_ms: timeoutMs } = job.environment.job;
    const started = performance.now();
    const words: string[] = [];
    for (let i = 0; i < job.request.max_tokens; i++) {
      await new Promise((resolve) => setTimeout(resolve, tokenDelayMs));
      if (performance.now() - started > timeoutMs) {
        counters.failed += 1;
        return job.done({ ok: false, code: 'EXECUTION_TIMEOUT', message: `expected to finish within ${timeoutMs} ms, generated ${words.length} tokens` });
      }
      words.push(`t${i}`);
    }
    counters.completed += 1;
    job.done({
      ok: true,
      value: {
        id: job.id,
        model: job.request.model,
        tokens: words.length,
        text: words.join(' '),
        digest: job.environment.digest,
        limits: { max_tokens: maxTokens, execution_timeout_ms: timeoutMs },
      },
    });
  }

  function submit(body: unknown): Promise<{ status: number; payload: unknown }> {
    if (!accepting) return Promise.resolve({ status: 503, payload: { code: 'SHUTTING_DOWN', message: 'the runtime is closing' } });
    let admitted: ReturnType<RuntimeBridge['validateJob']>;
    try {
      admitted = bridge.validateJob(body);
    } catch (error) {
      if (!(error instanceof JobRejectedError)) throw error;
      countRejection(error.code);
      return Promise.resolve({ status: 400, payload: { code: error.code, message: error.message } });
    }
    const limit = admitted.environment.job.max_queue_size;
    if (running >= concurrency && queue.length >= limit) {
      countRejection('QUEUE_FULL');
      return Promise.resolve({ status: 429, payload: { code: 'QUEUE_FULL', message: `expected at most ${limit} queued jobs, found ${queue.length}` } });
    }
    counters.admitted += 1;
    return new Promise((resolve) => {
      queue.push({
        id: nextId++,
        ...admitted,
        done: (result) =>
          resolve(result.ok ? { status: 200, payload: result.value } : { status: 504, payload: { code: result.code, message: result.message } }),
      });
      pump();
    });
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://runtime').pathname;
    if (req.method === 'GET' && path === '/healthz') return reply(res, 200, { ok: true });
    if (req.method === 'GET' && path === '/v1/environment') return reply(res, 200, bridge.environment);
    if (req.method === 'GET' && path === '/v1/stats') return reply(res, 200, stats());
    if (req.method === 'POST' && path === '/v1/jobs') {
      const body = await readJson(req);
      if (!body.ok) {
        countRejection(body.code);
        if (body.code === 'BODY_TOO_LARGE') {
          res.once('finish', () => req.destroy());
          res.setHeader('connection', 'close');
          return reply(res, 413, { code: body.code, message: body.message });
        }
        return reply(res, 400, { code: body.code, message: body.message });
      }
      const { status, payload } = await submit(body.value);
      return reply(res, status, payload);
    }
    return reply(res, 404, { code: 'NOT_FOUND', message: `expected GET /healthz, /v1/environment, /v1/stats or POST /v1/jobs, found ${req.method} ${path}` });
  }

  function stats(): ExampleRuntimeStats {
    return { digest: bridge.environment.digest, queued: queue.length, running, ...counters, rejected: { ...counters.rejected } };
  }

  const server = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
      logger?.warn({ err: (error as Error).message }, 'request failed');
      if (!res.headersSent) reply(res, 500, { code: 'INTERNAL', message: 'the runtime failed to handle the request' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(new BridgeError('RUNTIME_CONFIG', `cannot listen on ${host}: ${error.message}`, { cause: error })));
    server.listen(options.http?.port ?? 0, host, resolve);
  }).catch(async (error: unknown) => {
    await bridge.close();
    throw error;
  });
  const address = server.address();
  const url =
    typeof address === 'object' && address !== null ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}` : '';
  logger?.info({ url, runtimeId: options.runtimeId }, 'example runtime listening');

  return {
    url,
    bridge,
    stats,
    async close() {
      if (!accepting) return;
      accepting = false;
      await new Promise<void>((resolve) => {
        drained = resolve;
        pump();
      });
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await bridge.close();
    },
  };
}

/**
 * The acceptance check of model files: each must lie in the model store (when one is named),
 * open, and hash to the sha256 the environment says. A file already hashed at the same size and
 * modification time is not read again, so a reload that keeps the models answers quickly.
 */
function modelCheck(modelsDir: string | undefined): (env: RuntimeEnvironment) => Promise<void> {
  const hashed = new Map<string, { size: number; mtimeMs: number; sha256: string }>();
  return async (env) => {
    for (const model of env.models) {
      const where = `the weights of ${model.name}@${model.version} at ${model.path}`;
      if (modelsDir !== undefined) {
        const inside = relative(modelsDir, model.path);
        if (!isAbsolute(model.path) || inside.startsWith('..') || isAbsolute(inside)) {
          throw new Error(`expected ${where} inside the model store ${modelsDir}`);
        }
      }
      let handle: Awaited<ReturnType<typeof open>>;
      try {
        handle = await open(model.path, 'r');
      } catch (error) {
        throw new Error(`expected ${where}, could not open them: ${(error as Error).message}`);
      }
      try {
        const info = await handle.stat();
        if (!info.isFile()) throw new Error(`expected ${where} to be a regular file`);
        const known = hashed.get(model.path);
        let sha256 = known !== undefined && known.size === info.size && known.mtimeMs === info.mtimeMs ? known.sha256 : null;
        if (sha256 === null) {
          const hash = createHash('sha256');
          for await (const chunk of handle.createReadStream({ autoClose: false, start: 0 })) hash.update(chunk as Buffer);
          sha256 = hash.digest('hex');
          hashed.set(model.path, { size: info.size, mtimeMs: info.mtimeMs, sha256 });
        }
        if (sha256 !== model.sha256) throw new Error(`expected ${where} to have sha256 ${model.sha256}, found ${sha256}`);
      } finally {
        await handle.close();
      }
    }
  };
}

function reply(res: ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readJson(req: IncomingMessage): Promise<{ ok: true; value: unknown } | { ok: false; code: string; message: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > MAX_BODY_BYTES) {
        // Stop reading; the answer goes out and the connection is closed after it.
        req.pause();
        req.removeAllListeners('data');
        resolve({ ok: false, code: 'BODY_TOO_LARGE', message: `expected a body of at most ${MAX_BODY_BYTES} bytes` });
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve({ ok: true, value: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      } catch {
        resolve({ ok: false, code: 'JOB_INVALID', message: 'expected a JSON body' });
      }
    });
    req.on('error', () => resolve({ ok: false, code: 'JOB_INVALID', message: 'the request body was cut off' }));
  });
}
