import { describe, expect, it } from 'vitest';

import { containerNameFor, definitionHash } from './definition.js';
import { ApplyError } from './errors.js';
import { execute } from './execute.js';
import type { ApplierPorts, Clock, ContainerEngine, ContainerStatus, Downloader, FlagsStore, ModelStore } from './ports.js';
import type { ApplierPolicy, ContainerDefinition, ParticipationFlags, Step } from './types.js';
import { failure } from '../test/support/failure.js';

const policy: ApplierPolicy = { allowedRegistries: ['127.0.0.1:5000'] };
const definition: ContainerDefinition = {
  image: '127.0.0.1:5000/rt',
  digest: `sha256:${'a'.repeat(64)}`,
  env: {},
  command: [],
  ports: [],
  restart: 'no',
  network: 'none',
  pidsLimit: 4096,
};
const hash = definitionHash(definition);
const containerName = containerNameFor('rt', hash);
const launch: Step[] = [
  { kind: 'create', name: 'rt', containerName, tag: '1', definition, definitionHash: hash, configDigest: 'sha256:x' },
  { kind: 'start', name: 'rt', containerName },
  { kind: 'wait-healthy', name: 'rt', containerName, timeoutMs: 5000 },
];

/** A clock that only moves when the executor sleeps: no real waiting, no timing in the test. */
function fakeClock(): Clock {
  let now = 0;
  return {
    now: () => now,
    sleep: async (ms) => {
      now += ms;
    },
  } satisfies Clock;
}

/** An engine whose containers never leave the "starting" health state, and whose removals can be made to fail. */
function fakeEngine(options: { failRemove?: boolean; unreachable?: boolean; health?: ContainerStatus['health']; restartCount?: number } = {}) {
  const containers = new Map<string, { name: string; labels: Record<string, string>; running: boolean }>();
  const calls: string[] = [];
  let next = 0;
  // Like Docker, containers are found by id or by name.
  const find = (idOrName: string) => [...containers.entries()].find(([id, c]) => id === idOrName || c.name === idOrName);
  const engine = {
    ping: async () => {
      if (options.unreachable) throw new ApplyError('ENGINE_UNAVAILABLE', 'no engine');
    },
    listContainers: async (key) =>
      [...containers.entries()]
        .filter(([, c]) => key in c.labels)
        .map(([id, c]) => ({ id, name: c.name, labels: c.labels, state: c.running ? 'running' : 'exited' })),
    inspectContainer: async (idOrName): Promise<ContainerStatus | null> => {
      const entry = find(idOrName);
      if (!entry) return null;
      return {
        id: entry[0],
        state: entry[1].running ? 'running' : 'exited',
        running: entry[1].running,
        restarting: false,
        restartCount: options.restartCount ?? 0,
        exitCode: null,
        health: options.health ?? 'starting',
        error: '',
      };
    },
    imageRepoDigests: async () => [`${definition.image}@${definition.digest}`],
    pullImage: async () => undefined,
    createContainer: async (request) => {
      calls.push('create');
      const id = `c${next++}`;
      containers.set(id, { name: request.containerName, labels: request.labels, running: false });
      return id;
    },
    startContainer: async (id) => {
      calls.push('start');
      find(id)![1].running = true;
    },
    stopContainer: async (id) => {
      calls.push('stop');
      find(id)![1].running = false;
    },
    removeContainer: async (id) => {
      calls.push('remove');
      if (options.failRemove) throw new Error('engine refused the removal');
      containers.delete(id);
    },
  } satisfies ContainerEngine;
  return { engine, containers, calls };
}

function ports(engine: ContainerEngine): ApplierPorts {
  let flags: ParticipationFlags | null = null;
  const models = {
    root: '/nowhere',
    readIndex: async () => [],
    writeIndex: async () => undefined,
    listBlobs: async () => [],
    hasBlob: async () => false,
    blobPath: (s: string) => `/nowhere/${s}`,
    partSize: async () => 0,
    openPart: async () => ({ write: async () => undefined, close: async () => undefined }),
    readPart: async function* () {},
    discardPart: async () => undefined,
    commitPart: async () => undefined,
    removeBlob: async () => undefined,
    freeBytes: async () => 0,
  } satisfies ModelStore;
  const flagsStore = {
    read: async () => flags,
    write: async (f) => {
      flags = f;
    },
  } satisfies FlagsStore;
  const downloader = { open: async () => Promise.reject(new Error('no network in unit tests')) } satisfies Downloader;
  return { engine, models, downloader, flags: flagsStore, clock: fakeClock() };
}

