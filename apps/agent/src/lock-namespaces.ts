import { readFile, readlink } from 'node:fs/promises';

import { type LockHolder, type ProcessPort, procfs } from './lock.js';

/** What the namespace-aware lock needs to know about containers. */
export interface ContainerLiveness {
  /** The container this process runs in, or null outside one. */
  ownContainer(): Promise<string | null>;
  /** Whether that container runs now; null when the engine cannot say (unreachable). */
  running(id: string): Promise<boolean | null>;
}

async function ownPidNamespace(): Promise<string | null> {
  return readlink('/proc/self/ns/pid').catch(() => null);
}

/**
 * The lock's ProcessPort for an Agent that may run in a container (the Agent image) next to
 * other Agents or CLIs in other containers or on the host. A pid is only meaningful in the pid
 * namespace it was counted in: every container has its own, where the Agent is often pid 1, so
 * `/proc` alone would call a live Agent in another container dead and take its lock. So:
 * - a holder in this pid namespace (or an older record without one) is checked through /proc;
 * - a holder in an earlier run of this same container is gone (each start gets a new namespace);
 * - a holder in another container is alive while the engine says that container runs, and
 *   alive when the engine cannot say: taking a live Agent's lock is the mistake to avoid;
 * - a holder in another namespace outside any container cannot be proven dead from here.
 */
export function namespacedProcesses(containers: ContainerLiveness, base: ProcessPort = procfs): ProcessPort {
  let own: Promise<{ ns: string | null; container: string | null }> | null = null;
  const me = () => {
    own ??= Promise.all([ownPidNamespace(), containers.ownContainer()]).then(([ns, container]) => ({ ns, container }));
    return own;
  };
  return {
    async self() {
      const [record, { ns, container }] = await Promise.all([base.self(), me()]);
      return { ...record, ...(ns === null ? {} : { pid_ns: ns }), ...(container === null ? {} : { container }) };
    },
    async alive(holder: LockHolder) {
      const { ns, container } = await me();
      // After a reboot nothing from before runs, whatever namespace it was in.
      const boot = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(
        (b) => b.trim(),
        () => null,
      );
      if (holder.boot_id !== 'legacy' && boot !== null && holder.boot_id !== boot) return false;
      if (holder.pid_ns === undefined || ns === null || holder.pid_ns === ns) return base.alive(holder);
      if (holder.container !== undefined) {
        if (holder.container === container) return false;
        return (await containers.running(holder.container)) ?? true;
      }
      return true;
    },
  };
}
