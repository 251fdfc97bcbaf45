#!/usr/bin/env node
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { type ConfigInput, type StatusReport, errorMessage, loadConfig, renderStatus, startAgent, terminalProgress } from '@resultity/agent';
import { DockerEngine } from '@resultity/applier';
import { startExampleRuntime } from '@resultity/runtime-bridge';
import { startOriginServer } from '@resultity/snapshot/origin';
import { until } from '@resultity/testkit';
import { type RegistryImage, createDevNetwork, devSnapshot, makeModel, startFileServer, writeAgentConfig } from '@resultity/testkit/devnet';
import { Command } from 'commander';
import { destination, pino } from 'pino';

const REGISTRY = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';
const run = promisify(execFile);
// images/build.mjs from apps/devnet/dist/devnet.js: the same build `pnpm images` runs.
const BUILD_IMAGES = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'images', 'build.mjs');
/** The snapshot name of the dev network's runtime container. */
const RUNTIME_NAME = 'dev-runtime';
// The dev Agent's containers carry labels of their own: an Agent removes every container under
// its label prefix that its snapshot does not name, and a real or test Agent may share the engine.
const LABELS = 'io.resultity.devnet';

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
async function runtimeImage(): Promise<RegistryImage | null> {
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
  // The runtime runs as root with every capability dropped: it can read the Agent's 0600
  // bridge token only when the Agent (this process) is root too.
  if (process.getuid?.() !== 0) {
    say('Not running as root, so a runtime container could not read the bridge token: the dev network runs without containers.');
    return null;
  }
  try {
    say(`building the example runtime image (offline, this machine's node) and pushing it to ${REGISTRY}…`);
    const { stdout } = await run(process.execPath, [BUILD_IMAGES, '--registry', REGISTRY, '--tag', 'devnet', '--only', 'example-runtime', '--json'], {
      timeout: 300_000,
    });
    const built = JSON.parse(stdout.trim().split('\n').pop() ?? '') as RegistryImage;
    say(`Docker is here: containers run ${built.image}@${built.digest} (the example runtime, pushed to ${REGISTRY}).`);
    return built;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    say(`Could not build the runtime image (${stderr || errorMessage(error)}): the dev network runs without containers.`);
    return null;
  }
}

/**
 * The dev network's containers and its image go when it stops (a real node's keep running
 * across Agent restarts): every start builds the image afresh, so nothing piles up.
 */
async function removeDevContainers(image: RegistryImage): Promise<void> {
  try {
    const { stdout } = await run('docker', ['ps', '-aq', '--filter', `label=${LABELS}.name=${RUNTIME_NAME}`]);
    const ids = stdout.trim().split('\n').filter(Boolean);
    if (ids.length > 0) await run('docker', ['rm', '-f', ...ids]);
    // By id: the tag and the digest name one image, and removing it by one name drops the other.
    const { stdout: imageId } = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', `${image.image}@${image.digest}`]);
    await run('docker', ['image', 'rm', '--force', imageId.trim()]);
  } catch (error) {
    say(`could not remove the dev containers and image: ${errorMessage(error)}`);
  }
}

