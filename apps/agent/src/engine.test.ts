import { execFileSync } from 'node:child_process';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { type SigningKey, generateSigningKey, signRoot } from '@resultity/snapshot';
import { type TestSigner, createTestSigner, envelopeBytes, sampleSnapshot, tempDir } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { AuditLog, verifyAuditFile } from './audit.js';
import { SyncEngine } from './engine.js';
import { FakeApplier, FakeNotifier, FakeOrigin, MemoryAudit } from './fakes.test-support.js';
import { type Origin, createHttpOrigin } from './origin-client.js';
import { noMetrics, silentLogger } from './ports.js';
import { StateStore } from './state.js';

const NOW = new Date('2026-11-26T00:00:00Z');

let signer: TestSigner;
let dir: { path: string; cleanup: () => Promise<void> };
let origin: FakeOrigin;
let applier: FakeApplier;
let notifier: FakeNotifier;
let audit: MemoryAudit;
let store: StateStore;

function engine(overrides: { retryBudget?: number; nodeId?: string; trustRoots?: Uint8Array[]; clock?: () => Date; origin?: Origin; audit?: AuditLog } = {}) {
  return new SyncEngine(engineDeps(overrides));
}

function engineDeps(
  overrides: { retryBudget?: number; nodeId?: string; trustRoots?: Uint8Array[]; clock?: () => Date; origin?: Origin; audit?: AuditLog } = {},
) {
  return {
    network: 'testnet',
    nodeId: overrides.nodeId ?? 'node-1',
    retryBudget: overrides.retryBudget ?? 3,
    maxSnapshotBytes: 4 * 1024 * 1024,
    agentVersion: '0.1.0',
    trustRoots: overrides.trustRoots ?? [signer.rootBytes],
    origin: overrides.origin ?? origin,
    applier,
    notifier,
    store,
    audit: overrides.audit ?? audit,
    clock: overrides.clock ?? (() => NOW),
    logger: silentLogger,
    metrics: noMetrics,
  };
}

function publish(sequence: number, extra: Record<string, unknown> = {}, keys?: readonly SigningKey[]) {
  const signed = signer.sign(sampleSnapshot({ sequence, ...extra }), keys);
  origin.publish(signed.digest, sequence, signed.bytes);
  return signed.digest;
}

beforeEach(async () => {
  signer = await createTestSigner();
  dir = await tempDir('agent-engine-');
  origin = new FakeOrigin();
  applier = new FakeApplier();
  notifier = new FakeNotifier();
  audit = new MemoryAudit();
  store = new StateStore(dir.path);
});

afterEach(async () => {
  await dir.cleanup();
});

