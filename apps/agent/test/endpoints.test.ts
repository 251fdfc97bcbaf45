import { type ChildProcess, spawn } from 'node:child_process';
import { lstat, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { connect as connectSocket, createServer } from 'node:net';
import { join } from 'node:path';

import { BRIDGE_ENV, type RuntimeBridge, connect } from '@resultity/runtime-bridge';
import { tempDir, until } from '@resultity/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { loadConfig } from '../src/config.js';
import { devSnapshot } from '@resultity/testkit/devnet';
import { type RunningAgent, startAgent } from '../src/main.js';
import { silentLogger } from '../src/ports.js';
import { CLI, type Setup, cli, freePort, setup, waitForExit } from './helpers.js';

const mode = async (path: string) => (await stat(path)).mode & 0o777;
const token = async (path: string) => (await readFile(path, 'utf8')).trim();

describe('an Agent with the default bridge and control settings', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let agent: RunningAgent;
  let bridge: RuntimeBridge | null = null;
  let statusUrl: string;

  beforeAll(async () => {
    work = await tempDir('agent-endpoints-');
    s = await setup(work.path, 'dev', {
      bridge: { enabled: true, ack_timeout_ms: 5000 },
      status: { listen: `127.0.0.1:${await freePort()}` },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 1, retry_initial_ms: 100, retry_max_ms: 500 },
    });
    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, pollSeconds: 1 }));
    agent = await startAgent(await loadConfig(s.config), { logger: silentLogger });
    statusUrl = agent.statusUrl ?? '';
  });

  afterAll(async () => {
    await bridge?.close();
    await agent?.stop();
    await s.close();
    await work.cleanup();
  });

  it('hosts the bridge on a socket in a 0700 run directory of the state dir, with its token beside it', async () => {
    const run = join(s.stateDir, 'run');
    expect(agent.bridgeAddress).toBe(join(run, 'bridge.sock'));
    expect(await mode(run)).toBe(0o700);
    expect((await lstat(join(run, 'bridge.sock'))).isSocket()).toBe(true);
    expect(await mode(join(run, 'bridge.token'))).toBe(0o600);
  });

  it("keeps the operator's token apart: 0600, in the state dir, not the bridge token", async () => {
    expect(await mode(join(s.stateDir, 'operator.token'))).toBe(0o600);
    expect(await token(join(s.stateDir, 'operator.token'))).not.toBe(await token(join(s.stateDir, 'run', 'bridge.token')));
  });

  it('lets a runtime connect with nothing but RESULTITY_BRIDGE_SOCKET and RESULTITY_BRIDGE_TOKEN_FILE', async () => {
    const env = { [BRIDGE_ENV.socket]: join(s.stateDir, 'run', 'bridge.sock'), [BRIDGE_ENV.tokenFile]: join(s.stateDir, 'run', 'bridge.token') };
    bridge = await connect({ runtimeId: 'env-runtime', env, connectTimeoutMs: 20_000 });
    expect(bridge.environment.sequence).toBe(1);
  });

  it("refuses the runtime's bridge token on the control routes with 401, and takes the operator's", async () => {
    const bridgeToken = await token(join(s.stateDir, 'run', 'bridge.token'));
    const operatorToken = await token(join(s.stateDir, 'operator.token'));
    const unknown = JSON.stringify({ to: `sha256:${'e'.repeat(64)}` });
    for (const route of ['/v1/rollback', '/v1/unpin']) {
      const refused = await fetch(`${statusUrl}${route}`, { method: 'POST', body: unknown, headers: { authorization: `Bearer ${bridgeToken}` } });
      expect(refused.status).toBe(401);
    }
    // Past the credential, the daemon itself answers: this digest is not in its history.
    const accepted = await fetch(`${statusUrl}/v1/rollback`, { method: 'POST', body: unknown, headers: { authorization: `Bearer ${operatorToken}` } });
    expect(accepted.status).toBe(409);
    expect(((await accepted.json()) as { code: string }).code).toBe('NOT_IN_HISTORY');
  });

  it('has the rollback command reach the running daemon with the operator token', async () => {
    const result = await cli(['rollback', '--config', s.config, '--to', `sha256:${'e'.repeat(64)}`]);
    expect(result.stderr).toMatch(/^NOT_IN_HISTORY: /);
    expect(result.code).toBe(1);
  });

  it('has the unpin command reach the running daemon with the operator token', async () => {
    const result = await cli(['unpin', '--config', s.config]);
    // Whatever the daemon answers about its pin, it is the daemon answering: a refused token
    // or an unreachable endpoint would be DAEMON_UNREACHABLE.
    expect(result.stderr).not.toMatch(/DAEMON_UNREACHABLE/);
    expect(`${result.stdout}${result.stderr}`).not.toBe('');
  });
});

