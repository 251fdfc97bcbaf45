import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readFileBounded, readRegularFileSync, removeStaleTempFiles, writeFileAtomic } from './fs.js';

// Not the testkit's tempDir: the testkit stands on the snapshot package, which stands on this one.
let dir: { path: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  const path = await mkdtemp(join(tmpdir(), 'resultity-fs-'));
  dir = { path, cleanup: () => rm(path, { recursive: true, force: true }) };
  await writeFile(join(dir.path, 'exact'), Buffer.alloc(200_000, 7));
});

afterAll(async () => {
  await dir.cleanup();
});

describe('readFileBounded', () => {
  it('returns a file of exactly the limit, byte for byte', async () => {
    const bytes = await readFileBounded(join(dir.path, 'exact'), 200_000);
    expect(bytes.byteLength).toBe(200_000);
    expect(bytes.every((b) => b === 7)).toBe(true);
  });

  it('refuses a file one byte over the limit with TOO_LARGE', async () => {
    await expect(readFileBounded(join(dir.path, 'exact'), 199_999)).rejects.toMatchObject({ code: 'TOO_LARGE' });
  });

  it('refuses a missing file with IO and a plain reason', async () => {
    await expect(readFileBounded(join(dir.path, 'missing'), 10)).rejects.toMatchObject({ code: 'IO', message: expect.stringContaining('no such file') });
  });
});

describe('readRegularFileSync', () => {
  it('returns a file of exactly the limit, and null for a missing one', () => {
    expect(readRegularFileSync(join(dir.path, 'exact'), 200_000)?.byteLength).toBe(200_000);
    expect(readRegularFileSync(join(dir.path, 'missing'), 10)).toBeNull();
  });

  it('refuses a file over the limit with TOO_LARGE before reading it', () => {
    expect(() => readRegularFileSync(join(dir.path, 'exact'), 199_999)).toThrow(expect.objectContaining({ code: 'TOO_LARGE' }));
  });

  it('refuses a FIFO or a directory with IO instead of blocking on it', () => {
    const fifo = join(dir.path, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(() => readRegularFileSync(fifo, 10)).toThrow(expect.objectContaining({ code: 'IO', message: expect.stringContaining('not a regular file') }));
    expect(() => readRegularFileSync(dir.path, 10)).toThrow(expect.objectContaining({ code: 'IO' }));
  });
});

describe('removeStaleTempFiles', () => {
  it('removes the temp files of unfinished atomic writes, at any depth it is given, and nothing else', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'node-kit-temps-'));
    try {
      await mkdir(join(dir, 'models', 'deep', 'deeper'), { recursive: true });
      await writeFile(join(dir, '.0123456789ab.tmp'), 'half a state.json');
      await writeFile(join(dir, 'models', '.abcdefabcdef.tmp'), 'half an index');
      await writeFile(join(dir, 'models', 'deep', 'deeper', '.abcdefabcdef.tmp'), 'below the depth');
      await writeFile(join(dir, 'state.json'), '{}');
      await writeFile(join(dir, '.notours.tmp'), 'another tool');
      const removed = await removeStaleTempFiles(dir, 1);
      expect(removed.map((p) => p.slice(dir.length)).sort()).toEqual(['/.0123456789ab.tmp', '/models/.abcdefabcdef.tmp']);
      expect((await readdir(dir)).sort()).toEqual(['.notours.tmp', 'models', 'state.json']);
      expect(await readdir(join(dir, 'models', 'deep', 'deeper'))).toEqual(['.abcdefabcdef.tmp']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('writeFileAtomic', () => {
  it('creates missing directories, replaces the file whole, and leaves no temp file', async () => {
    const target = join(dir.path, 'atomic', 'deep', 'state.json');
    await writeFileAtomic(target, 'first', 0o600);
    const big = Buffer.alloc(3 * 1024 * 1024, 9);
    await writeFileAtomic(target, big, 0o600);
    expect(Buffer.compare(await readFile(target), big)).toBe(0);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    await writeFileAtomic(target, 'é last');
    expect(await readFile(target, 'utf8')).toBe('é last');
    expect(await readdir(join(dir.path, 'atomic', 'deep'))).toEqual(['state.json']);
  });
});
