import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { tempDir } from '@resultity/testkit';
import { type RegistryImage, buildBusyboxImage, devSnapshot } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type Setup, cli, setup } from './helpers.js';

const run = promisify(execFile);
const REGISTRY = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';

// PID 1 ignores SIGTERM unless it traps it; trapping keeps every stop short.
const SERVE = ['/bin/busybox', 'sh', '-c', 'trap "exit 0" TERM; while true; do /bin/busybox sleep 1; done'];

describe('containers on the real Docker engine', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let image: RegistryImage;

  beforeAll(async () => {
    work = await tempDir('agent-containers-');
    image = await buildBusyboxImage({ registry: REGISTRY, repository: 'resultity-agent-test/busybox', tag: 'agent-1', workDir: work.path });
    s = await setup(work.path, 'dev');
  });

  afterAll(async () => {
    const { stdout } = await run('docker', ['ps', '-aq', '--filter', `label=io.resultity.config-digest`]).catch(() => ({ stdout: '' }));
    const mine = stdout.trim().split('\n').filter(Boolean);
    // Only containers this test created carry its env marker.
    for (const id of mine) {
      const { stdout: env } = await run('docker', ['inspect', '--format', '{{json .Config.Env}}', id]).catch(() => ({ stdout: '' }));
      if (env.includes(`AGENT_TEST=${work.path}`)) await run('docker', ['rm', '-f', id]).catch(() => undefined);
    }
    await s.close();
    await work.cleanup();
  });

  function container(command: string[]) {
    return [
      { name: 'worker', image: image.image, tag: image.tag, digest: image.digest, env: { AGENT_TEST: work.path }, command, ports: [], restart: 'no' as const },
    ];
  }

  it('runs the snapshot container, then rolls back to it when the next one crashes', async () => {
    const good = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, containers: container(SERVE) }));
    const first = await cli(['sync', '--once', '--config', s.config], { timeoutMs: 120_000 });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const status = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
    expect(status.containers).toEqual([expect.objectContaining({ name: 'worker', state: 'running' })]);

    const bad = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, containers: container(['/bin/busybox', 'sh', '-c', 'exit 3']) }));
    const second = await cli(['sync', '--once', '--config', s.config], { timeoutMs: 120_000 });
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^(CONTAINER_FAILED|HEALTH_TIMEOUT): /);

    const after = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
    expect(after.applied).toEqual({ digest: good.digest, sequence: 1 });
    expect(after.containers).toEqual([expect.objectContaining({ name: 'worker', state: 'running' })]);
    const audit = await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8');
    expect(audit).toContain('"type":"apply-failed"');
    expect(audit).toContain(bad.digest);
    expect(audit).toContain('"type":"rollback"');
  });

  it('refuses an image from a registry that is not allowed, changing nothing', async () => {
    const other = [
      {
        name: 'worker',
        image: 'registry.example/other/busybox',
        tag: '1',
        digest: image.digest,
        env: { AGENT_TEST: work.path },
        command: [],
        ports: [],
        restart: 'no' as const,
      },
    ];
    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 3, containers: other }));
    const result = await cli(['sync', '--once', '--config', s.config], { timeoutMs: 120_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^REGISTRY_NOT_ALLOWED: /);
    const after = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
    expect(after.applied.sequence).toBe(1);
  });
});
