import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { tempDir, until } from '@resultity/testkit';
import { type FileServer, type RegistryImage, buildBusyboxImage, devSnapshot, makeModel, startFileServer } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type BuiltImage, buildExampleRuntimeImage } from '../../../images/build.mjs';
import { readAuditEntries } from '../src/audit.js';
import type { StatusReport } from '../src/status.js';
import { CLI, type Setup, freePort, setup, waitForExit } from './helpers.js';

// The whole node on the real engine and registry (SPEC §6): the Agent daemon as a
// process, the example runtime as an image pulled by digest, the bridge and the model store
// mounted into its container.

const run = promisify(execFile);
const docker = async (...args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024, timeout: 120_000 })).stdout.trim();
const REGISTRY = process.env.RESULTITY_TEST_REGISTRY ?? '127.0.0.1:5000';
const runId = `${process.pid}x${Date.now().toString(36)}`;
// The engine is shared with other test runs, each with Agents of its own: this file's Agent
// marks its containers with labels of its own, so no other Agent takes them for its stale ones.
const LABELS = `io.resultity.test-${runId.toLowerCase()}`;
// Inside its container (network none) the runtime has a loopback of its own: a fixed port is fine.
const API = 'http://127.0.0.1:8080';
// 20 ms a token: a 900-token job lasts about 18 s, long enough to be in flight across a reload.
const RUNTIME_COMMAND = ['--port', '8080', '--token-delay-ms', '20', '--runtime-id', 'inference-1'];
const SERVE = ['/bin/busybox', 'sh', '-c', 'trap "exit 0" TERM; while true; do /bin/busybox sleep 1; done'];

interface Observed {
  id: string;
  name: string;
  startedAt: string;
  restarts: number;
  running: boolean;
  env: string[];
  mounts: { Source: string; Destination: string; RW: boolean }[];
}

