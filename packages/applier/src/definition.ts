import { createHash } from 'node:crypto';

import type { ContainerSpec } from '@resultity/snapshot';
import canonicalize from 'canonicalize';

import { fail } from './errors.js';
import type { ApplierPolicy, ContainerDefinition, NetworkMode } from './types.js';

export const DEFAULT_LABEL_PREFIX = 'io.resultity';
export const DEFAULT_CONTAINER_PREFIX = 'resultity';
export const MANAGED_BY = 'resultity-applier';

/** The label keys under a prefix; readCurrentState only looks at containers carrying `managedBy`. */
export function labelKeys(policy: Pick<ApplierPolicy, 'labelPrefix'>) {
  const p = policy.labelPrefix ?? DEFAULT_LABEL_PREFIX;
  return {
    managedBy: `${p}.managed-by`,
    name: `${p}.name`,
    definitionHash: `${p}.definition-hash`,
    definition: `${p}.definition`,
    configDigest: `${p}.config-digest`,
    tag: `${p}.tag`,
  };
}

/**
 * The network a container gets. With a bridge-less engine, published ports cannot work, so a
 * container with ports runs on the host network only when the operator allows it; otherwise it
 * runs isolated and its ports are recorded but not published.
 */
export function networkModeFor(spec: Pick<ContainerSpec, 'ports'>, policy: ApplierPolicy | undefined): NetworkMode {
  return spec.ports.length > 0 && policy?.allowHostNetwork === true ? 'host' : 'none';
}

/** The definition of a snapshot's container under a policy. */
export function definitionOf(spec: ContainerSpec, policy?: ApplierPolicy): ContainerDefinition {
  return {
    image: spec.image,
    digest: spec.digest,
    env: { ...spec.env },
    command: [...spec.command],
    ports: spec.ports.map((p) => ({ container: p.container, host: p.host, protocol: p.protocol })),
    restart: spec.restart,
    network: networkModeFor(spec, policy),
  };
}

/** Canonical JSON (RFC 8785) of a definition: the same definition always gives the same text. */
export function canonicalDefinition(definition: ContainerDefinition): string {
  const text = canonicalize(definition);
  if (text === undefined) fail('INVALID_STEP', 'container definition has no JSON form');
  return text;
}

/** Lowercase hex SHA-256 of the canonical definition; equal hashes mean no container step. */
export function definitionHash(definition: ContainerDefinition): string {
  return createHash('sha256').update(canonicalDefinition(definition)).digest('hex');
}

/** The engine's name of a container; the hash part lets old and new coexist during a replacement. */
export function containerNameFor(name: string, hash: string, policy?: Pick<ApplierPolicy, 'containerNamePrefix'>): string {
  return `${policy?.containerNamePrefix ?? DEFAULT_CONTAINER_PREFIX}-${name}-${hash.slice(0, 12)}`;
}

/** Parses a recorded definition label back, or null when it is not one. */
export function parseDefinition(text: string | undefined): ContainerDefinition | null {
  if (text === undefined) return null;
  try {
    const value = JSON.parse(text) as Partial<ContainerDefinition>;
    if (
      typeof value.image !== 'string' ||
      typeof value.digest !== 'string' ||
      typeof value.env !== 'object' ||
      value.env === null ||
      !Array.isArray(value.command) ||
      !Array.isArray(value.ports) ||
      typeof value.restart !== 'string' ||
      (value.network !== 'none' && value.network !== 'host')
    ) {
      return null;
    }
    return value as ContainerDefinition;
  } catch {
    return null;
  }
}

/**
 * The registry host of an image reference, as Docker reads it: the first path component when
 * it looks like a host (has a dot or a port, or is localhost), else Docker Hub.
 */
export function registryOf(image: string): string {
  const slash = image.indexOf('/');
  if (slash < 0) return 'docker.io';
  const first = image.slice(0, slash);
  if (first.includes('.') || first.includes(':') || first === 'localhost') return first.toLowerCase();
  return 'docker.io';
}

/** Refuses an image whose registry is not on the operator's allowlist. */
export function assertRegistryAllowed(image: string, policy: ApplierPolicy): void {
  const registry = registryOf(image);
  const allowed = policy.allowedRegistries.map((r) => r.toLowerCase());
  if (!allowed.includes(registry)) {
    fail(
      'REGISTRY_NOT_ALLOWED',
      `image ${image} comes from registry ${registry}; allowed are: ${allowed.join(', ') || '(none)'}`,
    );
  }
  const last = image.slice(image.lastIndexOf('/') + 1);
  if (/[@\s]/.test(image) || last.includes(':') || image.includes('..') || image !== image.toLowerCase()) {
    fail('POLICY_DENIED', `image reference ${JSON.stringify(image)} must be a lowercase repository name without @ or a tag`);
  }
}

/** Whether an image's repo digests include the digest that was asked for. */
export function hasRepoDigest(repoDigests: string[], image: string, digest: string): boolean {
  return repoDigests.some((rd) => rd === `${image}@${digest}`);
}
