import { existsSync } from 'node:fs';
import { join } from 'node:path';

import type {
  ApplierPolicy,
  ApplierPorts,
  CollectableStore,
  ContainerEngine,
  DefaultPortsOptions,
  HttpDownloaderOptions,
  NodeProfile,
  Step,
  StoreFile,
} from '@resultity/applier';
import { environmentFromSnapshot } from '@resultity/bridge-protocol';

import { AgentError, errorCode, errorMessage, isRetryable } from './errors.js';
import type { ApplierPort, ApplyFailure, ApplyTarget, CollectResult, ObservedNode, StoreUsage } from './ports.js';

type ApplierModule = typeof import('@resultity/applier');

/** The default store (FsModelStore) can list and remove its files; a store injected by a test may not. */
function collectable(models: ApplierPorts['models']): (ApplierPorts['models'] & CollectableStore) | null {
  const m = models as Partial<CollectableStore>;
  return typeof m.inventory === 'function' && typeof m.removeFile === 'function' ? (models as ApplierPorts['models'] & CollectableStore) : null;
}

/** A store file as the audit log names it: its path inside the store. */
export function storeFileName(file: Pick<StoreFile, 'kind' | 'sha256'>): string {
  return file.kind === 'blob' ? `sha256/${file.sha256}` : `staging/${file.sha256}.${file.kind === 'journal' ? 'chunks' : file.kind}`;
}

/** Every model a kept snapshot references, whatever the node's profile: a rollback to it must not download. */
function keptModels(keep: readonly ApplyTarget[]): { sha256: string }[] {
  return keep.flatMap((t) => t.snapshot.models.map((m) => ({ sha256: m.sha256 })));
}

/** The applier's error as a typed failure: ApplyError says itself whether it restored the previous state. */
export function applyFailureFrom(error: unknown, applyError: ApplierModule['ApplyError'], signal?: AbortSignal): ApplyFailure {
  return {
    code: errorCode(error),
    message: errorMessage(error),
    retryable: isRetryable(error),
    rolledBack: error instanceof applyError ? error.rolledBack : false,
    cancelled: signal?.aborted === true,
    ...(error instanceof applyError && error.mirrors !== undefined ? { mirrors: error.mirrors } : {}),
  };
}

/** What the applier adapter needs from the configuration: where models live, the engine, the policy and profile. */
export interface ApplierAdapterOptions {
  readonly stateDir: string;
  /** The directory holding bridge.sock and bridge.token (`bridgeMountDir`); null refuses `bridge: true`. */
  readonly bridgeDir: string | null;
  readonly dockerSocketPath: string;
  readonly allowedRegistries: readonly string[];
  readonly profile: NodeProfile;
  readonly requestTimeoutMs: number;
  /** How models are downloaded: private addresses, minimum rate. */
  readonly downloads?: HttpDownloaderOptions;
  /** Chunked downloads: where chunk lists come from, and how many connections per model. */
  readonly chunks?: DefaultPortsOptions['chunks'];
  /** Bytes of the models disk kept free. */
  readonly reserveBytes?: number;
  /** Other ports (tests); the default adapters otherwise. */
  readonly ports?: ApplierPorts;
  /** Health wait for new containers, passed to the planner. */
  readonly healthTimeoutMs?: number;
  /** How long a container must keep running to count as up. */
  readonly stableMs?: number;
  /** The configuration's `containers`: limits of every container and the GPUs the node offers. */
  readonly containers?: {
    readonly pids_limit: number;
    readonly memory_mb?: number | undefined;
    readonly gpus: number;
    readonly allow_host_network?: boolean;
    readonly label_prefix?: string;
    readonly name_prefix?: string;
  };
  /** Told as each step starts: the daemon logs it (debug), so a log shows where an apply was when it stopped. */
  readonly onStep?: (kind: string, index: number, line: string) => void;
}

/** The model store the engine mounts into runtime containers with `models: true` (SPEC §6). */
export function modelStoreDir(stateDir: string): string {
  return join(stateDir, 'models');
}

