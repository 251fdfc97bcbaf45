import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { AuditLog, verifyAuditFile, verifyAuditText } from './audit.js';

let dir: { path: string; cleanup: () => Promise<void> };
let path: string;

beforeEach(async () => {
  dir = await tempDir('agent-audit-');
  path = join(dir.path, 'audit.jsonl');
});
afterEach(() => dir.cleanup());

describe('AuditLog', () => {
  it('chains every entry to the hash of the one before', async () => {
    const log = new AuditLog(path);
    await log.append('fetch', { digest: 'sha256:a' });
    await log.append('refused', { code: 'EXPIRED' });
    await new AuditLog(path).append('applied', {});
    const result = await verifyAuditFile(path);
    expect(result).toMatchObject({ ok: true, entries: 3 });
  });

  it('keeps one chain across close() and reload(), with another writer in between', async () => {
    const log = new AuditLog(path);
    await log.append('fetch', { i: 0 });
    await log.close();
    await log.append('fetch', { i: 1 });
    await new AuditLog(path).append('applied', { by: 'another process' });
    log.reload();
    await log.append('fetch', { i: 2 });
    await log.close();
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, entries: 4 });
    expect(log.head()).toMatchObject({ index: 3 });
  });

  it('names the first entry whose content was changed', async () => {
    const log = new AuditLog(path);
    for (let i = 0; i < 4; i++) await log.append('fetch', { i });
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines[1] = (lines[1] as string).replace('"i":1', '"i":9');
    await writeFile(path, lines.join('\n'));
    expect(await verifyAuditFile(path)).toMatchObject({ ok: false, line: 3, seq: 2 });
  });

  it('names a removed entry', async () => {
    const log = new AuditLog(path);
    for (let i = 0; i < 3; i++) await log.append('fetch', { i });
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines.splice(1, 1);
    await writeFile(path, lines.join('\n'));
    expect(await verifyAuditFile(path)).toMatchObject({ ok: false, line: 2 });
  });

  it('cuts a line torn by a crash and records the repair, keeping the chain valid', async () => {
    await new AuditLog(path).append('fetch', {});
    await appendFile(path, '{"seq":1,"time":"2026-');
    await new AuditLog(path).append('start', {});
    const text = await readFile(path, 'utf8');
    expect(text).toContain('"type":"repair"');
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, entries: 3 });
  });
});

describe('the anchored head', () => {
  async function logOf(n: number) {
    const log = new AuditLog(path);
    for (let i = 0; i < n; i++) await log.append('fetch', { i });
    return log;
  }

  it('detects entries cut from the end, which the chain alone cannot', async () => {
    const log = await logOf(4);
    const anchor = log.head();
    expect(anchor).toMatchObject({ index: 3 });
    const lines = (await readFile(path, 'utf8')).split('\n').filter((l) => l.length > 0);
    const cut = `${lines.slice(0, 2).join('\n')}\n`;
    expect(verifyAuditText(cut).ok).toBe(true);
    expect(verifyAuditText(cut, anchor)).toMatchObject({ ok: false, reason: expect.stringContaining('cut from the end') });
  });

  it('detects a log rewritten whole with fresh hashes', async () => {
    const anchor = (await logOf(3)).head();
    const text = await readFile(path, 'utf8');
    const other = join(dir.path, 'other.jsonl');
    const forged = new AuditLog(other);
    for (const line of text.split('\n').filter((l) => l.length > 0)) {
      const { seq: _seq, time: _time, prev: _prev, type, ...data } = JSON.parse(line) as Record<string, unknown>;
      await forged.append(type as 'fetch', { ...data, note: 'rewritten' });
    }
    const rewritten = await readFile(other, 'utf8');
    expect(verifyAuditText(rewritten).ok).toBe(true);
    expect(verifyAuditText(rewritten, anchor)).toMatchObject({ ok: false, line: 3, reason: expect.stringContaining('rewritten') });
    expect(verifyAuditText(text, anchor).ok).toBe(true);
  });

  it('accepts entries appended after the anchor was written', async () => {
    const log = await logOf(2);
    const anchor = log.head();
    await log.append('applied', {});
    expect((await verifyAuditFile(path, anchor)).ok).toBe(true);
  });

  it('continues the chain another writer extended once reloaded', async () => {
    const first = new AuditLog(path);
    await first.append('start', {});
    await new AuditLog(path).append('agent-takeover', {});
    first.reload();
    expect(await first.append('agent-update-reverted', {})).toMatchObject({ seq: 2 });
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, entries: 3 });
  });
});
