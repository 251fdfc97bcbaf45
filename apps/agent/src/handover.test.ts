import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { AuditLog, readAuditEntries } from './audit.js';
import { type SuccessorPort, handOver } from './handover.js';

let dir: { path: string; cleanup: () => Promise<void> };
beforeEach(async () => {
  dir = await tempDir('agent-handover-');
});
afterEach(() => dir.cleanup());

const update = { version: '3.0.0', image: 'r.example/agent', digest: `sha256:${'3'.repeat(64)}` };
const self = { id: 'pred', name: 'resultity-agent', imageDigests: [] };

/**
 * A successor scripted per poll: `script(tick, audit)` runs at each `running` call and says
 * whether the successor still runs; it may append the successor's own entries first.
 */
function scenario(script: (tick: number, audit: AuditLog) => Promise<boolean>) {
  const audit = new AuditLog(join(dir.path, 'audit.jsonl'));
  const events: string[] = [];
  let tick = 0;
  const successors: SuccessorPort = {
    start: async () => {
      events.push('start');
      return 'succ';
    },
    running: async () => script(tick++, audit),
    alive: async () => true,
    remove: async (id) => void events.push(`remove ${id}`),
    rename: async () => undefined,
  };
  let attempts: Record<string, number> = {};
  const run = () =>
    handOver(
      {
        successors,
        audit,
        attempts: {
          read: async () => attempts,
          write: async (a) => {
            attempts = a;
          },
        },
        logger: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as never,
        stateDir: dir.path,
        timeoutMs: 60_000,
        stopApplying: async () => void events.push('stop'),
        releaseLock: async () => void events.push('release'),
        retakeLock: async () => void events.push('retake'),
        sleep: async () => undefined,
      },
      { update, ref: `${update.image}@${update.digest}`, self, attempt: 1, attempts: {} },
    );
  return { run, events, audit, attempts: () => attempts };
}

describe('handOver', () => {
  it('counts as handed over only once the successor confirms, and keeps the predecessor until then', async () => {
    const s = scenario(async (tick, audit) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      if (tick === 3) await audit.append('agent-confirmed', { container: 'succ' });
      return true;
    });
    expect(await s.run()).toBe('handed-over');
    // Neither removed nor retaken: the confirmed successor removes the predecessor itself.
    expect(s.events).toEqual(['stop', 'release', 'start']);
  });

  it('reverts a successor that took over and then restarted: removes it before retaking the lock, audits and counts it', async () => {
    const s = scenario(async (tick, audit) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      return tick < 3;
    });
    expect(await s.run()).toBe('failed');
    expect(s.events).toEqual(['stop', 'release', 'start', 'remove succ', 'retake']);
    const entries = await readAuditEntries(join(dir.path, 'audit.jsonl'));
    expect(entries.at(-1)).toMatchObject({ type: 'agent-update-reverted', code: 'SUCCESSOR_NOT_CONFIRMED', image_digest: update.digest, successor: 'succ' });
    expect(s.attempts()).toEqual({ [update.digest]: 1 });
  });

  it('calls a successor that exits before taking over a failed hand-over, not a revert', async () => {
    const s = scenario(async (tick) => tick < 2);
    expect(await s.run()).toBe('failed');
    const entries = await readAuditEntries(join(dir.path, 'audit.jsonl'));
    expect(entries.at(-1)).toMatchObject({ type: 'agent-update-failed', stage: 'handover', code: 'HANDOVER_FAILED' });
    expect(entries.some((e) => e.type === 'agent-update-reverted')).toBe(false);
  });

  it('does not take a confirmation by another container for its successor', async () => {
    const s = scenario(async (tick, audit) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      if (tick === 2) await audit.append('agent-confirmed', { container: 'other' });
      return tick < 4;
    });
    expect(await s.run()).toBe('failed');
    expect(s.events).toContain('remove succ');
  });
});
