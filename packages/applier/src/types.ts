import type { ContainerSpec, Model, PortMapping, RestartPolicy } from '@resultity/snapshot';

import type { MirrorProgress } from './chunked.js';
import type { MirrorFailure } from './errors.js';

/** What the node offers, from the Agent's configuration `profile`; subclouds require against it. */
export interface NodeProfile {
  vram_gb: number;
  regions: string[];
  gpu: string[];
}

/** The Agent operator's limits on what a snapshot may make the node run; a snapshot cannot widen them. */
export interface ApplierPolicy {
  /** Registry hosts (e.g. "127.0.0.1:5000") images may come from; anything else is REGISTRY_NOT_ALLOWED. */
  allowedRegistries: string[];
  /** Default false. Only then may a container that declares ports run on the host network. */
  allowHostNetwork?: boolean;
  /** Host address published ports bind to, default "127.0.0.1" (recorded; see README on networking). */
  portBindAddress?: string;
  /** Prefix of the labels the applier puts on its containers, default "io.resultity". */
  labelPrefix?: string;
  /** Prefix of container names, default "resultity" (a container is named `<prefix>-<name>-<hash8>`). */
  containerNamePrefix?: string;
  /** Most processes a container may run (the engine's pids limit), default 4096: a fork bomb stays inside. */
  pidsLimit?: number;
  /** Memory a container may use, in MiB (swap included); unset means the engine's default (no limit). */
  memoryMb?: number;
  /** GPUs the operator makes available to containers, default 0; a snapshot asking for more is GPUS_UNAVAILABLE. */
  gpusOffered?: number;
  /** Host directory holding the bridge socket and token (the Agent's `<state_dir>/run`); needed by `bridge: true`. */
  bridgeDir?: string;
  /** Host directory of the model store (absolute); needed by `models: true`. */
  modelsDir?: string;
}

/** Which participation the node takes up: the mode and the subclouds whose requirements it meets. */
export interface ParticipationFlags {
  mode: 'testnet' | 'mainnet';
  subclouds: string[];
}

/** The state a snapshot asks for, reduced to what the applier acts on. */
export interface DesiredState {
  digest: string;
  sequence: number;
  containers: ContainerSpec[];
  models: Model[];
  flags: ParticipationFlags;
}

/** How a container reaches the network: never the host's unless the policy allows it. */
export type NetworkMode = 'none' | 'host';

/**
 * Everything that makes two containers the same container. Its canonical JSON is hashed into
 * the definition-hash label; the tag and job parameters are deliberately not part of it.
 */
export interface ContainerDefinition {
  image: string;
  digest: string;
  env: Record<string, string>;
  command: string[];
  ports: PortMapping[];
  restart: RestartPolicy;
  network: NetworkMode;
  /**
   * The following are present only when they apply, so a definition recorded before they
   * existed parses and hashes as it did. Host paths are resolved here (not at create time) so
   * a rollback recreates exactly what ran, and a moved state directory recreates the container.
   */
  /** Host directory mounted read-only at /run/resultity (bridge: true). */
  bridgeDir?: string;
  /** Host model store mounted read-only at the same path (models: true). */
  modelsDir?: string;
  /** GPUs asked of the engine, already limited to what the node offers. */
  gpus?: number;
  /** Size of /dev/shm in MiB. */
  shmSizeMb?: number;
  /** The engine's pids limit. */
  pidsLimit?: number;
  /** Memory limit in MiB. */
  memoryMb?: number;
}

/** A container of this applier as found on the engine, read back from its labels. */
export interface ObservedContainer {
  id: string;
  /** The engine's name for it, e.g. "resultity-inference-1a2b3c4d". */
  containerName: string;
  /** The snapshot's name of the container definition. */
  name: string;
  definitionHash: string;
  configDigest: string;
  tag: string;
  /** The recorded definition, so a removed container can be recreated on rollback. */
  definition: ContainerDefinition | null;
  state: string;
  running: boolean;
}

/** One name@version entry of the model store's index. */
export interface InstalledModel {
  name: string;
  version: string;
  sha256: string;
  size: number;
  /** Whether the blob the entry points at is in the store. */
  present: boolean;
}

/** The node's reality as the applier reads it: labelled containers, the model index, the flags file. */
export interface CurrentState {
  containers: ObservedContainer[];
  models: InstalledModel[];
  flags: ParticipationFlags | null;
  /** Hex digests of every blob in the store, indexed or not (a fetched but not activated model). */
  blobs?: string[];
}

/** A model as steps carry it: what identifies it in the index. */
export interface ModelRef {
  name: string;
  version: string;
  sha256: string;
  size: number;
}

/** One unit of work. Plain JSON data, so `resultity-agent plan` can print and store it. */
export type Step =
  | { kind: 'fetch-model'; model: Model }
  | { kind: 'pull-image'; image: string; tag: string; digest: string }
  | {
      kind: 'create';
      name: string;
      containerName: string;
      tag: string;
      definition: ContainerDefinition;
      definitionHash: string;
      configDigest: string;
    }
  | { kind: 'stop'; name: string; containerName: string; id: string }
  | { kind: 'remove'; name: string; containerName: string; id: string }
  | { kind: 'start'; name: string; containerName: string }
  | { kind: 'wait-healthy'; name: string; containerName: string; timeoutMs: number }
  | { kind: 'activate-model'; model: ModelRef }
  | { kind: 'remove-model'; model: ModelRef; deleteBlob: boolean }
  | { kind: 'set-flags'; flags: ParticipationFlags };

export type StepKind = Step['kind'];

/** How containers are replaced. */
export type Strategy = 'download-then-kill' | 'hand-over';

/** Options of `plan`. */
export interface PlanOptions {
  /** Models of the previous applied snapshot: never removed, so a rollback never downloads. */
  retainModels?: Model[];
  strategy?: Strategy;
  /**
   * Decides the network mode of containers with ports (defaults deny the host network), their
   * limits, the GPUs and the bridge and model directories they may get.
   */
  policy?: ApplierPolicy;
  /** How long a new container may take to become running/healthy, default 60 s. */
  healthTimeoutMs?: number;
}

/** Progress of a long step, for the CLI. */
export interface ProgressEvent {
  kind: 'model' | 'image';
  name: string;
  bytesDone: number;
  bytesTotal: number | null;
  /** A model download's average rate so far. */
  bytesPerSecond?: number;
  /** A chunked model download's mirrors: bytes each delivered, connections, and why one was dropped. */
  mirrors?: MirrorProgress[];
}

/** What a successful apply did. */
export interface ApplyReport {
  steps: number;
  /** Calls that changed the engine, the store or the flags (pulls, creates, starts, stops, removes, writes). */
  mutatingCalls: number;
  durationMs: number;
  rolledBack: false;
  /**
   * Models whose download succeeded although some mirrors were given up on, with what each did
   * wrong. `detail` names hosts: for the local audit log, never for text that leaves the node.
   */
  droppedMirrors: { model: string; mirrors: MirrorFailure[] }[];
}
