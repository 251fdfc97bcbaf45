import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { type OriginServer, startOriginServer } from '@resultity/snapshot/origin';
import { tempDir, until } from '@resultity/testkit';
import { type DevNetwork, createDevNetwork, devSnapshot } from '@resultity/testkit/devnet';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { SyncEngine } from '../src/engine.js';
import { FakeApplier, FakeNotifier, MemoryAudit } from '../src/fakes.test-support.js';
import { Daemon } from '../src/loop.js';
import { type HttpTransport, createHttpOrigin, nodeHttpTransport } from '../src/origin-client.js';
import { noMetrics, silentLogger } from '../src/ports.js';
import { timersFrom } from '../src/schedule.js';
import { StateStore } from '../src/state.js';
import { type ServedOrigin, serveWithNginx } from './helpers.js';

/**
 * The daemon with its real HTTP origin client against real servers on 127.0.0.1; only the
 * applier and the runtime notifier are fakes (ports). Snapshots poll every 600 s, so a
 * publish that lands within the liveness bound of these tests was heard by long-poll.
 */

let work: { path: string; cleanup: () => Promise<void> };
let net: DevNetwork;
const closers: (() => Promise<void>)[] = [];

beforeEach(async () => {
  work = await tempDir('agent-long-poll-');
  net = await createDevNetwork(join(work.path, 'net'), 'testnet');
});

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await work.cleanup();
});

function publish(sequence: number, pollSeconds = 600) {
  return net.publish(devSnapshot({ network: 'testnet', sequence, pollSeconds, maxTokens: 100 + sequence }));
}

async function devOrigin(options: { maxHeldRequests?: number } = {}): Promise<OriginServer> {
  const origin = await startOriginServer({ dir: net.originDir, ...options });
  closers.push(() => origin.close());
  return origin;
}

/** Counts the requests a server gets for latest.json, with and without `wait`. */
function countLatest(server: Server): { waits: number; plain: number } {
  const counts = { waits: 0, plain: 0 };
  server.on('request', (req: IncomingMessage) => {
    if (!req.url?.includes('latest.json')) return;
    if (req.url.includes('wait=')) counts.waits += 1;
    else counts.plain += 1;
  });
  return counts;
}

async function startAgent(url: string, options: { waitS?: number; pollSeconds?: number; transport?: HttpTransport; timeoutMs?: number } = {}) {
  const store = new StateStore(join(work.path, 'state'));
  const origin = createHttpOrigin({
    baseUrl: url,
    network: 'testnet',
    nodeId: 'node-1',
    timeoutMs: options.timeoutMs ?? 2000,
    maxBytes: 1 << 20,
    ...(options.transport ? { transport: options.transport } : {}),
  });
  const engine = new SyncEngine({
    network: 'testnet',
    nodeId: 'node-1',
    retryBudget: 3,
    maxSnapshotBytes: 1 << 20,
    agentVersion: '0.1.0',
    trustRoots: [new Uint8Array(await readFile(net.rootFile))],
    origin,
    applier: new FakeApplier(),
    notifier: new FakeNotifier(),
    store,
    audit: new MemoryAudit(),
    clock: () => new Date(),
    logger: silentLogger,
    metrics: noMetrics,
  });
  const fallback = { poll_interval_s: options.pollSeconds ?? 600, heartbeat_interval_s: 600, retry_initial_ms: 200, retry_max_ms: 1000, jitter: 0 };
  const daemon = new Daemon({
    engine,
    origin,
    logger: silentLogger,
    metrics: noMetrics,
    timers: async () => timersFrom((await engine.appliedTarget())?.snapshot ?? null, fallback),
    longPoll: { waitS: options.waitS ?? 30, spreadMs: 50, recheckMs: 600_000 },
  });
  await daemon.start();
  closers.push(() => daemon.stop());
  const applied = async () => (await store.read()).applied?.sequence ?? null;
  return { daemon, store, applied };
}

