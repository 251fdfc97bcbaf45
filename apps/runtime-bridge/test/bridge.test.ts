import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';

import { BridgeError, JobRejectedError, type RuntimeBridge, connect } from '../src/index.js';
import { FAST_BACKOFF, TOKEN, endpoints, environment, portOf, tokenDir, until } from './helpers.js';

const servers = endpoints();
const bridges: RuntimeBridge[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(bridges.splice(0).map((bridge) => bridge.close()));
  await servers.closeAll();
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

async function bridgeTo(url: string, options: Partial<Parameters<typeof connect>[0]> = {}): Promise<RuntimeBridge> {
  const bridge = await connect({ url, token: TOKEN, runtimeId: 'runtime-1', backoff: FAST_BACKOFF, ...options });
  bridges.push(bridge);
  return bridge;
}

async function refusal(promise: Promise<unknown>): Promise<{ name: string; code: string }> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  return error as { name: string; code: string };
}

describe('connect', () => {
  it('resolves with the current environment as a frozen object', async () => {
    const endpoint = await servers.start();
    const env = environment(1);
    await endpoint.setEnvironment(env);
    const bridge = await bridgeTo(endpoint.address);
    expect(bridge.environment).toEqual(env);
    expect(Object.isFrozen(bridge.environment.job)).toBe(true);
    expect(() => {
      (bridge.environment.job as { max_tokens: number }).max_tokens = 1;
    }).toThrow(TypeError);
    await until(() => endpoint.connected()[0]?.digest === env.digest, 'the endpoint saw the ack');
  });

  it('waits for the Agent to have an environment', async () => {
    const endpoint = await servers.start();
    const pending = bridgeTo(endpoint.address);
    await until(() => endpoint.connected().length === 1, 'the bridge said hello');
    const [ack] = await endpoint.setEnvironment(environment(2));
    expect(ack?.ok).toBe(true);
    expect((await pending).environment.sequence).toBe(2);
  });

  it('reads the token from a 0600 file', async () => {
    const { tokenFile, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(3));
    const bridge = await bridgeTo(endpoint.address, { token: undefined, tokenFile });
    expect(bridge.environment.sequence).toBe(3);
  });

  it('connects over a unix socket given its path', async () => {
    const { dir, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const endpoint = await servers.start({ listen: { socketPath: join(dir, 'bridge.sock') } });
    await endpoint.setEnvironment(environment(4));
    const bridge = await bridgeTo(endpoint.address);
    expect(bridge.environment.sequence).toBe(4);
    const [ack] = await endpoint.setEnvironment(environment(5));
    expect(ack?.ok).toBe(true);
    expect(bridge.environment.sequence).toBe(5);
  });

  it('rejects with UNAUTHORIZED when the Agent refuses the token', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const error = await refusal(connect({ url: endpoint.address, token: 'another-token-0123456789', runtimeId: 'r', backoff: FAST_BACKOFF }));
    expect(error).toBeInstanceOf(BridgeError);
    expect(error.code).toBe('UNAUTHORIZED');
  });

  it('refuses an Agent URL off this host with NOT_LOOPBACK', async () => {
    expect((await refusal(connect({ url: 'ws://10.0.0.1:7000', token: TOKEN, runtimeId: 'r' }))).code).toBe('NOT_LOOPBACK');
    expect((await refusal(connect({ url: 'http://127.0.0.1:7000', token: TOKEN, runtimeId: 'r' }))).code).toBe('URL_INVALID');
  });

  it('rejects with CONNECT_TIMEOUT when no environment comes', async () => {
    const endpoint = await servers.start();
    expect((await refusal(connect({ url: endpoint.address, token: TOKEN, runtimeId: 'r', connectTimeoutMs: 50 }))).code).toBe('CONNECT_TIMEOUT');
  });
});

describe('onChange', () => {
  it('calls listeners with the new and the previous environment, then acks', async () => {
    const endpoint = await servers.start();
    const first = environment(1);
    await endpoint.setEnvironment(first);
    const bridge = await bridgeTo(endpoint.address);
    const seen: [number, number | undefined][] = [];
    bridge.onChange((next, previous) => void seen.push([next.sequence, previous?.sequence]));
    const [ack] = await endpoint.setEnvironment(environment(2, { max_tokens: 10 }));
    expect(ack).toEqual({ runtimeId: 'runtime-1', digest: environment(2).digest, ok: true });
    expect(seen).toEqual([[2, 1]]);
    expect(bridge.environment.job.max_tokens).toBe(10);
  });

  it('lets a listener given to connect take part in the first environment', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const seen: number[] = [];
    await bridgeTo(endpoint.address, { onChange: (next) => void seen.push(next.sequence) });
    expect(seen).toEqual([1]);
  });
});

