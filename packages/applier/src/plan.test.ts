import { type PortMapping, SnapshotSchema, type Snapshot } from '@resultity/snapshot';
import { fakeHex, sampleSnapshot } from '@resultity/testkit';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { containerNameFor, definitionHash, definitionOf } from './definition.js';
import { desiredStateFrom } from './participation.js';
import { describeStep, plan } from './plan.js';
import type { ApplierPolicy, CurrentState, DesiredState, ObservedContainer, Step } from './types.js';

const profile = { vram_gb: 48, regions: ['eu'], gpu: ['a100'] };
const policy: ApplierPolicy = { allowedRegistries: ['127.0.0.1:5000'] };

function snapshot(overrides: Parameters<typeof sampleSnapshot>[0] = {}): Snapshot {
  return SnapshotSchema.parse(sampleSnapshot(overrides));
}

function desired(s: Snapshot, digest = `sha256:${fakeHex(JSON.stringify(s))}`): DesiredState {
  return desiredStateFrom(s, digest, profile);
}

/** The state a node is in right after `d` was applied, as readCurrentState would report it. */
function appliedState(d: DesiredState): CurrentState {
  const containers: ObservedContainer[] = d.containers.map((spec, i) => {
    const definition = definitionOf(spec, policy);
    const hash = definitionHash(definition);
    return {
      id: `id-${i}-${hash.slice(0, 6)}`,
      containerName: containerNameFor(spec.name, hash),
      name: spec.name,
      definitionHash: hash,
      configDigest: d.digest,
      tag: spec.tag,
      definition,
      state: 'running',
      running: true,
    };
  });
  return {
    containers,
    models: d.models.map((m) => ({ name: m.name, version: m.version, sha256: m.sha256, size: m.size, present: true })),
    flags: d.flags,
    blobs: d.models.map((m) => m.sha256),
  };
}

const empty: CurrentState = { containers: [], models: [], flags: null, blobs: [] };
const kinds = (steps: Step[]) => steps.map((s) => s.kind);