describe('an Agent that cannot bind its endpoints', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  const children: ChildProcess[] = [];
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    work = await tempDir('agent-bind-');
    s = await setup(work.path, 'dev');
    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, pollSeconds: 1 }));
  });
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await s.close();
    await work.cleanup();
  });

  async function occupiedPort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => server.close(() => resolve())));
    return (server.address() as { port: number }).port;
  }

  async function runWith(overrides: object): Promise<{ code: number; stderr: string }> {
    const config = join(work.path, 'bind.json');
    const base = JSON.parse(await readFile(s.config, 'utf8')) as Record<string, unknown>;
    await writeFile(config, JSON.stringify({ ...base, ...overrides }));
    return cli(['run', '--config', config]);
  }

  it('exits non-zero with BRIDGE_BIND_FAILED when the bridge address is taken', async () => {
    const result = await runWith({ bridge: { enabled: true, listen: `127.0.0.1:${await occupiedPort()}` } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^BRIDGE_BIND_FAILED: /m);
    await expect(stat(join(s.stateDir, 'agent.lock'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('exits non-zero with STATUS_BIND_FAILED when the status address is taken', async () => {
    const result = await runWith({ bridge: { enabled: false }, status: { listen: `127.0.0.1:${await occupiedPort()}` } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^STATUS_BIND_FAILED: /m);
  });

  it('leaves an ordinary file at the socket path alone and exits with BRIDGE_BIND_FAILED', async () => {
    const socket = join(work.path, 'sockets', 'bridge.sock');
    await mkdir(join(work.path, 'sockets'), { mode: 0o700 });
    await writeFile(socket, 'not a socket');
    const result = await runWith({ bridge: { enabled: true, listen: socket }, status: { listen: null } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^BRIDGE_BIND_FAILED: .*SOCKET_PATH_IN_USE/m);
    expect(await readFile(socket, 'utf8')).toBe('not a socket');
  });

  it('replaces the socket a daemon killed with -9 left behind', async () => {
    const socket = join(s.stateDir, 'run', 'bridge.sock');
    const start = () => {
      const child = spawn(process.execPath, [CLI, 'run', '--config', s.config.replace('agent.json', 'default.json')], { stdio: 'ignore' });
      children.push(child);
      return child;
    };
    const base = JSON.parse(await readFile(s.config, 'utf8')) as Record<string, unknown>;
    await writeFile(s.config.replace('agent.json', 'default.json'), JSON.stringify({ ...base, bridge: { enabled: true }, status: { listen: null } }));
    const answers = () =>
      new Promise<boolean>((resolve) => {
        const probe = connectSocket(socket);
        probe.once('connect', () => {
          probe.destroy();
          resolve(true);
        });
        probe.once('error', () => resolve(false));
      });
    const first = start();
    await until('the first daemon to listen on its socket', answers);
    first.kill('SIGKILL');
    await waitForExit(first);
    expect((await lstat(socket)).isSocket()).toBe(true);
    expect(await answers()).toBe(false);
    const second = start();
    await until('the restarted daemon to listen on the same socket', answers);
    second.kill('SIGTERM');
    expect(await waitForExit(second)).toBe(0);
  });
});
