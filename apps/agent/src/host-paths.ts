import { access, readFile, readdir, readlink } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';

import { AgentError } from './errors.js';

/*
 * The Agent hands the engine host paths to mount into runtime containers (SPEC §6): its bridge
 * directory and its model store, the latter at the same absolute path so the paths the bridge
 * sends open inside the container. When the Agent itself runs in a container, the engine
 * resolves those paths on the host, not in the Agent's container: they only name the same
 * files when the Agent's data directory is bind-mounted at the same path on both sides
 * (`-v /var/lib/resultity:/var/lib/resultity`). These checks refuse to run otherwise.
 */

/** One mount of /proc/self/mountinfo, as far as the check needs it. */
export interface MountEntry {
  /** The path inside the source filesystem that is mounted (field 4): `/var/lib/resultity` for a bind mount of it. */
  readonly root: string;
  /** Where it is mounted in this mount namespace (field 5). */
  readonly mountPoint: string;
  readonly fstype: string;
}

/** mountinfo escapes space, tab, newline and backslash as three octal digits. */
function unescapeField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** Parses /proc/self/mountinfo (proc(5)); lines it cannot read are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    const root = fields[3];
    const mountPoint = fields[4];
    const fstype = fields[separator + 1];
    if (separator < 6 || root === undefined || mountPoint === undefined || fstype === undefined) continue;
    entries.push({ root: unescapeField(root), mountPoint: unescapeField(mountPoint), fstype });
  }
  return entries;
}

const inside = (parent: string, path: string) => {
  const rel = relative(parent, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

/**
 * Pure: why `path` (absolute) would not name the same file on the host as in this container,
 * or null when it would. It must lie on a bind mount (not the container's own root
 * filesystem) whose source path, plus the rest of `path`, is `path` again. The last of the
 * deepest mounts covering the path wins, as in the kernel. A host directory on a filesystem
 * of its own shows its root relative to that filesystem and is refused too: the check cannot
 * tell it from a different path (the operator can turn the check off).
 */
export function sharedPathProblem(path: string, mounts: readonly MountEntry[]): string | null {
  let covering: MountEntry | null = null;
  for (const mount of mounts) {
    if (!inside(mount.mountPoint, path)) continue;
    if (covering === null || mount.mountPoint.length >= covering.mountPoint.length) covering = mount;
  }
  if (covering === null || covering.mountPoint === '/') {
    return `expected ${path} on a bind mount of the same host path, found it on the container's own filesystem`;
  }
  const hostPath = resolve(covering.root, relative(covering.mountPoint, path));
  if (hostPath !== path) {
    return `expected ${path} on a bind mount of the same host path, found it mounted at ${covering.mountPoint} from ${covering.root} (${covering.fstype}), which is ${hostPath} on its filesystem`;
  }
  return null;
}

/** How the Agent learns where it runs; the defaults read the real files. */
export interface HostPathPorts {
  /** Whether the Agent runs in a container: Docker's /.dockerenv or Podman's /run/.containerenv. */
  inContainer(): Promise<boolean>;
  /**
   * Whether the engine's daemon runs in the Agent's own mount namespace (an engine inside the
   * same container, or both on the host): then every path means the same to both.
   */
  engineSharesMounts(): Promise<boolean>;
  readMountinfo(): Promise<string>;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

const ENGINE_DAEMONS: ReadonlySet<string> = new Set(['dockerd', 'podman']);

export const defaultHostPathPorts: HostPathPorts = {
  inContainer: async () => (await exists('/.dockerenv')) || (await exists('/run/.containerenv')),
  engineSharesMounts: async () => {
    const own = await readlink('/proc/self/ns/mnt').catch(() => null);
    if (own === null) return false;
    for (const pid of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
      if (!ENGINE_DAEMONS.has(comm)) continue;
      if ((await readlink(`/proc/${pid}/ns/mnt`).catch(() => null)) === own) return true;
    }
    return false;
  },
  readMountinfo: () => readFile('/proc/self/mountinfo', 'utf8'),
};

/**
 * Refuses with PATHS_NOT_SHARED when the Agent runs in a container apart from the engine and
 * a directory it would mount into runtime containers is not bind-mounted at the same path on
 * the host. 'never' skips the check: for an operator who knows the paths match although
 * mountinfo cannot show it.
 */
export async function assertPathsShared(
  stateDir: string,
  paths: readonly string[],
  check: 'auto' | 'never',
  ports: HostPathPorts = defaultHostPathPorts,
): Promise<void> {
  if (check === 'never' || !(await ports.inContainer()) || (await ports.engineSharesMounts())) return;
  const mounts = parseMountinfo(await ports.readMountinfo());
  for (const path of paths) {
    const problem = sharedPathProblem(path, mounts);
    if (problem !== null) {
      throw new AgentError(
        'PATHS_NOT_SHARED',
        `${problem}; an Agent in a container needs its data directory mounted at the same path on the host, e.g. -v ${stateDir}:${stateDir} (or containers.check_shared_paths "never" when they do match)`,
      );
    }
  }
}