/**
 * A node without a reachable Docker engine still applies snapshots that run no containers:
 * listing finds none, and any step that needs the engine fails with the engine's own error.
 *
 * Every apply plans from reality, and planning pings the engine before it lists the
 * containers. An engine that answered last time is not pinged again (the listing is the
 * request that matters, and a listing that fails asks again whether the engine is there:
 * gone, it lists nothing as before). `missing`, when given, says without a request that there
 * is no engine to ask (no socket at its path), so a node without Docker makes no engine call
 * per apply.
 */
export function optionalEngine(
  engine: ContainerEngine,
  onUnavailable?: (error: unknown) => void,
  missing?: () => string | null,
): ContainerEngine & { available(): Promise<boolean> } {
  let reachable: boolean | null = null;
  const probe = async () => {
    try {
      const absent = missing?.() ?? null;
      // The error is made only to be told: a node without Docker meets this on every apply.
      if (absent !== null) {
        if (reachable !== false) onUnavailable?.(new AgentError('ENGINE_UNAVAILABLE', absent));
        reachable = false;
        return reachable;
      }
      await engine.ping();
      reachable = true;
    } catch (error) {
      if (reachable !== false) onUnavailable?.(error);
      reachable = false;
    }
    return reachable;
  };
  return {
    available: probe,
    ping: async () => {
      if (reachable !== true) await probe();
    },
    listContainers: async (label) => {
      if (!(reachable ?? (await probe()))) return [];
      try {
        return await engine.listContainers(label);
      } catch (error) {
        if (await probe()) throw error;
        return [];
      }
    },
    inspectContainer: (id) => engine.inspectContainer(id),
    imageRepoDigests: (ref) => engine.imageRepoDigests(ref),
    pullImage: (ref, options) => engine.pullImage(ref, options),
    createContainer: (request) => engine.createContainer(request),
    startContainer: (id) => engine.startContainer(id),
    stopContainer: (id, timeout) => engine.stopContainer(id, timeout),
    removeContainer: (id) => engine.removeContainer(id),
  };
}

/** No engine can answer on a unix socket path where nothing exists: said (why, or null) without a request. */
export function socketMissing(path: string): () => string | null {
  return () => (existsSync(path) ? null : `there is no Docker engine socket at ${path}`);
}

/**
 * The Agent's ApplierPort on @resultity/applier: plan from reality, execute with rollback.
 * The applier (and the Docker client under it, tens of megabytes) is loaded on first use: a
 * node that only polls and finds nothing new never needs it.
 */
