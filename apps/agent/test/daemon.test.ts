import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir, until } from '@resultity/testkit';
import { type FileServer, devSnapshot, makeModel, startFileServer } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { verifyAuditFile } from '../src/audit.js';
import { CLI, type Setup, cli, freePort, setup, waitForExit, readState } from './helpers.js';

async function exists(path: string): Promise<boolean> {
  return readFile(path).then(
    () => true,
    () => false,
  );
}

function startDaemon(config: string): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [CLI, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

describe('the daemon', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let files: FileServer;
  let statusPort: number;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    work = await tempDir('agent-daemon-');
    statusPort = await freePort();
    s = await setup(work.path, 'dev', {
      bridge: { enabled: true, listen: '127.0.0.1:0' },
      status: { listen: `127.0.0.1:${statusPort}` },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 1, retry_initial_ms: 100, retry_max_ms: 1000 },
    });
    await mkdir(join(work.path, 'files'));
    files = await startFileServer(join(work.path, 'files'));
  });

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await files.close();
    await s.close();
    await work.cleanup();
  });

  it('converges after kill -9 in the middle of an apply, with no operator help', async () => {
    const small = await makeModel(join(work.path, 'files'), files, 'small', '1.0.0', randomBytes(1024));
    const first = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, models: [small], pollSeconds: 1 }));
    const one = startDaemon(s.config);
    children.push(one.child);
    await until('the first snapshot to be applied', async () => (await readState(s.stateDir))?.applied?.digest === first.digest);
    const health = await fetch(`http://127.0.0.1:${statusPort}/healthz`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text();
    expect(metrics).toContain('resultity_agent_applied_sequence 1');

    // A 2 MiB model served at 256 KiB/s: the apply is surely in progress when the Agent is killed.
    files.throttle = 256 * 1024;
    const big = await makeModel(join(work.path, 'files'), files, 'big', '2.0.0', randomBytes(2 * 1024 * 1024));
    const second = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, models: [small, big], pollSeconds: 1 }));
    await until('the apply to start', () => exists(join(s.stateDir, 'journal.json')));
    await until('the download to be under way', async () => {
      const staging = await readdir(join(s.stateDir, 'models'), { recursive: true }).catch(() => [] as string[]);
      return staging.some((name) => String(name).includes(big.sha256)) || staging.some((name) => /part|tmp|staging/.test(String(name)));
    });
    one.child.kill('SIGKILL');
    await waitForExit(one.child);
    expect((await readState(s.stateDir))?.applied?.digest).toBe(first.digest);
    expect(await exists(join(s.stateDir, 'journal.json'))).toBe(true);

    files.throttle = 0;
    const two = startDaemon(s.config);
    children.push(two.child);
    await until('the second snapshot to be applied after the restart', async () => (await readState(s.stateDir))?.applied?.digest === second.digest);
    await until('the journal to be cleared', async () => !(await exists(join(s.stateDir, 'journal.json'))));
    const index = await readFile(join(s.stateDir, 'models', 'index.json'), 'utf8').catch(() => '');
    expect(index).toContain(big.sha256);
    const audit = await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8');
    expect(audit).toContain('"type":"recover"');
    expect((await verifyAuditFile(join(s.stateDir, 'audit.jsonl'))).ok).toBe(true);

    const secondWriter = await cli(['sync', '--once', '--config', s.config]);
    expect(secondWriter.code).toBe(2);
    expect(secondWriter.stderr).toMatch(/^LOCKED: another Agent \(pid \d+\) holds/);

    two.child.kill('SIGTERM');
    expect(await waitForExit(two.child)).toBe(0);
    expect(await exists(join(s.stateDir, 'agent.lock'))).toBe(false);
  });

  it('stops cleanly on SIGTERM in the middle of an apply, keeping the last-known-good', async () => {
    const before = (await readState(s.stateDir))?.applied;
    files.throttle = 64 * 1024;
    const slow = await makeModel(join(work.path, 'files'), files, 'slow', '1.0.0', randomBytes(1024 * 1024));
    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 3, models: [slow], pollSeconds: 1 }));
    const three = startDaemon(s.config);
    children.push(three.child);
    await until('the apply to start', () => exists(join(s.stateDir, 'journal.json')));
    three.child.kill('SIGTERM');
    expect(await waitForExit(three.child)).toBe(0);
    expect((await readState(s.stateDir))?.applied).toEqual(before);
    expect(await exists(join(s.stateDir, 'journal.json'))).toBe(false);
    const audit = await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8');
    expect(audit).toContain('"type":"apply-cancelled"');
    files.throttle = 0;
  });

  it('lets a newer snapshot cancel an apply whose download is in progress, and lands the newer one', async () => {
    const daemon = startDaemon(s.config);
    children.push(daemon.child);
    files.throttle = 32 * 1024;
    const slow = await makeModel(join(work.path, 'files'), files, 'glacial', '1.0.0', randomBytes(2 * 1024 * 1024));
    const stuck = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 4, models: [slow], pollSeconds: 1 }));
    await until('the slow apply to start', async () => {
      const journal = await readFile(join(s.stateDir, 'journal.json'), 'utf8').catch(() => '');
      return journal.includes(stuck.digest);
    });
    const newer = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 5, pollSeconds: 1 }));
    await until('the newer snapshot to be applied', async () => (await readState(s.stateDir))?.applied?.digest === newer.digest);
    const audit = await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8');
    const cancelled = audit.split('\n').find((line) => line.includes('"type":"apply-cancelled"') && line.includes(stuck.digest));
    expect(cancelled).toBeDefined();
    files.throttle = 0;
    daemon.child.kill('SIGTERM');
    expect(await waitForExit(daemon.child)).toBe(0);
  });

  it('rolls back through the running daemon when an operator asks, and audits it', async () => {
    const daemon = startDaemon(s.config);
    children.push(daemon.child);
    const state = JSON.parse(await readFile(join(s.stateDir, 'state.json'), 'utf8')) as {
      applied: { digest: string; sequence: number };
      history: { digest: string; sequence: number; applied_at: string | null }[];
    };
    const target = state.history.find((h) => h.sequence === 2 && h.applied_at !== null);
    expect(target).toBeDefined();
    await until('the daemon to serve status', async () => (await fetch(`http://127.0.0.1:${statusPort}/healthz`).catch(() => null))?.status === 200);

    const result = await cli(['rollback', '--config', s.config, '--to', target?.digest ?? '']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('rolled back by the running daemon');
    expect((await readState(s.stateDir))?.applied).toEqual({ digest: target?.digest, sequence: 2 });

    const unknown = await cli(['rollback', '--config', s.config, '--to', `sha256:${'f'.repeat(64)}`]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^NOT_IN_HISTORY: /);

    const denied = await fetch(`http://127.0.0.1:${statusPort}/v1/rollback`, { method: 'POST', body: '{}' });
    expect(denied.status).toBe(401);
    // The runtime's credential is not the operator's: a runtime cannot roll its node back.
    const bridgeToken = (await readFile(join(s.stateDir, 'run', 'bridge.token'), 'utf8')).trim();
    const runtimeAsks = await fetch(`http://127.0.0.1:${statusPort}/v1/rollback`, {
      method: 'POST',
      body: '{}',
      headers: { authorization: `Bearer ${bridgeToken}` },
    });
    expect(runtimeAsks.status).toBe(401);

    daemon.child.kill('SIGTERM');
    expect(await waitForExit(daemon.child)).toBe(0);
    const audit = await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8');
    expect(audit).toMatch(/"type":"rollback","by":"operator"/);
  });
});
