import { BRIDGE_SUBPROTOCOL, type RuntimeEnvironment, encodeMessage } from '@resultity/bridge-protocol';
import WebSocket from 'ws';

export const TOKEN = 'test-token-0123456789abcdef';

/** An environment whose digest is derived from a small number, for tests. */
export function sampleEnvironment(n: number, job: Partial<RuntimeEnvironment['job']> = {}): RuntimeEnvironment {
  return {
    digest: `sha256:${n.toString(16).padStart(64, '0')}`,
    sequence: n,
    job: { max_tokens: 100, max_queue_size: 4, execution_timeout_ms: 1000, ...job },
    models: [{ name: 'tiny', version: '1', sha256: 'a'.repeat(64), path: '/models/tiny' }],
    participation: { mode: 'testnet', subclouds: [] },
  };
}

/** A hand-driven bridge client: it sends what the test says and records everything it gets. */
export interface RawClient {
  ws: WebSocket;
  received: Record<string, unknown>[];
  next(type: string): Promise<Record<string, unknown>>;
  send(message: unknown): void;
  closed: Promise<{ code: number; reason: string }>;
}

export function rawClient(
  address: string,
  options: { token?: string | null; protocol?: string; maxPayload?: number } = {},
): { client: RawClient; opened: Promise<void>; refused: Promise<number> } {
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? TOKEN : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const url = address.startsWith('/') ? `ws+unix:${address}` : address;
  const ws = new WebSocket(url, options.protocol ?? BRIDGE_SUBPROTOCOL, { headers });
  const received: Record<string, unknown>[] = [];
  const waiters: { type: string; resolve: (m: Record<string, unknown>) => void }[] = [];
  ws.on('message', (data) => {
    const message = JSON.parse(String(data)) as Record<string, unknown>;
    const index = waiters.findIndex((w) => w.type === message.type);
    if (index >= 0) {
      const [waiter] = waiters.splice(index, 1);
      waiter?.resolve(message);
    } else {
      received.push(message);
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
  });
  const refused = new Promise<number>((resolve) => {
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
  });
  ws.on('error', () => undefined);
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('close', () => reject(new Error('closed before opening')));
  });
  opened.catch(() => undefined);
  const client: RawClient = {
    ws,
    received,
    closed,
    next(type) {
      const index = received.findIndex((m) => m.type === type);
      if (index >= 0) return Promise.resolve(received.splice(index, 1)[0] as Record<string, unknown>);
      return new Promise((resolve) => waiters.push({ type, resolve }));
    },
    send(message) {
      ws.send(typeof message === 'string' ? message : encodeMessage(message as never));
    },
  };
  return { client, opened, refused };
}

/** A client that has said hello and got its welcome. */
export async function helloClient(address: string, runtimeId: string, digest: string | null = null): Promise<RawClient> {
  const { client, opened } = rawClient(address);
  await opened;
  client.send({ type: 'hello', runtimeId, digest });
  await client.next('welcome');
  return client;
}
