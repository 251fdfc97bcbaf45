import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { endpoints, environment, tokenDir, until } from './helpers.js';

const servers = endpoints();
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await servers.closeAll();
});

describe('the resultity-example-runtime CLI', () => {
  it('prints its API URL, serves jobs under the live environment, and exits 0 on SIGTERM', async () => {
    const { tokenFile, cleanup } = await tokenDir();
    cleanups.push(cleanup);
    const endpoint = await servers.start();
    await endpoint.setEnvironment(environment(1, { max_tokens: 8 }));
    const bin = fileURLToPath(new URL('../dist/example-runtime-cli.js', import.meta.url));
    const child = spawn(
      process.execPath,
      [bin, '--bridge', endpoint.address, '--token-file', tokenFile, '--runtime-id', 'cli-runtime', '--token-delay-ms', '1'],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    const exited = once(child, 'exit');
    cleanups.push(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const { url, runtimeId } = JSON.parse(line) as { url: string; runtimeId: string };
    expect(runtimeId).toBe('cli-runtime');
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const job = async (maxTokens: number) => {
      const response = await fetch(`${url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ model: 'tiny', max_tokens: maxTokens }) });
      return response.status;
    };
    expect(await job(8)).toBe(200);
    expect(await job(9)).toBe(400);
    await endpoint.setEnvironment(environment(2, { max_tokens: 16 }));
    await until(() => endpoint.connected()[0]?.digest === environment(2).digest, 'the runtime took the new environment');
    expect(await job(9)).toBe(200);

    child.kill('SIGTERM');
    expect((await exited)[0]).toBe(0);
  });
});
