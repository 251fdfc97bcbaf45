import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { BRIDGE_ENV, type RuntimeBridge, bridgeTarget, connect } from '../src/index.js';
import { FAST_BACKOFF, endpoints, environment, tokenDir, until } from './helpers.js';

const servers = endpoints();
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await servers.closeAll();
});

/** An endpoint on a unix socket in a 0700 temp dir beside its token file, as the Agent lays them out. */
async function socketEndpoint() {
  const { dir, tokenFile, cleanup } = await tokenDir();
  cleanups.push(cleanup);
  const socket = join(dir, 'bridge.sock');
  const endpoint = await servers.start({ listen: { socketPath: socket } });
  return { endpoint, env: { [BRIDGE_ENV.socket]: socket, [BRIDGE_ENV.tokenFile]: tokenFile }, dir };
}

describe('connecting from the environment alone', () => {
  it('takes the socket and the token file from RESULTITY_BRIDGE_SOCKET and RESULTITY_BRIDGE_TOKEN_FILE', async () => {
    const { endpoint, env } = await socketEndpoint();
    const env1 = environment(1);
    await endpoint.setEnvironment(env1);
    const bridge: RuntimeBridge = await connect({ runtimeId: 'from-env', env, backoff: FAST_BACKOFF });
    cleanups.push(() => bridge.close());
    expect(bridge.environment.digest).toBe(env1.digest);
    await until(() => endpoint.connected()[0]?.digest === env1.digest, 'the endpoint received the ack');
    expect(endpoint.connected()).toEqual([{ runtimeId: 'from-env', digest: env1.digest }]);
  });

  it('lets explicit options win over the environment', () => {
    expect(bridgeTarget({ url: 'ws://127.0.0.1:1', tokenFile: '/a' }, { [BRIDGE_ENV.socket]: '/s', [BRIDGE_ENV.tokenFile]: '/t' })).toEqual({
      url: 'ws://127.0.0.1:1',
      tokenFile: '/a',
    });
    expect(bridgeTarget({}, { [BRIDGE_ENV.socket]: '/s', [BRIDGE_ENV.tokenFile]: '/t' })).toEqual({ url: '/s', tokenFile: '/t' });
  });

  it('refuses a missing or relative socket with URL_INVALID and a missing token file with TOKEN_INVALID', () => {
    expect(() => bridgeTarget({}, {})).toThrow(expect.objectContaining({ code: 'URL_INVALID', message: expect.stringContaining(BRIDGE_ENV.socket) }));
    expect(() => bridgeTarget({}, { [BRIDGE_ENV.socket]: 'run/bridge.sock' })).toThrow(expect.objectContaining({ code: 'URL_INVALID' }));
    expect(() => bridgeTarget({}, { [BRIDGE_ENV.socket]: '/s' })).toThrow(
      expect.objectContaining({ code: 'TOKEN_INVALID', message: expect.stringContaining(BRIDGE_ENV.tokenFile) }),
    );
  });

  it('runs the sidecar CLI with no --bridge and no --token-file, from the environment', async () => {
    const { endpoint, env, dir } = await socketEndpoint();
    const env5 = environment(5);
    await endpoint.setEnvironment(env5);
    const file = join(dir, 'env.json');
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
    const child = spawn(process.execPath, [cli, '--write', file, '--runtime-id', 'sidecar-env'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    await until(() => endpoint.connected()[0]?.digest === env5.digest, 'the sidecar acknowledged the environment');
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(env5);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
