import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { type RuntimeBridge, connect } from '@resultity/runtime-bridge';
import { tempDir, until } from '@resultity/testkit';
import { devSnapshot } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readAuditEntries } from '../src/audit.js';
import { loadConfig } from '../src/config.js';
import { type RunningAgent, startAgent } from '../src/main.js';
import { silentLogger } from '../src/ports.js';
import { type Setup, freePort, setup } from './helpers.js';

async function applied(stateDir: string): Promise<string | null> {
  try {
    return (JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as { applied: { digest: string } | null }).applied?.digest ?? null;
  } catch {
    return null;
  }
}

describe('the runtime bridge the Agent hosts', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let agent: RunningAgent;
  let bridge: RuntimeBridge | null = null;
  let statusPort: number;

  beforeAll(async () => {
    work = await tempDir('agent-runtime-');
    statusPort = await freePort();
    s = await setup(work.path, 'dev', {
      status: { listen: `127.0.0.1:${statusPort}` },
      bridge: { enabled: true, ack_timeout_ms: 5000 },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 1, retry_initial_ms: 100, retry_max_ms: 500 },
    });
  });

  afterAll(async () => {
    await bridge?.close();
    await agent?.stop();
    await s.close().catch(() => undefined);
    await work.cleanup();
  });

  it('records the runtime ACK, and rolls back to the last-known-good on a NACK', async () => {
    const first = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, pollSeconds: 1 }));
    agent = await startAgent(await loadConfig(s.config), { logger: silentLogger });
    await until('snapshot 1', async () => (await applied(s.stateDir)) === first.digest);

    bridge = await connect({
      url: agent.bridgeAddress ?? '',
      tokenFile: join(s.stateDir, 'run', 'bridge.token'),
      runtimeId: 'picky-runtime',
      check: (env) => {
        if (env.sequence === 2) throw new Error('this runtime cannot take sequence 2');
      },
    });
    expect(bridge.environment.digest).toBe(first.digest);
    await until('the late ACK of the runtime that connected after the apply to be audited', async () =>
      (await readAuditEntries(join(s.stateDir, 'audit.jsonl'))).some((e) => e.type === 'runtime-ack' && e.late === true && e.digest === first.digest),
    );

    const second = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, maxTokens: 77, pollSeconds: 1 }));
    const entries = () => readAuditEntries(join(s.stateDir, 'audit.jsonl'));
    await until('the rollback after the NACK', async () => (await entries()).some((e) => e.type === 'rollback' && e.reason === 'runtime-nack'));

    expect(await applied(s.stateDir)).toBe(first.digest);
    const log = await entries();
    expect(log.find((e) => e.type === 'runtime-nack')).toMatchObject({ digest: second.digest });
    expect(log.some((e) => e.type === 'runtime-ack' && e.digest === first.digest)).toBe(true);
    const failure = async () => JSON.parse(await readFile(join(s.stateDir, 'state.json'), 'utf8')).failures[second.digest];
    await until('the NACK to be recorded against the digest', async () => (await failure()) !== undefined);
    expect(await failure()).toMatchObject({ code: 'RUNTIME_NACK' });
    await until('the runtime to be back on snapshot 1', async () => bridge?.environment.digest === first.digest);
  });

  it('sends heartbeats with the applied digest to the origin', async () => {
    const nodes = async () =>
      ((await (await fetch(`${s.origin.url}/v1/testnet/nodes`)).json()) as { nodes: { node_id: string; body: Record<string, unknown> }[] }).nodes;
    await until('a heartbeat naming the applied snapshot', async () => (await nodes()).some((n) => n.node_id === 'node-test-1' && n.body.sequence === 1));
    const body = (await nodes())[0]?.body;
    expect(body).toMatchObject({
      config_digest: expect.stringMatching(/^sha256:/),
      sequence: 1,
      agent_version: expect.any(String),
      status: expect.any(String),
    });
  });

  it('reports unhealthy once no check has succeeded for twice the poll interval, and keeps what runs', async () => {
    const healthz = async () => (await fetch(`http://127.0.0.1:${statusPort}/healthz`)).status;
    expect(await healthz()).toBe(200);
    await s.close();
    await until('/healthz to turn 503', async () => (await healthz()) === 503);
    const status = (await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json()) as { applied: { sequence: number }; last_error: { code: string } };
    expect(status.applied.sequence).toBe(1);
    expect(status.last_error.code).toBe('FETCH_FAILED');
  });
});
