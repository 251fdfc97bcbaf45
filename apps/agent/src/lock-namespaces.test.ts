import { readFile, readlink } from 'node:fs/promises';

import { describe, expect, it } from 'vitest';

import { containerIdFromMountinfo } from './agent-containers.js';
import type { LockHolder, ProcessPort } from './lock.js';
import { type ContainerLiveness, namespacedProcesses } from './lock-namespaces.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

describe('containerIdFromMountinfo', () => {
  it("reads the id from the engine's /etc/hostname mount", () => {
    const line = `169 151 254:0 /var/lib/docker/containers/${A}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw`;
    expect(containerIdFromMountinfo(`1 0 8:1 / / rw - ext4 /dev/sda rw\n${line}\n`)).toBe(A);
  });

  it("is null on the host, whose table lists other containers' /dev/shm under the same directory", () => {
    const shm = `300 29 0:55 / /var/lib/docker/containers/${B}/mounts/shm rw - tmpfs shm rw`;
    expect(containerIdFromMountinfo(`1 0 8:1 / / rw - ext4 /dev/sda rw\n${shm}\n`)).toBeNull();
  });
});

describe('namespacedProcesses', async () => {
  const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  const ownNs = await readlink('/proc/self/ns/pid');
  /** /proc as a fake that calls everything alive, so each answer below comes from the namespace rules. */
  const procAlive = { self: async () => ({ boot_id: boot, pid: 7, start_time: '70' }), alive: async () => true } satisfies ProcessPort;
  const procDead = { ...procAlive, alive: async () => false } satisfies ProcessPort;
  const engine = (own: string | null, running: Record<string, boolean | null>): ContainerLiveness => ({
    ownContainer: async () => own,
    running: async (id) => (id in running ? (running[id] ?? null) : false),
  });
  const holder = (h: Partial<LockHolder>): LockHolder => ({ boot_id: boot, pid: 1, start_time: '1', nonce: 'aaaaaaaaaaaaaaaa', ...h });

  it('records its pid namespace and container', async () => {
    expect(await namespacedProcesses(engine(A, {}), procAlive).self()).toEqual({ boot_id: boot, pid: 7, start_time: '70', pid_ns: ownNs, container: A });
  });

  it('asks /proc about a holder in its own namespace, or one recorded without a namespace', async () => {
    const p = namespacedProcesses(engine(null, {}), procDead);
    expect(await p.alive(holder({ pid_ns: ownNs }))).toBe(false);
    expect(await p.alive(holder({}))).toBe(false);
  });

  it('asks the engine about a holder in another container: alive while it runs, and when the engine cannot say', async () => {
    const p = namespacedProcesses(engine(null, { [A]: true, [B]: null }), procDead);
    expect(await p.alive(holder({ pid_ns: 'pid:[1]', container: A }))).toBe(true);
    expect(await p.alive(holder({ pid_ns: 'pid:[1]', container: B }))).toBe(true);
    const gone = namespacedProcesses(engine(null, { [A]: false }), procAlive);
    expect(await gone.alive(holder({ pid_ns: 'pid:[1]', container: A }))).toBe(false);
  });

  it('calls an earlier run of its own container gone, and anything from before the boot', async () => {
    const p = namespacedProcesses(engine(A, { [A]: true }), procAlive);
    expect(await p.alive(holder({ pid_ns: 'pid:[1]', container: A }))).toBe(false);
    expect(await p.alive(holder({ boot_id: 'another-boot', pid_ns: 'pid:[1]', container: B }))).toBe(false);
  });

  it('cannot prove dead a holder in another namespace outside any container', async () => {
    expect(await namespacedProcesses(engine(A, {}), procDead).alive(holder({ pid_ns: 'pid:[1]' }))).toBe(true);
  });
});