describe('the nack path', () => {
  it('keeps the previous environment when a listener throws, and the Agent sees LISTENER_FAILED', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const bridge = await bridgeTo(endpoint.address);
    bridge.onChange((next) => {
      if (next.job.max_tokens > 1000) throw new Error('this runtime cannot serve more than 1000 tokens');
    });
    const [ack] = await endpoint.setEnvironment(environment(2, { max_tokens: 5000 }));
    expect(ack).toMatchObject({ ok: false, code: 'LISTENER_FAILED', message: 'this runtime cannot serve more than 1000 tokens' });
    expect(bridge.environment.sequence).toBe(1);
    expect(endpoint.connected()[0]?.digest).toBe(environment(1).digest);

    const [next] = await endpoint.setEnvironment(environment(3, { max_tokens: 500 }));
    expect(next?.ok).toBe(true);
    expect(bridge.environment.sequence).toBe(3);
  });

  it("keeps the previous environment when the runtime's check refuses it, with ENVIRONMENT_REJECTED", async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const bridge = await bridgeTo(endpoint.address, {
      check: (env) => {
        if (env.models.some((model) => model.name === 'huge')) throw new Error('huge does not fit');
      },
    });
    const [ack] = await endpoint.setEnvironment(environment(2, {}, ['huge']));
    expect(ack).toMatchObject({ ok: false, code: 'ENVIRONMENT_REJECTED', message: 'huge does not fit' });
    expect(bridge.environment.sequence).toBe(1);
  });

  it('nacks an environment that fails the schema with ENVIRONMENT_INVALID and keeps the previous one', async () => {
    // A hand-made Agent, since the real endpoint never sends an invalid environment.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (p) => [...p][0] ?? false });
    cleanups.push(() => new Promise((resolve) => wss.close(() => resolve())));
    await new Promise((resolve) => wss.once('listening', resolve));
    const answers: Record<string, unknown>[] = [];
    const good = environment(1);
    wss.on('connection', (ws) => {
      ws.on('message', (data) => {
        const message = JSON.parse(String(data)) as Record<string, unknown>;
        if (message.type === 'hello') {
          ws.send(JSON.stringify({ type: 'welcome', digest: good.digest, pingIntervalMs: 1000 }));
          ws.send(JSON.stringify({ type: 'environment', nonce: 'n1', digest: good.digest, environment: good }));
        } else if (message.nonce === 'n1') {
          const broken: Record<string, unknown> = { ...environment(2), job: { max_tokens: -1 } };
          ws.send(JSON.stringify({ type: 'environment', nonce: 'n2', digest: environment(2).digest, environment: broken }));
        } else {
          answers.push(message);
        }
      });
    });
    const bridge = await bridgeTo(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
    await until(() => answers.length === 1, 'the bridge answered the broken environment');
    expect(answers[0]).toMatchObject({ type: 'nack', nonce: 'n2', code: 'ENVIRONMENT_INVALID' });
    expect(String(answers[0]?.message)).toContain('job.max_tokens');
    expect(bridge.environment).toEqual(good);
  });
});

describe('reconnecting', () => {
  it('reconnects after the Agent restarts and converges on its new environment', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const bridge = await bridgeTo(endpoint.address);
    const port = portOf(endpoint.address);
    const changes: number[] = [];
    bridge.onChange((next) => void changes.push(next.sequence));

    await endpoint.close();
    await until(() => !bridge.connected, 'the bridge saw the Agent go');
    const restarted = await servers.start({ listen: { host: '127.0.0.1', port } });
    await restarted.setEnvironment(environment(2, { max_queue_size: 1 }));
    await until(() => bridge.environment.sequence === 2, 'the bridge took the new environment');
    expect(changes).toEqual([2]);
    await until(() => restarted.connected()[0]?.digest === environment(2).digest, 'the restarted Agent saw the ack');
    expect(restarted.connected()).toHaveLength(1);
  });

  it('says which digest it has, so an Agent that restarts with the same one sends nothing', async () => {
    const endpoint = await servers.start();
    const env = environment(1);
    await endpoint.setEnvironment(env);
    const bridge = await bridgeTo(endpoint.address);
    const changes: number[] = [];
    bridge.onChange((next) => void changes.push(next.sequence));
    const port = portOf(endpoint.address);

    await endpoint.close();
    const restarted = await servers.start({ listen: { host: '127.0.0.1', port } });
    await restarted.setEnvironment(env);
    await until(() => restarted.connected().length === 1, 'the bridge reconnected');
    expect(restarted.connected()).toEqual([{ runtimeId: 'runtime-1', digest: env.digest }]);
    expect(restarted.stats().acks + restarted.stats().nacks).toBe(0);
    expect(changes).toEqual([]);
  });

  it('reconnects when the Agent stops answering', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1));
    const bridge = await bridgeTo(endpoint.address, { keepaliveTimeoutMs: 50 });
    // The endpoint pings every 10 s by default, so 50 ms of silence makes the bridge give up on it.
    await until(() => !bridge.connected, 'the bridge dropped the quiet connection');
    await until(() => bridge.connected, 'the bridge reconnected');
    expect(bridge.environment.sequence).toBe(1);
  });
});

describe('validateJob', () => {
  it('admits a job under the current environment and returns that environment with it', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1, { validation: [{ field: 'prompt', op: 'max_length', value: 5 }] }));
    const bridge = await bridgeTo(endpoint.address);
    const admitted = bridge.validateJob({ model: 'tiny', prompt: 'hello' });
    expect(admitted.request.max_tokens).toBe(100);
    expect(admitted.environment).toBe(bridge.environment);
  });

  it('throws typed errors for each limit', async () => {
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1, { validation: [{ field: 'prompt', op: 'max_length', value: 5 }] }));
    const bridge = await bridgeTo(endpoint.address);
    const codeOf = (job: unknown) => {
      try {
        bridge.validateJob(job);
      } catch (error) {
        expect(error).toBeInstanceOf(JobRejectedError);
        return (error as JobRejectedError).code;
      }
      return 'ADMITTED';
    };
    expect(codeOf({ model: 'tiny', max_tokens: 101 })).toBe('MAX_TOKENS_EXCEEDED');
    expect(codeOf({ model: 'other' })).toBe('MODEL_NOT_ALLOWED');
    expect(codeOf({ model: 'tiny', prompt: 'too long' })).toBe('VALIDATION_FAILED');
    expect(codeOf(null)).toBe('JOB_INVALID');

    // A reload takes effect for the next job at once.
    await endpoint.setEnvironment(environment(2, { max_tokens: 200 }));
    expect(codeOf({ model: 'tiny', max_tokens: 150, prompt: 'too long' })).toBe('ADMITTED');
  });
});
