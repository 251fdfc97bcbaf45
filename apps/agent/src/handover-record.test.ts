import { execFileSync } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  type HandoverRecord,
  clearHandover,
  decideHandover,
  handoverRole,
  readHandoverOutcome,
  readHandoverRecord,
  writeHandoverRecord,
} from './handover-record.js';

let dir: { path: string; cleanup: () => Promise<void> };
beforeEach(async () => {
  dir = await tempDir('agent-handover-record-');
});
afterEach(() => dir.cleanup());

const record: HandoverRecord = {
  id: '0123456789abcdef',
  predecessor: 'pred',
  predecessor_name: 'resultity-agent',
  image: 'r.example/agent',
  digest: `sha256:${'3'.repeat(64)}`,
  version: '3.0.0',
  attempt: 1,
  attempts: {},
  started_at: '2026-11-28T00:00:00.000Z',
};

describe('handoverRole', () => {
  it('starts as usual without a record, or outside a container', () => {
    expect(handoverRole(null, null, 'pred', undefined)).toEqual({ kind: 'none' });
    expect(handoverRole(record, null, null, record.id)).toEqual({ kind: 'none' });
  });

  it('makes the restarted predecessor guard, finish its revert, or wait to be removed', () => {
    expect(handoverRole(record, null, 'pred', undefined).kind).toBe('guard');
    expect(handoverRole(record, 'reverted', 'pred', undefined).kind).toBe('finish-revert');
    expect(handoverRole(record, 'confirmed', 'pred', undefined).kind).toBe('superseded');
  });

  it('makes the successor take over, complete, or yield, by the hand-over it was started for', () => {
    expect(handoverRole(record, null, 'succ', record.id).kind).toBe('take-over');
    expect(handoverRole(record, 'confirmed', 'succ', record.id).kind).toBe('complete');
    expect(handoverRole(record, 'reverted', 'succ', record.id).kind).toBe('yield');
    // Started by an older hand-over: a plain restart, long after that one ended.
    expect(handoverRole(record, null, 'succ', 'fedcba9876543210').kind).toBe('none');
  });

  it('puts the predecessor part first: a successor that hands over in turn carries its own start variables', () => {
    expect(handoverRole({ ...record, predecessor: 'succ' }, null, 'succ', 'fedcba9876543210').kind).toBe('guard');
  });
});

describe('decideHandover', () => {
  it('lets the first decision hold and tells the second one it lost', async () => {
    expect(await decideHandover(dir.path, record.id, 'reverted', 'pred')).toMatchObject({ won: true, decided: { outcome: 'reverted', by: 'pred' } });
    expect(await decideHandover(dir.path, record.id, 'confirmed', 'succ')).toMatchObject({ won: false, decided: { outcome: 'reverted', by: 'pred' } });
    expect((await readHandoverOutcome(dir.path, record.id))?.outcome).toBe('reverted');
    // No temp file is left by either attempt.
    expect((await readdir(dir.path)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('keeps the outcome of a cleared hand-over (a late decision still loses) and removes older ones', async () => {
    const older = 'aaaaaaaaaaaaaaaa';
    await decideHandover(dir.path, older, 'confirmed', 'x');
    await writeHandoverRecord(dir.path, record);
    await decideHandover(dir.path, record.id, 'confirmed', 'succ');
    await clearHandover(dir.path, record.id);
    expect(await readHandoverRecord(dir.path)).toBeNull();
    expect(await readHandoverOutcome(dir.path, older)).toBeNull();
    expect((await decideHandover(dir.path, record.id, 'reverted', 'pred')).won).toBe(false);
  });

  it('refuses a damaged outcome with STATE_CORRUPT rather than guess it', async () => {
    await writeFile(join(dir.path, `handover-${record.id}.outcome`), '{"outcome":');
    await expect(readHandoverOutcome(dir.path, record.id)).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
  });

  it('reads a record it cannot parse as none', async () => {
    await writeHandoverRecord(dir.path, { ...record, id: 'not hex' });
    expect(await readHandoverRecord(dir.path)).toBeNull();
  });
});

describe('reading the hand-over files', () => {
  it("refuses a FIFO or an oversized file under the record's name with STATE_CORRUPT, instead of blocking or reading it whole", async () => {
    execFileSync('mkfifo', [join(dir.path, 'handover.json')]);
    await expect(readHandoverRecord(dir.path)).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
    await writeFile(join(dir.path, `handover-${record.id}.outcome`), Buffer.alloc(2 * 1024 * 1024, 0x20));
    await expect(readHandoverOutcome(dir.path, record.id)).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
  });
});
