import { BRIDGE_SUBPROTOCOL, CLOSE_CODES } from '@resultity/bridge-protocol';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';

import { type ExampleRuntime, startExampleRuntime } from '../src/index.js';
import { FAST_BACKOFF, TOKEN, endpoints, environment } from './helpers.js';

const servers = endpoints();
const runtimes: ExampleRuntime[] = [];

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((runtime) => runtime.close()));
  await servers.closeAll();
});

/** Opens a raw connection and resolves with how it ended: an HTTP refusal or a close code. */
function misbehave(address: string, token: string | null, act: (ws: WebSocket) => void): Promise<{ status?: number; close?: number; errors: number }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
    const ws = new WebSocket(address, BRIDGE_SUBPROTOCOL, { headers });
    let errors = 0;
    ws.on('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? 0, errors });
      ws.terminate();
    });
    ws.on('error', () => undefined);
    ws.on('message', (data) => {
      if ((JSON.parse(String(data)) as { type: string }).type === 'error') errors += 1;
    });
    ws.on('open', () => act(ws));
    ws.on('close', (code) => resolve({ close: code, errors }));
  });
}

describe('misbehaving clients next to a running runtime', () => {
  it('are refused or closed, and the runtime keeps its parameters and keeps serving', async () => {
    const endpoint = await servers.start({ maxFrameBytes: 4096, messagesPerSecond: 20, maxMalformed: 3 });
    const env = environment(1, { max_tokens: 50, max_queue_size: 4 });
    await endpoint.setEnvironment(env);
    const runtime = await startExampleRuntime({ bridgeUrl: endpoint.address, token: TOKEN, runtimeId: 'example', backoff: FAST_BACKOFF, tokenDelayMs: 1 });
    runtimes.push(runtime);

    const outcomes = await Promise.all([
      misbehave(endpoint.address, null, () => undefined),
      misbehave(endpoint.address, 'guessed-token-0123456789', () => undefined),
      misbehave(endpoint.address, TOKEN, (ws) => {
        for (let i = 0; i < 10; i++) ws.send(`{"type":"environment","garbage":${i}`);
      }),
      misbehave(endpoint.address, TOKEN, (ws) => ws.send(JSON.stringify({ type: 'hello', runtimeId: 'big', digest: null, pad: 'x'.repeat(10_000) }))),
      misbehave(endpoint.address, TOKEN, (ws) => {
        ws.send(JSON.stringify({ type: 'hello', runtimeId: 'flood', digest: null }));
        for (let i = 0; i < 500; i++) ws.send(JSON.stringify({ type: 'ping', id: i }));
      }),
      // One that poses as the runtime and tries to acknowledge an environment it never got.
      misbehave(endpoint.address, TOKEN, (ws) => {
        for (let i = 0; i < 5; i++) ws.send(JSON.stringify({ type: 'ack', nonce: `forged-${i}`, digest: environment(9).digest }));
      }),
    ]);
    expect(outcomes[0]).toMatchObject({ status: 401 });
    expect(outcomes[1]).toMatchObject({ status: 401 });
    expect(outcomes[2]?.close).toBe(CLOSE_CODES.POLICY_VIOLATION);
    expect(outcomes[2]?.errors).toBeGreaterThanOrEqual(3);
    expect(outcomes[3]?.close).toBe(CLOSE_CODES.MESSAGE_TOO_BIG);
    expect(outcomes[4]?.close).toBe(CLOSE_CODES.POLICY_VIOLATION);
    expect(outcomes[5]?.close).toBe(CLOSE_CODES.POLICY_VIOLATION);
    expect(endpoint.stats()).toMatchObject({ unauthorized: 2, oversized: 1, rateLimited: 1 });

    // The runtime's parameters are unchanged and it still serves.
    expect(runtime.bridge.environment).toEqual(env);
    expect(endpoint.connected()).toEqual([{ runtimeId: 'example', digest: env.digest }]);
    const response = await fetch(`${runtime.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ model: 'tiny', max_tokens: 5 }) });
    expect(response.status).toBe(200);

    // And it still follows the Agent.
    const next = environment(2, { max_tokens: 10 });
    expect((await endpoint.setEnvironment(next)).map((ack) => [ack.runtimeId, ack.ok])).toEqual([['example', true]]);
    expect(runtime.bridge.environment.job.max_tokens).toBe(10);
  });
});

describe('the example runtime HTTP API', () => {
  it('answers bad requests with stable codes', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const runtime = await startExampleRuntime({ bridgeUrl: endpoint.address, token: TOKEN, runtimeId: 'example', tokenDelayMs: 1 });
    runtimes.push(runtime);
    const post = async (body: string) => {
      const response = await fetch(`${runtime.url}/v1/jobs`, { method: 'POST', body });
      return [response.status, ((await response.json()) as { code: string }).code];
    };
    expect(await post('{not json')).toEqual([400, 'JOB_INVALID']);
    expect(await post(JSON.stringify({ model: 'tiny', prompt: 'x'.repeat(100_000) }))).toEqual([413, 'BODY_TOO_LARGE']);
    expect(await post(JSON.stringify({ model: 'unknown' }))).toEqual([400, 'MODEL_NOT_ALLOWED']);
    const environmentResponse = await fetch(`${runtime.url}/v1/environment`);
    expect(await environmentResponse.json()).toEqual(environment(1));
    expect((await fetch(`${runtime.url}/nothing`)).status).toBe(404);
  });
});
