#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { type ConfigInput, type StatusReport, errorMessage, loadConfig, renderStatus, startAgent, terminalProgress } from '@resultity/agent';
import { DockerEngine } from '@resultity/applier';
import { startExampleRuntime } from '@resultity/runtime-bridge';
import { startOriginServer } from '@resultity/snapshot/origin';
import { type RegistryImage, buildBusyboxImage, createDevNetwork, devSnapshot, makeModel, startFileServer, writeAgentConfig } from '@resultity/testkit/devnet';
import { Command } from 'commander';
import { destination, pino } from 'pino';

const REGISTRY = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Docker and the local registry when both are there; otherwise null, and the reason is said. */
async function containerImage(workDir: string): Promise<RegistryImage | null> {
  try {
    await new DockerEngine({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' }).ping();
  } catch (error) {
    say(`Docker is not reachable (${errorMessage(error)}): the dev network runs without containers.`);
    return null;
  }
  try {
    const res = await fetch(`http://${REGISTRY}/v2/`, { signal: AbortSignal.timeout(3000) });
    if (res.status !== 200 && res.status !== 401) throw new Error(`status ${res.status}`);
  } catch (error) {
    say(`No container registry at ${REGISTRY} (${errorMessage(error)}): the dev network runs without containers.`);
    return null;
  }
  try {
    const image = await buildBusyboxImage({ registry: REGISTRY, repository: 'resultity-dev/busybox', tag: 'devnet', workDir });
    say(`Docker is here: containers run ${image.image}:${image.tag} (built FROM scratch, pushed to ${REGISTRY}).`);
    return image;
  } catch (error) {
    say(`Could not build the busybox image (${errorMessage(error)}): the dev network runs without containers.`);
    return null;
  }
}

/** The dev network's containers go when it stops (a real node's keep running across Agent restarts). */
async function removeDevContainers(): Promise<void> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  try {
    const { stdout } = await run('docker', ['ps', '-aq', '--filter', 'label=io.resultity.name=dev-worker']);
    const ids = stdout.trim().split('\n').filter(Boolean);
    if (ids.length > 0) await run('docker', ['rm', '-f', ...ids]);
  } catch (error) {
    say(`could not remove the dev containers: ${errorMessage(error)}`);
  }
}

async function waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main(): Promise<number> {
  const program = new Command('resultity-devnet')
    .description('A local network: dev keys and root, a published snapshot, the origin, the Agent and the example runtime.')
    .option('--dir <dir>', 'where the dev network keeps its files', resolve(process.cwd(), '.devnet'))
    .option('--demo', 'non-interactive: exit 0 once the second snapshot has landed')
    .option('--no-docker', 'never use Docker, even when it is there')
    .parse();
  const opts = program.opts<{ dir: string; demo?: boolean; docker: boolean }>();
  const dir = resolve(opts.dir);

  // Keys survive between runs; everything published or applied starts over.
  for (const sub of ['net/origin', 'state', 'files', 'agent.json', 'agent.log']) await rm(join(dir, sub), { recursive: true, force: true });
  await mkdir(join(dir, 'files'), { recursive: true });
  say(`dev network in ${dir}`);

  const net = await createDevNetwork(join(dir, 'net'), 'devnet');
  say(`dev key ${net.key.keyid.slice(0, 16)}…, root ${net.rootFile}`);
  if (!opts.docker) say('--no-docker: the dev network runs without containers.');
  const image = opts.docker ? await containerImage(dir) : null;
  const containers = (env: string) =>
    image
      ? [{ name: 'dev-worker', image: image.image, tag: image.tag, digest: image.digest, env: { DEVNET: env }, command: ['/bin/busybox', 'sh', '-c', 'trap "exit 0" TERM; while true; do /bin/busybox sleep 1; done'], ports: [], restart: 'always' as const }]
      : [];

  const files = await startFileServer(join(dir, 'files'));
  const model1 = await makeModel(join(dir, 'files'), files, 'tiny-llm', '1.0.0', randomBytes(256 * 1024));
  const first = await net.publish(devSnapshot({ network: 'devnet', sequence: 1, models: [model1], containers: containers('one'), maxTokens: 1024 }));
  say(`published snapshot 1: ${first.digest}`);

  const origin = await startOriginServer({ dir: net.originDir });
  say(`origin serving ${net.originDir} at ${origin.url}`);

  const statusPort = await freePort();
  const configFile = await writeAgentConfig(join(dir, 'agent.json'), {
    network: 'devnet',
    origin: origin.url,
    node_id: 'devnet-node-1',
    trust_root: ['net/root/1.json'],
    state_dir: 'state',
    allowed_registries: [REGISTRY],
    profile: { vram_gb: 24, regions: ['local'], gpu: [] },
    status: { listen: `127.0.0.1:${statusPort}` },
    timers: { poll_interval_s: 2, heartbeat_interval_s: 5, retry_initial_ms: 500, retry_max_ms: 5000 },
    // The dev network's model files are served on 127.0.0.1.
    downloads: { allow_private_addresses: true },
  } satisfies ConfigInput);
  const config = await loadConfig(configFile);
  const logger = pino({ level: 'info', base: { node_id: config.node_id } }, destination({ dest: join(dir, 'agent.log'), sync: true, mkdir: true }));
  const progress = terminalProgress(process.stdout);
  const agent = await startAgent(config, { logger, ...(progress ? { onProgress: progress } : {}) });
  say(`Agent running (logs: ${join(dir, 'agent.log')}); status at ${agent.statusUrl}/status, bridge at ${agent.bridgeAddress}`);

  const runtime = await startExampleRuntime({ bridgeUrl: agent.bridgeAddress ?? '', tokenFile: config.bridge.token_file, runtimeId: 'example-runtime', http: { host: '127.0.0.1', port: 0 } });
  say(`example runtime at ${runtime.url}, connected to the Agent's bridge`);

  const status = async (): Promise<StatusReport> => (await (await fetch(`${agent.statusUrl}/status`)).json()) as StatusReport;
  let code = 0;
  try {
    await waitFor('snapshot 1 to be applied', async () => (await status()).applied?.digest === first.digest, 60_000);
    await waitFor('the runtime to take snapshot 1', async () => runtime.stats().digest === first.digest, 30_000);
    say('\n— snapshot 1 applied —');
    say(renderStatus(await status()));

    const model2 = await makeModel(join(dir, 'files'), files, 'tiny-llm', '1.1.0', randomBytes(256 * 1024));
    const second = await net.publish(devSnapshot({ network: 'devnet', sequence: 2, models: [model2], containers: containers('two'), maxTokens: 2048 }));
    say(`\npublished snapshot 2: ${second.digest} (max_tokens 1024 → 2048, model tiny-llm 1.0.0 → 1.1.0)`);
    await waitFor('snapshot 2 to be applied', async () => (await status()).applied?.digest === second.digest, 60_000);
    await waitFor('the runtime to take snapshot 2', async () => runtime.stats().digest === second.digest, 30_000);
    say('\n— snapshot 2 landed; the runtime acknowledged it —');
    say(renderStatus(await status()));

    if (!opts.demo) {
      say('\nThe dev network keeps running. Publish more with the snapshot CLI into the origin folder; Ctrl-C stops it.');
      await new Promise<void>((resolveStop) => {
        process.once('SIGINT', () => resolveStop());
        process.once('SIGTERM', () => resolveStop());
      });
    }
  } catch (error) {
    process.stderr.write(`devnet: ${errorMessage(error)}\n`);
    code = 1;
  } finally {
    await runtime.close().catch(() => undefined);
    await agent.stop();
    await origin.close();
    await files.close();
    if (image) await removeDevContainers();
    say('dev network stopped.');
  }
  return code;
}

process.exitCode = await main();
