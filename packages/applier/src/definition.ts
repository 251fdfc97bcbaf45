import { createHash } from 'node:crypto';
import { isAbsolute } from 'node:path';

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

export const DEFAULT_PIDS_LIMIT = 4096;

/** Where a container with `bridge: true` finds the Agent's bridge (SPEC §6). */
export const BRIDGE_MOUNT = '/run/resultity';
export const BRIDGE_ENV = {
  socket: 'RESULTITY_BRIDGE_SOCKET',
  tokenFile: 'RESULTITY_BRIDGE_TOKEN_FILE',
  modelsDir: 'RESULTITY_MODELS_DIR',
} as const;
const RESERVED_ENV: ReadonlySet<string> = new Set(Object.values(BRIDGE_ENV));

/**
 * The GPUs a container gets: its ask, limited by the operator's offer. "all" means all that
 * are offered (not all the host has: the engine's -1 could hand over GPUs the operator kept
 * back). Asking for more than is offered is GPUS_UNAVAILABLE, at plan time.
 */
export function gpusFor(name: string, asked: unknown, policy: ApplierPolicy | undefined): number | undefined {
  if (asked === undefined) return undefined;
  const offered = policy?.gpusOffered ?? 0;
  if (asked === 'all') {
    if (offered < 1) fail('GPUS_UNAVAILABLE', `container ${name} asks for all GPUs; expected the node to offer at least 1, it offers 0`);
    return offered;
  }
  if (typeof asked !== 'number' || !Number.isSafeInteger(asked) || asked < 1) {
    fail('POLICY_DENIED', `container ${name}: expected gpus "all" or a positive integer, found ${JSON.stringify(asked)}`);
  }
  if (asked > offered) fail('GPUS_UNAVAILABLE', `container ${name} asks for ${asked} GPU(s); the node offers ${offered}`);
  return asked;
}

/**
 * The definition of a snapshot's container under a policy: what it runs plus what the node
 * gives it (limits, the bridge and model directories, GPUs). Refuses, before anything runs, a
 * container that asks for what the policy does not provide.
 */
export function definitionOf(spec: ContainerSpec, policy?: ApplierPolicy): ContainerDefinition {
  // The bridge and model variables come from the Agent only, so a container without the
  // mount never believes it has one.
  const env = Object.fromEntries(Object.entries(spec.env).filter(([k]) => !RESERVED_ENV.has(k)));
  const definition: ContainerDefinition = {
    image: spec.image,
    digest: spec.digest,
    env,
    command: [...spec.command],
    ports: spec.ports.map((p) => ({ container: p.container, host: p.host, protocol: p.protocol })),
    restart: spec.restart,
    network: networkModeFor(spec, policy),
    pidsLimit: policy?.pidsLimit ?? DEFAULT_PIDS_LIMIT,
  };
  if (policy?.memoryMb !== undefined) definition.memoryMb = policy.memoryMb;
  if (spec.bridge === true) {
    const dir = requireAbsoluteDir(spec.name, 'the runtime bridge', 'bridge', policy?.bridgeDir);
    definition.bridgeDir = dir;
    env[BRIDGE_ENV.socket] = `${BRIDGE_MOUNT}/bridge.sock`;
    env[BRIDGE_ENV.tokenFile] = `${BRIDGE_MOUNT}/bridge.token`;
  }
  if (spec.models === true) {
    const dir = requireAbsoluteDir(spec.name, 'the model store', 'model', policy?.modelsDir);
    definition.modelsDir = dir;
    env[BRIDGE_ENV.modelsDir] = dir;
  }
  const gpus = gpusFor(spec.name, spec.gpus, policy);
  if (gpus !== undefined) definition.gpus = gpus;
  if (spec.shm_size_mb !== undefined) definition.shmSizeMb = spec.shm_size_mb;
  return definition;
}

/** A mount the snapshot asks for is only granted where the Agent's policy names an absolute host directory. */
function requireAbsoluteDir(container: string, what: string, kind: string, dir: string | undefined): string {
  if (dir === undefined || !isAbsolute(dir)) {
    fail(
      'POLICY_DENIED',
      `container ${container} asks for ${what}; expected the Agent to name an absolute ${kind} directory, found ${JSON.stringify(dir ?? null)}`,
    );
  }
  return dir;
}

/**
 * Checks a definition (a planned step's, possibly stored and read back) against the policy:
 * mounts only of the policy's own directories, no more GPUs than offered, limits no looser
 * than the policy's. A snapshot cannot widen the policy, and neither can an edited plan.
 */
export function assertDefinitionAllowed(name: string, definition: ContainerDefinition, policy: ApplierPolicy): void {
  if (definition.network !== 'none' && definition.network !== 'host') {
    fail('POLICY_DENIED', `container ${name}: expected network none or host, found ${String(definition.network)}`);
  }
  if (definition.network === 'host' && policy.allowHostNetwork !== true) {
    fail('POLICY_DENIED', `container ${name} asks for the host network, which the Agent's policy does not allow`);
  }
  if (definition.bridgeDir !== undefined && definition.bridgeDir !== policy.bridgeDir) {
    fail(
      'POLICY_DENIED',
      `container ${name}: expected the bridge directory ${JSON.stringify(policy.bridgeDir ?? null)}, found ${JSON.stringify(definition.bridgeDir)}`,
    );
  }
  if (definition.modelsDir !== undefined && definition.modelsDir !== policy.modelsDir) {
    fail(
      'POLICY_DENIED',
      `container ${name}: expected the model directory ${JSON.stringify(policy.modelsDir ?? null)}, found ${JSON.stringify(definition.modelsDir)}`,
    );
  }
  if (definition.gpus !== undefined) gpusFor(name, definition.gpus, policy);
  const pids = policy.pidsLimit ?? DEFAULT_PIDS_LIMIT;
  if (definition.pidsLimit === undefined || definition.pidsLimit > pids) {
    fail('POLICY_DENIED', `container ${name}: expected a pids limit of at most ${pids}, found ${definition.pidsLimit ?? 'none'}`);
  }
  if (policy.memoryMb !== undefined && (definition.memoryMb === undefined || definition.memoryMb > policy.memoryMb)) {
    fail('POLICY_DENIED', `container ${name}: expected a memory limit of at most ${policy.memoryMb} MiB, found ${definition.memoryMb ?? 'none'}`);
  }
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

const optional = (value: unknown, type: 'string' | 'number') => value === undefined || typeof value === type;

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
      (value.network !== 'none' && value.network !== 'host') ||
      !optional(value.bridgeDir, 'string') ||
      !optional(value.modelsDir, 'string') ||
      !optional(value.gpus, 'number') ||
      !optional(value.shmSizeMb, 'number') ||
      !optional(value.pidsLimit, 'number') ||
      !optional(value.memoryMb, 'number')
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
    fail('REGISTRY_NOT_ALLOWED', `image ${image} comes from registry ${registry}; allowed are: ${allowed.join(', ') || '(none)'}`);
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
