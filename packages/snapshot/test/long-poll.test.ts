import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createTestSigner, sampleSnapshot, tempDir } from '@resultity/testkit';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { LONG_POLL_HEADER, type OriginServer, type OriginServerOptions, originPaths, publishSnapshot, startOriginServer } from '../src/origin/index.js';

// The built CLI publishes from another process, as a publisher on the same host would.
const BIN = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

let signer: Awaited<ReturnType<typeof createTestSigner>>;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  signer = await createTestSigner();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A dev origin on port 0 over a temp directory holding sequence 1. */
async function origin(options: Partial<OriginServerOptions> = {}): Promise<{ server: OriginServer; dir: string; latest: string }> {
  const dir = await tempDir('resultity-long-poll-');
  cleanups.push(dir.cleanup);
  await publishSnapshot({ dir: dir.path, envelope: signer.sign(sampleSnapshot({ sequence: 1 })).bytes, now: new Date() });
  const server = await startOriginServer({ dir: dir.path, ...options });
  cleanups.push(() => server.close());
  return { server, dir: dir.path, latest: `${server.url}/${originPaths.latest('testnet')}` };
}

/** Publishes `sequence` into `dir` with the built CLI, in a process of its own. */
async function publishFromAnotherProcess(dir: string, sequence: number): Promise<void> {
  const file = join(dir, `envelope-${sequence}.json`);
  await writeFile(file, signer.sign(sampleSnapshot({ sequence })).bytes);
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, [BIN, 'publish', '--origin', dir, file], { timeout: 20_000 }, (error, _stdout, stderr) =>
      error ? reject(new Error(`publish failed: ${stderr}`)) : resolve(),
    );
  });
}

/** Waits until the server holds `count` requests: the test's own sync point, not a timing check. */
async function untilHeld(server: OriginServer, count: number): Promise<void> {
  while (server.heldRequests() !== count) await new Promise((resolve) => setTimeout(resolve, 10));
}

async function etagOf(latest: string): Promise<string> {
  const res = await fetch(latest);
  await res.arrayBuffer();
  const etag = res.headers.get('etag');
  if (etag === null) throw new Error('latest.json has no ETag');
  return etag;
}

describe('the dev origin, long-poll on latest.json (SPEC §5)', () => {
  describe('when latest.json changes while requests are held', () => {
    it('answers every held request with 200 and the new latest.json, published by another process', async () => {
      const { server, dir, latest } = await origin();
      const etag = await etagOf(latest);
      const held = [fetch(`${latest}?wait=60`, { headers: { 'If-None-Match': etag } }), fetch(`${latest}?wait=30`, { headers: { 'If-None-Match': etag } })];
      await untilHeld(server, 2);

      await publishFromAnotherProcess(dir, 2);

      for (const res of await Promise.all(held)) {
        expect(res.status).toBe(200);
        expect(res.headers.get(LONG_POLL_HEADER)).toBe('1');
        expect(res.headers.get('etag')).not.toBe(etag);
        expect(await res.json()).toMatchObject({ sequence: 2 });
      }
      expect(server.heldRequests()).toBe(0);
    });

    it('notices the change through its stat fallback when the directory watch reports nothing', async () => {
      const { server, dir, latest } = await origin({ watch: () => () => {}, longPollStatIntervalMs: 20 });
      const etag = await etagOf(latest);
      const held = fetch(`${latest}?wait=60`, { headers: { 'If-None-Match': etag } });
      await untilHeld(server, 1);

      await publishFromAnotherProcess(dir, 2);

      const res = await held;
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ sequence: 2 });
    });
  });

  describe('when nothing changes', () => {
    it('answers 304 with the same ETag and the long-poll header at the end of the wait', async () => {
      const { server, latest } = await origin();
      const etag = await etagOf(latest);
      const res = await fetch(`${latest}?wait=1`, { headers: { 'If-None-Match': etag } });
      expect(res.status).toBe(304);
      expect(res.headers.get(LONG_POLL_HEADER)).toBe('1');
      expect(res.headers.get('etag')).toBe(etag);
      expect(server.heldRequests()).toBe(0);
    });
  });

  describe('when the request has nothing to wait for', () => {
    it('answers at once with 200 and the header when If-None-Match is absent or stale', async () => {
      const { server, latest } = await origin();
      for (const headers of [{}, { 'If-None-Match': '"stale"' }] as Record<string, string>[]) {
        const res = await fetch(`${latest}?wait=60`, { headers });
        expect(res.status).toBe(200);
        expect(res.headers.get(LONG_POLL_HEADER)).toBe('1');
        expect(await res.json()).toMatchObject({ sequence: 1 });
      }
      expect(server.heldRequests()).toBe(0);
    });

    it('leaves requests without wait as a static server answers them, without the header', async () => {
      const { latest } = await origin();
      const etag = await etagOf(latest);
      const res = await fetch(latest, { headers: { 'If-None-Match': etag } });
      expect(res.status).toBe(304);
      expect(res.headers.get(LONG_POLL_HEADER)).toBeNull();
    });
  });

  describe('when the held-request bound is reached', () => {
    it('answers one more with 503, Retry-After and the header, and still answers heartbeats', async () => {
      const { server, latest } = await origin({ maxHeldRequests: 1 });
      const etag = await etagOf(latest);
      const first = fetch(`${latest}?wait=2`, { headers: { 'If-None-Match': etag } });
      await untilHeld(server, 1);

      const refused = await fetch(`${latest}?wait=60`, { headers: { 'If-None-Match': etag } });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect(refused.headers.get(LONG_POLL_HEADER)).toBe('1');
      expect((await refused.json()) as { error: string }).toMatchObject({ error: expect.stringContaining('1 long-poll requests') });

      const heartbeat = await fetch(`${server.url}/${originPaths.heartbeat('testnet', 'node-1')}`, { method: 'POST', body: '{"status":"ok"}' });
      expect(heartbeat.status).toBe(204);
      expect(server.heartbeats('testnet').map((n) => n.node_id)).toEqual(['node-1']);

      expect((await first).status).toBe(304);
      expect(server.heldRequests()).toBe(0);
    });

    it('frees the place of a client that gives up', async () => {
      const { server, latest } = await origin({ maxHeldRequests: 1 });
      const etag = await etagOf(latest);
      const abort = new AbortController();
      const gone = fetch(`${latest}?wait=60`, { headers: { 'If-None-Match': etag }, signal: abort.signal }).catch(() => 'aborted');
      await untilHeld(server, 1);
      abort.abort();
      expect(await gone).toBe('aborted');
      await untilHeld(server, 0);
    });
  });

  describe('when wait is not a whole number of seconds from 1 to 60', () => {
    it.each(['0', '61', '-1', '1.5', 'abc', '', '05', '1e1'])('answers wait=%j with 400 and the header', async (wait) => {
      const { server, latest } = await origin();
      const etag = await etagOf(latest);
      const res = await fetch(`${latest}?wait=${wait}`, { headers: { 'If-None-Match': etag } });
      expect(res.status).toBe(400);
      expect(res.headers.get(LONG_POLL_HEADER)).toBe('1');
      expect(server.heldRequests()).toBe(0);
    });

    it('answers two wait parameters with 400', async () => {
      const { latest } = await origin();
      const res = await fetch(`${latest}?wait=5&wait=6`);
      expect(res.status).toBe(400);
    });
  });
});
