import type { Model } from '@resultity/snapshot';

import { BRIDGE_MOUNT, containerNameFor, definitionHash, definitionOf } from './definition.js';
import type { CurrentState, DesiredState, InstalledModel, ModelRef, ObservedContainer, ParticipationFlags, PlanOptions, Step } from './types.js';

export const DEFAULT_HEALTH_TIMEOUT_MS = 60_000;

const keyOf = (m: { name: string; version: string }) => `${m.name}@${m.version}`;
const refOf = (m: ModelRef | Model): ModelRef => ({ name: m.name, version: m.version, sha256: m.sha256, size: m.size });

function sameFlags(a: ParticipationFlags | null, b: ParticipationFlags): boolean {
  return a !== null && a.mode === b.mode && a.subclouds.length === b.subclouds.length && a.subclouds.every((s, i) => s === b.subclouds[i]);
}

/**
 * The steps that take the node from `current` to `desired`, and only those: an unchanged
 * container definition or model gives no step, so applying the same snapshot twice does nothing.
 * Pure: the same inputs always give the same steps. Throws (POLICY_DENIED, GPUS_UNAVAILABLE)
 * when a container asks for what the policy does not give, so a refusal touches nothing.
 */
export function plan(current: CurrentState, desired: DesiredState, options: PlanOptions = {}): Step[] {
  const strategy = options.strategy ?? 'download-then-kill';
  const timeoutMs = options.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;

  const fetches: Step[] = [];
  const pulls: Step[] = [];
  const activations: Step[] = [];
  const stops: Step[] = [];
  const launches: Step[] = [];
  const restarts: Step[] = [];
  const removals: Step[] = [];
  const modelRemovals: Step[] = [];

  // Containers: keep the one whose definition is unchanged, retire every other.
  const observedByName = new Map<string, ObservedContainer[]>();
  for (const c of current.containers) {
    const list = observedByName.get(c.name) ?? [];
    list.push(c);
    observedByName.set(c.name, list);
  }
  const retire = (c: ObservedContainer) => {
    if (c.running) stops.push({ kind: 'stop', name: c.name, containerName: c.containerName, id: c.id });
    removals.push({ kind: 'remove', name: c.name, containerName: c.containerName, id: c.id });
  };
  const pulled = new Set<string>();
  for (const spec of desired.containers) {
    const definition = definitionOf(spec, options.policy);
    const hash = definitionHash(definition);
    const observed = observedByName.get(spec.name) ?? [];
    observedByName.delete(spec.name);
    const keep = observed.find((o) => o.definitionHash === hash && o.running) ?? observed.find((o) => o.definitionHash === hash);
    for (const o of observed) if (o !== keep) retire(o);
    if (keep !== undefined) {
      if (!keep.running) {
        restarts.push({ kind: 'start', name: spec.name, containerName: keep.containerName });
        restarts.push({ kind: 'wait-healthy', name: spec.name, containerName: keep.containerName, timeoutMs });
      }
      continue;
    }
    const ref = `${spec.image}@${spec.digest}`;
    if (!pulled.has(ref)) {
      pulled.add(ref);
      pulls.push({ kind: 'pull-image', image: spec.image, tag: spec.tag, digest: spec.digest });
    }
    const containerName = containerNameFor(spec.name, hash, options.policy);
    launches.push({
      kind: 'create',
      name: spec.name,
      containerName,
      tag: spec.tag,
      definition,
      definitionHash: hash,
      configDigest: desired.digest,
    });
    launches.push({ kind: 'start', name: spec.name, containerName });
    launches.push({ kind: 'wait-healthy', name: spec.name, containerName, timeoutMs });
  }
  for (const leftovers of observedByName.values()) for (const o of leftovers) retire(o);

  // Models: fetch what the store lacks, point the index at what is wanted, drop what nobody needs.
  const index = new Map(current.models.map((m) => [keyOf(m), m]));
  const present = new Set([...(current.blobs ?? []), ...current.models.filter((m) => m.present).map((m) => m.sha256)]);
  const desiredKeys = new Set(desired.models.map(keyOf));
  const retain = options.retainModels ?? [];
  const retainKeys = new Set(retain.map(keyOf));
  const wantedBlobs = new Set([...desired.models, ...retain].map((m) => m.sha256));
  for (const model of desired.models) {
    const entry = index.get(keyOf(model));
    if (entry !== undefined && entry.sha256 === model.sha256 && entry.present) continue;
    if (!present.has(model.sha256)) {
      present.add(model.sha256);
      fetches.push({ kind: 'fetch-model', model });
    }
    activations.push({ kind: 'activate-model', model: refOf(model) });
  }
  const isReplaced = (entry: InstalledModel) => desired.models.some((m) => keyOf(m) === keyOf(entry) && m.sha256 !== entry.sha256);
  const staying = new Set(current.models.filter((m) => !isReplaced(m) && (desiredKeys.has(keyOf(m)) || retainKeys.has(keyOf(m)))));
  const stayingBlobs = new Set([...wantedBlobs, ...[...staying].map((m) => m.sha256)]);
  for (const entry of current.models) {
    if (staying.has(entry)) continue;
    const deleteBlob = !stayingBlobs.has(entry.sha256);
    // A replaced entry is repointed by its activation; only its orphaned file is left to remove.
    if (isReplaced(entry) && !deleteBlob) continue;
    modelRemovals.push({ kind: 'remove-model', model: refOf(entry), deleteBlob });
  }
  // A file no index entry names (one a download of a failed apply left, or one a removal
  // killed between its index write and its unlink left) gets no step here: collection
  // (collect.ts), after the next successful apply, removes every such file no kept snapshot wants.

  const flags: Step[] = sameFlags(current.flags, desired.flags) ? [] : [{ kind: 'set-flags', flags: desired.flags }];

  const containerSteps = strategy === 'hand-over' ? [...launches, ...restarts, ...stops, ...removals] : [...stops, ...launches, ...restarts, ...removals];
  return [...fetches, ...pulls, ...activations, ...containerSteps, ...flags, ...modelRemovals];
}