describe('plan', () => {
  describe('from nothing', () => {
    it('fetches and pulls everything before it creates, starts and waits for each container, then sets the flags', () => {
      const d = desired(snapshot());
      expect(kinds(plan(empty, d, { policy }))).toEqual(['fetch-model', 'pull-image', 'activate-model', 'create', 'start', 'wait-healthy', 'set-flags']);
    });
  });

  describe('when the same snapshot is applied again', () => {
    it('gives no step at all', () => {
      const d = desired(snapshot());
      expect(plan(appliedState(d), d, { policy })).toEqual([]);
    });
  });

  describe('when only job parameters change', () => {
    it('gives no container step, even though the config digest differs', () => {
      const before = desired(snapshot());
      const after = desired(snapshot({ job: { max_tokens: 1024, max_queue_size: 8, execution_timeout_ms: 5000 } }));
      expect(after.digest).not.toBe(before.digest);
      expect(plan(appliedState(before), after, { policy })).toEqual([]);
    });
  });

  describe('when the image digest or the env changes', () => {
    const base = snapshot();
    const spec = base.runtime.containers[0]!;
    const variants: [string, Snapshot][] = [
      ['digest', snapshot({ runtime: { containers: [{ ...spec, tag: '1.5.0', digest: `sha256:${fakeHex('other')}` }] } })],
      ['env', snapshot({ runtime: { containers: [{ ...spec, env: { LOG_LEVEL: 'debug' } }] } })],
      ['command', snapshot({ runtime: { containers: [{ ...spec, command: ['serve'] }] } })],
      ['restart', snapshot({ runtime: { containers: [{ ...spec, restart: 'on-failure' }] } })],
    ];
    for (const [what, next] of variants) {
      it(`recreates the container when its ${what} changes, stopping the old one only after pulling`, () => {
        const current = appliedState(desired(base));
        const steps = plan(current, desired(next), { policy });
        expect(kinds(steps)).toEqual(['pull-image', 'stop', 'create', 'start', 'wait-healthy', 'remove']);
        const old = current.containers[0]!;
        expect(steps.find((s) => s.kind === 'stop')).toMatchObject({ id: old.id });
        expect(steps.find((s) => s.kind === 'create')).not.toMatchObject({ containerName: old.containerName });
      });
    }

    it('gives no step when only the tag changes (the tag is for display)', () => {
      const next = snapshot({ runtime: { containers: [{ ...spec, tag: '9.9.9' }] } });
      expect(plan(appliedState(desired(base)), desired(next), { policy })).toEqual([]);
    });
  });

  describe('with the hand-over strategy', () => {
    it('starts the new container and waits for it before stopping the old one', () => {
      const base = snapshot();
      const spec = base.runtime.containers[0]!;
      const next = snapshot({ runtime: { containers: [{ ...spec, env: { LOG_LEVEL: 'debug' } }] } });
      const steps = plan(appliedState(desired(base)), desired(next), { policy, strategy: 'hand-over' });
      expect(kinds(steps)).toEqual(['pull-image', 'create', 'start', 'wait-healthy', 'stop', 'remove']);
    });
  });

  describe('when a container is dropped from the snapshot', () => {
    it('stops and removes it', () => {
      const current = appliedState(desired(snapshot()));
      const steps = plan(current, desired(snapshot({ runtime: { containers: [] } })), { policy });
      expect(kinds(steps)).toEqual(['stop', 'remove']);
    });
  });

  describe('when an unchanged container is not running', () => {
    it('starts it again instead of recreating it', () => {
      const d = desired(snapshot());
      const current = appliedState(d);
      current.containers[0] = { ...current.containers[0]!, running: false, state: 'exited' };
      expect(kinds(plan(current, d, { policy }))).toEqual(['start', 'wait-healthy']);
    });
  });

  describe('when two containers share a definition name', () => {
    it('keeps the running one with the wanted definition and retires the other', () => {
      const d = desired(snapshot());
      const current = appliedState(d);
      const stale = { ...current.containers[0]!, id: 'stale', containerName: 'resultity-inference-stale', definitionHash: 'x' };
      current.containers.push(stale);
      expect(plan(current, d, { policy })).toEqual([
        { kind: 'stop', name: 'inference', containerName: stale.containerName, id: 'stale' },
        { kind: 'remove', name: 'inference', containerName: stale.containerName, id: 'stale' },
      ]);
    });
  });

  describe('ports and the network', () => {
    const spec = snapshot().runtime.containers[0]!;
    const withPorts = snapshot({ runtime: { containers: [{ ...spec, ports: [{ container: 8080, host: 18080, protocol: 'tcp' }] }] } });

    it('gives a container with ports no network when the policy does not allow the host network', () => {
      const create = plan(empty, desired(withPorts), { policy }).find((s) => s.kind === 'create');
      expect(create).toMatchObject({ definition: { network: 'none' } });
      expect(describeStep(create!)).toContain('not published');
    });

    it('gives it the host network only when the policy allows it', () => {
      const create = plan(empty, desired(withPorts), { policy: { ...policy, allowHostNetwork: true } }).find((s) => s.kind === 'create');
      expect(create).toMatchObject({ definition: { network: 'host' } });
    });

    it('never gives a container without ports the host network', () => {
      const create = plan(empty, desired(snapshot()), { policy: { ...policy, allowHostNetwork: true } }).find((s) => s.kind === 'create');
      expect(create).toMatchObject({ definition: { network: 'none' } });
    });
  });

  describe('models', () => {
    const a = { name: 'a', version: '1', sha256: fakeHex('a'), size: 10, urls: ['http://127.0.0.1/a'] };
    const b = { name: 'b', version: '1', sha256: fakeHex('b'), size: 20, urls: ['http://127.0.0.1/b'] };
    const c = { name: 'c', version: '1', sha256: fakeHex('c'), size: 30, urls: ['http://127.0.0.1/c'] };

    it('fetches only what the store lacks and activates a blob that is present but not indexed', () => {
      const current: CurrentState = { ...empty, blobs: [a.sha256] };
      const steps = plan(current, desired(snapshot({ models: [a, b] })), { policy }).filter((s) => s.kind.includes('model'));
      expect(steps).toEqual([
        { kind: 'fetch-model', model: expect.objectContaining({ name: 'b' }) },
        { kind: 'activate-model', model: { name: 'a', version: '1', sha256: a.sha256, size: 10 } },
        { kind: 'activate-model', model: { name: 'b', version: '1', sha256: b.sha256, size: 20 } },
      ]);
    });

    it('removes a model nobody wants, after the containers and the flags', () => {
      const current = appliedState(desired(snapshot({ models: [a, b] })));
      const steps = plan(current, desired(snapshot({ models: [a] })), { policy });
      expect(steps).toEqual([{ kind: 'remove-model', model: { name: 'b', version: '1', sha256: b.sha256, size: 20 }, deleteBlob: true }]);
    });

    it('keeps every model the previous applied snapshot references', () => {
      const current = appliedState(desired(snapshot({ models: [a, b] })));
      const steps = plan(current, desired(snapshot({ models: [c] })), { policy, retainModels: [a, b] });
      expect(kinds(steps)).toEqual(['fetch-model', 'activate-model']);
    });

    it('removes the file of a model whose version was re-pointed to other bytes, unless someone keeps it', () => {
      const current = appliedState(desired(snapshot({ models: [a] })));
      const a2 = { ...a, sha256: fakeHex('a2') };
      const steps = plan(current, desired(snapshot({ models: [a2] })), { policy });
      expect(steps.filter((s) => s.kind === 'remove-model')).toEqual([
        { kind: 'remove-model', model: { name: 'a', version: '1', sha256: a.sha256, size: 10 }, deleteBlob: true },
      ]);
      expect(plan(current, desired(snapshot({ models: [a2] })), { policy, retainModels: [a] }).some((s) => s.kind === 'remove-model')).toBe(false);
    });

    it('keeps a file that another index entry still uses', () => {
      const twin = { ...b, name: 'twin', sha256: a.sha256 };
      const current = appliedState(desired(snapshot({ models: [a, twin] })));
      const steps = plan(current, desired(snapshot({ models: [a] })), { policy });
      expect(steps).toEqual([{ kind: 'remove-model', model: expect.objectContaining({ name: 'twin' }), deleteBlob: false }]);
    });

    it('leaves a file no index entry names to collection: a failed apply may be retried with it', () => {
      const current = appliedState(desired(snapshot({ models: [a] })));
      current.blobs = [a.sha256, b.sha256, c.sha256];
      expect(plan(current, desired(snapshot({ models: [a] })), { policy, retainModels: [c] })).toEqual([]);
    });

    it('fetches again a model whose index entry points at a missing file', () => {
      const d = desired(snapshot({ models: [a] }));
      const current = appliedState(d);
      current.models[0] = { ...current.models[0]!, present: false };
      current.blobs = [];
      expect(kinds(plan(current, d, { policy }))).toEqual(['fetch-model', 'activate-model']);
    });
  });

  describe('flags', () => {
    it('sets the flags when the qualifying subclouds change', () => {
      const d = desired(snapshot());
      const current = { ...appliedState(d), flags: { mode: 'testnet' as const, subclouds: [] } };
      expect(plan(current, d, { policy })).toEqual([{ kind: 'set-flags', flags: d.flags }]);
    });
  });

  it('is pure and gives plain JSON data', () => {
    const d = desired(snapshot());
    const steps = plan(empty, d, { policy });
    expect(JSON.parse(JSON.stringify(steps))).toEqual(steps);
    expect(plan(empty, d, { policy })).toEqual(steps);
  });

  it('describes every step in one line', () => {
    const base = snapshot();
    const current = appliedState(desired(base));
    const next = snapshot({
      models: [{ name: 'z', version: '2', sha256: fakeHex('z'), size: 5 * 1024 * 1024, urls: ['http://127.0.0.1/z'] }],
      runtime: { containers: [{ ...base.runtime.containers[0]!, env: {} }] },
      participation: { mode: 'mainnet', subclouds: [] },
    });
    const lines = plan(current, desired(next), { policy }).map(describeStep);
    expect(lines).toEqual([
      expect.stringMatching(/^fetch model z@2 \(5\.0 MiB/),
      expect.stringMatching(/^pull image 127\.0\.0\.1:5000\/resultity\/runtime:1\.4\.2/),
      'activate model z@2',
      `stop container inference (resultity-inference-${current.containers[0]!.definitionHash.slice(0, 12)})`,
      expect.stringMatching(/^create container inference as resultity-inference-[0-9a-f]{12} from .*network none; at most 4096 processes$/),
      expect.stringMatching(/^start container inference/),
      'wait until inference is running and healthy (up to 60 s)',
      expect.stringMatching(/^remove container inference/),
      'set participation: mainnet, subclouds []',
      'remove model llama-3.1-8b-q4@1.2.0 and its file',
    ]);
    for (const line of lines) expect(line).not.toContain('\n');
  });

  describe('when a runtime field changes', () => {
    const runtimePolicy: ApplierPolicy = { ...policy, bridgeDir: '/srv/r/run', modelsDir: '/srv/r/models', gpusOffered: 2 };
    for (const [field, value] of [
      ['bridge', true],
      ['models', true],
      ['gpus', 1],
      ['shm_size_mb', 64],
    ] as const) {
      it(`recreates the container when ${field} becomes ${value}`, () => {
        const base = snapshot();
        const current = appliedState(desired(base));
        const next = desired(snapshot({ runtime: { containers: [{ ...base.runtime.containers[0]!, [field]: value }] } }));
        expect(kinds(plan(current, next, { policy: runtimePolicy }))).toEqual(['pull-image', 'stop', 'create', 'start', 'wait-healthy', 'remove']);
      });
    }

    it('recreates the container when the Agent changes its limits', () => {
      const d = desired(snapshot());
      expect(kinds(plan(appliedState(d), d, { policy: { ...policy, memoryMb: 1024 } }))).toContain('create');
      expect(plan(appliedState(d), d, { policy: runtimePolicy })).toEqual([]);
    });
  });

  describe('when a container asks for GPUs', () => {
    const withGpus = (gpus: 'all' | number) => {
      const base = snapshot();
      return desired(snapshot({ runtime: { containers: [{ ...base.runtime.containers[0]!, gpus }] } }));
    };

    it('refuses more than the node offers with GPUS_UNAVAILABLE, before any step', () => {
      expect(() => plan(empty, withGpus(2), { policy: { ...policy, gpusOffered: 1 } })).toThrow(
        expect.objectContaining({ code: 'GPUS_UNAVAILABLE', message: expect.stringContaining('asks for 2 GPU(s); the node offers 1') }),
      );
    });

    it('shows the GPUs, the directories and the limits the container gets', () => {
      const base = snapshot();
      const d = desired(snapshot({ runtime: { containers: [{ ...base.runtime.containers[0]!, bridge: true, models: true, gpus: 'all', shm_size_mb: 512 }] } }));
      const full = { ...policy, gpusOffered: 2, bridgeDir: '/srv/r/run', modelsDir: '/srv/r/models', memoryMb: 2048, pidsLimit: 100 };
      const create = plan(empty, d, { policy: full }).find((s) => s.kind === 'create')!;
      expect(describeStep(create)).toMatch(
        /network none; bridge \/srv\/r\/run read-only at \/run\/resultity, models \/srv\/r\/models read-only, 2 GPUs, \/dev\/shm 512 MiB, at most 100 processes, memory 2048 MiB$/,
      );
    });
  });

  describe('for any pair of snapshots', () => {
    const hex = fc.stringMatching(/^[0-9a-f]{64}$/);
    const containerArb = fc.record({
      name: fc.constantFrom('a', 'b', 'c'),
      image: fc.constantFrom('127.0.0.1:5000/x', '127.0.0.1:5000/y'),
      tag: fc.constantFrom('1', '2'),
      digest: hex.map((h) => `sha256:${h}`),
      env: fc.dictionary(fc.constantFrom('A', 'B'), fc.constantFrom('0', '1')),
      command: fc.array(fc.constantFrom('serve', '--fast'), { maxLength: 2 }),
      ports: fc.constant([] as PortMapping[]),
      restart: fc.constantFrom('no' as const, 'always' as const),
    });
    const modelArb = fc.record({
      name: fc.constantFrom('m1', 'm2', 'm3'),
      version: fc.constantFrom('1', '2'),
      sha256: fc.constantFrom(fakeHex(1), fakeHex(2), fakeHex(3)),
      size: fc.integer({ min: 0, max: 1000 }),
      urls: fc.constant(['http://127.0.0.1/m'] as string[]),
    });
    const snapshotArb = fc
      .record({
        containers: fc.uniqueArray(containerArb, { selector: (c) => c.name, maxLength: 3 }),
        models: fc.uniqueArray(modelArb, { selector: (m) => m.name, maxLength: 3 }),
      })
      .map(({ containers, models }) => snapshot({ models, runtime: { containers } }));

    it('plans nothing when the node already is what the snapshot asks', () => {
      fc.assert(
        fc.property(snapshotArb, (s) => {
          const d = desired(s);
          expect(plan(appliedState(d), d, { policy })).toEqual([]);
        }),
      );
    });

    it('fetches and pulls everything before it stops anything (download-then-kill)', () => {
      fc.assert(
        fc.property(snapshotArb, snapshotArb, (from, to) => {
          const steps = kinds(plan(appliedState(desired(from)), desired(to), { policy }));
          const lastFetch = Math.max(steps.lastIndexOf('fetch-model'), steps.lastIndexOf('pull-image'));
          const firstTouch = steps.findIndex((k) => k === 'stop' || k === 'remove');
          if (firstTouch >= 0) expect(lastFetch).toBeLessThan(firstTouch);
        }),
      );
    });

    it('waits for every new container before it stops an old one (hand-over)', () => {
      fc.assert(
        fc.property(snapshotArb, snapshotArb, (from, to) => {
          const steps = kinds(plan(appliedState(desired(from)), desired(to), { policy, strategy: 'hand-over' }));
          const firstStop = steps.indexOf('stop');
          if (firstStop >= 0) expect(steps.lastIndexOf('wait-healthy')).toBeLessThan(firstStop);
        }),
      );
    });

    it('never removes the file of a model the new or the retained snapshot references', () => {
      fc.assert(
        fc.property(snapshotArb, snapshotArb, snapshotArb, (previous, from, to) => {
          const steps = plan(appliedState(desired(from)), desired(to), { policy, retainModels: previous.models });
          const kept = new Set([...to.models, ...previous.models].map((m) => m.sha256));
          for (const step of steps) {
            if (step.kind === 'remove-model' && step.deleteBlob) expect(kept.has(step.model.sha256)).toBe(false);
          }
        }),
      );
    });
  });
});