describe('long-poll against the dev origin', () => {
  it('applies a publish as soon as the held request is answered', async () => {
    await publish(1);
    const origin = await devOrigin();
    const agent = await startAgent(origin.url);
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    await until('a long-poll held', () => origin.heldRequests() === 1);

    await publish(2);
    await until('snapshot 2 applied', async () => (await agent.applied()) === 2);
    expect(agent.daemon.status()).toMatchObject({ longPoll: 'active', consecutiveFailures: 0 });
  });

  it('asks again when the wait ends with a 304, and still hears the next publish', async () => {
    await publish(1);
    const origin = await devOrigin();
    const counts = countLatest(origin.server);
    const agent = await startAgent(origin.url, { waitS: 1, timeoutMs: 200 });
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    // Three waits: two ended by the origin at 304 (past the 200 ms request timeout), one held now.
    await until('two long-polls ended at their wait', () => counts.waits >= 3 && origin.heldRequests() === 1);
    expect(agent.daemon.status()).toMatchObject({ longPoll: 'active', consecutiveFailures: 0 });

    await publish(2);
    await until('snapshot 2 applied', async () => (await agent.applied()) === 2);
  });

  it('falls back to polling while the origin holds all it will, and still applies', async () => {
    await publish(1, 1);
    const origin = await devOrigin({ maxHeldRequests: 1 });
    // Someone else takes the one place: a request held with the current ETag.
    const latest = await fetch(`${origin.url}/v1/testnet/latest.json`);
    const etag = latest.headers.get('etag') ?? '';
    const other = request(`${origin.url}/v1/testnet/latest.json?wait=60`, { headers: { 'if-none-match': etag } });
    other.on('error', () => undefined);
    other.end();
    closers.push(async () => void other.destroy());
    await until('the other request held', () => origin.heldRequests() === 1);

    const agent = await startAgent(origin.url, { pollSeconds: 1 });
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    await until('the agent told the origin is full', () => agent.daemon.status().longPoll === 'full');
    // Being told to wait is no failure of the sync: health and the failure count are untouched.
    expect(agent.daemon.status()).toMatchObject({ consecutiveFailures: 0, healthy: true });

    await publish(2, 1);
    await until('snapshot 2 applied by polling', async () => (await agent.applied()) === 2);
  });

  it('hears a publish made while it fetches the previous snapshot, and ends on the newest', async () => {
    await publish(1);
    const origin = await devOrigin();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let fetching2 = false;
    // One input, published below: its timestamps are whole seconds, so a second one built later could differ.
    const secondInput = devSnapshot({ network: 'testnet', sequence: 2, pollSeconds: 600, maxTokens: 102 });
    const second = net.sign(secondInput);
    // The snapshot fetch of sequence 2 is held back until sequence 3 is published.
    const transport: HttpTransport = async (url, init) => {
      if (url.pathname.endsWith(`${second.digest.slice('sha256:'.length)}.json`)) {
        fetching2 = true;
        await gate;
      }
      return nodeHttpTransport(url, init);
    };
    const agent = await startAgent(origin.url, { transport });
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    await until('a long-poll held', () => origin.heldRequests() === 1);

    await net.publish(secondInput);
    await until('the fetch of snapshot 2 started', () => fetching2);
    await publish(3);
    release();
    await until('snapshot 3 applied', async () => (await agent.applied()) === 3);
    expect(agent.daemon.status()).toMatchObject({ longPoll: 'active' });
  });
});

describe('long-poll against nginx (a static server)', () => {
  let nginx: ServedOrigin;

  it('detects that the wait is ignored and polls at the interval', async () => {
    await publish(1, 1);
    nginx = await serveWithNginx(net.originDir, work.path);
    closers.push(() => nginx.close());
    const agent = await startAgent(nginx.url, { pollSeconds: 1 });
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    await until('long-poll found unsupported', () => agent.daemon.status().longPoll === 'unsupported');
    expect(agent.daemon.status().consecutiveFailures).toBe(0);

    // nginx's ETag is mtime and size: the next hint is published in another second.
    await new Promise((r) => setTimeout(r, 1100));
    await publish(2, 1);
    await until('snapshot 2 applied by polling', async () => (await agent.applied()) === 2);
  });
});

/** A raw origin: the published tree for plain requests, and `wait` requests answered by `onWait`. */
async function rawOrigin(onWait: (res: ServerResponse) => void): Promise<{ url: string; counts: { waits: number; plain: number } }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (req.url?.includes('wait=')) return onWait(res);
    readFile(join(net.originDir, path)).then(
      (body) => {
        const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}"`;
        if (path.endsWith('latest.json') && req.headers['if-none-match'] === etag) return void res.writeHead(304).end();
        res.writeHead(200, { etag, 'content-type': 'application/json' }).end(body);
      },
      () => void res.writeHead(404).end(),
    );
  });
  const counts = countLatest(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, counts };
}

describe('an origin that answers the wait with the header, then stops mid-way', () => {
  it('is a transport failure: the daemon backs off to a plain check and spends no retry budget', async () => {
    await publish(1);
    const origin = await rawOrigin((res) => {
      res.writeHead(200, { 'resultity-long-poll': '1', 'content-length': 300 });
      res.write('{"config_digest":"sha256:');
      setTimeout(() => res.destroy(), 10);
    });
    const agent = await startAgent(origin.url);
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    await until('the long-poll broke', () => agent.daemon.status().lastOutcome?.result === 'failed');
    expect(agent.daemon.status().lastOutcome).toMatchObject({ code: 'FETCH_FAILED' });
    // After the backoff a plain check reads latest.json again (one plain read applied snapshot 1).
    await until('a plain check after the backoff', () => origin.counts.plain >= 2);
    const state = await agent.store.read();
    expect(state.failures).toEqual({});
    expect(state.applied?.sequence).toBe(1);
  });

  it('gives up on a held answer that stalls past its wait and the timeout, as TIMEOUT', async () => {
    await publish(1);
    const origin = await rawOrigin((res) => {
      res.writeHead(200, { 'resultity-long-poll': '1', 'content-length': 300 });
      res.write('{"config_digest":"sha256:');
    });
    const agent = await startAgent(origin.url, { waitS: 1, timeoutMs: 200 });
    await until('snapshot 1 applied', async () => (await agent.applied()) === 1);
    await until('the long-poll timed out', () => agent.daemon.status().lastOutcome?.result === 'failed');
    expect(agent.daemon.status().lastOutcome).toMatchObject({ code: 'TIMEOUT' });
    expect((await agent.store.read()).failures).toEqual({});
  });
});