describe('the runtime as a container of the Agent (SPEC §6)', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let files: FileServer;
  let runtimeImage: BuiltImage;
  let busybox: RegistryImage;
  let baseExisted = true;
  let statusPort: number;
  let agent: { child: ChildProcess; output: () => string } | null = null;
  const marker = () => `AGENT_TEST=${work.path}`;

  function startDaemon() {
    const child = spawn(process.execPath, [CLI, 'run', '--config', s.config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    agent = { child, output: () => out };
    return agent;
  }

  async function status(): Promise<StatusReport> {
    return (await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json()) as StatusReport;
  }

  /** This file's containers (they carry its marker in their environment), by snapshot name. */
  async function containers(): Promise<Observed[]> {
    const ids = (await docker('ps', '-aq', '--filter', `label=${LABELS}.managed-by=resultity-applier`)).split('\n').filter(Boolean);
    const found: Observed[] = [];
    for (const id of ids) {
      const info = JSON.parse(await docker('inspect', id).catch(() => '[]'))[0];
      if (!info || !(info.Config.Env as string[]).includes(marker())) continue;
      found.push({
        id: info.Id,
        name: info.Config.Labels[`${LABELS}.name`],
        startedAt: info.State.StartedAt,
        restarts: info.RestartCount,
        running: info.State.Running,
        env: info.Config.Env,
        mounts: info.Mounts,
      });
    }
    return found;
  }

  async function only(name: string): Promise<Observed> {
    const list = (await containers()).filter((c) => c.name === name);
    expect(list).toHaveLength(1);
    return list[0] as Observed;
  }

  /** Runs node inside the runtime container: its image has node and nothing else. */
  async function inside(id: string, script: string, ...args: string[]): Promise<string> {
    return docker('exec', id, '/usr/local/bin/node', '-e', script, ...args);
  }

  const getJson = (id: string, path: string) =>
    inside(id, 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))', `${API}${path}`).then((t) => JSON.parse(t));

  /** Submits a job from inside the container; resolves with the HTTP status and body. */
  const job = (id: string, body: object) =>
    inside(
      id,
      "fetch(process.argv[1], { method: 'POST', body: process.argv[2] }).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.json() })))",
      `${API}/v1/jobs`,
      JSON.stringify(body),
    ).then((t) => JSON.parse(t) as { status: number; body: Record<string, unknown> });

  const sha256Inside = (id: string, path: string) =>
    inside(id, "process.stdout.write(require('crypto').createHash('sha256').update(require('fs').readFileSync(process.argv[1])).digest('hex'))", path);

  function runtimeContainer(extra: Record<string, unknown> = {}) {
    return {
      name: 'inference',
      image: runtimeImage.image,
      tag: runtimeImage.tag,
      digest: runtimeImage.digest,
      env: { AGENT_TEST: work.path },
      command: RUNTIME_COMMAND,
      ports: [],
      restart: 'always' as const,
      bridge: true,
      models: true,
      ...extra,
    };
  }

  // A container that asks for neither the bridge nor the models, beside the runtime.
  const plain = () => ({
    name: 'plain',
    image: busybox.image,
    tag: busybox.tag,
    digest: busybox.digest,
    env: { AGENT_TEST: work.path },
    command: SERVE,
    ports: [],
    restart: 'always' as const,
  });

  beforeAll(async () => {
    work = await tempDir('agent-runtime-container-');
    baseExisted = await docker('image', 'inspect', `resultity-local/node-base:${process.versions.node}`).then(
      () => true,
      () => false,
    );
    // Built once for the file; the local tag is dropped so the Agent really pulls it by digest.
    runtimeImage = await buildExampleRuntimeImage({ registry: REGISTRY, tag: `agent-test-${runId}` });
    await docker('image', 'rm', `${runtimeImage.image}:${runtimeImage.tag}`);
    busybox = await buildBusyboxImage({ registry: REGISTRY, repository: 'resultity-agent-test/busybox', tag: `rc-${runId}`, workDir: work.path });
    await mkdir(join(work.path, 'files'));
    files = await startFileServer(join(work.path, 'files'));
    statusPort = await freePort();
    s = await setup(work.path, 'dev', {
      bridge: { enabled: true, ack_timeout_ms: 30_000 },
      status: { listen: `127.0.0.1:${statusPort}` },
      containers: { pids_limit: 256, gpus: 0, label_prefix: LABELS, name_prefix: `rt-${runId}` },
      timers: { poll_interval_s: 1, heartbeat_interval_s: 5, retry_initial_ms: 100, retry_max_ms: 1000 },
      // One attempt per digest: a NACKed snapshot is not tried again (a retry would download the
      // rotted blob afresh, since the rollback removed it, and land).
      retry_budget: 1,
    });
  }, 300_000);

  afterAll(async () => {
    if (agent?.child.exitCode === null) {
      agent.child.kill('SIGTERM');
      await waitForExit(agent.child);
    }
    for (const c of await containers().catch(() => [])) await docker('rm', '-f', c.id).catch(() => undefined);
    if (runtimeImage) await docker('image', 'rm', `${runtimeImage.image}@${runtimeImage.digest}`).catch(() => undefined);
    if (runtimeImage && !baseExisted) await docker('image', 'rm', runtimeImage.base).catch(() => undefined);
    if (busybox) await docker('image', 'rm', `${busybox.image}:${busybox.tag}`).catch(() => undefined);
    await files?.close();
    await s?.close();
    await work?.cleanup();
  }, 120_000);

  let first: { digest: string };
  let second: { digest: string };
  let v2Sha: string;
  let tiny2Model: Awaited<ReturnType<typeof makeModel>>;
  let runtimeBefore: Observed;

  it('runs the runtime image with the bridge and the model store; it hashes the model the Agent installed and acks', async () => {
    const tiny1 = await makeModel(join(work.path, 'files'), files, 'tiny', '1', Buffer.from('the weights of tiny, version 1'));
    first = await s.net.publish(
      devSnapshot({ network: 'testnet', sequence: 1, models: [tiny1], maxTokens: 1000, pollSeconds: 1, containers: [runtimeContainer(), plain()] }),
    );
    startDaemon();
    await until(
      'snapshot 1 applied with the runtime ACK',
      async () => {
        const st = await status();
        return st.applied?.digest === first.digest && st.runtime.last?.digest === first.digest && st.runtime.last.outcome === 'ack';
      },
      180_000,
    );
    const st = await status();
    expect(st.runtime.connected).toEqual([{ runtimeId: 'inference-1', digest: first.digest }]);

    const runtime = await only('inference');
    expect(runtime.running).toBe(true);
    const modelsDir = join(s.stateDir, 'models');
    expect(runtime.env).toEqual(
      expect.arrayContaining([
        'RESULTITY_BRIDGE_SOCKET=/run/resultity/bridge.sock',
        'RESULTITY_BRIDGE_TOKEN_FILE=/run/resultity/bridge.token',
        `RESULTITY_MODELS_DIR=${modelsDir}`,
      ]),
    );
    // What the runtime was told, read from inside its container, opens there and hashes right.
    const environment = await getJson(runtime.id, '/v1/environment');
    expect(environment).toMatchObject({ digest: first.digest, job: { max_tokens: 1000 }, models: [{ name: 'tiny', version: '1', sha256: tiny1.sha256 }] });
    const path = environment.models[0].path as string;
    expect(path.startsWith(`${modelsDir}/`)).toBe(true);
    expect(await sha256Inside(runtime.id, path)).toBe(tiny1.sha256);

    const done = await job(runtime.id, { model: 'tiny', max_tokens: 3 });
    expect(done).toMatchObject({ status: 200, body: { model: 'tiny', tokens: 3, digest: first.digest, limits: { max_tokens: 1000 } } });
    runtimeBefore = runtime;
  }, 180_000);

  it('gives a container that asks for neither the bridge nor the models no mount and no variable', async () => {
    const other = await only('plain');
    expect(other.running).toBe(true);
    expect(other.mounts).toEqual([]);
    expect(other.env.filter((e) => e.startsWith('RESULTITY_'))).toEqual([]);
    await expect(docker('exec', other.id, '/bin/busybox', 'ls', '/run/resultity')).rejects.toThrow();
    await expect(docker('exec', other.id, '/bin/busybox', 'ls', join(s.stateDir, 'models'))).rejects.toThrow();
  }, 180_000);

  it('hot-reloads a new job limit and model version with no container recreated; the job in flight ends under the old ones', async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const id = runtimeBefore.id;
    // 900 tokens at 20 ms: admitted under snapshot 1 (max_tokens 1000), still running when 2 lands.
    const inFlight = job(id, { model: 'tiny', max_tokens: 900 });
    await until('the long job to be running', async () => (await getJson(id, '/v1/stats')).running === 1, 60_000);

    const tiny2 = await makeModel(join(work.path, 'files'), files, 'tiny', '2', Buffer.from('the weights of tiny, version 2, longer'));
    v2Sha = tiny2.sha256;
    tiny2Model = tiny2;
    second = await s.net.publish(
      devSnapshot({ network: 'testnet', sequence: 2, models: [tiny2], maxTokens: 50, pollSeconds: 1, containers: [runtimeContainer(), plain()] }),
    );
    await until(
      'snapshot 2 applied with the runtime ACK',
      async () => {
        const st = await status();
        return st.applied?.digest === second.digest && st.runtime.last?.digest === second.digest && st.runtime.last.outcome === 'ack';
      },
      60_000,
    );
    expect((await getJson(id, '/v1/stats')).running).toBe(1);

    const environment = await getJson(id, '/v1/environment');
    expect(environment).toMatchObject({ digest: second.digest, job: { max_tokens: 50 }, models: [{ name: 'tiny', version: '2', sha256: tiny2.sha256 }] });
    expect(await sha256Inside(id, environment.models[0].path)).toBe(tiny2.sha256);
    expect(await job(id, { model: 'tiny', max_tokens: 900 })).toMatchObject({ status: 400, body: { code: 'MAX_TOKENS_EXCEEDED' } });
    expect(await job(id, { model: 'tiny', max_tokens: 5 })).toMatchObject({
      status: 200,
      body: { tokens: 5, digest: second.digest, limits: { max_tokens: 50 } },
    });
    expect(await inFlight).toMatchObject({ status: 200, body: { tokens: 900, digest: first.digest, limits: { max_tokens: 1000 } } });

    const after = await only('inference');
    expect(after).toMatchObject({ id, startedAt: runtimeBefore.startedAt, restarts: 0, running: true });
    // The engine saw nothing happen to the container: no stop, kill, die, start or destroy.
    const events = await docker(
      'events',
      '--since',
      String(since),
      '--until',
      String(Math.floor(Date.now() / 1000) + 1),
      '--filter',
      `container=${id}`,
      '--format',
      '{{.Action}}',
    );
    expect(events.split('\n').filter((a) => /^(create|start|stop|kill|die|restart|destroy)$/.test(a))).toEqual([]);
  }, 180_000);

  it('rolls back to snapshot 2 when the runtime NACKs a model whose bytes do not match, and the container keeps running', async () => {
    const tiny3 = await makeModel(join(work.path, 'files'), files, 'tiny', '3', Buffer.from('the weights of tiny, version 3'));
    // The blob was verified once and then rotted on disk: the store only sees that it is there,
    // the runtime hashes it before it acks.
    await mkdir(join(s.stateDir, 'models', 'sha256'), { recursive: true });
    await writeFile(join(s.stateDir, 'models', 'sha256', tiny3.sha256), Buffer.from('the weights of tiny, versiON 3'));
    const third = await s.net.publish(
      devSnapshot({ network: 'testnet', sequence: 3, models: [tiny3], maxTokens: 60, pollSeconds: 1, containers: [runtimeContainer(), plain()] }),
    );
    const entries = () => readAuditEntries(join(s.stateDir, 'audit.jsonl'));
    await until(
      'the rollback after the NACK',
      async () =>
        (await entries()).some((e) => e.type === 'runtime-nack' && e.digest === third.digest) &&
        (await entries()).some((e) => e.type === 'rollback' && e.reason === 'runtime-nack' && e.to === second.digest),
      120_000,
    );
    await until('the runtime back on snapshot 2', async () => (await status()).runtime.connected[0]?.digest === second.digest, 60_000);

    const st = await status();
    expect(st.applied?.digest).toBe(second.digest);
    const nack = (await entries()).find((e) => e.type === 'runtime-nack' && e.digest === third.digest);
    expect(JSON.stringify(nack)).toContain(`to have sha256 ${tiny3.sha256}`);

    const runtime = await only('inference');
    expect(runtime).toMatchObject({ id: runtimeBefore.id, startedAt: runtimeBefore.startedAt, running: true });
    const environment = await getJson(runtime.id, '/v1/environment');
    expect(environment).toMatchObject({ digest: second.digest, models: [{ version: '2', sha256: v2Sha }] });
    expect(await sha256Inside(runtime.id, environment.models[0].path)).toBe(v2Sha);
  }, 180_000);

  it('refuses a snapshot asking for GPUs the node does not offer with GPUS_UNAVAILABLE, touching nothing', async () => {
    const fourth = await s.net.publish(
      devSnapshot({ network: 'testnet', sequence: 4, models: [], maxTokens: 70, pollSeconds: 1, containers: [runtimeContainer({ gpus: 1 })] }),
    );
    await until('the refusal of snapshot 4', async () => (await status()).last_error?.digest === fourth.digest, 60_000);
    const st = await status();
    expect(st.last_error).toMatchObject({ code: 'GPUS_UNAVAILABLE', message: expect.stringContaining('asks for 1 GPU(s); the node offers 0') });
    expect(st.applied?.digest).toBe(second.digest);
    expect(st.runtime.connected).toEqual([{ runtimeId: 'inference-1', digest: second.digest }]);
    const audit = await readAuditEntries(join(s.stateDir, 'audit.jsonl'));
    // Refused at plan time: nothing was started, so there is nothing to roll back.
    expect(audit.some((e) => e.type === 'apply-started' && e.digest === fourth.digest)).toBe(false);
    const now = await containers();
    expect(now.map((c) => [c.name, c.id, c.startedAt]).sort()).toEqual(
      [
        ['inference', runtimeBefore.id, runtimeBefore.startedAt],
        ['plain', expect.any(String), expect.any(String)],
      ].sort(),
    );
    expect(now.every((c) => c.running)).toBe(true);
  }, 180_000);

  it('lets the runtime reconnect through the same mount after the Agent is killed and restarted, and converge', async () => {
    const before = agent as { child: ChildProcess };
    before.child.kill('SIGKILL');
    await waitForExit(before.child);
    const runtime = await only('inference');
    expect(runtime.running).toBe(true);

    startDaemon();
    await until('the runtime to reconnect to the new Agent', async () => (await status()).runtime.connected.some((c) => c.runtimeId === 'inference-1'), 60_000);
    // Converged: the new Agent's bridge has the runtime on the applied snapshot, and the next
    // change reaches it through the new socket and is acknowledged.
    await until('the runtime on the applied snapshot', async () => (await status()).runtime.connected[0]?.digest === second.digest, 60_000);
    const fifth = await s.net.publish(
      devSnapshot({ network: 'testnet', sequence: 5, models: [tiny2Model], maxTokens: 80, pollSeconds: 1, containers: [runtimeContainer(), plain()] }),
    );
    await until(
      'snapshot 5 applied with the runtime ACK',
      async () => {
        const st = await status();
        return st.applied?.digest === fifth.digest && st.runtime.last?.digest === fifth.digest && st.runtime.last.outcome === 'ack';
      },
      60_000,
    );
    expect(await getJson(runtime.id, '/v1/environment')).toMatchObject({ digest: fifth.digest, job: { max_tokens: 80 } });
    expect(await only('inference')).toMatchObject({ id: runtimeBefore.id, startedAt: runtimeBefore.startedAt, running: true });
  }, 180_000);
});
