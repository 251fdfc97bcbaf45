import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { AuditLog, verifyAuditFile } from './audit.js';

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
