import { type ChildProcess, spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir, until } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { devSnapshot } from '@resultity/testkit/devnet';
import { CLI, type Setup, cli, freePort, setup, waitForExit, readState } from './helpers.js';

describe('operator safety', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let statusPort: number;
  const children: ChildProcess[] = [];
  const digests: string[] = [];

  beforeAll(async () => {
    work = await tempDir('agent-operator-');
    statusPort = await freePort();
    s = await setup(work.path, 'dev', {
      bridge: { enabled: false },
      status: { listen: `127.0.0.1:${statusPort}` },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 1, retry_initial_ms: 100, retry_max_ms: 1000 },
    });
  });

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await s.close();
    await work.cleanup();
  });

  it('keeps polling when state.json is overwritten with garbage, reports STATE_CORRUPT and rebuilds the state', async () => {
    digests.push((await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, pollSeconds: 1 }))).digest);
    const daemon = spawn(process.execPath, [CLI, 'run', '--config', s.config], { stdio: 'ignore' });
    children.push(daemon);
    await until('the first snapshot to be applied', async () => (await readState(s.stateDir))?.applied?.digest === digests[0]);

    await writeFile(join(s.stateDir, 'state.json'), '{"version":1,"applied":{"digest":"sha2');
    const status = await until('status to report STATE_CORRUPT', async () => {
      const body = (await (await fetch(`http://127.0.0.1:${statusPort}/status`).catch(() => null))?.json().catch(() => null)) as {
        last_error: { code: string } | null;
        applied: { digest: string } | null;
      } | null;
      return body?.last_error?.code === 'STATE_CORRUPT' ? body : null;
    });
    expect(status.applied?.digest).toBe(digests[0]);
    expect((await readState(s.stateDir))?.high_water?.digest).toBe(digests[0]);

    // The loop is still alive: a new snapshot is applied.
    digests.push((await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, maxTokens: 77, pollSeconds: 1 }))).digest);
    await until('the second snapshot to be applied', async () => (await readState(s.stateDir))?.applied?.digest === digests[1]);
    daemon.kill('SIGTERM');
    expect(await waitForExit(daemon)).toBe(0);
    expect(await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8')).toContain('"type":"repair"');
  });

  it('refuses a rollback target that is not a digest before touching anything', async () => {
    for (const to of ['../../etc/passwd', 'f'.repeat(64), `sha256:${'F'.repeat(64)}`]) {
      const result = await cli(['rollback', '--config', s.config, '--to', to]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/^USAGE: --to must be "sha256:" followed by 64 lowercase hex digits/);
    }
  });

  it('unpins offline, audited, and `audit verify` then finds entries cut from the end', async () => {
    const back = await cli(['rollback', '--config', s.config, '--to', digests[0] as string]);
    expect(back.code).toBe(0);
    expect((await readState(s.stateDir))?.pinned).toMatchObject({ digest: digests[0], until_above: 2 });

    const lifted = await cli(['unpin', '--config', s.config]);
    expect(lifted.stdout).toBe(`unpinned ${digests[0]} (was pinned until a sequence above 2)\n`);
    expect(lifted.code).toBe(0);
    const state = await readState(s.stateDir);
    expect(state?.pinned).toBeNull();
    expect(await readFile(join(s.stateDir, 'audit.jsonl'), 'utf8')).toMatch(/"type":"unpin","by":"operator"/);
    expect((await cli(['unpin', '--config', s.config])).stdout).toBe('not pinned\n');

    const intact = await cli(['audit', 'verify', '--config', s.config]);
    expect(intact.code).toBe(0);
    const auditPath = join(s.stateDir, 'audit.jsonl');
    const lines = (await readFile(auditPath, 'utf8')).split('\n').filter((l) => l.length > 0);
    expect(lines).toHaveLength((state?.audit_head?.index ?? -1) + 1);
    await writeFile(auditPath, `${lines.slice(0, -2).join('\n')}\n`);
    const cut = await cli(['audit', 'verify', '--config', s.config]);
    expect(cut.code).toBe(1);
    expect(cut.stderr).toContain('entries were cut from the end');
  });
});