/** The id and start time of the runtime container, to show a reload did not recreate it. */
async function runtimeContainer(): Promise<{ id: string; startedAt: string } | null> {
  const { stdout } = await run('docker', ['ps', '-q', '--no-trunc', '--filter', `label=${LABELS}.name=${RUNTIME_NAME}`]);
  const id = stdout.trim().split('\n').filter(Boolean)[0];
  if (id === undefined) return null;
  return { id, startedAt: (await run('docker', ['inspect', '--format', '{{.State.StartedAt}}', id])).stdout.trim() };
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
  const image = opts.docker ? await runtimeImage() : null;
  // With Docker the example runtime is the snapshot's container: on the host network (the
  // engine has no bridge network), so its job API on 127.0.0.1 is reachable from here.
  const jobPort = await freePort();
  const containers = () =>
    image
      ? [
          {
            name: RUNTIME_NAME,
            image: image.image,
            tag: image.tag,
            digest: image.digest,
            env: {},
            command: ['--port', String(jobPort), '--runtime-id', 'example-runtime'],
            ports: [{ container: jobPort, host: jobPort, protocol: 'tcp' as const }],
            restart: 'always' as const,
            bridge: true,
            models: true,
          },
        ]
      : [];

  const files = await startFileServer(join(dir, 'files'));
  const model1 = await makeModel(join(dir, 'files'), files, 'tiny-llm', '1.0.0', randomBytes(256 * 1024));
  const first = await net.publish(devSnapshot({ network: 'devnet', sequence: 1, models: [model1], containers: containers(), maxTokens: 1024 }));
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
    // The runtime container declares its job port: it may run on the host network.
    containers: { allow_host_network: true, label_prefix: LABELS, name_prefix: 'resultity-devnet' },
  } satisfies ConfigInput);
  const config = await loadConfig(configFile);
  const logger = pino({ level: 'info', base: { node_id: config.node_id } }, destination({ dest: join(dir, 'agent.log'), sync: true, mkdir: true }));
  const progress = terminalProgress(process.stdout);
  const agent = await startAgent(config, { logger, ...(progress ? { onProgress: progress } : {}) });
  say(`Agent running (logs: ${join(dir, 'agent.log')}); status at ${agent.statusUrl}/status, bridge at ${agent.bridgeAddress}`);

  // Without Docker the example runtime is a process of this one, on the Agent's socket.
  const hostRuntime = image
    ? null
    : await startExampleRuntime({
        bridgeUrl: agent.bridgeAddress ?? '',
        tokenFile: config.bridge.token_file,
        runtimeId: 'example-runtime',
        http: { host: '127.0.0.1', port: 0 },
      });
  const runtimeUrl = hostRuntime?.url ?? `http://127.0.0.1:${jobPort}`;
  if (hostRuntime) say(`example runtime at ${runtimeUrl} (a host process), connected to the Agent's bridge`);
  const runtimeDigest = async () => ((await (await fetch(`${runtimeUrl}/v1/environment`)).json()) as { digest?: string }).digest;
  const curl = `curl -s -X POST ${runtimeUrl}/v1/jobs -d '{"model":"tiny-llm","max_tokens":8}'`;
  const sendJob = async () =>
    JSON.stringify(await (await fetch(`${runtimeUrl}/v1/jobs`, { method: 'POST', body: '{"model":"tiny-llm","max_tokens":8}' })).json());

  const status = async (): Promise<StatusReport> => (await (await fetch(`${agent.statusUrl}/status`)).json()) as StatusReport;
  let code = 0;
  try {
    await until('snapshot 1 to be applied', async () => (await status()).applied?.digest === first.digest, 120_000);
    await until('the runtime to take snapshot 1', async () => (await runtimeDigest()) === first.digest, 60_000);
    say('\n— snapshot 1 applied —');
    say(renderStatus(await status()));
    const before = image ? await runtimeContainer() : null;
    if (before) {
      say(
        `\nthe runtime runs in container ${before.id.slice(0, 12)}: the Agent's bridge socket at /run/resultity/bridge.sock, its models read-only at ${join(config.state_dir, 'models')}`,
      );
    }
    say(`send a job and see the limits in force:\n  ${curl}\n  ${await sendJob()}`);

    const model2 = await makeModel(join(dir, 'files'), files, 'tiny-llm', '1.1.0', randomBytes(256 * 1024));
    const second = await net.publish(devSnapshot({ network: 'devnet', sequence: 2, models: [model2], containers: containers(), maxTokens: 2048 }));
    say(`\npublished snapshot 2: ${second.digest} (max_tokens 1024 → 2048, model tiny-llm 1.0.0 → 1.1.0)`);
    await until('snapshot 2 to be applied', async () => (await status()).applied?.digest === second.digest, 120_000);
    await until('the runtime to take snapshot 2', async () => (await runtimeDigest()) === second.digest, 60_000);
    say('\n— snapshot 2 landed; the runtime acknowledged it —');
    say(renderStatus(await status()));
    if (before) {
      const after = await runtimeContainer();
      const kept = after?.id === before.id && after.startedAt === before.startedAt;
      say(
        kept
          ? `the runtime container ${before.id.slice(0, 12)} took the new model and limits over the bridge: not recreated, not restarted`
          : `the runtime container was replaced (${before.id.slice(0, 12)} → ${after?.id.slice(0, 12) ?? 'none'})`,
      );
    }
    say(`the same job now: ${await sendJob()}`);

    if (!opts.demo) {
      say(`\nThe dev network keeps running. Send a job:\n  ${curl}\nPublish more with the snapshot CLI into the origin folder; Ctrl-C stops it.`);
      await new Promise<void>((resolveStop) => {
        process.once('SIGINT', () => resolveStop());
        process.once('SIGTERM', () => resolveStop());
      });
    }
  } catch (error) {
    process.stderr.write(`devnet: ${errorMessage(error)}\n`);
    code = 1;
  } finally {
    await hostRuntime?.close().catch(() => undefined);
    await agent.stop();
    await origin.close();
    await files.close();
    if (image) await removeDevContainers(image);
    say('dev network stopped.');
  }
  return code;
}

process.exitCode = await main();
