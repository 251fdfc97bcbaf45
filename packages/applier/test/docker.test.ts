import { canonicalBytes, configDigest, SnapshotSchema, type ContainerSpec, type Model } from '@resultity/snapshot';
import { sampleSnapshot, tempDir } from '@resultity/testkit';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  DockerEngine,
  createDefaultPorts,
  desiredStateFrom,
  execute,
  labelKeys,
  plan,
  readCurrentState,
  type ApplierPolicy,
  type ApplierPorts,
  type ContainerEngine,
  type Step,
  type Strategy,
} from '../src/index.js';
import { TEST_REGISTRY, buildTestImage, docker, removeContainersLabelled, removeLocalImage, type TestImage } from './support/images.js';
import { generatedBytes, sha256, startModelServer, type ModelServer } from './support/model-server.js';
import { startTamperingRegistry } from './support/tampering-registry.js';
import { failure } from './support/failure.js';

const runId = `${process.pid}x${Date.now().toString(36)}`;
const policy: ApplierPolicy = {
  allowedRegistries: [TEST_REGISTRY],
  labelPrefix: `io.resultity.t${runId}`,
  containerNamePrefix: `rt${runId}`,
};
const keys = labelKeys(policy);
const profile = { vram_gb: 24, regions: ['eu'], gpu: [] };
const job = { max_tokens: 4096, max_queue_size: 64, execution_timeout_ms: 120000 };

let state: { path: string; cleanup: () => Promise<void> };
let modelServer: ModelServer;
let ports: ApplierPorts;
let dockerode: DockerEngine['docker'];
const img: Record<'v1' | 'v2' | 'exits' | 'healthy' | 'unhealthy' | 'wanted' | 'served', TestImage> = {} as never;

beforeAll(async () => {
  state = await tempDir('resultity-applier-docker-');
  modelServer = await startModelServer();
  ports = createDefaultPorts({ stateDir: state.path, policy, downloads: { allowPrivateAddresses: true } });
  dockerode = (ports.engine as DockerEngine).docker;
  const sleep = ['/bin/busybox', 'sleep', '3600'];
  img.v1 = await buildTestImage({ repo: 'applier-test/sleeper', tag: 'v1', cmd: sleep, variant: 'one' });
  img.v2 = await buildTestImage({ repo: 'applier-test/sleeper', tag: 'v2', cmd: sleep, variant: 'two' });
  img.exits = await buildTestImage({ repo: 'applier-test/exits', tag: 'v1', cmd: ['/bin/busybox', 'false'] });
  img.healthy = await buildTestImage({ repo: 'applier-test/healthy', tag: 'v1', cmd: sleep, healthcheck: ['/bin/busybox', 'true'] });
  img.unhealthy = await buildTestImage({ repo: 'applier-test/unhealthy', tag: 'v1', cmd: sleep, healthcheck: ['/bin/busybox', 'false'] });
  // Never pulled before the test, so the engine has to fetch (and verify) their manifests.
  img.wanted = await buildTestImage({ repo: 'applier-test/lie', tag: 'wanted', cmd: sleep, variant: 'wanted' });
  img.served = await buildTestImage({ repo: 'applier-test/lie', tag: 'served', cmd: sleep, variant: 'served' });
});

afterAll(async () => {
  await removeContainersLabelled(keys.managedBy);
  // The applier pulled these by digest; the registry keeps them, the engine need not.
  for (const i of Object.values(img)) await removeLocalImage(i.image, i.tag, i.digest);
  await modelServer?.close();
  await state?.cleanup();
});

function spec(image: TestImage, overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  return {
    name: 'inference',
    image: image.image,
    tag: image.tag,
    digest: image.digest,
    env: { MODE: 'a' },
    command: [],
    ports: [],
    restart: 'no',
    bridge: false,
    models: false,
    ...overrides,
  };
}

