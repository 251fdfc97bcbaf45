import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { createTestSigner, sampleSnapshot, tempDir } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { originPaths, publishSnapshot } from '../src/origin/index.js';

let dir: { path: string; cleanup: () => Promise<void> };
let signer: Awaited<ReturnType<typeof createTestSigner>>;

beforeAll(async () => {
  dir = await tempDir('resultity-publish-');
  signer = await createTestSigner();
});

afterAll(async () => {
  await dir.cleanup();
});

describe('publishSnapshot', () => {
  it('gives each new latest.json a later whole-second mtime, so mtime-size ETags change', async () => {
    const latest = join(dir.path, originPaths.latest('testnet'));
    const now = new Date();
    const seen: number[] = [];
    for (const sequence of [1, 2, 3]) {
      const { bytes } = signer.sign(sampleSnapshot({ sequence }));
      await publishSnapshot({ dir: dir.path, envelope: bytes, roots: [signer.rootBytes], now });
      seen.push(Math.floor((await stat(latest)).mtimeMs / 1000));
    }
    // Same length, same second of writing: only the mtime can tell a static server they differ.
    expect(new Set(seen).size).toBe(3);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(JSON.parse(await readFile(latest, 'utf8'))).toMatchObject({ sequence: 3 });
  });
});
