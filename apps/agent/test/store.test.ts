import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { Model } from '@resultity/snapshot';
import { tempDir } from '@resultity/testkit';
import { type FileServer, devSnapshot, makeModel, startFileServer } from '@resultity/testkit/devnet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type Setup, cli, setup } from './helpers.js';

type Entry = { type: string; [key: string]: unknown };

async function audit(stateDir: string): Promise<Entry[]> {
  return (await readFile(join(stateDir, 'audit.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Entry);
}

async function storeStatus(config: string): Promise<{ bytes: number; collectable: { bytes: number; count: number } }> {
  const result = await cli(['status', '--config', config, '--json']);
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout).store;
}

describe('the model store over applies (real files, a real HTTP server)', () => {
  let work: { path: string; cleanup: () => Promise<void> };
  let s: Setup;
  let files: FileServer;
  const dir = () => join(work.path, 'files');
  // The model every snapshot here keeps (set by the first test).
  let a: Model;

  beforeAll(async () => {
    work = await tempDir('agent-store-');
    s = await setup(work.path, 'dev');
    files = await startFileServer(dir());
  });
  afterAll(async () => {
    await files.close();
    await s.close();
    await work.cleanup();
  });

  it('names a mirror dropped from a download that succeeded in the applied entry, never in last_error', async () => {
    a = await makeModel(dir(), files, 'a', '1.0.0', randomBytes(64 * 1024));
    const withBadMirror = { ...a, urls: [`${files.url}/no-such-file.bin`, ...a.urls] };
    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 1, models: [withBadMirror] }));
    const result = await cli(['sync', '--once', '--config', s.config]);
    expect(result.code).toBe(0);
    const applied = (await audit(s.stateDir)).filter((e) => e.type === 'applied').at(-1);
    expect(applied?.mirrors).toEqual([{ model: 'a@1.0.0', mirrors: [expect.objectContaining({ index: 0, code: 'MIRROR_HTTP_STATUS' })] }]);
    const status = JSON.parse((await cli(['status', '--config', s.config, '--json'])).stdout);
    expect(JSON.stringify(status)).not.toContain('MIRROR_HTTP_STATUS');
  });

  it('collects nothing after a failed apply, shows what is collectable, and collects it after the next successful apply', async () => {
    const b = await makeModel(dir(), files, 'b', '1.0.0', randomBytes(96 * 1024));
    const broken = { name: 'c', version: '1.0.0', sha256: 'c'.repeat(64), size: 16, urls: [`${files.url}/no-such-file.bin`] };
    // b comes down, then c fails: the apply fails and b's file stays in the store, indexed by nothing.
    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 2, models: [a, b, broken] }));
    expect((await cli(['sync', '--once', '--config', s.config])).code).toBe(1);
    const models = join(s.stateDir, 'models');
    expect(await readdir(join(models, 'sha256'))).toContain(b.sha256);
    expect((await audit(s.stateDir)).map((e) => e.type)).not.toContain('collect');
    // A part left by a download of a model no snapshot wants any more.
    const stale = 'd'.repeat(64);
    await mkdir(join(models, 'staging'), { recursive: true });
    await writeFile(join(models, 'staging', `${stale}.part`), randomBytes(8 * 1024));

    const before = await storeStatus(s.config);
    expect(before.collectable.count).toBe(2);
    expect(before.collectable.bytes).toBeGreaterThanOrEqual(96 * 1024 + 8 * 1024);
    expect(before.bytes).toBeGreaterThanOrEqual(64 * 1024 + before.collectable.bytes);

    await s.net.publish(devSnapshot({ network: 'testnet', sequence: 3, models: [a] }));
    expect((await cli(['sync', '--once', '--config', s.config])).code).toBe(0);
    const collect = (await audit(s.stateDir)).filter((e) => e.type === 'collect').at(-1);
    expect(collect).toMatchObject({ ok: true, bytes_freed: before.collectable.bytes });
    expect(((collect?.removed ?? []) as { file: string }[]).map((r) => r.file).sort()).toEqual([`sha256/${b.sha256}`, `staging/${stale}.part`]);
    expect(await readdir(join(models, 'sha256'))).toEqual([a.sha256]);
    expect(await readdir(join(models, 'staging'))).toEqual([]);
    expect((await storeStatus(s.config)).collectable).toEqual({ bytes: 0, count: 0 });
  });
});