describe('syncOnce', () => {
  it('applies the first snapshot, tells the runtime, and records the digest last', async () => {
    const digest = publish(1);
    const outcome = await engine().syncOnce();
    expect(outcome).toEqual({ result: 'applied', digest, sequence: 1 });
    expect(applier.running?.digest).toBe(digest);
    expect(notifier.told.map((e) => e.digest)).toEqual([digest]);
    const state = await store.read();
    expect(state.applied).toEqual({ digest, sequence: 1 });
    expect(await store.readJournal()).toBeNull();
    expect(await store.getEnvelope(digest)).not.toBeNull();
    expect(audit.types()).toEqual(['fetch', 'fetch', 'verified', 'plan', 'apply-started', 'runtime-ack', 'applied']);
  });

  it('does nothing on a re-sync when nothing new was published', async () => {
    publish(1);
    const e = engine();
    await e.syncOnce();
    const outcome = await e.syncOnce();
    expect(outcome.result).toBe('unchanged');
    expect(origin.snapshotFetches).toBe(1);
    expect(applier.executed).toHaveLength(1);
  });

  it('sends the remembered ETag, but fetches latest.json in full once it is older than ten minutes', async () => {
    publish(1);
    let now = NOW.getTime();
    const e = engine({ clock: () => new Date(now) });
    await e.syncOnce();
    await e.syncOnce();
    now += 11 * 60_000;
    await e.syncOnce();
    await e.syncOnce();
    expect(origin.etagsSent).toEqual([null, '"1"', null, '"1"']);
  });

  it('applies an update over the applied snapshot', async () => {
    publish(1);
    const e = engine();
    await e.syncOnce();
    const second = publish(2, { job: { max_tokens: 2048, max_queue_size: 8, execution_timeout_ms: 1000 } });
    expect(await e.syncOnce()).toEqual({ result: 'applied', digest: second, sequence: 2 });
    expect((await store.read()).applied?.sequence).toBe(2);
  });

  describe('collection', () => {
    it('after an apply, collects keeping the applied snapshot and the one before it, and audits what was freed', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      expect(applier.collected).toEqual([[first]]);
      applier.collectable = { removed: [{ file: `sha256/${'c'.repeat(64)}`, bytes: 4096 }], bytesFreed: 4096, failed: [] };
      const second = publish(2, { job: { max_tokens: 2048, max_queue_size: 8, execution_timeout_ms: 1000 } });
      await e.syncOnce();
      expect(applier.collected.at(-1)?.sort()).toEqual([first, second].sort());
      expect(audit.entries.at(-1)).toMatchObject({
        type: 'collect',
        ok: true,
        removed: [{ file: `sha256/${'c'.repeat(64)}`, bytes: 4096 }],
        bytes_freed: 4096,
      });
      expect(audit.types().indexOf('collect')).toBeGreaterThan(audit.types().lastIndexOf('applied'));
    });

    it('collects nothing when the apply fails', async () => {
      publish(1);
      const e = engine();
      await e.syncOnce();
      const second = publish(2, { job: { max_tokens: 2048, max_queue_size: 8, execution_timeout_ms: 1000 } });
      applier.failWith.set(second, { code: 'HEALTH_TIMEOUT', rolledBack: true });
      await e.syncOnce();
      expect(applier.collected).toHaveLength(1);
      expect(audit.types()).not.toContain('collect');
    });

    it('keeps a pinned rollback target', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      const second = publish(2, { job: { max_tokens: 2048, max_queue_size: 8, execution_timeout_ms: 1000 } });
      await e.syncOnce();
      expect(await e.rollback(first)).toMatchObject({ result: 'applied', digest: first });
      expect(applier.collected.at(-1)?.sort()).toEqual([first, second].sort());
      expect((await store.read()).pinned?.digest).toBe(first);
    });
  });

  describe('a mirror dropped from a download that succeeded', () => {
    it('is named in the applied audit entry and counted by code, and stays out of last_error', async () => {
      const counted: string[] = [];
      applier.dropMirrors = [{ model: 'llama@1.0.0', mirrors: [{ index: 1, code: 'MIRROR_CHUNK_MISMATCH', detail: 'mirror-b.internal: chunk 3' }] }];
      const digest = publish(1);
      const e = new SyncEngine({ ...engineDeps(), metrics: { ...noMetrics, mirrorFailure: (code: string) => counted.push(code) } });
      expect(await e.syncOnce()).toMatchObject({ result: 'applied', digest });
      expect(audit.entries.find((x) => x.type === 'applied')).toMatchObject({
        mirrors: [{ model: 'llama@1.0.0', mirrors: [{ index: 1, code: 'MIRROR_CHUNK_MISMATCH', detail: 'mirror-b.internal: chunk 3' }] }],
      });
      expect(counted).toEqual(['MIRROR_CHUNK_MISMATCH']);
      expect(JSON.stringify(await store.read())).not.toContain('mirror-b.internal');
    });
  });

  describe('when the network is down at start', () => {
    it('fails with FETCH_FAILED, applies nothing and keeps what runs', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      origin.down = true;
      const outcome = await e.syncOnce();
      expect(outcome).toMatchObject({ result: 'failed', code: 'FETCH_FAILED' });
      expect(applier.running?.digest).toBe(first);
      expect((await store.read()).last_error?.code).toBe('FETCH_FAILED');
    });
  });

  describe('refusals', () => {
    it('refuses a snapshot signed by an untrusted key with SIGNATURE_THRESHOLD and keeps the last-known-good', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      publish(2, {}, [generateSigningKey()]);
      const outcome = await e.syncOnce();
      expect(outcome).toMatchObject({ result: 'refused', code: 'SIGNATURE_THRESHOLD' });
      expect(applier.running?.digest).toBe(first);
      expect((await store.read()).applied?.digest).toBe(first);
      expect(audit.entries.find((x) => x.type === 'refused')).toMatchObject({ code: 'SIGNATURE_THRESHOLD' });
    });

    it('refuses an expired snapshot with EXPIRED', async () => {
      publish(1, { issued_at: '2026-01-01T00:00:00Z', expires_at: '2026-02-01T00:00:00Z' });
      expect(await engine().syncOnce()).toMatchObject({ result: 'refused', code: 'EXPIRED' });
      expect(applier.executed).toEqual([]);
    });

    it('refuses a snapshot its clock says has expired without spending the budget, and applies it once the clock is right again', async () => {
      // The node's clock runs a month ahead: the snapshot is expired to it, as long as that lasts.
      let now = new Date(NOW.getTime() + 30 * 86_400_000);
      const first = publish(1, {
        issued_at: '2026-01-01T00:00:00Z',
        expires_at: new Date(NOW.getTime() + 7 * 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z'),
      });
      const e = engine({ retryBudget: 2, clock: () => now });
      for (let i = 0; i < 4; i++) expect(await e.syncOnce()).toMatchObject({ result: 'refused', code: 'EXPIRED' });
      expect((await store.read()).last_error).toMatchObject({ code: 'EXPIRED', digest: first });
      expect(audit.types()).not.toContain('budget-exhausted');
      now = NOW;
      expect(await e.syncOnce()).toEqual({ result: 'applied', digest: first, sequence: 1 });
    });

    it('refuses a snapshot that goes back in sequence with ROLLBACK', async () => {
      const older = signer.sign(sampleSnapshot({ sequence: 1 }));
      publish(2);
      const e = engine();
      await e.syncOnce();
      origin.publish(older.digest, 1, older.bytes);
      expect(await e.syncOnce()).toMatchObject({ result: 'refused', code: 'ROLLBACK' });
    });

    it('refuses a snapshot for another network with NETWORK_MISMATCH', async () => {
      publish(1, { network: 'mainnet' });
      expect(await engine().syncOnce()).toMatchObject({ result: 'refused', code: 'NETWORK_MISMATCH' });
    });

    it('fails bytes whose digest is not the one asked for with DIGEST_MISMATCH, without spending the budget', async () => {
      const a = signer.sign(sampleSnapshot({ sequence: 1 }));
      const b = signer.sign(sampleSnapshot({ sequence: 2 }));
      origin.publish(a.digest, 1, b.bytes);
      const e = engine({ retryBudget: 1 });
      expect(await e.syncOnce()).toMatchObject({ result: 'failed', code: 'DIGEST_MISMATCH' });
      expect(await e.syncOnce()).toMatchObject({ result: 'failed', code: 'DIGEST_MISMATCH' });
      origin.publish(a.digest, 1, a.bytes);
      expect(await e.syncOnce()).toEqual({ result: 'applied', digest: a.digest, sequence: 1 });
    });
  });

  describe('the retry budget', () => {
    it('retries one digest at most retry_budget times, then marks it failed until a newer one appears', async () => {
      publish(1);
      const e = engine({ retryBudget: 2 });
      await e.syncOnce();
      const bad = publish(2, {}, [generateSigningKey()]);
      expect((await e.syncOnce()).result).toBe('refused');
      expect((await e.syncOnce()).result).toBe('refused');
      const fetches = origin.snapshotFetches;
      expect(await e.syncOnce()).toMatchObject({ result: 'budget-exhausted', digest: bad, code: 'SIGNATURE_THRESHOLD' });
      expect(origin.snapshotFetches).toBe(fetches);
      expect(audit.types()).toContain('budget-exhausted');
      const good = publish(3);
      expect(await e.syncOnce()).toEqual({ result: 'applied', digest: good, sequence: 3 });
    });

    it('does not spend the budget on transport failures', async () => {
      publish(1);
      origin.down = true;
      const e = engine({ retryBudget: 1 });
      await e.syncOnce();
      await e.syncOnce();
      origin.down = false;
      expect((await e.syncOnce()).result).toBe('applied');
    });
  });

  describe('a failed apply', () => {
    it('keeps the last-known-good when the applier rolled back, and records the code', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
      applier.failWith.set(second, { code: 'CONTAINER_FAILED', rolledBack: true });
      expect(await e.syncOnce()).toMatchObject({ result: 'failed', code: 'CONTAINER_FAILED', digest: second });
      expect(applier.running?.digest).toBe(first);
      const state = await store.read();
      expect(state.applied?.digest).toBe(first);
      expect(state.failures[second]).toMatchObject({ attempts: 1, code: 'CONTAINER_FAILED' });
      expect(await store.readJournal()).toBeNull();
    });

    it('restores the last-known-good itself when the applier did not', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
      applier.failWith.set(second, { code: 'HEALTH_TIMEOUT', rolledBack: false });
      await e.syncOnce();
      expect(applier.running?.digest).toBe(first);
      expect(audit.entries.find((x) => x.type === 'rollback')).toMatchObject({ to: first, reason: 'apply-failed', ok: true });
    });
  });

  describe('when the runtime NACKs', () => {
    it('rolls back to the last-known-good and records RUNTIME_NACK', async () => {
      const first = publish(1);
      const e = engine();
      await e.syncOnce();
      const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
      notifier.nack.add(second);
      expect(await e.syncOnce()).toMatchObject({ result: 'failed', code: 'RUNTIME_NACK' });
      expect(applier.running?.digest).toBe(first);
      expect(notifier.told.map((x) => x.digest)).toEqual([first, second, first]);
      expect((await store.read()).applied?.digest).toBe(first);
      expect(audit.types()).toContain('runtime-nack');
    });
  });

  describe('rollout', () => {
    it('stays on what it has when the node is outside the rollout percent', async () => {
      publish(1, { rollout: { percent: 0 } });
      const e = engine();
      expect((await e.syncOnce()).result).toBe('not-eligible');
      expect((await e.syncOnce()).result).toBe('not-eligible');
      expect(origin.snapshotFetches).toBe(1);
      expect(applier.executed).toEqual([]);
    });
  });

  describe('updates', () => {
    it('detects and audits an agent update without applying it', async () => {
      publish(1, { updates: { agent: { version: '9.9.9', image: '127.0.0.1:5000/resultity/agent', digest: `sha256:${'a'.repeat(64)}` } } });
      await engine().syncOnce();
      expect((await store.read()).pending_agent_update).toMatchObject({ version: '9.9.9' });
      expect(audit.types()).toContain('agent-update');
    });
  });

  it('audits a runtime update, which is applied through the containers like any change', async () => {
    const image = '127.0.0.1:5000/resultity/runtime';
    const digest = `sha256:${'e'.repeat(64)}`;
    publish(1, {
      runtime: { containers: [{ name: 'inference', image, tag: '2.0.0', digest }] },
      updates: { runtime: { version: '2.0.0', image, digest } },
    });
    await engine().syncOnce();
    expect(audit.entries.find((x) => x.type === 'runtime-update')).toMatchObject({ version: '2.0.0', container: 'inference' });
    expect(applier.running?.snapshot.runtime.containers[0]?.digest).toBe(digest);
  });

  describe('root rotation', () => {
    it('walks to the next root the origin has and verifies with it', async () => {
      const newKey = generateSigningKey();
      const { envelope } = signRoot({ network: 'testnet', version: 2, expiresAt: '2099-01-01T00:00:00Z', threshold: 1, keys: [newKey] }, [
        ...signer.keys,
        newKey,
      ]);
      origin.roots.set(2, envelopeBytes(envelope));
      publish(1, {}, [newKey]);
      expect((await engine().syncOnce()).result).toBe('applied');
      expect(audit.types()).toContain('root-rotated');
      expect(await store.cachedRoots()).toHaveLength(1);
    });
  });
});

