import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type BridgeEndpoint, type BridgeEndpointOptions, startBridgeEndpoint } from '@resultity/bridge-endpoint';
import type { RuntimeEnvironment } from '@resultity/bridge-protocol';

export const TOKEN = 'runtime-test-token-0123456789';
/** Small backoff so reconnect tests take milliseconds. */
export const FAST_BACKOFF = { initialMs: 10, maxMs: 100, factor: 2, jitter: 0.5 };

/** An environment whose digest is derived from `n`; override any job limit. */
export function environment(n: number, job: Partial<RuntimeEnvironment['job']> = {}, models = ['tiny']): RuntimeEnvironment {
  return {
    digest: `sha256:${n.toString(16).padStart(64, '0')}`,
    sequence: n,
    job: { max_tokens: 100, max_queue_size: 8, execution_timeout_ms: 60_000, ...job },
    models: models.map((name) => ({ name, version: '1', sha256: 'a'.repeat(64), path: `/models/${name}` })),
    participation: { mode: 'testnet', subclouds: [] },
  };
}

/** Starts real endpoints on 127.0.0.1 and closes them all afterwards. */
export function endpoints() {
  const started: BridgeEndpoint[] = [];
  return {
    async start(options: Partial<BridgeEndpointOptions> = {}): Promise<BridgeEndpoint> {
      const endpoint = await startBridgeEndpoint({ listen: { host: '127.0.0.1', port: 0 }, token: TOKEN, ...options });
      started.push(endpoint);
      return endpoint;
    },
    async closeAll(): Promise<void> {
      await Promise.all(started.splice(0).map((endpoint) => endpoint.close()));
    },
  };
}

/** A temp dir with a 0600 token file in it. */
export async function tokenDir(): Promise<{ dir: string; tokenFile: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'resultity-bridge-'));
  const tokenFile = join(dir, 'token');
  await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  await chmod(tokenFile, 0o600);
  return { dir, tokenFile, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Resolves when `predicate` holds, checking after each event-loop turn; fails after `limitMs`. */
export async function until(predicate: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The port of a ws://127.0.0.1:PORT address. */
export function portOf(address: string): number {
  return Number(new URL(address).port);
}