export function createApplierPort(options: ApplierAdapterOptions & { onEngineUnavailable?: (error: unknown) => void }): ApplierPort {
  const policy: ApplierPolicy = {
    allowedRegistries: [...options.allowedRegistries],
    // A container with `bridge: true` gets the bridge's directory (by default <state_dir>/run), one with `models: true` the store.
    ...(options.bridgeDir === null ? {} : { bridgeDir: options.bridgeDir }),
    modelsDir: options.ports?.models.root ?? modelStoreDir(options.stateDir),
    ...(options.containers === undefined
      ? {}
      : {
          pidsLimit: options.containers.pids_limit,
          gpusOffered: options.containers.gpus,
          allowHostNetwork: options.containers.allow_host_network === true,
          ...(options.containers.label_prefix === undefined ? {} : { labelPrefix: options.containers.label_prefix }),
          ...(options.containers.name_prefix === undefined ? {} : { containerNamePrefix: options.containers.name_prefix }),
          ...(options.containers.memory_mb === undefined ? {} : { memoryMb: options.containers.memory_mb }),
        }),
  };
  const profile = options.profile;
  let loading: Promise<{ mod: ApplierModule; ports: ApplierPorts; engine: ReturnType<typeof optionalEngine> }> | null = null;
  const load = () => {
    loading ??= import('@resultity/applier').then((mod) => {
      const base =
        options.ports ??
        mod.createDefaultPorts({
          stateDir: options.stateDir,
          dockerSocketPath: options.dockerSocketPath,
          policy,
          requestTimeoutMs: options.requestTimeoutMs,
          ...(options.downloads === undefined ? {} : { downloads: options.downloads }),
          ...(options.chunks === undefined ? {} : { chunks: options.chunks }),
          ...(options.reserveBytes === undefined ? {} : { reserveBytes: options.reserveBytes }),
        });
      // The default engine talks to the configured socket; ports a test passes in are asked as they are.
      const engine = optionalEngine(base.engine, options.onEngineUnavailable, options.ports ? undefined : socketMissing(options.dockerSocketPath));
      return { mod, ports: { ...base, engine }, engine };
    });
    return loading;
  };

  return {
    async plan(target, previous) {
      const { mod, ports } = await load();
      try {
        const current = await mod.readCurrentState(ports, policy);
        const desired = mod.desiredStateFrom(target.snapshot, target.digest, profile);
        const steps = mod.plan(current, desired, {
          policy,
          ...(previous ? { retainModels: previous.snapshot.models } : {}),
          ...(options.healthTimeoutMs === undefined ? {} : { healthTimeoutMs: options.healthTimeoutMs }),
        });
        return { ok: true, plan: { target, steps, lines: steps.map(mod.describeStep) } };
      } catch (error) {
        return { ok: false, failure: applyFailureFrom(error, mod.ApplyError) };
      }
    },

    async execute(planned, { signal, onProgress }) {
      const { mod, ports } = await load();
      try {
        const report = await mod.execute([...planned.steps] as Step[], ports, {
          policy,
          ...(signal ? { signal } : {}),
          ...(onProgress ? { onProgress } : {}),
          ...(options.onStep ? { onStep: (step: Step, index: number) => options.onStep?.(step.kind, index, mod.describeStep(step)) } : {}),
          ...(options.stableMs === undefined ? {} : { stableMs: options.stableMs }),
        });
        return {
          ok: true,
          durationMs: report.durationMs,
          steps: report.steps,
          ...(report.droppedMirrors.length > 0 ? { droppedMirrors: report.droppedMirrors } : {}),
        };
      } catch (error) {
        return { ok: false, failure: applyFailureFrom(error, mod.ApplyError, signal) };
      }
    },

    async environment(target) {
      const { mod, ports } = await load();
      return environmentFromSnapshot(target.snapshot, target.digest, {
        modelPath: (model) => mod.modelPath(ports.models, model),
        participation: { ...mod.evaluateParticipation(target.snapshot.participation, profile) },
      });
    },

    async flags(target) {
      const { mod } = await load();
      return mod.evaluateParticipation(target.snapshot.participation, profile);
    },

    async storeUsage(keep): Promise<StoreUsage | null> {
      const { mod, ports } = await load();
      const store = collectable(ports.models);
      if (store === null) return null;
      const planned = mod.planCollection(await store.inventory(), keptModels(keep));
      return { bytes: planned.storeBytes, collectable: { bytes: planned.bytes, count: planned.remove.length } };
    },

    async collect(keep): Promise<CollectResult> {
      const { mod, ports } = await load();
      const store = collectable(ports.models);
      if (store === null) return { removed: [], bytesFreed: 0, failed: [] };
      const report = await mod.executeCollection(mod.planCollection(await store.inventory(), keptModels(keep)), store);
      return {
        removed: report.removed.map((f) => ({ file: storeFileName(f), bytes: f.bytes })),
        bytesFreed: report.bytesFreed,
        failed: report.failed.map((f) => ({ file: storeFileName(f.file), message: f.message })),
      };
    },

    async observe(): Promise<ObservedNode> {
      const { mod, ports, engine } = await load();
      if (!(await engine.available())) {
        throw new AgentError('ENGINE_UNAVAILABLE', `the container engine at ${options.dockerSocketPath} is not reachable`);
      }
      const current = await mod.readCurrentState(ports, policy);
      return {
        containers: current.containers.map((c) => ({
          name: c.name,
          image: c.definition ? `${c.definition.image}@${c.definition.digest}` : c.tag,
          state: c.state,
        })),
        models: current.models.filter((m) => m.present).map((m) => ({ name: m.name, version: m.version })),
        flags: current.flags,
      };
    },
  };
}