async function apply(
  containers: ContainerSpec[],
  options: {
    models?: Model[];
    job?: typeof job;
    strategy?: Strategy;
    signal?: AbortSignal;
    onStep?: (step: Step) => void;
    applierPolicy?: ApplierPolicy;
    ports?: ApplierPorts;
  } = {},
) {
  const snapshot = SnapshotSchema.parse(sampleSnapshot({ models: options.models ?? [], runtime: { containers }, job: options.job ?? job }));
  const desired = desiredStateFrom(snapshot, configDigest(canonicalBytes(snapshot)), profile);
  const p = options.applierPolicy ?? policy;
  const using = options.ports ?? ports;
  const steps = plan(await readCurrentState(using, p), desired, { policy: p, strategy: options.strategy ?? 'download-then-kill', healthTimeoutMs: 20_000 });
  const report = await execute(steps, using, {
    policy: p,
    stableMs: 1000,
    pollMs: 100,
    stopTimeoutSeconds: 1,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onStep ? { onStep: options.onStep } : {}),
  });
  return { steps, report };
}

/** This run's containers as the engine has them: id, name, state, start time. */
async function containers() {
  const list = await dockerode.listContainers({ all: true, filters: { label: [keys.managedBy] } });
  return Promise.all(
    list.map(async (c) => {
      const info = await dockerode.getContainer(c.Id).inspect();
      return { id: c.Id, name: info.Name.slice(1), state: info.State.Status, startedAt: info.State.StartedAt, info };
    }),
  );
}

async function only() {
  const list = await containers();
  expect(list).toHaveLength(1);
  return list[0]!;
}

/** Engine events about this run's containers and test images between two instants. */
async function engineEvents(since: number, until: number): Promise<{ Type: string; Action: string }[]> {
  const stream = (await dockerode.getEvents({
    since: (since / 1000).toFixed(3),
    until: (until / 1000).toFixed(3),
  } as never)) as unknown as NodeJS.ReadableStream;
  let text = '';
  for await (const chunk of stream) text += chunk.toString();
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { Type: string; Action: string; Actor: { ID: string; Attributes: Record<string, string> } })
    .filter((e) => e.Actor.Attributes[keys.managedBy] !== undefined || (e.Type === 'image' && e.Actor.ID.includes('applier-test/')));
}

