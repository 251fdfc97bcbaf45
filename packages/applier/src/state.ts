import { join } from 'node:path';

import type { Model } from '@resultity/snapshot';

import { MANAGED_BY, labelKeys, parseDefinition } from './definition.js';
import { OriginChunkLists } from './chunk-lists.js';
import { DockerEngine } from './docker.js';
import { ApplyError, messageOf } from './errors.js';
import { FileFlagsStore, systemClock } from './flags.js';
import { HttpDownloader, type HttpDownloaderOptions } from './http.js';
import type { ApplierPorts, EngineContainer, ModelStore } from './ports.js';
import { FsModelStore, assertSha256 } from './store.js';
import type { ApplierPolicy, CurrentState, ObservedContainer } from './types.js';

/** Reads a labelled engine container back into what the planner compares. */
export function observedFrom(container: EngineContainer, policy: ApplierPolicy): ObservedContainer | null {
  const keys = labelKeys(policy);
  const labels = container.labels;
  if (labels[keys.managedBy] !== MANAGED_BY) return null;
  const name = labels[keys.name];
  if (name === undefined) return null;
  return {
    id: container.id,
    containerName: container.name,
    name,
    definitionHash: labels[keys.definitionHash] ?? '',
    configDigest: labels[keys.configDigest] ?? '',
    tag: labels[keys.tag] ?? '',
    definition: parseDefinition(labels[keys.definition]),
    state: container.state,
    running: container.state === 'running',
  };
}

/** The containers this applier manages, as the engine has them now. */
export async function listManaged(
  ports: Pick<ApplierPorts, 'engine'>,
  policy: ApplierPolicy,
): Promise<{ raw: EngineContainer; observed: ObservedContainer }[]> {
  const keys = labelKeys(policy);
  const out: { raw: EngineContainer; observed: ObservedContainer }[] = [];
  for (const raw of await ports.engine.listContainers(keys.managedBy)) {
    const observed = observedFrom(raw, policy);
    if (observed !== null) out.push({ raw, observed });
  }
  return out;
}

/**
 * The node's reality: containers carrying this applier's labels, the model store's index (and
 * which blobs are really there), and the flags file. Nothing is taken from memory of past applies.
 */
export async function readCurrentState(ports: ApplierPorts, policy: ApplierPolicy): Promise<CurrentState> {
  await ports.engine.ping();
  let containers: ObservedContainer[];
  try {
    containers = (await listManaged(ports, policy)).map((c) => c.observed);
  } catch (cause) {
    if (cause instanceof ApplyError) throw cause;
    throw new ApplyError('ENGINE_FAILED', `could not list the containers: ${messageOf(cause)}`, { cause });
  }
  const blobs = await ports.models.listBlobs();
  const have = new Set(blobs);
  const models = (await ports.models.readIndex()).map((m) => ({ ...m, present: have.has(m.sha256) }));
  const flags = await ports.flags.read();
  return { containers, models, flags, blobs };
}

/** Options of the default adapters. */
export interface DefaultPortsOptions {
  dockerSocketPath?: string;
  /** Models live under `<stateDir>/models`, flags at `<stateDir>/flags.json`. */
  stateDir: string;
  policy: ApplierPolicy;
  requestTimeoutMs?: number;
  /** Options of the model downloader; its idle timeout defaults to `requestTimeoutMs`. */
  downloads?: HttpDownloaderOptions;
  /**
   * Chunked model downloads (SPEC §3 `chunks`): chunk lists come from `{origin}/v1/{network}/chunks/`
   * through the model downloader; `connections` ranged requests per model (default 8). Without
   * it, every model comes down as one stream.
   */
  chunks?: { origin: string; network: string; connections?: number };
  /** Bytes of the models disk kept free: a download that would eat into them is refused up front (default 0). */
  reserveBytes?: number;
}

/** The default adapters: Docker via dockerode, a file-system model store, HTTP, the system clock. */
export function createDefaultPorts(options: DefaultPortsOptions): ApplierPorts {
  const engineOptions: { socketPath?: string; requestTimeoutMs?: number } = {};
  if (options.dockerSocketPath !== undefined) engineOptions.socketPath = options.dockerSocketPath;
  if (options.requestTimeoutMs !== undefined) engineOptions.requestTimeoutMs = options.requestTimeoutMs;
  const models = new FsModelStore(join(options.stateDir, 'models'), { reserveBytes: options.reserveBytes ?? 0 });
  const downloader = new HttpDownloader({
    ...(options.requestTimeoutMs === undefined ? {} : { idleTimeoutMs: options.requestTimeoutMs }),
    ...options.downloads,
  });
  const chunks = options.chunks;
  return {
    engine: new DockerEngine(engineOptions),
    models,
    downloader,
    flags: new FileFlagsStore(join(options.stateDir, 'flags.json')),
    clock: systemClock,
    ...(chunks === undefined
      ? {}
      : {
          chunks: {
            lists: new OriginChunkLists(chunks.origin, chunks.network, downloader),
            staging: models,
            ...(chunks.connections === undefined ? {} : { connections: chunks.connections }),
          },
        }),
  };
}

/**
 * The local path of an installed model, for the runtime environment. Given a string, it is the
 * Agent's state directory (models under `<stateDir>/models`); given a ModelStore, its own layout.
 */
export function modelPath(stateDirOrStore: string | ModelStore, model: Pick<Model, 'sha256'>): string {
  if (typeof stateDirOrStore === 'string') return join(stateDirOrStore, 'models', 'sha256', assertSha256(model.sha256));
  return stateDirOrStore.blobPath(model.sha256);
}
