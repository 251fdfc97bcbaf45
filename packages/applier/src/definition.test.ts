import { describe, expect, it } from 'vitest';

import type { ContainerSpec } from '@resultity/snapshot';

import { assertRegistryAllowed, containerNameFor, definitionHash, definitionOf, hasRepoDigest, parseDefinition, registryOf } from './definition.js';
import { dockerCreateOptions } from './docker.js';
import type { ApplierPolicy, ContainerDefinition } from './types.js';

const definition: ContainerDefinition = {
  image: '127.0.0.1:5000/resultity/runtime',
  digest: `sha256:${'a'.repeat(64)}`,
  env: { B: '2', A: '1' },
  command: ['serve'],
  ports: [{ container: 8080, host: 18080, protocol: 'tcp' }],
  restart: 'always',
  network: 'none',
};

describe('definitionHash', () => {
  it('does not depend on the order of env keys', () => {
    expect(definitionHash({ ...definition, env: { A: '1', B: '2' } })).toBe(definitionHash(definition));
  });

  it('changes when the network mode changes', () => {
    expect(definitionHash({ ...definition, network: 'host' })).not.toBe(definitionHash(definition));
  });

  it('round-trips through the recorded label', () => {
    const hash = definitionHash(definition);
    expect(definitionHash(parseDefinition(JSON.stringify(definition))!)).toBe(hash);
    expect(parseDefinition('{"image":1}')).toBeNull();
    expect(parseDefinition('not json')).toBeNull();
  });

  it('names containers with the definition name and a part of the hash', () => {
    expect(containerNameFor('inference', 'abcdef0123456789', { containerNamePrefix: 'rt' })).toBe('rt-inference-abcdef012345');
  });
});

describe('registries', () => {
  it('reads the registry host the way Docker does', () => {
    expect(registryOf('127.0.0.1:5000/a/b')).toBe('127.0.0.1:5000');
    expect(registryOf('localhost/a')).toBe('localhost');
    expect(registryOf('ghcr.io/a/b')).toBe('ghcr.io');
    expect(registryOf('library/busybox')).toBe('docker.io');
    expect(registryOf('busybox')).toBe('docker.io');
  });

  it('refuses an image from a registry off the allowlist with REGISTRY_NOT_ALLOWED', () => {
    expect(() => assertRegistryAllowed('evil.example/x', { allowedRegistries: ['127.0.0.1:5000'] })).toThrow(
      expect.objectContaining({ code: 'REGISTRY_NOT_ALLOWED' }),
    );
    expect(() => assertRegistryAllowed('busybox', { allowedRegistries: ['127.0.0.1:5000'] })).toThrow(
      expect.objectContaining({ code: 'REGISTRY_NOT_ALLOWED' }),
    );
  });

  it('refuses an image reference that smuggles a tag or a digest', () => {
    const policy = { allowedRegistries: ['127.0.0.1:5000'] };
    expect(() => assertRegistryAllowed('127.0.0.1:5000/x:latest', policy)).toThrow(expect.objectContaining({ code: 'POLICY_DENIED' }));
    expect(() => assertRegistryAllowed(`127.0.0.1:5000/x@sha256:${'a'.repeat(64)}`, policy)).toThrow(expect.objectContaining({ code: 'POLICY_DENIED' }));
    expect(() => assertRegistryAllowed('127.0.0.1:5000/x', policy)).not.toThrow();
  });

  it('matches a repo digest only for the same repository and digest', () => {
    const d = `sha256:${'b'.repeat(64)}`;
    expect(hasRepoDigest([`127.0.0.1:5000/x@${d}`], '127.0.0.1:5000/x', d)).toBe(true);
    expect(hasRepoDigest([`127.0.0.1:5000/y@${d}`], '127.0.0.1:5000/x', d)).toBe(false);
    expect(hasRepoDigest([`127.0.0.1:5000/x@sha256:${'c'.repeat(64)}`], '127.0.0.1:5000/x', d)).toBe(false);
  });
});

describe('dockerCreateOptions', () => {
  it('never asks for privileges, binds, mounts, devices or capabilities, and pins the image by digest', () => {
    const options = dockerCreateOptions({ containerName: 'resultity-x', definition, labels: { l: 'v' } });
    expect(options).toMatchObject({
      name: 'resultity-x',
      Image: `${definition.image}@${definition.digest}`,
      Env: ['B=2', 'A=1'],
      Cmd: ['serve'],
      Labels: { l: 'v' },
      HostConfig: {
        NetworkMode: 'none',
        Privileged: false,
        Binds: [],
        Mounts: [],
        Devices: [],
        CapAdd: [],
        PublishAllPorts: false,
        RestartPolicy: { Name: 'always' },
      },
    });
    expect(options.HostConfig).not.toHaveProperty('PortBindings');
    expect(options.HostConfig).not.toHaveProperty('DeviceRequests');
  });

  it('drops every capability and keeps no-new-privileges', () => {
    expect(dockerCreateOptions({ containerName: 'c', definition, labels: {} }).HostConfig).toMatchObject({
      CapDrop: ['ALL'],
      CapAdd: [],
      SecurityOpt: ['no-new-privileges'],
    });
  });

  it('turns the limits, the runtime directories, the GPUs and /dev/shm into what the engine receives', () => {
    const full: ContainerDefinition = {
      ...definition,
      pidsLimit: 256,
      memoryMb: 512,
      bridgeDir: '/var/lib/resultity/run',
      modelsDir: '/var/lib/resultity/models',
      gpus: 2,
      shmSizeMb: 64,
    };
    expect(dockerCreateOptions({ containerName: 'c', definition: full, labels: {} }).HostConfig).toMatchObject({
      PidsLimit: 256,
      Memory: 512 * 1024 * 1024,
      MemorySwap: 512 * 1024 * 1024,
      ShmSize: 64 * 1024 * 1024,
      Binds: [],
      Mounts: [
        { Type: 'bind', Source: '/var/lib/resultity/run', Target: '/run/resultity', ReadOnly: true },
        { Type: 'bind', Source: '/var/lib/resultity/models', Target: '/var/lib/resultity/models', ReadOnly: true },
      ],
      DeviceRequests: [{ Driver: 'nvidia', Count: 2, Capabilities: [['gpu']] }],
    });
  });
});

