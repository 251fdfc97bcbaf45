import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import type { ContainerSpec } from '@resultity/snapshot';
import { tempDir, until } from '@resultity/testkit';
import { devSnapshot } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type BuiltImage, buildExampleRuntimeImage } from '../../../images/build.mjs';
import { readAuditEntries } from '../src/audit.js';
import { loadConfig } from '../src/config.js';
import { type RunningAgent, startAgent } from '../src/main.js';
import { silentLogger } from '../src/ports.js';
import { type Setup, readState, setup } from './helpers.js';

const run = promisify(execFile);
const docker = async (...args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })).stdout.trim();
const registry = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';
const runId = `${process.pid}x${Date.now().toString(36)}`;

describe('updates.runtime moves the runtime container to the next image version', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let agent: RunningAgent | undefined;
  const built: BuiltImage[] = [];

  beforeAll(async () => {
    work = await tempDir('agent-runtime-update-');
    // Two versions of one runtime: the same code, two version labels, so two digests.
    for (const v of ['a', 'b']) built.push(await buildExampleRuntimeImage({ registry, tag: `test-${v}-${runId}`, version: `0.0.0-${v}.${runId}` }));
    s = await setup(work.path, 'dev', {
      bridge: { enabled: true, ack_timeout_ms: 20_000 },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 1, retry_initial_ms: 100, retry_max_ms: 500 },
    });
  }, 300_000);

  afterAll(async () => {
    await agent?.stop();
    const ids = (await docker('ps', '-aq', '--filter', 'label=io.resultity.config-digest').catch(() => '')).split('\n').filter(Boolean);
    for (const id of ids) {
      // Only the containers this file created carry its marker.
      const env = await docker('inspect', '--format', '{{json .Config.Env}}', id).catch(() => '');
      if (env.includes(`AGENT_TEST=${work.path}`)) await docker('rm', '-f', id).catch(() => undefined);
    }
    for (const b of built) {
      await docker('image', 'rm', `${b.image}:${b.tag}`).catch(() => undefined);
      await docker('image', 'rm', `${b.image}@${b.digest}`).catch(() => undefined);
    }
    await s?.close();
    await work?.cleanup();
  });

  it('recreates the container on the new digest, and the new version acks over the reconnected bridge', async () => {
    const [a, b] = built as [BuiltImage, BuiltImage];
    // The container entry stays on version a in both snapshots: only the trigger moves it.
    const inference: ContainerSpec = {
      name: 'inference',
      image: a.image,
      tag: a.tag,
      digest: a.digest,
      env: { AGENT_TEST: work.path },
      command: [],
      ports: [],
      restart: 'always',
      bridge: true,
      models: false,
    };
    const audit = () => readAuditEntries(join(s.stateDir, 'audit.jsonl'));
    const ackedBy = async (digest: string, runtime: string) =>
      (await audit()).some(
        (e) => e.type === 'runtime-ack' && e.digest === digest && (e.acks as { runtime: string; ok: boolean }[]).some((x) => x.runtime === runtime && x.ok),
      );

    const first = await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, pollSeconds: 1, containers: [inference] }));
    agent = await startAgent(await loadConfig(s.config), { logger: silentLogger });
    await until('version a to ack snapshot 1', () => ackedBy(first.digest, `example-runtime:${a.version}`), 90_000);

    const second = await s.net.publish(
      devSnapshot({
        network: 'testnet',
        sequence: 2,
        pollSeconds: 1,
        containers: [inference],
        extra: { updates: { runtime: { version: b.version, image: b.image, digest: b.digest } } },
      }),
    );
    await until('version b to ack snapshot 2', () => ackedBy(second.digest, `example-runtime:${b.version}`), 90_000);

    // The ACK is audited before the apply is recorded: the state catches up a moment later.
    await until('snapshot 2 recorded as applied', async () => (await readState(s.stateDir))?.applied?.digest === second.digest, 30_000);
    const mine = [];
    for (const id of (await docker('ps', '-q', '--filter', 'label=io.resultity.config-digest')).split('\n').filter(Boolean)) {
      if ((await docker('inspect', '--format', '{{json .Config.Env}}', id)).includes(`AGENT_TEST=${work.path}`)) mine.push(id);
    }
    expect(mine).toHaveLength(1);
    const imageId = await docker('inspect', '--format', '{{.Image}}', mine[0]!);
    const repoDigests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', imageId)) as string[];
    expect(repoDigests).toContain(`${b.image}@${b.digest}`);
    expect((await audit()).find((e) => e.type === 'runtime-update')).toMatchObject({
      version: b.version,
      image_digest: b.digest,
      container: 'inference',
      seen_in: second.digest,
    });
  }, 240_000);
});
