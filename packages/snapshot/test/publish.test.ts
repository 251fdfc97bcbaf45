import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { createTestSigner, sampleSnapshot, tempDir } from '@resultity/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { verifyChunkList } from '../src/index.js';
import { originPaths, publishChunkList, publishSnapshot, startOriginServer } from '../src/origin/index.js';

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

describe('publishChunkList', () => {
  it('writes the chunk list where the dev origin serves it, immutable, and it verifies against the model', async () => {
    const digests = ['a', 'b', 'c'].map((seed) => createHash('sha256').update(seed).digest('hex'));
    const chunks = await publishChunkList({ dir: dir.path, network: 'testnet', chunkDigests: digests, chunkSize: 2 ** 20 });
    const server = await startOriginServer({ dir: dir.path });
    try {
      const res = await fetch(`${server.url}/${originPaths.chunks('testnet', chunks.sha256)}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('cache-control')).toContain('immutable');
      const bytes = new Uint8Array(await res.arrayBuffer());
      const model = { size: 2 * 2 ** 20 + 1, chunks: { size: chunks.size, sha256: chunks.sha256 } };
      expect(verifyChunkList(bytes, model)).toEqual(digests);
      expect((await fetch(`${server.url}/${originPaths.chunks('testnet', 'f'.repeat(64))}`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
