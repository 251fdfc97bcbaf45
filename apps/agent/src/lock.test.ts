import { execFileSync } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type LockHolder, type ProcessPort, acquireLock, parseHolder, procfs, processStartTime, startTimeFromStat } from './lock.js';

/** Processes as a set of live (pid, start time) pairs on one boot. */
class FakeProcesses {
  readonly live = new Set<string>();
  constructor(readonly boot = 'boot-a') {}
  as(pid: number, start = `${pid}00`): ProcessPort {
    this.live.add(`${pid}/${start}`);
    return {
      self: async () => ({ boot_id: this.boot, pid, start_time: start }),
      alive: async (h: LockHolder) => h.boot_id === this.boot && this.live.has(`${h.pid}/${h.start_time}`),
    } satisfies ProcessPort;
  }
  die(pid: number, start = `${pid}00`): void {
    this.live.delete(`${pid}/${start}`);
  }
}

const record = (h: Partial<LockHolder>) => `${JSON.stringify({ boot_id: 'boot-a', pid: 1, start_time: '100', nonce: 'aaaaaaaaaaaaaaaa', ...h })}\n`;

describe('acquireLock', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let procs: FakeProcesses;
  beforeEach(async () => {
    work = await tempDir('agent-lock-');
    procs = new FakeProcesses();
  });
  afterEach(() => work.cleanup());

  it('records boot id, pid, start time and a nonce in agent.lock', async () => {
    const lock = await acquireLock(work.path, procs.as(10));
    const onDisk = parseHolder(await readFile(join(work.path, 'agent.lock'), 'utf8'));
    expect(onDisk).toEqual(lock.holder);
    expect(onDisk).toMatchObject({ boot_id: 'boot-a', pid: 10, start_time: '1000' });
  });

  it('refuses with LOCKED while the holder lives, naming its pid', async () => {
    await acquireLock(work.path, procs.as(10));
    await expect(acquireLock(work.path, procs.as(11))).rejects.toMatchObject({ code: 'LOCKED', message: expect.stringContaining('pid 10') });
  });

  it('takes over a lock whose holder died', async () => {
    const first = await acquireLock(work.path, procs.as(10));
    procs.die(10);
    const second = await acquireLock(work.path, procs.as(11));
    expect(parseHolder(await readFile(second.path, 'utf8'))?.nonce).toBe(second.holder.nonce);
    expect(second.holder.nonce).not.toBe(first.holder.nonce);
  });

  it('takes over a lock whose pid now belongs to another process (pid reuse)', async () => {
    await writeFile(join(work.path, 'agent.lock'), record({ pid: 12, start_time: '5' }));
    procs.as(12, '999');
    await expect(acquireLock(work.path, procs.as(13))).resolves.toMatchObject({ holder: { pid: 13 } });
  });

  it('takes over a lock written on another boot', async () => {
    await writeFile(join(work.path, 'agent.lock'), record({ boot_id: 'boot-old', pid: 14, start_time: '1400' }));
    procs.as(14);
    await expect(acquireLock(work.path, procs.as(15))).resolves.toMatchObject({ holder: { pid: 15 } });
  });

  it('takes over a damaged lock file', async () => {
    await writeFile(join(work.path, 'agent.lock'), '{"pid": 3');
    await expect(acquireLock(work.path, procs.as(16))).resolves.toMatchObject({ holder: { pid: 16 } });
  });

  it('refuses a FIFO under the lock file with STATE_CORRUPT instead of waiting on it for ever', async () => {
    execFileSync('mkfifo', [join(work.path, 'agent.lock')]);
    await expect(acquireLock(work.path, procs.as(17))).rejects.toMatchObject({ code: 'STATE_CORRUPT', message: expect.stringContaining('not a regular file') });
  }, 10_000);

  it('is not blocked forever by a takeover marker a dead contender left behind', async () => {
    await writeFile(join(work.path, 'agent.lock'), record({ pid: 1, nonce: 'aaaaaaaaaaaaaaaa' }));
    await writeFile(join(work.path, 'agent.lock.takeover-aaaaaaaaaaaaaaaa'), record({ pid: 2, nonce: 'bbbbbbbbbbbbbbbb' }));
    const lock = await acquireLock(work.path, procs.as(17));
    expect(parseHolder(await readFile(lock.path, 'utf8'))?.pid).toBe(17);
    // The markers it went through are gone; only the lock remains.
    expect(await readdir(work.path)).toEqual(['agent.lock']);
  });

  it('waits for a live contender mid-takeover and then reports it as the holder', async () => {
    await writeFile(join(work.path, 'agent.lock'), record({ pid: 1, nonce: 'aaaaaaaaaaaaaaaa' }));
    await writeFile(join(work.path, 'agent.lock.takeover-aaaaaaaaaaaaaaaa'), record({ pid: 18, start_time: '1800', nonce: 'cccccccccccccccc' }));
    procs.as(18);
    const waiting = acquireLock(work.path, procs.as(19));
    // The contender finishes its takeover: the lock is now its.
    await writeFile(join(work.path, 'agent.lock'), record({ pid: 18, start_time: '1800', nonce: 'cccccccccccccccc' }));
    await expect(waiting).rejects.toMatchObject({ code: 'LOCKED', message: expect.stringContaining('pid 18') });
  });

  it('gives exactly one of many simultaneous contenders a stale lock', async () => {
    for (let round = 0; round < 20; round++) {
      await writeFile(join(work.path, 'agent.lock'), record({ pid: 1, nonce: `${round}`.padStart(16, 'd') }));
      const pids = Array.from({ length: 8 }, (_, i) => 100 * (round + 1) + i);
      const results = await Promise.allSettled(pids.map((pid) => acquireLock(work.path, procs.as(pid))));
      const winners = results.filter((r) => r.status === 'fulfilled');
      expect(winners).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'LOCKED' });
      const holder = parseHolder(await readFile(join(work.path, 'agent.lock'), 'utf8'));
      expect(holder?.nonce).toBe((winners[0] as PromiseFulfilledResult<{ holder: LockHolder }>).value.holder.nonce);
      for (const pid of pids) procs.die(pid);
    }
  });

  it('clears the temp files a writer killed mid-write left in the state directory (found by the chaos campaign)', async () => {
    const dir = work.path;
    await writeFile(join(dir, '.1fb07b53a129.tmp'), '{"half":');
    await mkdir(join(dir, 'envelopes'), { recursive: true });
    await writeFile(join(dir, 'envelopes', '.aaaaaaaaaaaa.tmp'), '{');
    await writeFile(join(dir, 'state.json'), '{}');
    const lock = await acquireLock(dir, procs.as(10));
    expect((await readdir(dir)).sort()).toEqual(['agent.lock', 'envelopes', 'state.json']);
    expect(await readdir(join(dir, 'envelopes'))).toEqual([]);
    await lock.release();
  });

  it('releases only its own holding', async () => {
    const first = await acquireLock(work.path, procs.as(20));
    procs.die(20);
    const second = await acquireLock(work.path, procs.as(21));
    await first.release();
    expect(parseHolder(await readFile(second.path, 'utf8'))?.pid).toBe(21);
    await second.release();
    await expect(readFile(second.path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('honours a lock in the old bare-pid format while that pid runs', async () => {
    await writeFile(join(work.path, 'agent.lock'), `${process.pid}\n`);
    await expect(acquireLock(work.path)).rejects.toMatchObject({ code: 'LOCKED' });
  });
});

describe('the /proc process port', () => {
  it('reads the start time after the last parenthesis, whatever the command name holds', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    expect(startTimeFromStat(`42 (a) b (c) ${fields.join(' ')}`)).toBe('22');
    expect(startTimeFromStat('garbage')).toBeNull();
  });

  it('sees this process alive and a holder with another start time or boot dead', async () => {
    const self = await procfs.self();
    expect(self.start_time).toBe(await processStartTime(process.pid));
    expect(await procfs.alive({ ...self, nonce: '0'.repeat(16) })).toBe(true);
    expect(await procfs.alive({ ...self, start_time: `${self.start_time}1`, nonce: '0'.repeat(16) })).toBe(false);
    expect(await procfs.alive({ ...self, boot_id: 'another-boot', nonce: '0'.repeat(16) })).toBe(false);
  });
});
