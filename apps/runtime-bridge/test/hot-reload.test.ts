import type { BridgeEndpoint } from '@resultity/bridge-endpoint';
import { afterEach, describe, expect, it } from 'vitest';

import { type ExampleRuntime, type JobResult, startExampleRuntime } from '../src/index.js';
import { FAST_BACKOFF, TOKEN, endpoints, environment, until } from './helpers.js';

const servers = endpoints();
const runtimes: ExampleRuntime[] = [];

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((runtime) => runtime.close()));
  await servers.closeAll();
});

async function setup(first: ReturnType<typeof environment>, tuning: { tokenDelayMs: number; concurrency: number }) {
  const endpoint = await servers.start();
  await endpoint.setEnvironment(first);
  const runtime = await startExampleRuntime({ bridgeUrl: endpoint.address, token: TOKEN, runtimeId: 'example', backoff: FAST_BACKOFF, ...tuning });
  runtimes.push(runtime);
  return { endpoint, runtime };
}

async function submit(runtime: ExampleRuntime, job: unknown): Promise<{ status: number; body: JobResult & { code?: string } }> {
  const response = await fetch(`${runtime.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(job) });
  return { status: response.status, body: (await response.json()) as JobResult & { code?: string } };
}

async function reload(endpoint: BridgeEndpoint, env: ReturnType<typeof environment>): Promise<void> {
  const acks = await endpoint.setEnvironment(env);
  expect(acks.map((ack) => ack.ok)).toEqual([true]);
}

describe('hot reload in the example runtime', () => {
  it('changes every limit under a steady job load with zero jobs lost or failed', async () => {
    const first = environment(1, {
      max_tokens: 100,
      max_queue_size: 8,
      execution_timeout_ms: 60_000,
      validation: [{ field: 'prompt', op: 'max_length', value: 50 }],
    });
    const { endpoint, runtime } = await setup(first, { tokenDelayMs: 1, concurrency: 2 });
    const reloads = [
      environment(2, { max_tokens: 60, max_queue_size: 1, execution_timeout_ms: 30_000, validation: [{ field: 'prompt', op: 'max_length', value: 20 }] }, [
        'tiny',
        'small',
      ]),
      environment(
        3,
        { max_tokens: 20, max_queue_size: 4, execution_timeout_ms: 45_000, validation: [{ field: 'model', op: 'in', value: ['tiny', 'small'] }] },
        ['small', 'tiny'],
      ),
      environment(4, { max_tokens: 200, max_queue_size: 2, execution_timeout_ms: 90_000 }, ['tiny']),
    ];

    // Three clients against two workers and a queue of at least one: the load never has to be refused.
    let running = true;
    const results: { status: number; body: JobResult & { code?: string } }[] = [];
    const clients = Array.from({ length: 3 }, async (_, client) => {
      let n = 0;
      while (running) {
        results.push(await submit(runtime, { model: 'tiny', max_tokens: 10 + ((client + n++) % 10), prompt: `job ${client}-${n}` }));
      }
    });

    for (const env of reloads) {
      const before = results.length;
      await until(() => results.length >= before + 15, 'the load made progress');
      await reload(endpoint, env);
    }
    const before = results.length;
    await until(() => results.length >= before + 15, 'the load made progress after the last reload');
    running = false;
    await Promise.all(clients);

    expect(results.filter((result) => result.status !== 200)).toEqual([]);
    const stats = runtime.stats();
    expect(stats).toMatchObject({ digest: reloads[2]?.digest, queued: 0, running: 0, failed: 0, rejected: {} });
    expect(stats.completed).toBe(results.length);
    expect(stats.admitted).toBe(results.length);
    const digests = new Set(results.map((result) => result.body.digest));
    expect(digests).toEqual(new Set([first, ...reloads].map((env) => env.digest)));
    for (const result of results) {
      const env = [first, ...reloads].find((candidate) => candidate.digest === result.body.digest);
      expect(result.body.limits).toEqual({ max_tokens: env?.job.max_tokens, execution_timeout_ms: env?.job.execution_timeout_ms });
    }
  });

  it('lets a job in flight finish under the limits it started with while new jobs get the new ones', async () => {
    const first = environment(1, { max_tokens: 30, execution_timeout_ms: 60_000 });
    const { endpoint, runtime } = await setup(first, { tokenDelayMs: 20, concurrency: 1 });
    const long = submit(runtime, { model: 'tiny', max_tokens: 30 });
    await until(() => runtime.stats().running === 1, 'the long job started');

    await reload(endpoint, environment(2, { max_tokens: 5, execution_timeout_ms: 1, validation: [{ field: 'prompt', op: 'eq', value: 'allowed' }] }));
    expect((await submit(runtime, { model: 'tiny', max_tokens: 30, prompt: 'allowed' })).body.code).toBe('MAX_TOKENS_EXCEEDED');
    expect((await submit(runtime, { model: 'tiny', max_tokens: 5, prompt: 'other' })).body.code).toBe('VALIDATION_FAILED');

    const finished = await long;
    expect(finished.status).toBe(200);
    expect(finished.body).toMatchObject({ tokens: 30, digest: first.digest, limits: { max_tokens: 30, execution_timeout_ms: 60_000 } });

    // The new 1 ms execution timeout applies to the next job.
    const late = await submit(runtime, { model: 'tiny', max_tokens: 5, prompt: 'allowed' });
    expect([late.status, late.body.code]).toEqual([504, 'EXECUTION_TIMEOUT']);
  });

  it('drains queued jobs when max_queue_size shrinks, and refuses only new ones above the limit', async () => {
    const { endpoint, runtime } = await setup(environment(1, { max_queue_size: 5 }), { tokenDelayMs: 25, concurrency: 1 });
    const admitted = Array.from({ length: 6 }, (_, i) => submit(runtime, { model: 'tiny', max_tokens: 12, prompt: `queued ${i}` }));
    await until(() => runtime.stats().admitted === 6, 'six jobs were admitted');
    // More jobs wait than the new limit will allow.
    expect(runtime.stats().queued).toBeGreaterThan(1);

    await reload(endpoint, environment(2, { max_queue_size: 1 }));
    const refused = await submit(runtime, { model: 'tiny', max_tokens: 5 });
    expect([refused.status, refused.body.code]).toEqual([429, 'QUEUE_FULL']);

    const results = await Promise.all(admitted);
    expect(results.map((result) => result.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(results.every((result) => result.body.digest === environment(1).digest)).toBe(true);
    expect((await submit(runtime, { model: 'tiny', max_tokens: 5 })).status).toBe(200);
    expect(runtime.stats()).toMatchObject({ failed: 0, rejected: { QUEUE_FULL: 1 } });
  });
});
