import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { FileFlagsStore } from './flags.js';
import { FsModelStore } from './store.js';

describe('the small files every apply reads (model index, flags)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'applier-store-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the index and the flags written before, and nothing when they are absent', async () => {
    const store = new FsModelStore(join(dir, 'models'));
    expect(await store.readIndex()).toEqual([]);
    const entry = { name: 'm', version: '1', sha256: 'a'.repeat(64), size: 3 };
    await store.writeIndex([entry]);
    expect(await store.readIndex()).toEqual([entry]);
    const flags = new FileFlagsStore(join(dir, 'flags.json'));
    expect(await flags.read()).toBeNull();
    await flags.write({ mode: 'testnet', subclouds: ['eu'] });
    expect(await flags.read()).toEqual({ mode: 'testnet', subclouds: ['eu'] });
  });

  it('refuses a FIFO under the index or the flags file (STORE_FAILED) instead of waiting on it for ever', async () => {
    await mkdir(join(dir, 'models'));
    execFileSync('mkfifo', [join(dir, 'models', 'index.json')]);
    execFileSync('mkfifo', [join(dir, 'flags.json')]);
    await expect(new FsModelStore(join(dir, 'models')).readIndex()).rejects.toMatchObject({ code: 'STORE_FAILED' });
    await expect(new FileFlagsStore(join(dir, 'flags.json')).read()).rejects.toMatchObject({ code: 'STORE_FAILED' });
  }, 10_000);

  it('refuses an index larger than a store file may be (STORE_FAILED) without reading it whole', async () => {
    await mkdir(join(dir, 'models'));
    // Sparse: 64 MiB of apparent size, no data written.
    execFileSync('truncate', ['-s', '64M', join(dir, 'models', 'index.json')]);
    await expect(new FsModelStore(join(dir, 'models')).readIndex()).rejects.toMatchObject({
      code: 'STORE_FAILED',
      message: expect.stringContaining('more than the limit'),
    });
  });

  it('refuses an index that is not JSON (STORE_FAILED)', async () => {
    await mkdir(join(dir, 'models'));
    await writeFile(join(dir, 'models', 'index.json'), '{');
    await expect(new FsModelStore(join(dir, 'models')).readIndex()).rejects.toMatchObject({ code: 'STORE_FAILED' });
  });
});
