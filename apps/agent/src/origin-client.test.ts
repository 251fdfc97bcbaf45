import { type Server, createServer } from 'node:http';
import { getEventListeners } from 'node:events';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { createHttpOrigin } from './origin-client.js';

let server: Server | null = null;

async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  server = createServer(handler);
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
});

const digest = `sha256:${'a'.repeat(64)}`;

function origin(baseUrl: string, overrides: { timeoutMs?: number; maxBytes?: number } = {}) {
  return createHttpOrigin({ baseUrl, network: 'testnet', nodeId: 'n1', timeoutMs: overrides.timeoutMs ?? 2000, maxBytes: overrides.maxBytes ?? 1024 });
}

describe('createHttpOrigin', () => {
  it('sends the ETag and reads a 304 as not modified', async () => {
    const url = await serve((req, res) => {
      if (req.headers['if-none-match'] === '"e1"') return void res.writeHead(304).end();
      res.writeHead(200, { etag: '"e1"' }).end(JSON.stringify({ config_digest: digest, sequence: 3 }));
    });
    const o = origin(url);
    expect(await o.latest(null)).toMatchObject({ status: 'ok', etag: '"e1"', hint: { config_digest: digest, sequence: 3 } });
    expect(await o.latest('"e1"')).toEqual({ status: 'not-modified' });
  });

  it("leaves no listener on the caller's signal once its requests are answered, whatever the answer", async () => {
    const url = await serve((req, res) => {
      if (req.url?.includes('wait=')) return; // held, never answered
      if (req.url?.includes('/root/')) return void res.writeHead(404).end('{}');
      if (req.headers['if-none-match'] === '"e1"') return void res.writeHead(304).end();
      res.writeHead(200, { etag: '"e1"' }).end(JSON.stringify({ config_digest: digest, sequence: 3 }));
    });
    const o = origin(url);
    // The daemon's stop signal lives as long as the process, and every request listens to it.
    const stop = new AbortController();
    for (let i = 0; i < 20; i++) {
      await o.latest(null, stop.signal);
      await o.latest('"e1"', stop.signal);
      expect(await o.root(2, stop.signal)).toBeNull();
    }
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
    // It still stops a request in flight.
    const pending = o.latest(null, stop.signal, { waitS: 30 });
    await new Promise((r) => setTimeout(r, 50));
    stop.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ABORTED' });
  });

  it("keeps the connection after the root chain's small 404, and cuts it after an unread large body", async () => {
    const url = await serve((req, res) => {
      if (req.url?.includes('/root/')) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      if (req.url?.includes('/snapshots/')) return void res.writeHead(500).end('x'.repeat(100_000));
      res.writeHead(200, { etag: '"e1"' }).end(JSON.stringify({ config_digest: digest, sequence: 3 }));
    });
    let connections = 0;
    server?.on('connection', () => {
      connections += 1;
    });
    const o = origin(url);
    expect(await o.root(2)).toBeNull();
    // The dropped body is drained in the background; the socket goes back to the pool after it.
    await new Promise((r) => setTimeout(r, 50));
    await o.latest(null);
    expect(connections).toBe(1);
    await expect(o.snapshot(digest)).rejects.toMatchObject({ code: 'HTTP_STATUS' });
    await new Promise((r) => setTimeout(r, 50));
    await o.latest(null);
    expect(connections).toBe(2);
  });

  it('refuses a snapshot body past the limit with TOO_LARGE, even without a Content-Length', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(512, 0x20);
      let sent = 0;
      const timer = setInterval(() => {
        if (res.destroyed || sent > 100) return clearInterval(timer);
        res.write(chunk);
        sent += 1;
      }, 1);
    });
    await expect(origin(url).snapshot(digest)).rejects.toMatchObject({ code: 'TOO_LARGE' });
  });

  it('refuses a declared Content-Length past the limit before reading', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 5000 }).end(Buffer.alloc(5000));
    });
    await expect(origin(url).snapshot(digest)).rejects.toMatchObject({ code: 'TOO_LARGE' });
  });

  it('gives up on a request slower than the timeout with TIMEOUT', async () => {
    const url = await serve(() => undefined);
    await expect(origin(url, { timeoutMs: 100 }).latest(null)).rejects.toMatchObject({ code: 'TIMEOUT' });
  });

  it('reads a latest.json of the wrong shape as LATEST_INVALID', async () => {
    const url = await serve((_req, res) => res.writeHead(200).end('{"config_digest":"md5:x"}'));
    await expect(origin(url).latest(null)).rejects.toMatchObject({ code: 'LATEST_INVALID' });
  });

  it('reads a missing next root as the end of the chain', async () => {
    const url = await serve((_req, res) => res.writeHead(404).end());
    expect(await origin(url).root(2)).toBeNull();
  });

  it('reports a refused connection as FETCH_FAILED', async () => {
    const url = await serve(() => undefined);
    server?.close();
    server?.closeAllConnections();
    await new Promise((r) => setTimeout(r, 10));
    await expect(origin(url).latest(null)).rejects.toMatchObject({ code: 'FETCH_FAILED' });
  });
});

