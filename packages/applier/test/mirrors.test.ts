import { existsSync } from 'node:fs';
import { join } from 'node:path';

import type { Model } from '@resultity/snapshot';
import { tempDir } from '@resultity/testkit';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { FsModelStore, HttpDownloader, fetchModel, systemClock, type ApplyErrorCode, type HttpDownloaderOptions } from '../src/index.js';
import { failure } from './support/failure.js';
import { type HostileAnswer, type HostileMirror, startHostileMirror } from './support/hostile-mirror.js';
import { generatedBytes, sha256 } from './support/model-server.js';

const bytes = generatedBytes(20_000, 51);
const good = '/good.bin';

let mirror: HostileMirror;
let dir: { path: string; cleanup: () => Promise<void> };
// A hostile answer used to throw inside an HTTP callback and take the process down: watch for it.
const escaped: unknown[] = [];
const onEscape = (error: unknown) => escaped.push(error);

beforeAll(async () => {
  mirror = await startHostileMirror();
  mirror.answer(good, { kind: 'bytes', bytes });
  process.on('uncaughtException', onEscape);
  process.on('unhandledRejection', onEscape);
});
afterAll(async () => {
  process.off('uncaughtException', onEscape);
  process.off('unhandledRejection', onEscape);
  await mirror.close();
});
beforeEach(async () => {
  dir = await tempDir('resultity-applier-mirrors-');
});
afterEach(async () => {
  await dir.cleanup();
  expect(escaped).toEqual([]);
});

function modelAt(urls: string[]): Model {
  return { name: 'hostile', version: '1.0.0', sha256: sha256(bytes), size: bytes.length, urls };
}

function portsWith(options: HttpDownloaderOptions) {
  return { models: new FsModelStore(dir.path), downloader: new HttpDownloader(options), clock: systemClock };
}

/** Loopback mirrors are allowed here: the test server can only be on 127.0.0.1. */
const loopback: HttpDownloaderOptions = { idleTimeoutMs: 2000, allowPrivateAddresses: true };

const cases: { name: string; path: string; answer: HostileAnswer; code: ApplyErrorCode; options?: HttpDownloaderOptions }[] = [
  { name: 'a redirect to a file: URL', path: '/to-file', answer: { kind: 'redirect', location: 'file:///etc/passwd' }, code: 'MIRROR_REDIRECT_REFUSED' },
  { name: 'a redirect to an unparsable Location', path: '/to-garbage', answer: { kind: 'redirect', location: 'http://[::1' }, code: 'MIRROR_REDIRECT_REFUSED' },
  { name: 'endless redirects', path: '/loop', answer: { kind: 'redirect-loop' }, code: 'MIRROR_REDIRECT_REFUSED' },
  { name: 'HTTP 404', path: '/gone', answer: { kind: 'status', status: 404 }, code: 'MIRROR_HTTP_STATUS' },
  { name: 'HTTP 503 on every retry', path: '/down', answer: { kind: 'status', status: 503 }, code: 'MIRROR_HTTP_STATUS' },
  { name: 'headers and then silence', path: '/stall', answer: { kind: 'stall', size: bytes.length }, code: 'MIRROR_STALLED', options: { idleTimeoutMs: 300 } },
  { name: 'no answer at all', path: '/silent', answer: { kind: 'silent' }, code: 'MIRROR_STALLED', options: { idleTimeoutMs: 300 } },
  {
    name: 'one byte at a time',
    path: '/drip',
    answer: { kind: 'drip', bytes, everyMs: 20 },
    code: 'MIRROR_TOO_SLOW',
    options: { minBytesPerSecond: 2000, rateWindowMs: 200 },
  },
  { name: 'other bytes than the signed hash', path: '/wrong', answer: { kind: 'bytes', bytes: generatedBytes(bytes.length, 52) }, code: 'HASH_MISMATCH' },
];

