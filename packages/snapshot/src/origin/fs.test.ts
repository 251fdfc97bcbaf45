import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readFileBounded } from './fs.js';

let dir: { path: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('resultity-fs-');
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
