import { readFile } from 'node:fs/promises';

import type Docker from 'dockerode';

import { errorMessage } from './errors.js';
import type { ContainerLiveness } from './lock-namespaces.js';
import type { SuccessorPort } from './handover.js';
import type { AgentContainersPort, SelfContainer, StandbyResult } from './self-update.js';

/**
 * The id of the container this process runs in: the engine bind-mounts its own
 * `…/containers/<64 hex>/hostname` at /etc/hostname (also with host networking, where the
 * hostname is the host's). Only that mount point counts: the host's own mount table lists
 * other paths under `…/containers/<id>/` (each container's /dev/shm), which say nothing about
 * where this process is.
 */
export function containerIdFromMountinfo(text: string): string | null {
  for (const line of text.split('\n')) {
    // Fields: id, parent, major:minor, root, mount point, ...
    const [, , , root, mountPoint] = line.split(' ');
    if (mountPoint !== '/etc/hostname' || root === undefined) continue;
    const match = /\/containers\/([0-9a-f]{64})\/hostname$/.exec(root);
    if (match) return match[1] ?? null;
  }
  return null;
}

/** This process's container id, or null outside a container. */
export async function ownContainerId(mountinfo = '/proc/self/mountinfo'): Promise<string | null> {
  try {
    return containerIdFromMountinfo(await readFile(mountinfo, 'utf8'));
  } catch {
    return null;
  }
}

/** Bytes of a standby run's output kept for the audit log: its last lines say why it failed. */
const OUTPUT_TAIL = 4000;

/** The default AgentContainersPort on the Docker engine at `socketPath`. */
export function dockerAgentContainers(options: { socketPath: string; containerId?: string | null; labelPrefix?: string }): AgentContainersPort {
  let client: Docker | null = null;
  const docker = async () => {
    if (client === null) {
      const { default: Dockerode } = await import('dockerode');
      client = new Dockerode({ socketPath: options.socketPath });
    }
    return client;
  };
  const label = `${options.labelPrefix ?? 'io.resultity'}.agent-standby-of`;

  return {
    async self(): Promise<SelfContainer | null> {
      const id = options.containerId === undefined ? await ownContainerId() : options.containerId;
      if (id === null) return null;
      const d = await docker();
      const info = await d.getContainer(id).inspect();
      const image = await d.getImage(info.Image).inspect();
      const digests = (image.RepoDigests ?? []).map((r) => r.slice(r.indexOf('@') + 1));
      // An image started by digest in a successor knows it for sure; the variable covers an
      // image whose repo digest the engine forgot (pulled, retagged, pushed elsewhere).
      const fromEnv = (info.Config.Env ?? []).find((e) => e.startsWith('RESULTITY_AGENT_IMAGE_DIGEST='))?.split('=')[1];
      return { id: info.Id, name: info.Name.replace(/^\//, ''), imageDigests: fromEnv ? [...new Set([...digests, fromEnv])] : digests };
    },

    async pull(ref) {
      const d = await docker();
      const stream = await d.pull(ref);
      await new Promise<void>((resolve, reject) => d.modem.followProgress(stream, (error: Error | null) => (error ? reject(error) : resolve())));
    },

    async removeStandbyRuns(selfId) {
      const d = await docker();
      const found = await d.listContainers({ all: true, filters: { label: [`${label}=${selfId}`] } });
      for (const c of found)
        await d
          .getContainer(c.Id)
          .remove({ force: true })
          .catch(() => undefined);
      return found.map((c) => c.Id);
    },

    async runStandby(self, ref, command, env, timeoutMs): Promise<StandbyResult> {
      const d = await docker();
      const info = await d.getContainer(self.id).inspect();
      const container = await d.createContainer(cloneOf(info, { ref, command, env, labels: { [label]: self.id }, restart: 'no' }));
      let timer: NodeJS.Timeout | undefined;
      try {
        await container.start();
        const timedOut = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), timeoutMs);
        });
        const ended = await Promise.race([container.wait() as Promise<{ StatusCode: number }>, timedOut]);
        const output = await logsOf(container);
        if (ended === 'timeout') return { ok: false, code: 'STANDBY_TIMEOUT', exitCode: null, output: `no answer in ${timeoutMs} ms; ${output}` };
        if (ended.StatusCode !== 0) return { ok: false, code: 'STANDBY_FAILED', exitCode: ended.StatusCode, output };
        return { ok: true, output };
      } catch (error) {
        return { ok: false, code: 'STANDBY_FAILED', exitCode: null, output: errorMessage(error) };
      } finally {
        clearTimeout(timer);
        await container.remove({ force: true }).catch(() => undefined);
      }
    },
  };
}

