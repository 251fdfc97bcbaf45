import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { type BridgeEndpoint, startBridgeEndpoint } from '@resultity/bridge-endpoint';
import type { RuntimeEnvironment } from '@resultity/bridge-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type BuiltImage, buildExampleRuntimeImage } from '../../../images/build.mjs';
import pkg from '../package.json' with { type: 'json' };
import { TOKEN, until } from './helpers.js';

const run = promisify(execFile);
const docker = async (...args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })).stdout.trim();

const runId = `${process.pid}x${Date.now().toString(36)}`;
const label = `io.resultity.test-run=${runId}`;
const registry = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';

let built: BuiltImage;
let baseExisted: boolean;
let dir: string;

beforeAll(async () => {
  baseExisted = await docker('image', 'inspect', `resultity-local/node-base:${process.versions.node}`).then(
    () => true,
    () => false,
  );
  // Built once for the file: the bundle, the offline base and the image take a while.
  built = await buildExampleRuntimeImage({ registry, tag: `test-${runId}` });
  dir = await mkdtemp(join(tmpdir(), 'resultity-runtime-image-'));
}, 300_000);

afterAll(async () => {
  const ids = (await docker('ps', '-aq', '--filter', `label=${label}`)).split('\n').filter(Boolean);
  if (ids.length > 0) await docker('rm', '-f', ...ids);
  if (built) {
    await docker('image', 'rm', `${built.image}:${built.tag}`).catch(() => undefined);
    await docker('image', 'rm', `${built.image}@${built.digest}`).catch(() => undefined);
    if (!baseExisted) await docker('image', 'rm', built.base).catch(() => undefined);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A free TCP port on 127.0.0.1 for the runtime's job API (it runs on the host network). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function environment(n: number, models: { name: string; sha256: string; path: string }[]): RuntimeEnvironment {
  return {
    digest: `sha256:${n.toString(16).padStart(64, '0')}`,
    sequence: n,
    job: { max_tokens: 100, max_queue_size: 8, execution_timeout_ms: 60_000 },
    models: models.map((m) => ({ ...m, version: '1' })),
    participation: { mode: 'testnet', subclouds: [] },
  };
}

describe('the example runtime image', () => {
  it('carries the version and source labels and answers --version with the package version', async () => {
    const ref = `${built.image}@${built.digest}`;
    expect(built.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const labels = JSON.parse(await docker('image', 'inspect', '--format', '{{json .Config.Labels}}', ref)) as Record<string, string>;
    expect(labels).toMatchObject({ 'org.opencontainers.image.version': pkg.version, 'org.opencontainers.image.source': expect.stringMatching(/^https:\/\//) });
    expect(await docker('run', '--rm', '--label', label, '--network', 'none', ref, '--version')).toBe(pkg.version);
  });

  describe('run as the Agent runs it (SPEC §6)', () => {
    let endpoint: BridgeEndpoint;
    let api: string;
    const runDir = () => join(dir, 'run');
    const modelsDir = () => join(dir, 'models');
    const weights = Buffer.from('the weights of tiny');
    const tiny = () => ({ name: 'tiny', sha256: createHash('sha256').update(weights).digest('hex'), path: join(modelsDir(), 'tiny.bin') });

    beforeAll(async () => {
      await mkdir(runDir(), { recursive: true });
      await mkdir(modelsDir(), { recursive: true });
      await writeFile(join(runDir(), 'bridge.token'), `${TOKEN}\n`, { mode: 0o600 });
      await chmod(join(runDir(), 'bridge.token'), 0o600);
      await writeFile(tiny().path, weights);
      endpoint = await startBridgeEndpoint({ listen: { socketPath: join(runDir(), 'bridge.sock') }, token: TOKEN, ackTimeoutMs: 30_000 });
      // The environment is in place before the runtime starts, as the Agent has it after an apply.
      await endpoint.setEnvironment(environment(1, [tiny()]));
      const port = await freePort();
      api = `http://127.0.0.1:${port}`;
      await docker(
        'run',
        '-d',
        '--label',
        label,
        '--network',
        'host',
        '--cap-drop',
        'ALL',
        '--security-opt',
        'no-new-privileges',
        '--pids-limit',
        '256',
        '--mount',
        `type=bind,source=${runDir()},target=/run/resultity,readonly`,
        '--mount',
        `type=bind,source=${modelsDir()},target=${modelsDir()},readonly`,
        '-e',
        'RESULTITY_BRIDGE_SOCKET=/run/resultity/bridge.sock',
        '-e',
        'RESULTITY_BRIDGE_TOKEN_FILE=/run/resultity/bridge.token',
        '-e',
        `RESULTITY_MODELS_DIR=${modelsDir()}`,
        `${built.image}@${built.digest}`,
        '--port',
        String(port),
        '--token-delay-ms',
        '1',
      );
      await until(() => endpoint.connected().some((c) => c.digest === environment(1, []).digest), 'the runtime in the container took the environment', 60_000);
    }, 120_000);

    afterAll(async () => {
      await endpoint?.close();
    });

    it('connects over the mounted socket with the mounted token, after hashing its model, and serves jobs', async () => {
      const response = await fetch(`${api}/v1/jobs`, { method: 'POST', body: JSON.stringify({ model: 'tiny', max_tokens: 3 }) });
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ model: 'tiny', tokens: 3, digest: environment(1, []).digest });
    });

    it('NACKs an environment whose model file has other bytes than its sha256 says, and keeps the one it has', async () => {
      const [answer] = await endpoint.setEnvironment(environment(2, [{ ...tiny(), sha256: 'b'.repeat(64) }]));
      expect(answer).toMatchObject({ ok: false, code: 'ENVIRONMENT_REJECTED', message: expect.stringContaining(`to have sha256 ${'b'.repeat(64)}`) });
      expect(await (await fetch(`${api}/v1/environment`)).json()).toMatchObject({ digest: environment(1, []).digest });
    });

    it('NACKs an environment naming a model file that is not there', async () => {
      const [answer] = await endpoint.setEnvironment(environment(3, [{ ...tiny(), path: join(modelsDir(), 'missing.bin') }]));
      expect(answer).toMatchObject({ ok: false, code: 'ENVIRONMENT_REJECTED', message: expect.stringContaining('could not open') });
    });

    it('NACKs a model outside the mounted model store', async () => {
      const [answer] = await endpoint.setEnvironment(environment(4, [{ ...tiny(), path: '/etc/hostname' }]));
      expect(answer).toMatchObject({ ok: false, code: 'ENVIRONMENT_REJECTED', message: expect.stringContaining('inside the model store') });
    });

    it('takes a new model that appears in the store without being restarted', async () => {
      const more = Buffer.from('the weights of small');
      const small = { name: 'small', sha256: createHash('sha256').update(more).digest('hex'), path: join(modelsDir(), 'small.bin') };
      await writeFile(small.path, more);
      const [answer] = await endpoint.setEnvironment(environment(5, [tiny(), small]));
      expect(answer).toMatchObject({ ok: true });
      const response = await fetch(`${api}/v1/jobs`, { method: 'POST', body: JSON.stringify({ model: 'small', max_tokens: 2 }) });
      expect(response.status).toBe(200);
    });
  });
});