describe('rollback', () => {
  it('goes back to the previous verified snapshot and stays pinned until a newer sequence is published', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await e.syncOnce();
    expect(await e.rollback(undefined)).toEqual({ result: 'applied', digest: first, sequence: 1 });
    expect(applier.running?.digest).toBe(first);
    expect((await store.read()).pinned).toMatchObject({ digest: first, until_above: 2 });
    expect((await e.syncOnce()).result).toBe('pinned');
    const third = publish(3);
    expect(await e.syncOnce()).toEqual({ result: 'applied', digest: third, sequence: 3 });
    expect((await store.read()).pinned).toBeNull();
  });

  it('refuses a digest that is not in history with NOT_IN_HISTORY', async () => {
    publish(1);
    const e = engine();
    await e.syncOnce();
    await expect(e.rollback(`sha256:${'b'.repeat(64)}`)).rejects.toMatchObject({ code: 'NOT_IN_HISTORY' });
  });
});

describe('recover', () => {
  it('finishes an apply a crash interrupted, toward the journal target', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    const second = signer.sign(sampleSnapshot({ sequence: 2, job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } }));
    await store.putEnvelope(second.digest, second.bytes);
    await store.writeJournal({
      from: { digest: first, sequence: 1 },
      to: { digest: second.digest, sequence: 2 },
      reason: 'sync',
      started_at: NOW.toISOString(),
    });
    const outcome = await engine().recover();
    expect(outcome).toEqual({ result: 'applied', digest: second.digest, sequence: 2 });
    expect(applier.running?.digest).toBe(second.digest);
    expect(await store.readJournal()).toBeNull();
  });

  it('gives up on an apply that every restart died in, after retry_budget recoveries', async () => {
    const first = publish(1);
    const e = engine({ retryBudget: 2 });
    await e.syncOnce();
    const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await store.putEnvelope(second, origin.snapshots.get(second) as Uint8Array);
    await store.writeJournal({
      from: { digest: first, sequence: 1 },
      to: { digest: second, sequence: 2 },
      reason: 'sync',
      started_at: NOW.toISOString(),
      recoveries: 2,
    });
    expect(await engine({ retryBudget: 2 }).recover()).toMatchObject({ result: 'failed', code: 'APPLY_INTERRUPTED' });
    expect(applier.running?.digest).toBe(first);
    expect(await store.readJournal()).toBeNull();
    expect(await engine({ retryBudget: 2 }).syncOnce()).toMatchObject({ result: 'budget-exhausted', digest: second });
  });

  it('mends last-known-good.json when a crash fell between it and state.json', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    const other = signer.sign(sampleSnapshot({ sequence: 9 }));
    await store.putLastKnownGood(other.bytes);
    await engine().recover();
    expect(new Uint8Array(await readFile(store.paths.lastKnownGood))).toEqual(await store.getEnvelope(first));
  });

  it('goes back to the last-known-good when the interrupted apply cannot finish', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    const second = signer.sign(sampleSnapshot({ sequence: 2, job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } }));
    await store.putEnvelope(second.digest, second.bytes);
    await store.writeJournal({
      from: { digest: first, sequence: 1 },
      to: { digest: second.digest, sequence: 2 },
      reason: 'sync',
      started_at: NOW.toISOString(),
    });
    applier.failWith.set(second.digest, { code: 'PULL_FAILED', rolledBack: false });
    expect(await engine().recover()).toMatchObject({ result: 'failed', code: 'PULL_FAILED' });
    expect(applier.running?.digest).toBe(first);
    expect((await store.read()).applied?.digest).toBe(first);
    expect(await store.readJournal()).toBeNull();
  });
});