function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${bytes} B`;
}

/** One human line per step, for `resultity-agent plan`. */
export function describeStep(step: Step): string {
  switch (step.kind) {
    case 'fetch-model':
      return `fetch model ${step.model.name}@${step.model.version} (${mib(step.model.size)}, sha256 ${step.model.sha256.slice(0, 12)}…)`;
    case 'pull-image':
      return `pull image ${step.image}:${step.tag} (${step.digest.slice(0, 19)}…)`;
    case 'create': {
      const d = step.definition;
      const ports = d.ports.map((p) => `${p.host}:${p.container}/${p.protocol}`).join(', ');
      const net =
        d.ports.length === 0
          ? 'network none'
          : d.network === 'host'
            ? `host network (ports ${ports})`
            : `network none; ports ${ports} recorded, not published (host network not allowed)`;
      // What the container is given beyond its image, so an operator sees it before it happens.
      const given = [
        d.bridgeDir === undefined ? null : `bridge ${d.bridgeDir} read-only at ${BRIDGE_MOUNT}`,
        d.modelsDir === undefined ? null : `models ${d.modelsDir} read-only`,
        d.gpus === undefined ? null : `${d.gpus} GPU${d.gpus === 1 ? '' : 's'}`,
        d.shmSizeMb === undefined ? null : `/dev/shm ${d.shmSizeMb} MiB`,
        d.pidsLimit === undefined ? null : `at most ${d.pidsLimit} processes`,
        d.memoryMb === undefined ? null : `memory ${d.memoryMb} MiB`,
      ].filter((x) => x !== null);
      return `create container ${step.name} as ${step.containerName} from ${d.image}:${step.tag}, ${net}${given.length > 0 ? `; ${given.join(', ')}` : ''}`;
    }
    case 'stop':
      return `stop container ${step.name} (${step.containerName})`;
    case 'remove':
      return `remove container ${step.name} (${step.containerName})`;
    case 'start':
      return `start container ${step.name} (${step.containerName})`;
    case 'wait-healthy':
      return `wait until ${step.name} is running and healthy (up to ${Math.round(step.timeoutMs / 1000)} s)`;
    case 'activate-model':
      return `activate model ${step.model.name}@${step.model.version}`;
    case 'remove-model':
      return `remove model ${step.model.name}@${step.model.version}${step.deleteBlob ? ' and its file' : ' (file kept, still referenced)'}`;
    case 'set-flags':
      return `set participation: ${step.flags.mode}, subclouds [${step.flags.subclouds.join(', ')}]`;
  }
}
