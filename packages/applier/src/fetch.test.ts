import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { ApplyError } from './errors.js';
import { fetchModel } from './fetch.js';
import { HttpStatusError } from './http.js';
import type { Clock, DownloadResponse, Downloader, ModelStore } from './ports.js';

const bytes = Buffer.from('the weights');
const model = {
  name: 'm',
  version: '1',
  sha256: createHash('sha256').update(bytes).digest('hex'),
  size: bytes.length,
  urls: ['https://a.example/m', 'https://b.example/m'],
};

/** A clock whose sleeps return at once: retries without real waiting. */
const clock = { now: () => 0, sleep: async () => undefined } satisfies Clock;

/** An in-memory store; `openPart` can be made to fail the way a broken disk would. */
function memoryStore(options: { failOpen?: unknown } = {}) {
  let part: Buffer = Buffer.alloc(0);
  const blobs = new Set<string>();
  return {
    root: '/memory',
    readIndex: async () => [],
    writeIndex: async () => undefined,
    listBlobs: async () => [...blobs],
    hasBlob: async (s: string) => blobs.has(s),
    blobPath: (s: string) => `/memory/${s}`,
    partSize: async () => part.length,
    openPart: async (_s: string, append: boolean) => {
      if (options.failOpen !== undefined) throw options.failOpen;
      if (!append) part = Buffer.alloc(0);
      return {
        write: async (chunks: Uint8Array[]) => {
          part = Buffer.concat([part, ...chunks]);
        },
        close: async () => undefined,
      };
    },
    readPart: async function* () {
      yield part;
    },
    discardPart: async () => {
      part = Buffer.alloc(0);
    },
    commitPart: async (s: string) => {
      blobs.add(s);
    },
    removeBlob: async () => undefined,
    freeBytes: async () => 1 << 30,
  } satisfies ModelStore;
}

/** A downloader that answers each URL from a script, and records what was asked. */
function scripted(answers: Record<string, () => Promise<DownloadResponse>>) {
  const asked: string[] = [];
  const downloader = {
    open: async (url: string) => {
      asked.push(url);
      const answer = answers[url];
      if (answer === undefined) throw new Error(`unexpected ${url}`);
      return answer();
    },
  } satisfies Downloader;
  return { downloader, asked };
}

const body = (b: Buffer): DownloadResponse => ({
  offset: 0,
  totalBytes: b.length,
  body: (async function* () {
    yield b;
  })(),
});

describe('fetchModel', () => {
  it('retries a 503 on the same mirror, then moves on', async () => {
    const { downloader, asked } = scripted({
      'https://a.example/m': async () => Promise.reject(new HttpStatusError(503, 'a.example')),
      'https://b.example/m': async () => body(bytes),
    });
    await fetchModel(model, { models: memoryStore(), downloader, clock }, { maxAttemptsPerUrl: 3 });
    expect(asked).toEqual(['https://a.example/m', 'https://a.example/m', 'https://a.example/m', 'https://b.example/m']);
  });

  it('does not retry a refused mirror', async () => {
    const { downloader, asked } = scripted({
      'https://a.example/m': async () => Promise.reject(new ApplyError('MIRROR_ADDRESS_REFUSED', 'a.example resolves only to internal addresses')),
      'https://b.example/m': async () => body(bytes),
    });
    await fetchModel(model, { models: memoryStore(), downloader, clock });
    expect(asked).toEqual(['https://a.example/m', 'https://b.example/m']);
  });

  it('names each mirror by index and code, and only the codes in the message', async () => {
    const { downloader } = scripted({
      'https://a.example/m': async () => Promise.reject(new HttpStatusError(404, 'a.example')),
      'https://b.example/m': async () => Promise.reject(new Error('socket hang up')),
    });
    const error = await fetchModel(model, { models: memoryStore(), downloader, clock }, { maxAttemptsPerUrl: 2 }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'DOWNLOAD_FAILED',
      retryable: true,
      message: 'model m@1: all 2 mirrors failed (MIRROR_HTTP_STATUS, MIRROR_UNREACHABLE)',
      mirrors: [
        { index: 0, code: 'MIRROR_HTTP_STATUS', detail: 'a.example answered HTTP 404' },
        { index: 1, code: 'MIRROR_UNREACHABLE', detail: 'b.example: socket hang up' },
      ],
    });
  });

  it("gives up at once when the node's own store fails, without blaming another mirror", async () => {
    const { downloader, asked } = scripted({ 'https://a.example/m': async () => body(bytes), 'https://b.example/m': async () => body(bytes) });
    const broken = new ApplyError('STORE_FAILED', 'staging is read-only');
    const error = await fetchModel(model, { models: memoryStore({ failOpen: broken }), downloader, clock }).catch((e: unknown) => e);
    expect(error).toBe(broken);
    expect(asked).toEqual(['https://a.example/m']);
  });
});
