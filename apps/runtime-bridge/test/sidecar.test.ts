import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { type BridgeError, type RuntimeBridge, startSidecar } from '../src/index.js';
import { FAST_BACKOFF, TOKEN, endpoints, environment, tokenDir, until } from './helpers.js';

const servers = endpoints();
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await servers.closeAll();
});

/** A runtime's admin endpoint that records what it is sent and answers with `status()`. */
async function adminServer(status: () => number): Promise<{ url: string; bodies: unknown[] }> {
  const bodies: unknown[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      res.writeHead(status()).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/admin/environment`, bodies };
}

async function sidecar(options: Partial<Parameters<typeof startSidecar>[0]>): Promise<RuntimeBridge> {
  const bridge = await startSidecar({ url: '', token: TOKEN, runtimeId: 'sidecar', backoff: FAST_BACKOFF, ...options } as Parameters<typeof startSidecar>[0]);
  cleanups.push(() => bridge.close());
  return bridge;
}

describe('startSidecar', () => {
  it('writes the environment to the file and POSTs it before acknowledging', async () => {
    const { dir, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const admin = await adminServer(() => 204);
    const endpoint = await servers.start();
    const first = environment(1);
    await endpoint.setEnvironment(first);
    const file = join(dir, 'environment.json');
    await sidecar({ url: endpoint.address, writeFile: file, postUrl: admin.url });
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(first);
    expect(admin.bodies).toEqual([first]);

    const second = environment(2, { max_tokens: 7 });
    expect((await endpoint.setEnvironment(second))[0]?.ok).toBe(true);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(second);
    expect(admin.bodies).toEqual([first, second]);
    // No temp files are left behind.
    expect((await readdir(dir)).sort()).toEqual(['environment.json', 'token']);
  });

  it('nacks with APPLY_FAILED when the runtime refuses the POST, and puts the previous file back', async () => {
    const { dir, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    let status = 200;
    const admin = await adminServer(() => status);
    const endpoint = await servers.start();
    const first = environment(1);
    await endpoint.setEnvironment(first);
    const file = join(dir, 'environment.json');
    const bridge = await sidecar({ url: endpoint.address, writeFile: file, postUrl: admin.url });

    status = 500;
    const [ack] = await endpoint.setEnvironment(environment(2));
    expect(ack).toMatchObject({ ok: false, code: 'APPLY_FAILED' });
    expect(ack?.message).toContain('500');
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(first);
    expect(bridge.environment).toEqual(first);
  });

  it('nacks the first environment when the file cannot be written, and acks once it can', async () => {
    const { dir, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const endpoint = await servers.start();
    const blocked = join(dir, 'blocked');
    await writeFile(blocked, 'a file where a directory should be');
    const abort = new AbortController();
    const pending = startSidecar({
      url: endpoint.address,
      token: TOKEN,
      runtimeId: 'sidecar',
      writeFile: join(blocked, 'env.json'),
      signal: abort.signal,
      backoff: FAST_BACKOFF,
    });
    pending.catch(() => undefined);
    await until(() => endpoint.connected().length === 1, 'the sidecar said hello');
    const [ack] = await endpoint.setEnvironment(environment(1));
    expect(ack).toMatchObject({ ok: false, code: 'APPLY_FAILED' });
    abort.abort();
    const error = await pending.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((error as BridgeError).code).toBe('ABORTED');
  });

  it('refuses to start without a target or with an admin URL off this host', async () => {
    const codeOf = async (options: Partial<Parameters<typeof startSidecar>[0]>) =>
      (
        (await sidecar(options).then(
          () => undefined,
          (e: unknown) => e,
        )) as BridgeError
      ).code;
    expect(await codeOf({ url: 'ws://127.0.0.1:1' })).toBe('SIDECAR_CONFIG');
    expect(await codeOf({ url: 'ws://127.0.0.1:1', postUrl: 'http://192.168.0.2/admin' })).toBe('SIDECAR_CONFIG');
  });
});

describe('the resultity-runtime-bridge CLI', () => {
  it('writes the environment file and exits 0 on SIGTERM', async () => {
    const { dir, tokenFile, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const endpoint = await servers.start();
    const env = environment(5);
    await endpoint.setEnvironment(env);
    const file = join(dir, 'env.json');
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
    const child = spawn(process.execPath, [cli, '--bridge', endpoint.address, '--token-file', tokenFile, '--write', file, '--runtime-id', 'cli'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    await until(() => endpoint.connected()[0]?.digest === env.digest, 'the CLI acknowledged the environment');
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(env);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('exits 2 on a usage error and names the problem', async () => {
    const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
    const { tokenFile, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const child = spawn(process.execPath, [cli, '--bridge', 'ws://127.0.0.1:1', '--token-file', tokenFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('SIDECAR_CONFIG');
  });
});