describe('execute against Docker', () => {
  it('creates a container from nothing: pulled by digest, labelled, isolated and unprivileged', async () => {
    const { steps } = await apply([spec(img.v1)]);
    expect(steps.map((s) => s.kind)).toEqual(['pull-image', 'create', 'start', 'wait-healthy', 'set-flags']);
    const c = await only();
    expect(c.state).toBe('running');
    expect(c.info.Config.Image).toBe(`${img.v1.image}@${img.v1.digest}`);
    expect(c.info.Config.Labels).toMatchObject({ [keys.name]: 'inference', [keys.tag]: 'v1' });
    expect(c.info.Config.Env).toContain('MODE=a');
    expect(c.info.HostConfig).toMatchObject({
      NetworkMode: 'none',
      Privileged: false,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      PidsLimit: 4096,
    });
    expect(c.info.Mounts).toEqual([]);
    const current = await readCurrentState(ports, policy);
    expect(current.containers).toEqual([expect.objectContaining({ name: 'inference', running: true, id: c.id })]);
    expect(current.flags).toEqual({ mode: 'testnet', subclouds: ['eu-gpu'] });
  });

  it('makes zero mutating Docker calls when the same snapshot is applied again', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const since = Date.now();
    const { steps, report } = await apply([spec(img.v1)]);
    await new Promise((r) => setTimeout(r, 300));
    const events = await engineEvents(since, Date.now());
    expect(steps).toEqual([]);
    expect(report.mutatingCalls).toBe(0);
    expect(events.filter((e) => !['exec_create', 'exec_start', 'exec_die', 'health_status'].includes(e.Action))).toEqual([]);
    expect((await only()).startedAt).toBe(before.startedAt);
  });

  it('does nothing when only the job parameters change', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const { steps } = await apply([spec(img.v1)], { job: { ...job, max_tokens: 16 } });
    expect(steps).toEqual([]);
    expect(await only()).toMatchObject({ id: before.id, startedAt: before.startedAt });
  });

  it('recreates the container when the tag and digest change', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    await apply([spec(img.v2)]);
    const after = await only();
    expect(after.id).not.toBe(before.id);
    expect(after.state).toBe('running');
    expect(after.info.Config.Image).toBe(`${img.v2.image}@${img.v2.digest}`);
  });

  it('recreates the container when its env changes', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    await apply([spec(img.v1, { env: { MODE: 'b' } })]);
    const after = await only();
    expect(after.id).not.toBe(before.id);
    expect(after.info.Config.Env).toContain('MODE=b');
  });

  it('refuses a digest the registry does not have with PULL_FAILED before touching the running container', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const seen: string[] = [];
    const missing = `sha256:${'e'.repeat(64)}`;
    const error = await failure(apply([spec(img.v1, { digest: missing })], { onStep: (s) => seen.push(s.kind) }));
    expect(error.code).toBe('PULL_FAILED');
    expect(error.step).toMatchObject({ kind: 'pull-image', digest: missing });
    expect(error.rolledBack).toBe(false);
    expect(seen).toEqual(['pull-image']);
    expect(await only()).toMatchObject({ id: before.id, state: 'running', startedAt: before.startedAt });
  });

  it('refuses an image whose content does not have the digest (DIGEST_MISMATCH) before touching the running container', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const proxy = await startTamperingRegistry({
      upstream: TEST_REGISTRY,
      repo: 'applier-test/lie',
      wanted: img.wanted.digest,
      served: img.served.digest,
    });
    try {
      const lying = { ...img.wanted, image: `${proxy.host}/applier-test/lie` };
      const widened = { ...policy, allowedRegistries: [TEST_REGISTRY, proxy.host] };
      const error = await failure(apply([spec(lying)], { applierPolicy: widened }));
      expect(error.code).toBe('DIGEST_MISMATCH');
      expect(error.rolledBack).toBe(false);
      expect(await only()).toMatchObject({ id: before.id, state: 'running', startedAt: before.startedAt });
    } finally {
      await proxy.close();
    }
  });

  it('stops a pull that hangs with ABORTED when cancelled, before touching the running container', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const proxy = await startTamperingRegistry({
      upstream: TEST_REGISTRY,
      repo: 'applier-test/lie',
      wanted: img.wanted.digest,
      served: img.served.digest,
      stall: true,
    });
    try {
      const hanging = { ...img.wanted, image: `${proxy.host}/applier-test/lie` };
      const controller = new AbortController();
      const pending = apply([spec(hanging)], {
        applierPolicy: { ...policy, allowedRegistries: [TEST_REGISTRY, proxy.host] },
        signal: controller.signal,
        onStep: (s) => {
          if (s.kind === 'pull-image') setTimeout(() => controller.abort(), 500);
        },
      });
      const error = await failure(pending);
      expect(error.code).toBe('ABORTED');
      expect(error.step).toMatchObject({ kind: 'pull-image' });
      expect(error.rolledBack).toBe(false);
      expect(await only()).toMatchObject({ id: before.id, state: 'running', startedAt: before.startedAt });
    } finally {
      await proxy.close();
    }
  });

  it('refuses an image from a registry off the allowlist before any step runs', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const seen: string[] = [];
    const error = await failure(apply([spec({ ...img.v2, image: 'registry.example/x' })], { onStep: (s) => seen.push(s.kind) }));
    expect(error.code).toBe('REGISTRY_NOT_ALLOWED');
    expect(seen).toEqual([]);
    expect(await only()).toMatchObject({ id: before.id, startedAt: before.startedAt });
  });

  for (const restart of ['no', 'always'] as const) {
    it(`rolls back to the previous container when the new one exits at once (restart ${restart})`, async () => {
      await apply([spec(img.v1)]);
      const before = await only();
      const error = await failure(apply([spec(img.exits, { restart })]));
      expect(error.code).toBe('CONTAINER_FAILED');
      expect(error.step).toMatchObject({ kind: 'wait-healthy' });
      expect(error.rolledBack).toBe(true);
      const after = await only();
      expect(after.id).toBe(before.id);
      expect(after.state).toBe('running');
      expect(await readCurrentState(ports, policy)).toMatchObject({ containers: [expect.objectContaining({ id: before.id, running: true })] });
    });
  }

  it('restores the previous model index when the new container fails', async () => {
    const model = (name: string, seed: number): Model => {
      const bytes = generatedBytes(50_000, seed);
      modelServer.serve(`/${name}`, { bytes });
      return { name, version: '1', sha256: sha256(bytes), size: bytes.length, urls: [modelServer.url(`/${name}`)] };
    };
    const a = model('weights-a', 41);
    const b = model('weights-b', 42);
    await apply([spec(img.v1)], { models: [a] });
    const indexBefore = await ports.models.readIndex();
    const before = await only();
    const error = await failure(apply([spec(img.exits)], { models: [b] }));
    expect(error.code).toBe('CONTAINER_FAILED');
    expect(error.rolledBack).toBe(true);
    expect(await ports.models.readIndex()).toEqual(indexBefore);
    expect(await ports.models.hasBlob(a.sha256)).toBe(true);
    expect(await only()).toMatchObject({ id: before.id, state: 'running' });
    await apply([spec(img.v1)], { models: [] });
  });

  it('waits for the health check of an image that has one', async () => {
    await apply([spec(img.healthy)]);
    const c = await only();
    expect(c.info.State.Health?.Status).toBe('healthy');
  });

  it('rolls back when the new container fails its health check', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const error = await failure(apply([spec(img.unhealthy)]));
    expect(error.code).toBe('CONTAINER_FAILED');
    expect(error.message).toContain('health check');
    expect(error.rolledBack).toBe(true);
    expect(await only()).toMatchObject({ id: before.id, state: 'running' });
  });

  it('hands over: the new container is healthy before the old one stops', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const seen: string[] = [];
    await apply([spec(img.v2)], { strategy: 'hand-over', onStep: (s) => seen.push(s.kind) });
    expect(seen).toEqual(['pull-image', 'create', 'start', 'wait-healthy', 'stop', 'remove']);
    const after = await only();
    expect(after.id).not.toBe(before.id);
    expect(after.state).toBe('running');
  });

  it('stops with ABORTED when cancelled while waiting, and restores the previous container', async () => {
    await apply([spec(img.v1)]);
    const before = await only();
    const controller = new AbortController();
    const error = await failure(
      apply([spec(img.v1, { env: { MODE: 'cancelled' } })], {
        signal: controller.signal,
        onStep: (s) => {
          if (s.kind === 'wait-healthy') setTimeout(() => controller.abort(), 100);
        },
      }),
    );
    expect(error.code).toBe('ABORTED');
    expect(error.rolledBack).toBe(true);
    expect(await only()).toMatchObject({ id: before.id, state: 'running' });
  });

  it('recreates an old container from its recorded definition when the apply stops after removing it', async () => {
    const pair = [spec(img.v1, { name: 'first' }), spec(img.v1, { name: 'second' })];
    await apply(pair);
    const before = await containers();
    const controller = new AbortController();
    const seen: string[] = [];
    const error = await failure(
      apply(
        pair.map((c) => ({ ...c, env: { MODE: 'next' } })),
        {
          signal: controller.signal,
          onStep: (s) => {
            seen.push(s.kind);
            if (s.kind === 'remove') controller.abort();
          },
        },
      ),
    );
    expect(error.code).toBe('ABORTED');
    expect(error.rolledBack).toBe(true);
    expect(seen.filter((k) => k === 'remove')).toHaveLength(1);
    const after = await containers();
    const summary = (list: typeof before) =>
      list.map((c) => ({ name: c.name, state: c.state, hash: c.info.Config.Labels[keys.definitionHash] })).sort((a, b) => a.name.localeCompare(b.name));
    expect(summary(after)).toEqual(summary(before));
    expect(after.every((c) => c.state === 'running')).toBe(true);
  });

  it('reports ENGINE_UNAVAILABLE when the Docker socket is not there', async () => {
    const nowhere = createDefaultPorts({ stateDir: state.path, policy, dockerSocketPath: `${state.path}/no-docker.sock` });
    expect((await failure(readCurrentState(nowhere, policy))).code).toBe('ENGINE_UNAVAILABLE');
  });

  it('stops a container that ignores SIGTERM even when its grace period outlasts the request timeout', async () => {
    await apply([spec(img.v1)]);
    const { id } = await only();
    // busybox sleep as PID 1 ignores SIGTERM, so the engine answers only after the 2 s grace period.
    const impatient = new DockerEngine({ requestTimeoutMs: 500 });
    await impatient.stopContainer(id, 2);
    expect((await dockerode.getContainer(id).inspect()).State.Running).toBe(false);
    await apply([]);
  });

  describe('confinement and the runtime fields', () => {
    let runtimePolicy: ApplierPolicy;
    const token = `token-${runId}`;

    beforeAll(async () => {
      const bridgeDir = join(state.path, 'run');
      const modelsDir = join(state.path, 'models');
      await mkdir(bridgeDir, { recursive: true });
      await mkdir(modelsDir, { recursive: true });
      await writeFile(join(bridgeDir, 'bridge.token'), token, { mode: 0o600 });
      await writeFile(join(modelsDir, 'weights.bin'), 'weights');
      runtimePolicy = { ...policy, bridgeDir, modelsDir, gpusOffered: 1 };
    });

    /** Runs a command in a container; rejects when it exits non-zero. */
    const exec = (id: string, ...cmd: string[]) => docker('exec', id, '/bin/busybox', ...cmd);

    it('drops every capability, forbids new privileges and applies the pids and memory limits of the policy', async () => {
      await apply([spec(img.v1)], { applierPolicy: { ...policy, pidsLimit: 64, memoryMb: 128 } });
      const c = await only();
      expect(c.info.HostConfig).toMatchObject({
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        PidsLimit: 64,
        Memory: 128 * 1024 * 1024,
        MemorySwap: 128 * 1024 * 1024,
      });
      expect(c.info.HostConfig.CapAdd ?? []).toEqual([]);
      // The engine's view is one thing; what the process really holds is another.
      const status = await exec(c.id, 'cat', '/proc/self/status');
      expect(status).toMatch(/^CapEff:\s+0000000000000000$/m);
      expect(status).toMatch(/^CapBnd:\s+0000000000000000$/m);
      expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
      await apply([]);
    });

    it('gives a bridge and models container the read-only directories and their variables, and /dev/shm its size', async () => {
      await apply([spec(img.v1, { bridge: true, models: true, shm_size_mb: 16 })], { applierPolicy: runtimePolicy });
      const c = await only();
      const { bridgeDir, modelsDir } = runtimePolicy as Required<ApplierPolicy>;
      expect(c.info.Config.Env).toEqual(
        expect.arrayContaining([
          'RESULTITY_BRIDGE_SOCKET=/run/resultity/bridge.sock',
          'RESULTITY_BRIDGE_TOKEN_FILE=/run/resultity/bridge.token',
          `RESULTITY_MODELS_DIR=${modelsDir}`,
        ]),
      );
      expect(
        c.info.Mounts.map((m) => ({ source: m.Source, destination: m.Destination, rw: m.RW })).sort((a, b) => a.destination.localeCompare(b.destination)),
      ).toEqual(
        [
          { source: bridgeDir, destination: '/run/resultity', rw: false },
          { source: modelsDir, destination: modelsDir, rw: false },
        ].sort((a, b) => a.destination.localeCompare(b.destination)),
      );
      expect(c.info.HostConfig.ShmSize).toBe(16 * 1024 * 1024);
      expect(await exec(c.id, 'cat', '/run/resultity/bridge.token')).toBe(token);
      expect(await exec(c.id, 'cat', join(modelsDir, 'weights.bin'))).toBe('weights');
      await expect(exec(c.id, 'touch', '/run/resultity/written')).rejects.toThrow(/Read-only file system/);
      await expect(exec(c.id, 'touch', join(modelsDir, 'written'))).rejects.toThrow(/Read-only file system/);
      await apply([]);
    });

    it('gives a container without bridge and models neither mount nor variable, even under a policy that has both', async () => {
      await apply([spec(img.v1, { env: { RESULTITY_MODELS_DIR: '/' } })], { applierPolicy: runtimePolicy });
      const c = await only();
      expect(c.info.Mounts).toEqual([]);
      expect(c.info.Config.Env.filter((e) => e.startsWith('RESULTITY_'))).toEqual([]);
      await expect(exec(c.id, 'ls', '/run/resultity')).rejects.toThrow();
      await expect(exec(c.id, 'ls', runtimePolicy.modelsDir!)).rejects.toThrow();
      await apply([]);
    });

    it('refuses more GPUs than offered with GPUS_UNAVAILABLE before touching the running container', async () => {
      await apply([spec(img.v1)], { applierPolicy: runtimePolicy });
      const before = await only();
      const error = await failure(apply([spec(img.v2, { gpus: 2 })], { applierPolicy: runtimePolicy }));
      expect(error.code).toBe('GPUS_UNAVAILABLE');
      expect(error.rolledBack).toBe(false);
      expect(await only()).toMatchObject({ id: before.id, state: 'running', startedAt: before.startedAt });
      await apply([]);
    });

    it('asks the engine for the GPUs as an nvidia device request, and rolls back when the node cannot give them', async () => {
      await apply([spec(img.v1)], { applierPolicy: runtimePolicy });
      const before = await only();
      // The engine port as it is, except that each create is inspected right away: the
      // rollback removes the container before the test could look at it.
      const received: unknown[] = [];
      const recording: ContainerEngine = Object.assign(Object.create(ports.engine) as ContainerEngine, {
        createContainer: async (request: Parameters<ContainerEngine['createContainer']>[0]) => {
          const id = await ports.engine.createContainer(request);
          received.push((await dockerode.getContainer(id).inspect()).HostConfig.DeviceRequests);
          return id;
        },
      });
      const error = await failure(apply([spec(img.v1, { gpus: 'all' })], { applierPolicy: runtimePolicy, ports: { ...ports, engine: recording } }));
      expect(received).toEqual([[{ Driver: 'nvidia', Count: 1, DeviceIDs: null, Capabilities: [['gpu']], Options: null }]]);
      // This machine has no NVIDIA runtime: the start fails and the previous container comes back.
      expect(error.code).toBe('CONTAINER_FAILED');
      expect(error.step).toMatchObject({ kind: 'start' });
      expect(error.message).toMatch(/nvidia/);
      expect(error.rolledBack).toBe(true);
      expect(await only()).toMatchObject({ id: before.id, state: 'running' });
      await apply([]);
    });
  });

  it('removes a container the snapshot no longer names', async () => {
    await apply([spec(img.v1)]);
    const { steps } = await apply([]);
    expect(steps.map((s) => s.kind)).toEqual(['stop', 'remove']);
    expect(await containers()).toEqual([]);
  });
});
