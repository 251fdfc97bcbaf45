import { describe, expect, it } from 'vitest';

import { assertRegistryAllowed, containerNameFor, definitionHash, hasRepoDigest, parseDefinition, registryOf } from './definition.js';
import { dockerCreateOptions } from './docker.js';
import type { ContainerDefinition } from './types.js';

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
    expect(() => assertRegistryAllowed(`127.0.0.1:5000/x@sha256:${'a'.repeat(64)}`, policy)).toThrow(
      expect.objectContaining({ code: 'POLICY_DENIED' }),
    );
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
  });

  it('keeps the image command when the definition has none', () => {
    expect(dockerCreateOptions({ containerName: 'c', definition: { ...definition, command: [] }, labels: {} })).not.toHaveProperty('Cmd');
  });
});