describe('execute', () => {
  describe('when a container never becomes healthy', () => {
    it('fails with HEALTH_TIMEOUT at the wait step and removes the container it created', async () => {
      const fake = fakeEngine();
      const error = await failure(execute(launch, ports(fake.engine), { policy }));
      expect(error.code).toBe('HEALTH_TIMEOUT');
      expect(error.step).toEqual(launch[2]);
      expect(error.rolledBack).toBe(true);
      expect(fake.containers.size).toBe(0);
    });
  });

  describe('when the rollback itself fails', () => {
    it('says the state was not restored and carries the rollback error', async () => {
      const fake = fakeEngine({ failRemove: true });
      const error = await failure(execute(launch, ports(fake.engine), { policy }));
      expect(error.code).toBe('HEALTH_TIMEOUT');
      expect(error.rolledBack).toBe(false);
      expect(String(error.rollbackError)).toContain('engine refused the removal');
    });
  });

  it('refuses a host-network container the policy does not allow, before any call', async () => {
    const fake = fakeEngine();
    const host = { ...definition, network: 'host' as const, ports: [{ container: 1, host: 1, protocol: 'tcp' as const }] };
    const steps: Step[] = [{ ...(launch[0] as Extract<Step, { kind: 'create' }>), definition: host, definitionHash: definitionHash(host) }];
    expect((await failure(execute(steps, ports(fake.engine), { policy }))).code).toBe('POLICY_DENIED');
    expect(fake.calls).toEqual([]);
  });

  it('refuses a create step whose definition was altered after planning', async () => {
    const fake = fakeEngine();
    const steps: Step[] = [{ ...(launch[0] as Extract<Step, { kind: 'create' }>), definition: { ...definition, env: { X: '1' } } }];
    expect((await failure(execute(steps, ports(fake.engine), { policy }))).code).toBe('INVALID_STEP');
    expect(fake.calls).toEqual([]);
  });

  describe('when a create step asks for more than the policy gives', () => {
    const refusals: { what: string; change: Partial<ContainerDefinition>; policy?: Partial<ApplierPolicy>; code: string }[] = [
      { what: 'no pids limit', change: { pidsLimit: undefined }, code: 'POLICY_DENIED' },
      { what: 'a looser pids limit', change: { pidsLimit: 100_000 }, code: 'POLICY_DENIED' },
      { what: 'no memory limit where the policy sets one', change: {}, policy: { memoryMb: 512 }, code: 'POLICY_DENIED' },
      { what: 'another bridge directory', change: { bridgeDir: '/etc' }, policy: { bridgeDir: '/var/lib/resultity/run' }, code: 'POLICY_DENIED' },
      { what: 'a model directory the policy does not name', change: { modelsDir: '/' }, code: 'POLICY_DENIED' },
      { what: 'more GPUs than offered', change: { gpus: 2 }, policy: { gpusOffered: 1 }, code: 'GPUS_UNAVAILABLE' },
      { what: 'the host network', change: { network: 'host' }, code: 'POLICY_DENIED' },
    ];
    for (const r of refusals) {
      it(`refuses ${r.what} with ${r.code} before any call`, async () => {
        const fake = fakeEngine();
        const changed = { ...definition, ...r.change } as ContainerDefinition;
        if (r.change.pidsLimit === undefined && 'pidsLimit' in r.change) delete changed.pidsLimit;
        const steps: Step[] = [{ ...(launch[0] as Extract<Step, { kind: 'create' }>), definition: changed, definitionHash: definitionHash(changed) }];
        const error = await failure(execute(steps, ports(fake.engine), { policy: { ...policy, ...r.policy } }));
        expect(error.code).toBe(r.code);
        expect(error.rolledBack).toBe(false);
        expect(fake.calls).toEqual([]);
      });
    }
  });

  it('refuses a step of a kind it does not know, before any call', async () => {
    const fake = fakeEngine();
    const steps = [...launch, { kind: 'format-disk' } as unknown as Step];
    const error = await failure(execute(steps, ports(fake.engine), { policy }));
    expect(error.code).toBe('INVALID_STEP');
    expect(error.message).toContain('"format-disk"');
    expect(fake.calls).toEqual([]);
  });

  it('fails with ENGINE_UNAVAILABLE before any step when the engine does not answer', async () => {
    const fake = fakeEngine({ unreachable: true });
    expect((await failure(execute(launch, ports(fake.engine), { policy }))).code).toBe('ENGINE_UNAVAILABLE');
    expect(fake.calls).toEqual([]);
  });

  it('does not start when the signal is already aborted', async () => {
    const fake = fakeEngine();
    const controller = new AbortController();
    controller.abort();
    expect((await failure(execute(launch, ports(fake.engine), { policy, signal: controller.signal }))).code).toBe('ABORTED');
    expect(fake.calls).toEqual([]);
  });

  it('starts an existing container that restarted in the past without calling that a failure', async () => {
    const fake = fakeEngine({ health: 'none', restartCount: 3 });
    fake.containers.set('old', { name: containerName, labels: {}, running: false });
    const steps: Step[] = [
      { kind: 'start', name: 'rt', containerName },
      { kind: 'wait-healthy', name: 'rt', containerName, timeoutMs: 5000 },
    ];
    await execute(steps, ports(fake.engine), { policy });
    expect(fake.containers.get('old')?.running).toBe(true);
  });

  it('counts what it changed and nothing else', async () => {
    const fake = fakeEngine();
    const report = await execute([{ kind: 'set-flags', flags: { mode: 'testnet', subclouds: [] } }], ports(fake.engine), { policy });
    expect(report).toMatchObject({ steps: 1, mutatingCalls: 1, rolledBack: false });
  });
});
