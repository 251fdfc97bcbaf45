import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { AuditLog, readAuditEntries } from './audit.js';
import { type SuccessorPort, handOver } from './handover.js';
import { decideHandover, readHandoverOutcome, readHandoverRecord } from './handover-record.js';

let dir: { path: string; cleanup: () => Promise<void> };
beforeEach(async () => {
  dir = await tempDir('agent-handover-');
});
afterEach(() => dir.cleanup());

const update = { version: '3.0.0', image: 'r.example/agent', digest: `sha256:${'3'.repeat(64)}` };
const self = { id: 'pred', name: 'resultity-agent', imageDigests: [] };

/** What the successor does in a scenario: the audit entries it appends and its confirmation (the outcome compare-and-set). */
interface SuccessorActs {
  audit: AuditLog;
  confirm(): Promise<boolean>;
}

/**
 * A successor scripted per poll: `script(tick, acts)` runs at each `running` call and says
 * whether the successor still runs; it may append the successor's own entries or confirm first.
 */
function scenario(script: (tick: number, acts: SuccessorActs) => Promise<boolean>) {
  const audit = new AuditLog(join(dir.path, 'audit.jsonl'));
  const events: string[] = [];
  let tick = 0;
  let started = false;
  const acts: SuccessorActs = {
    audit,
    confirm: async () => {
      const record = await readHandoverRecord(dir.path);
      return (await decideHandover(dir.path, record!.id, 'confirmed', 'succ')).won;
    },
  };
  const successors: SuccessorPort = {
    start: async () => {
      events.push('start');
      // The record is written before the lock is released, so the successor always finds it.
      events.push((await readHandoverRecord(dir.path)) === null ? 'no record' : 'record');
      started = true;
      return 'succ';
    },
    list: async () => (started ? ['succ'] : []),
    running: async () => script(tick++, acts),
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
        self: 'pred',
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
    const s = scenario(async (tick, { audit, confirm }) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      if (tick === 3) expect(await confirm()).toBe(true);
      return true;
    });
    expect(await s.run()).toBe('handed-over');
    // Neither removed nor retaken: the confirmed successor removes the predecessor itself.
    expect(s.events).toEqual(['stop', 'release', 'start', 'record']);
  });

  it('reverts a successor that took over and then restarted: removes it before retaking the lock, audits and counts it', async () => {
    const s = scenario(async (tick, { audit }) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      return tick < 3;
    });
    expect(await s.run()).toBe('failed');
    expect(s.events).toEqual(['stop', 'release', 'start', 'record', 'remove succ', 'retake']);
    const entries = await readAuditEntries(join(dir.path, 'audit.jsonl'));
    expect(entries.at(-1)).toMatchObject({ type: 'agent-update-reverted', code: 'SUCCESSOR_NOT_CONFIRMED', image_digest: update.digest, successor: 'succ' });
    expect(s.attempts()).toEqual({ [update.digest]: 1 });
    // The hand-over is over: its record is gone, and a late confirmation can no longer win.
    expect(await readHandoverRecord(dir.path)).toBeNull();
  });

  it('yields to a successor that confirms in the instant the predecessor decides to revert', async () => {
    const s = scenario(async (tick, { audit, confirm }) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      // It restarted (a revert is due) but confirmed just before the predecessor decides.
      if (tick === 2) expect(await confirm()).toBe(true);
      return tick < 2;
    });
    expect(await s.run()).toBe('handed-over');
    expect(s.events).not.toContain('remove succ');
    expect(s.events).not.toContain('retake');
    const entries = await readAuditEntries(join(dir.path, 'audit.jsonl'));
    expect(entries.some((e) => e.type === 'agent-update-reverted')).toBe(false);
  });

  it('makes a confirmation after the revert lose: the successor is removed and its confirmation refused', async () => {
    let lateConfirmation: boolean | null = null;
    let id = '';
    const s = scenario(async (tick, { audit }) => {
      if (tick === 0) id = (await readHandoverRecord(dir.path))!.id;
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      return tick < 2;
    });
    expect(await s.run()).toBe('failed');
    lateConfirmation = (await decideHandover(dir.path, id, 'confirmed', 'succ')).won;
    expect(lateConfirmation).toBe(false);
    expect((await readHandoverOutcome(dir.path, id))?.outcome).toBe('reverted');
  });

  it('calls a successor that exits before taking over a failed hand-over, not a revert', async () => {
    const s = scenario(async (tick) => tick < 2);
    expect(await s.run()).toBe('failed');
    const entries = await readAuditEntries(join(dir.path, 'audit.jsonl'));
    expect(entries.at(-1)).toMatchObject({ type: 'agent-update-failed', stage: 'handover', code: 'HANDOVER_FAILED' });
    expect(entries.some((e) => e.type === 'agent-update-reverted')).toBe(false);
  });

  it('does not take an agent-confirmed audit entry for the confirmation', async () => {
    const s = scenario(async (tick, { audit }) => {
      if (tick === 1) await audit.append('agent-takeover', { container: 'succ' });
      // An audit entry is not the confirmation: only the outcome's compare-and-set is.
      if (tick === 2) await audit.append('agent-confirmed', { container: 'succ' });
      return tick < 4;
    });
    expect(await s.run()).toBe('failed');
    expect(s.events).toContain('remove succ');
  });
});