/**
 * Create options for a container like `info` (this Agent's): the same mounts, network and
 * environment, so a standby run or a successor sees exactly what this Agent sees.
 */
function cloneOf(
  info: Docker.ContainerInspectInfo,
  o: { ref: string; command: readonly string[]; env: Readonly<Record<string, string>>; labels: Record<string, string>; restart: string; name?: string },
): Docker.ContainerCreateOptions {
  const baseEnv = (info.Config.Env ?? []).filter((e) => !Object.keys(o.env).some((k) => e.startsWith(`${k}=`)));
  return {
    ...(o.name === undefined ? {} : { name: o.name }),
    Image: o.ref,
    Cmd: [...o.command],
    Env: [...baseEnv, ...Object.entries(o.env).map(([k, v]) => `${k}=${v}`)],
    Labels: o.labels,
    HostConfig: {
      Binds: info.HostConfig.Binds ?? [],
      ...(info.HostConfig.Mounts ? { Mounts: info.HostConfig.Mounts } : {}),
      NetworkMode: info.HostConfig.NetworkMode ?? 'none',
      RestartPolicy: { Name: o.restart },
    },
  };
}

/** Starts, finds and removes successor containers: the hand-over's side of the engine. */
export function dockerSuccessors(socketPath: string, labelPrefix = 'io.resultity'): SuccessorPort {
  let client: Docker | null = null;
  const docker = async () => {
    if (client === null) {
      const { default: Dockerode } = await import('dockerode');
      client = new Dockerode({ socketPath });
    }
    return client;
  };
  return {
    async start(self, ref, env, handover) {
      const d = await docker();
      const info = await d.getContainer(self.id).inspect();
      // The successor runs what this Agent runs (its command, its restart policy), under a name
      // of its own until it removes this container and takes this name.
      const container = await d.createContainer(
        cloneOf(info, {
          ref,
          command: info.Config.Cmd ?? [],
          env,
          // The hand-over label is how a predecessor restarted mid-hand-over finds this container.
          labels: { [`${labelPrefix}.agent-successor-of`]: self.id, [`${labelPrefix}.agent-handover`]: handover },
          restart: info.HostConfig.RestartPolicy?.Name || 'no',
          name: `${self.name}-next-${env.RESULTITY_AGENT_IMAGE_DIGEST?.slice(7, 19) ?? 'agent'}`,
        }),
      );
      await container.start();
      return container.id;
    },
    async list(handover) {
      const found = await (await docker()).listContainers({ all: true, filters: { label: [`${labelPrefix}.agent-handover=${handover}`] } });
      return found.map((c) => c.Id);
    },
    async running(id) {
      try {
        // A successor under a restart policy that exited even once is a crash loop, whatever
        // the engine shows between two restarts.
        const info = await (await docker()).getContainer(id).inspect();
        return info.State.Running === true && info.State.Restarting !== true && (info.RestartCount ?? 0) === 0;
      } catch {
        return false;
      }
    },
    async remove(id) {
      await (await docker())
        .getContainer(id)
        .remove({ force: true })
        .catch((error: { statusCode?: number }) => {
          if (error.statusCode !== 404) throw error;
        });
    },
    async rename(id, name) {
      await (await docker()).getContainer(id).rename({ name });
    },
  };
}

async function logsOf(container: Docker.Container): Promise<string> {
  try {
    const raw = (await container.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    // Non-TTY logs are multiplexed: 8-byte frame headers before each chunk.
    const parts: Buffer[] = [];
    for (let at = 0; at + 8 <= raw.length; ) {
      const size = raw.readUInt32BE(at + 4);
      parts.push(raw.subarray(at + 8, at + 8 + size));
      at += 8 + size;
    }
    return Buffer.concat(parts).toString('utf8').slice(-OUTPUT_TAIL);
  } catch (error) {
    return `(no output: ${errorMessage(error)})`;
  }
}

/** The lock's view of containers on the engine at `socketPath` (see namespacedProcesses). */
export function dockerContainerLiveness(socketPath: string): ContainerLiveness {
  return {
    ownContainer: () => ownContainerId(),
    async running(id) {
      try {
        const { default: Dockerode } = await import('dockerode');
        const info = await new Dockerode({ socketPath }).getContainer(id).inspect();
        return info.State.Running === true;
      } catch (error) {
        // No such container: its Agent is gone. Anything else (no engine): nobody can say.
        return (error as { statusCode?: number }).statusCode === 404 ? false : null;
      }
    },
  };
}
