import { type ChildProcess, execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { startOriginServer } from '@resultity/snapshot/origin';
import { freeLoopbackPort, startNginx } from '@resultity/testkit';
import { type DevNetwork, createDevNetwork, writeAgentConfig } from '@resultity/testkit/devnet';

import type { ConfigInput } from '../src/config.js';

const run = promisify(execFile);
export const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

/** A published origin tree served by the dev origin or by nginx. */
export interface ServedOrigin {
  readonly url: string;
  close(): Promise<void>;
}

export const freePort = freeLoopbackPort;

export async function serveWithDevOrigin(dir: string): Promise<ServedOrigin> {
  await mkdir(dir, { recursive: true });
  const origin = await startOriginServer({ dir });
  return { url: origin.url, close: () => origin.close() };
}

/** Debian's nginx on a free loopback port, serving the tree statically (ETag and 304 are nginx's own). */
export async function serveWithNginx(dir: string, work: string): Promise<ServedOrigin> {
  await mkdir(dir, { recursive: true });
  const nginx = await startNginx({ root: dir, work, connections: 64, defaultType: 'application/json' });
  return { url: nginx.url, close: () => nginx.close() };
}

/** Runs the built CLI; never throws on a non-zero exit. */
export async function cli(args: string[], options: { timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { timeout: options.timeoutMs ?? 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** A network, an origin serving it, and an Agent configuration pointing at it. */
export interface Setup {
  readonly net: DevNetwork;
  readonly origin: ServedOrigin;
  readonly config: string;
  readonly stateDir: string;
  close(): Promise<void>;
}

export async function setup(work: string, kind: 'dev' | 'nginx', overrides: Partial<ConfigInput> = {}): Promise<Setup> {
  const net = await createDevNetwork(join(work, 'net'), 'testnet');
  const origin = kind === 'dev' ? await serveWithDevOrigin(net.originDir) : await serveWithNginx(net.originDir, work);
  const stateDir = join(work, 'state');
  const config = await writeAgentConfig(join(work, 'agent.json'), {
    network: 'testnet',
    origin: origin.url,
    node_id: 'node-test-1',
    trust_root: ['net/root/1.json'],
    state_dir: 'state',
    allowed_registries: ['127.0.0.1:5000'],
    bridge: { enabled: false },
    status: { listen: null },
    limits: { max_snapshot_bytes: 64 * 1024, request_timeout_ms: 5000 },
    // The test model servers listen on 127.0.0.1.
    downloads: { allow_private_addresses: true },
    retry_budget: 3,
    ...overrides,
  } satisfies ConfigInput);
  return { net, origin, config, stateDir, close: () => origin.close() };
}

export function waitForExit(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** The parts of an Agent's `state.json` the end-to-end tests look at. */
export interface StateFile {
  applied: { digest: string; sequence: number } | null;
  high_water: { digest: string; sequence: number } | null;
  pinned: { digest: string; until_above: number } | null;
  audit_head: { index: number; hash: string } | null;
}

/** The Agent's `state.json`, or null while there is none (or it is being replaced). */
export async function readState(stateDir: string): Promise<StateFile | null> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as StateFile;
  } catch {
    return null;
  }
}