describe('createHttpOrigin, long-poll (SPEC §5)', () => {
  const hint = JSON.stringify({ config_digest: digest, sequence: 3 });

  it('does not count a held wait against the request timeout, and reads its header', async () => {
    let asked = '';
    const url = await serve((req, res) => {
      asked = req.url ?? '';
      // Held past the client's 100 ms request timeout, as a long-poll origin does, then 304.
      setTimeout(() => res.writeHead(304, { 'resultity-long-poll': '1', etag: '"e1"' }).end(), 400);
    });
    expect(await origin(url, { timeoutMs: 100 }).latest('"e1"', undefined, { waitS: 1 })).toEqual({ status: 'not-modified', longPoll: true });
    expect(asked).toBe('/v1/testnet/latest.json?wait=1');
  });

  it('reads a marked 200 as the change it waited for', async () => {
    const url = await serve((_req, res) => res.writeHead(200, { 'resultity-long-poll': '1', etag: '"e2"' }).end(hint));
    expect(await origin(url).latest('"e1"', undefined, { waitS: 30 })).toMatchObject({ status: 'ok', etag: '"e2"', longPoll: true });
  });

  it('reads an unmarked answer to a wait as a server that ignores it (nginx, a CDN)', async () => {
    const url = await serve((_req, res) => res.writeHead(200, { etag: '"e1"' }).end(hint));
    expect(await origin(url).latest(null, undefined, { waitS: 30 })).toMatchObject({ status: 'ok', longPoll: false });
  });

  it('leaves plain polls unmarked', async () => {
    const url = await serve((_req, res) => res.writeHead(304, { 'resultity-long-poll': '1' }).end());
    expect(await origin(url).latest('"e1"')).toEqual({ status: 'not-modified' });
  });

  it("reads a marked 503 as LONG_POLL_FULL with the origin's Retry-After, and an unmarked one as HTTP_STATUS", async () => {
    let marked = true;
    const url = await serve((_req, res) => res.writeHead(503, marked ? { 'resultity-long-poll': '1', 'retry-after': '5' } : {}).end('{}'));
    await expect(origin(url).latest('"e1"', undefined, { waitS: 30 })).rejects.toMatchObject({ code: 'LONG_POLL_FULL', retryable: true, retryAfterMs: 5000 });
    marked = false;
    await expect(origin(url).latest('"e1"', undefined, { waitS: 30 })).rejects.toMatchObject({ code: 'HTTP_STATUS', status: 503 });
  });

  describe('when the origin answers a wait with the header, then stops mid-way', () => {
    it('reads a connection closed in the body as FETCH_FAILED', async () => {
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'resultity-long-poll': '1', 'content-length': 200 });
        res.write(hint.slice(0, 20));
        setTimeout(() => res.destroy(), 20);
      });
      await expect(origin(url).latest('"e1"', undefined, { waitS: 1 })).rejects.toMatchObject({ code: 'FETCH_FAILED', retryable: true });
    });

    it('gives up on a body that stalls past the wait and the timeout with TIMEOUT', async () => {
      const url = await serve((_req, res) => {
        res.writeHead(200, { 'resultity-long-poll': '1', 'content-length': 200 });
        res.write(hint.slice(0, 20));
      });
      await expect(origin(url, { timeoutMs: 100 }).latest('"e1"', undefined, { waitS: 1 })).rejects.toMatchObject({ code: 'TIMEOUT', retryable: true });
    });
  });
});
