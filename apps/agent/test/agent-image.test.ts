import { execFile } from 'node:child_process';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startOriginServer } from '@resultity/snapshot/origin';
import { agentRunArgs, tempDir } from '@resultity/testkit';
import { createDevNetwork, devSnapshot, writeAgentConfig } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type BuiltImage, buildAgentImage } from '../../../images/build.mjs';
import pkg from '../package.json' with { type: 'json' };

const run = promisify(execFile);
const docker = async (...args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })).stdout.trim();

const runId = `${process.pid}x${Date.now().toString(36)}`;
const registry = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';
const base = `resultity-local/node-base:${process.versions.node}`;

describe('the Agent image', () => {
  let built: BuiltImage;
  let baseExisted: boolean;
  let work: { path: string; cleanup: () => Promise<void> };

  beforeAll(async () => {
    baseExisted = await docker('image', 'inspect', base).then(
      () => true,
      () => false,
    );
    work = await tempDir('agent-image-');
    built = await buildAgentImage({ registry, tag: `test-${runId}` });
  }, 300_000);
  afterAll(async () => {
    if (built) {
      await docker('image', 'rm', `${built.image}:${built.tag}`).catch(() => undefined);
      await docker('image', 'rm', `${built.image}@${built.digest}`).catch(() => undefined);
      if (!baseExisted) await docker('image', 'rm', built.base).catch(() => undefined);
    }
    await work?.cleanup();
  });

  it('is pushed under its tag and answers to its registry digest', async () => {
    expect(built.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const repoDigests = JSON.parse(await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', `${built.image}:${built.tag}`)) as string[];
    expect(repoDigests).toContain(`${built.image}@${built.digest}`);
  });

  it('carries its version in the OCI labels and prints it with --version', async () => {
    const labels = JSON.parse(await docker('image', 'inspect', '--format', '{{json .Config.Labels}}', `${built.image}@${built.digest}`)) as Record<
      string,
      string
    >;
    expect(labels['org.opencontainers.image.version']).toBe(pkg.version);
    expect(labels['org.opencontainers.image.title']).toBe('resultity-agent');
    expect(await docker('run', '--rm', '--network', 'none', `${built.image}@${built.digest}`, '--version')).toBe(pkg.version);
  });

  it('defaults to the daemon on /etc/resultity/agent.json', async () => {
    const config = JSON.parse(await docker('image', 'inspect', '--format', '{{json .Config}}', `${built.image}@${built.digest}`)) as {
      Entrypoint: string[];
      Cmd: string[];
    };
    expect(config.Entrypoint.at(-1)).toMatch(/@resultity\/agent\/bin\/resultity-agent\.js$/);
    expect(config.Cmd).toEqual(['run', '--config', '/etc/resultity/agent.json']);
  });

  it('syncs once with the mounts of the documented run line', async () => {
    const net = await createDevNetwork(join(work.path, 'net'), 'testnet');
    const { digest } = await net.publish(devSnapshot({ network: 'testnet', sequence: 1 }));
    const origin = await startOriginServer({ dir: net.originDir });
    try {
      const etc = join(work.path, 'etc');
      const state = join(work.path, 'var-lib');
      await mkdir(etc, { recursive: true });
      await copyFile(net.rootFile, join(etc, 'root-1.json'));
      await writeAgentConfig(join(etc, 'agent.json'), {
        network: 'testnet',
        origin: origin.url,
        node_id: 'node-image-1',
        trust_root: ['root-1.json'],
        state_dir: state,
        bridge: { enabled: false },
        status: { listen: null },
      });
      const out = await docker(
        'run',
        '--rm',
        ...agentRunArgs({ stateDir: state, configDir: etc, image: `${built.image}@${built.digest}` }),
        'sync',
        '--once',
        '--config',
        '/etc/resultity/agent.json',
      );
      expect(out).toContain(`applied ${digest}`);
    } finally {
      await origin.close();
    }
  });
});