/** A real HTTP origin on 127.0.0.1 whose answers a test scripts: the published files, or a status instead. */
async function scriptedOrigin(): Promise<{ url: string; failNext: Map<string, number[]>; close(): Promise<void> }> {
  const failNext = new Map<string, number[]>();
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    const scripted = [...failNext.entries()].find(([prefix]) => path.includes(prefix));
    const status = scripted?.[1].shift();
    if (status !== undefined) {
      res.writeHead(status).end();
      return;
    }
    if (path.endsWith('/latest.json') && origin.latestHint) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(origin.latestHint));
      return;
    }
    const hex = /([0-9a-f]{64})\.json$/.exec(path)?.[1];
    const bytes = hex ? origin.snapshots.get(`sha256:${hex}`) : undefined;
    if (bytes) {
      res.writeHead(200).end(Buffer.from(bytes));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/`, failNext, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('transport failures (HTTP 404/408/429/5xx, on the snapshot or the root chain)', () => {
  it('back off without spending the retry budget of the digest they hid', async () => {
    const served = await scriptedOrigin();
    try {
      const http = createHttpOrigin({ baseUrl: served.url, network: 'testnet', nodeId: 'node-1', timeoutMs: 5000, maxBytes: 1 << 20 });
      const e = engine({ retryBudget: 1, origin: http });
      const digest = publish(1);
      const hex = digest.slice('sha256:'.length);
      served.failNext.set(hex, [503, 404, 429, 408]);
      served.failNext.set('/root/', [500]);
      const outcomes = [];
      for (let i = 0; i < 4; i++) outcomes.push(await e.syncOnce());
      expect(outcomes.map((o) => o.result)).toEqual(['failed', 'failed', 'failed', 'failed']);
      expect(outcomes.map((o) => ('code' in o ? o.code : null))).toEqual(['HTTP_STATUS', 'HTTP_STATUS', 'HTTP_STATUS', 'HTTP_STATUS']);
      // The root chain's 500 comes after the fifth fetch of the snapshot.
      expect((await e.syncOnce()).result).toBe('failed');
      expect((await store.read()).failures[digest]).toBeUndefined();
      expect(await e.syncOnce()).toEqual({ result: 'applied', digest, sequence: 1 });
    } finally {
      await served.close();
    }
  });

  it('spends no budget on a 403 either: a status says nothing about verified bytes', async () => {
    const served = await scriptedOrigin();
    try {
      const http = createHttpOrigin({ baseUrl: served.url, network: 'testnet', nodeId: 'node-1', timeoutMs: 5000, maxBytes: 1 << 20 });
      const e = engine({ retryBudget: 1, origin: http });
      const digest = publish(1);
      served.failNext.set(digest.slice('sha256:'.length), [403]);
      expect(await e.syncOnce()).toMatchObject({ result: 'failed', code: 'HTTP_STATUS' });
      expect((await store.read()).failures[digest]).toBeUndefined();
      expect(await e.syncOnce()).toEqual({ result: 'applied', digest, sequence: 1 });
    } finally {
      await served.close();
    }
  });

  it('spend no budget when the applier reports a retryable failure (the engine was unreachable)', async () => {
    publish(1);
    const e = engine({ retryBudget: 1 });
    await e.syncOnce();
    const second = publish(2, { job: { max_tokens: 7, max_queue_size: 1, execution_timeout_ms: 1 } });
    applier.failWith.set(second, { code: 'ENGINE_UNAVAILABLE', rolledBack: true, retryable: true });
    expect(await e.syncOnce()).toMatchObject({ result: 'failed', code: 'ENGINE_UNAVAILABLE' });
    expect((await store.read()).failures[second]).toBeUndefined();
    applier.failWith.delete(second);
    expect(await e.syncOnce()).toEqual({ result: 'applied', digest: second, sequence: 2 });
  });
});

describe('pinning decided by verified data only', () => {
  it('pins a rollback until above high_water, however high latest.json claims to be', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await e.syncOnce();
    // An unsigned hint claiming a huge sequence for the applied digest.
    origin.publish(second, 1_000_000, origin.snapshots.get(second) as Uint8Array);
    await e.syncOnce();
    await e.rollback(first);
    expect((await store.read()).pinned).toMatchObject({ digest: first, until_above: 2 });
  });

  it('does not lift the pin when the hint lies about the sequence of an older snapshot', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await e.syncOnce();
    await e.rollback(first);
    origin.publish(second, 99, origin.snapshots.get(second) as Uint8Array);
    expect(await e.syncOnce()).toMatchObject({ result: 'pinned', digest: first });
    expect(applier.running?.digest).toBe(first);
    expect((await store.read()).pinned).toMatchObject({ digest: first, until_above: 2 });
  });

  it('lifts the pin when a verified snapshot above it appears, even if the hint understates its sequence', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await e.syncOnce();
    await e.rollback(first);
    const third = publish(3);
    origin.publish(third, 0, origin.snapshots.get(third) as Uint8Array);
    expect(await e.syncOnce()).toEqual({ result: 'applied', digest: third, sequence: 3 });
    expect((await store.read()).pinned).toBeNull();
  });

  it('lets an operator unpin, audited, after which the network is followed again', async () => {
    const first = publish(1);
    const e = engine();
    await e.syncOnce();
    const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await e.syncOnce();
    await e.rollback(first);
    expect((await e.syncOnce()).result).toBe('pinned');
    expect(await e.unpin()).toEqual({ unpinned: true, digest: first, untilAbove: 2 });
    expect(audit.entries.at(-1)).toMatchObject({ type: 'unpin', by: 'operator', digest: first, until_above: 2 });
    expect(await e.syncOnce()).toEqual({ result: 'applied', digest: second, sequence: 2 });
    expect(await e.unpin()).toEqual({ unpinned: false });
  });
});

describe('rollback --to', () => {
  it('takes only a digest: sha256: and 64 lowercase hex', async () => {
    publish(1);
    const e = engine();
    await e.syncOnce();
    for (const bad of ['../../state', 'a'.repeat(64), `sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(63)}`, `sha256:${'a'.repeat(64)}/x`]) {
      await expect(e.rollback(bad)).rejects.toMatchObject({ code: 'USAGE' });
    }
  });

  it('refuses a FIFO in envelopes/ instead of hanging on it', async () => {
    publish(1);
    const e = engine();
    await e.syncOnce();
    const digest = `sha256:${'c'.repeat(64)}`;
    await mkdir(store.paths.envelopes, { recursive: true });
    execFileSync('mkfifo', [store.paths.envelope(digest)]);
    await expect(e.rollback(digest)).rejects.toMatchObject({ code: 'NOT_IN_HISTORY', message: expect.stringContaining('not a regular file') });
  });

  it('replaces a FIFO under the name of an envelope it verifies instead of hanging on it', async () => {
    const digest = publish(1);
    await mkdir(store.paths.envelopes, { recursive: true });
    execFileSync('mkfifo', [store.paths.envelope(digest)]);
    expect(await engine().syncOnce()).toEqual({ result: 'applied', digest, sequence: 1 });
    expect((await stat(store.paths.envelope(digest))).isFile()).toBe(true);
  });
});

describe('text from the network', () => {
  it('is escaped before it reaches last_error: a hostile payloadType cannot drive a terminal', async () => {
    const signed = signer.sign(sampleSnapshot({ sequence: 1 }));
    const hostile = { ...signed.envelope, payloadType: '\u001b]0;owned\u0007\u001b[2J' };
    origin.publish(signed.digest, 1, new TextEncoder().encode(JSON.stringify(hostile)));
    const outcome = await engine().syncOnce();
    expect(outcome).toMatchObject({ result: 'refused', code: 'PAYLOAD_TYPE' });
    const lastError = (await store.read()).last_error;
    expect(lastError?.message).toContain('\\x1b]0;owned\\x07');
    expect(lastError?.message).not.toMatch(/[\u0000-\u001f]/);
    expect(JSON.stringify(audit.entries)).not.toContain('\\u001b');
  });
});

describe('the audit head', () => {
  it('is anchored in state.json after each change, and matches the log', async () => {
    const log = new AuditLog(store.paths.audit, () => NOW);
    publish(1);
    await engine({ audit: log }).syncOnce();
    const state = await store.read();
    expect(state.audit_head).toEqual(log.head());
    expect((await verifyAuditFile(store.paths.audit, state.audit_head)).ok).toBe(true);
  });
});

describe('a check that finds nothing new', () => {
  it('writes nothing durable, and keeps the time of the check in memory', async () => {
    publish(1);
    let now = NOW.getTime();
    const e = engine({ clock: () => new Date(now) });
    await e.syncOnce();
    const before = await stat(store.paths.state, { bigint: true });
    const text = await readFile(store.paths.state, 'utf8');
    now += 60_000;
    expect((await e.syncOnce()).result).toBe('unchanged');
    const after = await stat(store.paths.state, { bigint: true });
    expect([after.ino, after.mtimeNs]).toEqual([before.ino, before.mtimeNs]);
    expect(await readFile(store.paths.state, 'utf8')).toBe(text);
    expect((await e.readState()).last_check).toBe(new Date(now).toISOString());
  });
});

describe('a corrupt state.json', () => {
  it('is reported, not rebuilt, by a process that does not hold the lock', async () => {
    publish(1);
    await engine().syncOnce();
    await writeFile(store.paths.state, 'garbage');
    const readOnly = new SyncEngine({ ...engineDeps(), repairCorruptState: false });
    await expect(readOnly.readState()).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
    expect(await readFile(store.paths.state, 'utf8')).toBe('garbage');
  });

  it('is rebuilt from the re-verified last-known-good and the audit chain, without lowering high_water', async () => {
    const log = new AuditLog(store.paths.audit, () => NOW);
    const first = publish(1);
    const e1 = engine({ audit: log });
    await e1.syncOnce();
    const second = publish(2, { job: { max_tokens: 1, max_queue_size: 1, execution_timeout_ms: 1 } });
    await e1.syncOnce();
    await e1.rollback(first);
    await writeFile(store.paths.state, '{"version":1,"applied":{"dig');
    const e2 = engine({ audit: log });
    const state = await e2.readState();
    expect(state.applied).toEqual({ digest: first, sequence: 1 });
    expect(state.high_water).toEqual({ digest: second, sequence: 2 });
    expect(state.pinned).toMatchObject({ digest: first, until_above: 2 });
    expect(state.last_error?.code).toBe('STATE_CORRUPT');
    expect((await store.read()).applied).toEqual({ digest: first, sequence: 1 });
    expect(await readFile(join(dir.path, 'audit.jsonl'), 'utf8')).toContain('"type":"repair"');
    // The floor held: the network's snapshot 2 is still refused while pinned, and 1 stays applied.
    expect((await e2.syncOnce()).result).toBe('pinned');
    expect(applier.running?.digest).toBe(first);
  });
});
