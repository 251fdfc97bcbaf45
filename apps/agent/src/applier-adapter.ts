import {
  type ApplierPolicy,
  type ApplierPorts,
  type ContainerEngine,
  type DefaultPortsOptions,
  type HttpDownloaderOptions,
  type NodeProfile,
  type Step,
  createDefaultPorts,
  describeStep,
  desiredStateFrom,
  evaluateParticipation,
  execute,
  modelPath,
  plan,
  readCurrentState,
} from '@resultity/applier';
import { environmentFromSnapshot } from '@resultity/bridge-protocol';

import { AgentError } from './errors.js';
import type { ApplierPort, ObservedNode } from './ports.js';

/** What the applier adapter needs from the configuration: where models live, the engine, the policy and profile. */
export interface ApplierAdapterOptions {
  readonly stateDir: string;
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
}

/**
 * A node without a reachable Docker engine still applies snapshots that run no containers:
 * listing finds none, and any step that needs the engine fails with the engine's own error.
 */
export function optionalEngine(engine: ContainerEngine, onUnavailable?: (error: unknown) => void): ContainerEngine & { available(): Promise<boolean> } {
  let reachable: boolean | null = null;
  const probe = async () => {
    try {
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
      await probe();
    },
    listContainers: async (label) => ((reachable ?? (await probe())) ? engine.listContainers(label) : []),
    inspectContainer: (id) => engine.inspectContainer(id),
    imageRepoDigests: (ref) => engine.imageRepoDigests(ref),
    pullImage: (ref, options) => engine.pullImage(ref, options),
    createContainer: (request) => engine.createContainer(request),
    startContainer: (id) => engine.startContainer(id),
    stopContainer: (id, timeout) => engine.stopContainer(id, timeout),
    removeContainer: (id) => engine.removeContainer(id),
  };
}

/** The Agent's ApplierPort on @resultity/applier: plan from reality, execute with rollback. */
export function createApplierPort(options: ApplierAdapterOptions & { onEngineUnavailable?: (error: unknown) => void }): ApplierPort {
  const policy: ApplierPolicy = { allowedRegistries: [...options.allowedRegistries] };
  const base =
    options.ports ??
    createDefaultPorts({
      stateDir: options.stateDir,
      dockerSocketPath: options.dockerSocketPath,
      policy,
      requestTimeoutMs: options.requestTimeoutMs,
      ...(options.downloads === undefined ? {} : { downloads: options.downloads }),
      ...(options.chunks === undefined ? {} : { chunks: options.chunks }),
      ...(options.reserveBytes === undefined ? {} : { reserveBytes: options.reserveBytes }),
    });
  const engine = optionalEngine(base.engine, options.onEngineUnavailable);
  const ports: ApplierPorts = { ...base, engine };
  const profile = options.profile;

  return {
    async plan(target, previous) {
      const current = await readCurrentState(ports, policy);
      const desired = desiredStateFrom(target.snapshot, target.digest, profile);
      const steps = plan(current, desired, {
        policy,
        ...(previous ? { retainModels: previous.snapshot.models } : {}),
        ...(options.healthTimeoutMs === undefined ? {} : { healthTimeoutMs: options.healthTimeoutMs }),
      });
      return { target, steps, lines: steps.map(describeStep) };
    },

    async execute(planned, { signal, onProgress }) {
      const report = await execute(planned.steps as Step[], ports, {
        policy,
        ...(signal ? { signal } : {}),
        ...(onProgress ? { onProgress } : {}),
        ...(options.stableMs === undefined ? {} : { stableMs: options.stableMs }),
      });
      return { durationMs: report.durationMs, steps: report.steps };
    },

    environment(target) {
      return environmentFromSnapshot(target.snapshot, target.digest, {
        modelPath: (model) => modelPath(ports.models, model),
        participation: { ...evaluateParticipation(target.snapshot.participation, profile) },
      });
    },

    flags(target) {
      return evaluateParticipation(target.snapshot.participation, profile);
    },

    async observe(): Promise<ObservedNode> {
      if (!(await engine.available())) {
        throw new AgentError('ENGINE_UNAVAILABLE', `the container engine at ${options.dockerSocketPath} is not reachable`);
      }
      const current = await readCurrentState(ports, policy);
      return {
        containers: current.containers.map((c) => ({ name: c.name, image: c.definition ? `${c.definition.image}@${c.definition.digest}` : c.tag, state: c.state })),
        models: current.models.filter((m) => m.present).map((m) => ({ name: m.name, version: m.version })),
        flags: current.flags,
      };
    },
  };
}