describe('definitionOf', () => {
  const spec = (extra: Record<string, unknown> = {}): ContainerSpec =>
    ({
      name: 'rt',
      image: '127.0.0.1:5000/rt',
      tag: '1',
      digest: definition.digest,
      env: { A: '1' },
      command: [],
      ports: [],
      restart: 'no',
      bridge: false,
      models: false,
      ...extra,
    }) as ContainerSpec;
  const policy = { allowedRegistries: ['127.0.0.1:5000'], bridgeDir: '/srv/r/run', modelsDir: '/srv/r/models', gpusOffered: 4 };

  it('confines by default: a pids limit of 4096, no memory limit unless the Agent sets one', () => {
    expect(definitionOf(spec(), { allowedRegistries: [] })).toMatchObject({ pidsLimit: 4096 });
    expect(definitionOf(spec(), { allowedRegistries: [] })).not.toHaveProperty('memoryMb');
    expect(definitionOf(spec(), { allowedRegistries: [], pidsLimit: 64, memoryMb: 256 })).toMatchObject({ pidsLimit: 64, memoryMb: 256 });
  });

  it('gives neither mount nor variable to a container without bridge and models, even when its env names them', () => {
    const d = definitionOf(spec({ env: { RESULTITY_MODELS_DIR: '/etc', RESULTITY_BRIDGE_SOCKET: '/x' } }), policy);
    expect(d.env).toEqual({});
    expect(d).not.toHaveProperty('bridgeDir');
    expect(d).not.toHaveProperty('modelsDir');
    expect(d).not.toHaveProperty('gpus');
  });

  it('gives a bridge container the bridge directory and its variables, a models container the store and its variable', () => {
    const d = definitionOf(spec({ bridge: true, models: true, shm_size_mb: 1024 }), policy);
    expect(d).toMatchObject({ bridgeDir: '/srv/r/run', modelsDir: '/srv/r/models', shmSizeMb: 1024 });
    expect(d.env).toEqual({
      A: '1',
      RESULTITY_BRIDGE_SOCKET: '/run/resultity/bridge.sock',
      RESULTITY_BRIDGE_TOKEN_FILE: '/run/resultity/bridge.token',
      RESULTITY_MODELS_DIR: '/srv/r/models',
    });
  });

  it('changes the hash when any runtime field changes, so the container is recreated', () => {
    const hashes = [{}, { bridge: true }, { models: true }, { gpus: 1 }, { gpus: 2 }, { shm_size_mb: 64 }].map((extra) =>
      definitionHash(definitionOf(spec(extra), policy)),
    );
    expect(new Set(hashes).size).toBe(hashes.length);
    expect(definitionHash(definitionOf(spec(), { ...policy, memoryMb: 100 }))).not.toBe(definitionHash(definitionOf(spec(), policy)));
  });

  it('reads gpus "all" as every GPU the node offers, never the engine\'s "all the host has"', () => {
    expect(definitionOf(spec({ gpus: 'all' }), policy).gpus).toBe(4);
  });

  const none: ApplierPolicy = { allowedRegistries: [] };
  const refusals: [string, Record<string, unknown>, ApplierPolicy, string][] = [
    ['more GPUs than offered', { gpus: 5 }, policy, 'GPUS_UNAVAILABLE'],
    ['all GPUs of a node that offers none', { gpus: 'all' }, none, 'GPUS_UNAVAILABLE'],
    ['a GPU of a node whose policy says nothing of GPUs', { gpus: 1 }, none, 'GPUS_UNAVAILABLE'],
    ['the bridge when the Agent names no bridge directory', { bridge: true }, none, 'POLICY_DENIED'],
    ['the models when the Agent names no model directory', { models: true }, none, 'POLICY_DENIED'],
  ];
  for (const [what, extra, p, code] of refusals) {
    it(`refuses ${what} with ${code}`, () => {
      expect(() => definitionOf(spec(extra), p)).toThrow(expect.objectContaining({ code }));
    });
  }

  it('round-trips a definition with every runtime field through the recorded label', () => {
    const d = definitionOf(spec({ bridge: true, models: true, gpus: 2, shm_size_mb: 8 }), { ...policy, memoryMb: 64 });
    expect(parseDefinition(JSON.stringify(d))).toEqual(d);
    expect(parseDefinition(JSON.stringify({ ...d, gpus: 'all' }))).toBeNull();
  });

  it('keeps the image command when the definition has none', () => {
    expect(dockerCreateOptions({ containerName: 'c', definition: { ...definition, command: [] }, labels: {} })).not.toHaveProperty('Cmd');
  });
});
