import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { verifyChunkList } from '../chunks.js';
import { ModelSchema } from '../schema.js';
import { type CliIo, runCli } from './program.js';

const MiB = 2 ** 20;

let dir: { path: string; cleanup: () => Promise<void> };
beforeEach(async () => {
  dir = await tempDir('resultity-model-add-');
});
afterEach(async () => {
  await dir.cleanup();
});

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    now: () => new Date('2026-11-27T00:00:00Z'),
    untilStopped: async () => undefined,
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

/** 2.5 MiB of varied bytes: two whole chunks of 1 MiB and a short last one. */
function modelBytes(): Buffer {
  const bytes = Buffer.alloc(2 * MiB + MiB / 2);
  for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i);
  return bytes;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('model add', () => {
  it('prints the model entry with chunks and writes the chunk list the entry names into the origin', async () => {
    const bytes = modelBytes();
    const file = join(dir.path, 'm.gguf');
    await writeFile(file, bytes);
    const origin = join(dir.path, 'origin');
    await mkdir(join(origin, 'v1', 'testnet'), { recursive: true });
    const out = await run([
      'model',
      'add',
      file,
      '--name',
      'llama',
      '--version',
      '1.2.0',
      '--url',
      'https://a.example/m',
      '--url',
      'https://b.example/m',
      '--chunk-size',
      '1MiB',
      '--origin',
      origin,
    ]);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const entry = ModelSchema.parse(JSON.parse(out.stdout));
    expect(entry).toEqual({
      name: 'llama',
      version: '1.2.0',
      sha256: sha(bytes),
      size: bytes.length,
      urls: ['https://a.example/m', 'https://b.example/m'],
      chunks: { size: MiB, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) },
    });
    const list = await readFile(join(origin, 'v1', 'testnet', 'chunks', `${entry.chunks!.sha256}.json`));
    // What an Agent does with it: the schema helper accepts it, and its entries are the chunks' digests.
    expect(verifyChunkList(list, { size: entry.size, chunks: entry.chunks! })).toEqual([
      sha(bytes.subarray(0, MiB)),
      sha(bytes.subarray(MiB, 2 * MiB)),
      sha(bytes.subarray(2 * MiB)),
    ]);
  });

  it('takes --network when the origin does not tell, and 64MiB chunks by default', async () => {
    const file = join(dir.path, 'm.bin');
    await writeFile(file, modelBytes());
    const origin = join(dir.path, 'fresh-origin');
    const out = await run(['model', 'add', file, '--name', 'm', '--version', '1', '--url', 'https://a.example/m', '--origin', origin, '--network', 'devnet']);
    expect(out.code).toBe(0);
    const entry = JSON.parse(out.stdout) as { chunks: { size: number; sha256: string } };
    expect(entry.chunks.size).toBe(64 * MiB);
    const list = await readFile(join(origin, 'v1', 'devnet', 'chunks', `${entry.chunks.sha256}.json`));
    expect(JSON.parse(list.toString())).toEqual([sha(modelBytes())]);
  });

  it('refuses a chunk size that is not a power of two from 1MiB to 1GiB, and an origin that names no single network, with USAGE', async () => {
    const file = join(dir.path, 'm.bin');
    await writeFile(file, modelBytes());
    for (const size of ['3MiB', '512KiB', '2GiB', 'lots']) {
      const out = await run([
        'model',
        'add',
        file,
        '--name',
        'm',
        '--version',
        '1',
        '--url',
        'https://a.example/m',
        '--origin',
        dir.path,
        '--network',
        'n',
        '--chunk-size',
        size,
      ]);
      expect(out.code, size).toBe(2);
      expect(out.stderr).toMatch(/^USAGE: --chunk-size/);
    }
    const out = await run(['model', 'add', file, '--name', 'm', '--version', '1', '--url', 'https://a.example/m', '--origin', join(dir.path, 'empty')]);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/^USAGE: cannot tell the network/);
  });

  it('refuses a mirror that is not an http(s) URL, writing nothing', async () => {
    const file = join(dir.path, 'm.bin');
    await writeFile(file, modelBytes());
    const origin = join(dir.path, 'o');
    const out = await run(['model', 'add', file, '--name', 'm', '--version', '1', '--url', 'file:///etc/passwd', '--origin', origin, '--network', 'n']);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/^USAGE: the model entry is not valid: urls/);
    await expect(readFile(join(origin, 'v1', 'n', 'chunks'))).rejects.toThrow();
  });
});