describe('fetchModel from a hostile mirror', () => {
  for (const c of cases) {
    describe(`when the mirror answers with ${c.name}`, () => {
      it(`refuses that mirror with ${c.code} and takes the next one`, async () => {
        mirror.answer(c.path, c.answer);
        const options = { ...loopback, ...c.options };

        const alone = await failure(fetchModel(modelAt([mirror.url(c.path)]), portsWith(options), { retryDelayMs: 1 }));
        expect(alone.mirrors).toEqual([{ index: 0, code: c.code, detail: expect.stringContaining('127.0.0.1') }]);
        expect(alone.code).toBe(c.code === 'HASH_MISMATCH' ? 'HASH_MISMATCH' : 'DOWNLOAD_FAILED');
        expect(alone.retryable).toBe(true);

        await fetchModel(modelAt([mirror.url(c.path), mirror.url(good)]), portsWith(options), { retryDelayMs: 1 });
        expect(existsSync(join(dir.path, 'sha256', sha256(bytes)))).toBe(true);
      });
    });
  }

  it('follows no more than 5 redirects', async () => {
    mirror.answer('/loop-counted', { kind: 'redirect-loop' });
    const before = mirror.requests.length;
    await failure(fetchModel(modelAt([mirror.url('/loop-counted')]), portsWith(loopback)));
    expect(mirror.requests.slice(before)).toEqual(new Array(6).fill('/loop-counted'));
  });

  it('follows a good redirect', async () => {
    mirror.answer('/moved', { kind: 'redirect', location: good, status: 301 });
    await fetchModel(modelAt([mirror.url('/moved')]), portsWith(loopback));
    expect(existsSync(join(dir.path, 'sha256', sha256(bytes)))).toBe(true);
  });

  describe('when every mirror fails', () => {
    it('fails once with DOWNLOAD_FAILED whose message names the codes, never a host, status or size', async () => {
      mirror.answer('/a-404', { kind: 'status', status: 404 });
      mirror.answer('/a-stall', { kind: 'stall', size: bytes.length });
      mirror.answer('/a-file', { kind: 'redirect', location: 'file:///x' });
      const urls = [mirror.url('/a-404'), mirror.url('/a-stall'), mirror.url('/a-file')];
      const error = await failure(fetchModel(modelAt(urls), portsWith({ ...loopback, idleTimeoutMs: 300 })));
      expect(error.code).toBe('DOWNLOAD_FAILED');
      expect(error.message).toBe('model hostile@1.0.0: all 3 mirrors failed (MIRROR_HTTP_STATUS, MIRROR_STALLED, MIRROR_REDIRECT_REFUSED)');
      expect(error.cause).toBeUndefined();
      expect(error.mirrors?.map((m) => [m.index, m.code])).toEqual([
        [0, 'MIRROR_HTTP_STATUS'],
        [1, 'MIRROR_STALLED'],
        [2, 'MIRROR_REDIRECT_REFUSED'],
      ]);
      expect(error.mirrors?.[0]?.detail).toMatch(/127\.0\.0\.1 answered HTTP 404/);
    });
  });
});

describe('fetchModel without allowPrivateAddresses', () => {
  const strict: HttpDownloaderOptions = { idleTimeoutMs: 2000 };

  for (const [name, host] of [
    ['a loopback IP literal', '127.0.0.1'],
    ['an IPv4-mapped IPv6 literal of loopback', '[::ffff:127.0.0.1]'],
    ['a name that resolves to loopback', 'localhost'],
  ] as const) {
    it(`refuses a mirror on ${name} with MIRROR_ADDRESS_REFUSED, without a request`, async () => {
      const url = mirror.url(good).replace('127.0.0.1', host);
      const before = mirror.requests.length;
      const error = await failure(fetchModel(modelAt([url]), portsWith(strict)));
      expect(error.code).toBe('DOWNLOAD_FAILED');
      expect(error.mirrors?.map((m) => m.code)).toEqual(['MIRROR_ADDRESS_REFUSED']);
      expect(mirror.requests.length).toBe(before);
    });
  }
});
