import Dockerode from 'dockerode';

import { BRIDGE_MOUNT } from './definition.js';
import { ApplyError, fail, messageOf } from './errors.js';
import type { ContainerEngine, ContainerStatus, CreateContainerRequest, EngineContainer } from './ports.js';

/** Options of the default engine adapter. */
export interface DockerEngineOptions {
  socketPath?: string;
  /** Per-request timeout for everything but pulls (which can take long and honour the AbortSignal). */
  requestTimeoutMs?: number;
}

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number } | null)?.statusCode;
}

const MIB = 1024 * 1024;

/**
 * The Docker create options of a request. Safety is decided here and nowhere else: never
 * privileged, every capability dropped, `no-new-privileges`, a pids limit, no devices, the
 * network is the definition's ('none' unless the policy allowed the host's), and the only
 * mounts are the read-only bridge and model directories the definition was given (which the
 * executor checked against the policy).
 */
export function dockerCreateOptions(request: CreateContainerRequest): Dockerode.ContainerCreateOptions {
  const { definition } = request;
  const mounts: Dockerode.MountSettings[] = [];
  // Mounts (not Binds): a missing source directory fails the create instead of being made empty by the engine.
  if (definition.bridgeDir !== undefined) mounts.push({ Type: 'bind', Source: definition.bridgeDir, Target: BRIDGE_MOUNT, ReadOnly: true });
  if (definition.modelsDir !== undefined) mounts.push({ Type: 'bind', Source: definition.modelsDir, Target: definition.modelsDir, ReadOnly: true });
  const hostConfig: Dockerode.HostConfig = {
    NetworkMode: definition.network,
    RestartPolicy: { Name: definition.restart === 'no' ? '' : definition.restart },
    Privileged: false,
    Binds: [],
    Mounts: mounts,
    Devices: [],
    CapAdd: [],
    CapDrop: ['ALL'],
    SecurityOpt: ['no-new-privileges'],
    PublishAllPorts: false,
  };
  if (definition.pidsLimit !== undefined) hostConfig.PidsLimit = definition.pidsLimit;
  if (definition.memoryMb !== undefined) {
    // Swap equal to memory: the limit is the limit, not a hint to start swapping.
    hostConfig.Memory = definition.memoryMb * MIB;
    hostConfig.MemorySwap = definition.memoryMb * MIB;
  }
  if (definition.shmSizeMb !== undefined) hostConfig.ShmSize = definition.shmSizeMb * MIB;
  if (definition.gpus !== undefined) {
    hostConfig.DeviceRequests = [{ Driver: 'nvidia', Count: definition.gpus, Capabilities: [['gpu']] }];
  }
  const options: Dockerode.ContainerCreateOptions = {
    name: request.containerName,
    Image: `${definition.image}@${definition.digest}`,
    Env: Object.entries(definition.env).map(([k, v]) => `${k}=${v}`),
    Labels: request.labels,
    HostConfig: hostConfig,
  };
  if (definition.command.length > 0) options.Cmd = definition.command;
  return options;
}

/** The default ContainerEngine: Docker through dockerode, one client per adapter (no singleton). */
export class DockerEngine implements ContainerEngine {
  readonly docker: Dockerode;

  private readonly socketPath: string;
  private readonly requestTimeoutMs: number;

  constructor(options: DockerEngineOptions = {}) {
    this.socketPath = options.socketPath ?? '/var/run/docker.sock';
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.docker = new Dockerode({ socketPath: this.socketPath, timeout: this.requestTimeoutMs });
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (cause) {
      fail('ENGINE_UNAVAILABLE', `the Docker engine did not answer a ping: ${messageOf(cause)}`, cause);
    }
  }

  async listContainers(labelKey: string): Promise<EngineContainer[]> {
    const list = await this.docker.listContainers({ all: true, filters: { label: [labelKey] } });
    return list.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? '').replace(/^\//, ''),
      labels: c.Labels ?? {},
      state: c.State,
    }));
  }

  async inspectContainer(idOrName: string): Promise<ContainerStatus | null> {
    try {
      const info = await this.docker.getContainer(idOrName).inspect();
      const health = info.State.Health?.Status;
      return {
        id: info.Id,
        state: info.State.Status,
        running: info.State.Running && !info.State.Restarting,
        restarting: info.State.Restarting,
        restartCount: info.RestartCount ?? 0,
        exitCode: info.State.Running ? null : info.State.ExitCode,
        health: health === 'healthy' || health === 'unhealthy' || health === 'starting' ? health : 'none',
        error: info.State.Error ?? '',
      };
    } catch (error) {
      if (statusCode(error) === 404) return null;
      throw error;
    }
  }

  async imageRepoDigests(reference: string): Promise<string[] | null> {
    try {
      const info = await this.docker.getImage(reference).inspect();
      return info.RepoDigests ?? [];
    } catch (error) {
      if (statusCode(error) === 404) return null;
      throw error;
    }
  }

  async pullImage(reference: string, options: { signal?: AbortSignal; onProgress?: (done: number, total: number | null) => void }): Promise<void> {
    const stream = (await this.docker.createImage({ fromImage: reference, abortSignal: options.signal })) as NodeJS.ReadableStream;
    const layers = new Map<string, { current: number; total: number }>();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        (stream as unknown as { destroy?: () => void }).destroy?.();
        reject(new ApplyError('ABORTED', `pull of ${reference} was cancelled`));
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.docker.modem.followProgress(
        stream,
        (error: Error | null) => {
          options.signal?.removeEventListener('abort', onAbort);
          if (error) reject(error);
          else resolve();
        },
        (event: { id?: string; progressDetail?: { current?: number; total?: number } }) => {
          if (event.id && event.progressDetail?.total) {
            layers.set(event.id, { current: event.progressDetail.current ?? 0, total: event.progressDetail.total });
            let done = 0;
            let total = 0;
            for (const l of layers.values()) {
              done += l.current;
              total += l.total;
            }
            options.onProgress?.(done, total);
          }
        },
      );
    });
  }

  async createContainer(request: CreateContainerRequest): Promise<string> {
    const container = await this.docker.createContainer(dockerCreateOptions(request));
    return container.id;
  }

  async startContainer(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start();
    } catch (error) {
      if (statusCode(error) !== 304) throw error;
    }
  }

  async stopContainer(id: string, timeoutSeconds: number): Promise<void> {
    try {
      // The engine answers a stop only after the container's own grace period, so the request
      // timeout must outlast it; dockerode's timeout is per client, hence a client for this call.
      const patient = new Dockerode({ socketPath: this.socketPath, timeout: timeoutSeconds * 1000 + this.requestTimeoutMs });
      await patient.getContainer(id).stop({ t: timeoutSeconds });
    } catch (error) {
      if (statusCode(error) !== 304) throw error;
    }
  }

  async removeContainer(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true });
    } catch (error) {
      if (statusCode(error) !== 404) throw error;
    }
  }
}
