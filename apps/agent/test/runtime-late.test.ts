import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { type RuntimeBridge, connect } from '@resultity/runtime-bridge';
import { tempDir } from '@resultity/testkit';
import { devSnapshot } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readAuditEntries } from '../src/audit.js';
import { loadConfig } from '../src/config.js';
import { type RunningAgent, startAgent } from '../src/main.js';
import { silentLogger } from '../src/ports.js';
import { type Setup, setup } from './helpers.js';

async function applied(stateDir: string): Promise<string | null> {
  try {
    return (JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as { applied: { digest: string } | null }).applied?.digest ?? null;
  } catch {
    return null;
  }
}

async function until(what: string, probe: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A runtime that answers after the Agent's ACK timeout has still taken the environment. The
// Agent rolls back; the late answer must count for nothing, the rollback must reach the
// runtime, and a retry must be a new attempt the runtime answers in time, or it is not applied.
describe('a runtime that answers after the ACK timeout', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let agent: RunningAgent | undefined;
  let bridge: RuntimeBridge | undefined;

  beforeAll(async () => {
    work = await tempDir('agent-runtime-late-');
    s = await setup(work.path, 'dev', {
      bridge: { enabled: true, ack_timeout_ms: 400 },
      // Every late answer spends one unit; the runtime must still be tried once it is on time.
      retry_budget: 1000,
      timers: { poll_interval_s: 1, heartbeat_interval_s: 60, retry_initial_ms: 100, retry_max_ms: 300 },
    });
  });

  afterAll(async () => {
    await bridge?.close();
    await agent?.stop();
    await s.close().catch(() => undefined);
    await work.cleanup();
  });

  it('is not recorded as applied while it is late, is told to go back on the rollback, and converges once it answers in time', async () => {
    const first = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, pollSeconds: 1 }));
    agent = await startAgent(await loadConfig(s.config), { logger: silentLogger });
    await until('snapshot 1', async () => (await applied(s.stateDir)) === first.digest);

    let late = false;
    const taken: number[] = [];
    bridge = await connect({
      url: agent.bridgeAddress ?? '',
      tokenFile: join(s.stateDir, 'run', 'bridge.token'),
      runtimeId: 'late-runtime',
      // Late for sequence 2 only: the rollback to sequence 1 is taken at once.
      check: async (env) => {
        if (late && env.sequence === 2) await new Promise((r) => setTimeout(r, 1200));
      },
      onChange: (env) => void taken.push(env.sequence),
    });
    expect(bridge.environment.digest).toBe(first.digest);

    late = true;
    const second = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, maxTokens: 77, pollSeconds: 1 }));
    const entries = () => readAuditEntries(join(s.stateDir, 'audit.jsonl'));
    // The runtime takes sequence 2 late, then the rollback's sequence 1, again and again.
    await until('the runtime to take sequence 2 late, three times', () => taken.filter((n) => n === 2).length >= 3, 60_000);
    await until('the runtime to be put back on sequence 1 after a late sequence 2', () => taken.at(-1) === 1, 30_000);

    const log = await entries();
    expect(log.some((e) => e.type === 'applied' && e.digest === second.digest)).toBe(false);
    expect(await applied(s.stateDir)).toBe(first.digest);
    expect(log.filter((e) => e.type === 'rollback' && e.reason === 'runtime-nack' && e.to === first.digest).length).toBeGreaterThanOrEqual(2);
    expect(log.filter((e) => e.type === 'runtime-nack' && e.digest === second.digest).every((e) => e.code === 'ACK_TIMEOUT')).toBe(true);
    // The runtime went back to sequence 1 after each late sequence 2: the rollbacks reached it.
    const afterLate = taken.flatMap((n, i) => (n === 2 ? [taken[i + 1]] : []));
    expect(afterLate.slice(0, -1).every((n) => n === 1)).toBe(true);

    late = false;
    await until('the apply once the runtime answers in time', async () => (await applied(s.stateDir)) === second.digest, 60_000);
    await until('the runtime to run sequence 2', () => bridge?.environment.digest === second.digest);
  }, 150_000);
});
