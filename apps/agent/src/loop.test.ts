import { writeFile } from 'node:fs/promises';

import { createTestSigner, sampleSnapshot, tempDir, type TestSigner } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { SyncEngine } from './engine.js';
import { FakeApplier, FakeNotifier, FakeOrigin, MemoryAudit } from './fakes.test-support.js';
import { Daemon, type TimerPort } from './loop.js';
import { type LatestOptions, type LatestResult, OriginError } from './origin-client.js';
import { noMetrics, silentLogger } from './ports.js';
import { timersFrom } from './schedule.js';
import { StateStore } from './state.js';

/** Timers that only fire when the test says so. */
class ManualTimers implements TimerPort {
  pending = new Map<number, { fn: () => void; ms: number }>();
  private next = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.pending.set(id, { fn, ms });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  delays(): number[] {
    return [...this.pending.values()].map((p) => p.ms);
  }
  /** Fires the timers set for `ms`, as the event loop would when they are due. */
  fire(ms: number): number {
    const due = [...this.pending.entries()].filter(([, p]) => p.ms === ms);
    for (const [id, p] of due) {
      this.pending.delete(id);
      p.fn();
    }
    return due.length;
  }
}

let signer: TestSigner;
let dir: { path: string; cleanup: () => Promise<void> };
let origin: FakeOrigin;
let applier: FakeApplier;
let audit: MemoryAudit;
let store: StateStore;
let timers: ManualTimers;
let daemon: Daemon;
let engine: SyncEngine;

function publish(sequence: number) {
  const signed = signer.sign(sampleSnapshot({ sequence, job: { max_tokens: 100 + sequence, max_queue_size: 1, execution_timeout_ms: 1000 } }));
  origin.publish(signed.digest, sequence, signed.bytes);
  return signed.digest;
}

beforeEach(async () => {
  signer = await createTestSigner();
  dir = await tempDir('agent-loop-');
  origin = new FakeOrigin();
  applier = new FakeApplier();
  audit = new MemoryAudit();
  store = new StateStore(dir.path);
  timers = new ManualTimers();
  engine = new SyncEngine({
    network: 'testnet',
    nodeId: 'node-1',
    retryBudget: 3,
    maxSnapshotBytes: 1 << 20,
    agentVersion: '0.1.0',
    trustRoots: [signer.rootBytes],
    origin,
    applier,
    notifier: new FakeNotifier(),
    store,
    audit,
    clock: () => new Date('2026-11-26T00:00:00Z'),
    logger: silentLogger,
    metrics: noMetrics,
  });
  const fallback = { poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 8000, jitter: 0 };
  daemon = new Daemon({
    engine,
    origin,
    logger: silentLogger,
    metrics: noMetrics,
    timers: async () => timersFrom((await engine.appliedTarget())?.snapshot ?? null, fallback),
    timerPort: timers,
    random: () => 0.5,
  });
});

afterEach(async () => {
  await daemon.stop();
  await dir.cleanup();
});

describe('Daemon', () => {
  it('polls at the interval of the snapshot it just applied, not the one set before the apply', async () => {
    const ttl = { poll_interval_s: 5, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 8000, cache_ttl_s: 3600 };
    const signed = signer.sign(sampleSnapshot({ sequence: 1, ttl }));
    origin.publish(signed.digest, 1, signed.bytes);
    await daemon.start();
    await daemon.tickNow();
    // While the first apply ran, the next poll was set from the configuration's 60 s.
    await daemon.idle();
    await vi.waitFor(() => expect(timers.delays()).toContain(5000));
    expect(timers.delays()).not.toContain(60_000);
  });

  it('lets a newer verified snapshot cancel the apply in progress, and applies the newer one', async () => {
    let release!: () => void;
    applier.gate = new Promise<void>((r) => {
      release = r;
    });
    publish(1);
    await daemon.start();
    await daemon.tickNow();
    expect(daemon.status().applying?.sequence).toBe(1);

    const second = publish(2);
    await daemon.tickNow();
    expect(daemon.status().applying?.sequence).toBe(2);
    release();
    await daemon.idle();

    expect((await store.read()).applied).toEqual({ digest: second, sequence: 2 });
    expect(audit.types()).toContain('apply-cancelled');
    expect(audit.types().filter((t) => t === 'applied')).toHaveLength(1);
  });

  it('keeps one apply at a time: a poll during an apply of the same digest starts nothing new', async () => {
    let release!: () => void;
    applier.gate = new Promise<void>((r) => {
      release = r;
    });
    publish(1);
    await daemon.start();
    await daemon.tickNow();
    await daemon.tickNow();
    release();
    await daemon.idle();
    expect(applier.executed).toHaveLength(1);
  });

  it('backs off exponentially after failures and returns to the poll interval after a success', async () => {
    origin.down = true;
    await daemon.start();
    await daemon.tickNow();
    expect(timers.delays()).toContain(1000);
    await daemon.tickNow();
    expect(timers.delays()).toContain(2000);
    await daemon.tickNow();
    expect(timers.delays()).toContain(4000);
    origin.down = false;
    publish(1);
    await daemon.tickNow();
    await daemon.idle();
    await daemon.tickNow();
    // sampleSnapshot's ttl: poll every 60 s.
    expect(timers.delays()).toContain(60_000);
    expect(daemon.status().consecutiveFailures).toBe(0);
  });

  it('is not disturbed by failing heartbeats', async () => {
    origin.heartbeatDown = true;
    const digest = publish(1);
    await daemon.start();
    for (const { fn } of [...timers.pending.values()]) fn();
    await daemon.tickNow();
    await daemon.idle();
    expect((await store.read()).applied?.digest).toBe(digest);
    expect(daemon.status().healthy).toBe(true);
  });

  it('aborts the apply in flight on stop, leaving the last-known-good recorded', async () => {
    applier.gate = new Promise<void>(() => undefined);
    publish(1);
    await daemon.start();
    await daemon.tickNow();
    await daemon.stop();
    expect((await store.read()).applied).toBeNull();
    expect(await store.readJournal()).toBeNull();
    expect(audit.types()).toContain('apply-cancelled');
  });

  it("cancels the apply in flight for an operator's rollback, then pins", async () => {
    const first = publish(1);
    await daemon.start();
    await daemon.tickNow();
    await daemon.idle();
    applier.gate = new Promise<void>(() => undefined);
    applier.gateOnly = publish(2);
    await daemon.tickNow();
    expect(daemon.status().applying?.sequence).toBe(2);
    const outcome = await daemon.rollback(first);
    expect(outcome).toMatchObject({ result: 'applied', digest: first });
    expect(audit.types()).toContain('apply-cancelled');
    expect((await store.read()).pinned).toMatchObject({ digest: first });
  });

  it('keeps polling when state.json turns to garbage under it, reports STATE_CORRUPT and rebuilds the state', async () => {
    const first = publish(1);
    await daemon.start();
    await daemon.idle();
    expect(timers.fire(0)).toBe(2);
    await daemon.idle();
    expect(applier.running?.digest).toBe(first);
    await writeFile(store.paths.state, '\u0000\u0000 not json');
    origin.down = false;
    expect(timers.fire(60_000)).toBe(1);
    await daemon.idle();
    // The next poll is scheduled: the loop did not die on the corrupt file.
    expect(timers.delays()).toContain(60_000);
    const state = await engine.readState();
    expect(state.last_error?.code).toBe('STATE_CORRUPT');
    expect(state.applied).toEqual({ digest: first, sequence: 1 });
    expect((await store.read()).high_water).toEqual({ digest: first, sequence: 1 });
    expect(applier.executed).toEqual([first]);
    expect(audit.types()).toContain('repair');
    expect(timers.fire(60_000)).toBe(1);
    await daemon.idle();
    expect(timers.delays()).toContain(60_000);
  });

  it('schedules the next poll even when reading the timers throws', async () => {
    publish(1);
    let failTimers = false;
    const fallback = { poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 8000, jitter: 0 };
    const fragile = new Daemon({
      engine,
      origin,
      logger: silentLogger,
      metrics: noMetrics,
      timers: async () => {
        if (failTimers) throw new Error('timers unreadable');
        return timersFrom(null, fallback);
      },
      timerPort: timers,
      random: () => 0.5,
    });
    await fragile.start();
    await fragile.idle();
    failTimers = true;
    timers.fire(0);
    await fragile.idle();
    // The heartbeat reschedules itself at 30 s; the poll must be there too, at the fallback's 60 s.
    expect(timers.delays()).toContain(60_000);
    await fragile.stop();
  });

  it("lifts an operator's pin through the daemon and polls at once", async () => {
    const first = publish(1);
    await daemon.start();
    await daemon.tickNow();
    await daemon.idle();
    const second = publish(2);
    await daemon.tickNow();
    await daemon.idle();
    await daemon.rollback(first);
    expect((await store.read()).pinned).toMatchObject({ digest: first });
    expect(await daemon.unpin()).toEqual({ unpinned: true, digest: first, untilAbove: 2 });
    expect(audit.types()).toContain('unpin');
    expect(timers.fire(0)).toBeGreaterThan(0);
    await daemon.idle();
    expect((await store.read()).applied?.digest).toBe(second);
  });
});

/** A FakeOrigin that answers `wait` requests from a script, as a long-poll origin would. */
class LongPollOrigin extends FakeOrigin {
  waits: (() => Promise<LatestResult>)[] = [];
  waitsAsked = 0;
  plainAsked = 0;
  override async latest(etag: string | null, _signal?: AbortSignal, options?: LatestOptions): Promise<LatestResult> {
    if (options?.waitS === undefined) {
      this.plainAsked += 1;
      return super.latest(etag);
    }
    this.waitsAsked += 1;
    const next = this.waits.shift();
    if (next === undefined) return new Promise<LatestResult>(() => undefined);
    return next();
  }
}

describe('Daemon with long-poll (the schedule it keeps)', () => {
  let lp: LongPollOrigin;
  let lpDaemon: Daemon;
  let now: number;

  beforeEach(async () => {
    lp = new LongPollOrigin();
    const lpEngine = new SyncEngine({
      network: 'testnet',
      nodeId: 'node-1',
      retryBudget: 3,
      maxSnapshotBytes: 1 << 20,
      agentVersion: '0.1.0',
      trustRoots: [signer.rootBytes],
      origin: lp,
      applier,
      notifier: new FakeNotifier(),
      store,
      audit,
      clock: () => new Date(),
      logger: silentLogger,
      metrics: noMetrics,
    });
    const fallback = { poll_interval_s: 60, heartbeat_interval_s: 30, retry_initial_ms: 1000, retry_max_ms: 8000, jitter: 0 };
    lpDaemon = new Daemon({
      engine: lpEngine,
      origin: lp,
      logger: silentLogger,
      metrics: noMetrics,
      timers: async () => timersFrom(null, fallback),
      timerPort: timers,
      random: () => 0.5,
      clock: () => new Date(now),
      longPoll: { waitS: 30, spreadMs: 250, recheckMs: 600_000 },
    });
    now = Date.parse('2026-11-26T00:00:00Z');
    const signed = signer.sign(sampleSnapshot({ sequence: 1 }));
    lp.publish(signed.digest, 1, signed.bytes);
    await lpDaemon.start();
    await lpDaemon.tickNow();
    await lpDaemon.idle();
  });

  afterEach(async () => {
    await lpDaemon.stop();
  });

  /** Runs the step due now (after the check: the long-poll) and waits until it has scheduled the next. */
  async function longPollOnce(): Promise<void> {
    const asked = lp.waitsAsked;
    timers.fire(0);
    await vi.waitFor(() => expect(lp.waitsAsked).toBe(asked + 1));
    await vi.waitFor(() => expect(timers.delays().filter((d) => d !== 30_000)).toHaveLength(1));
  }

  it('long-polls right after a check, and fetches a change after its share of spread_ms', async () => {
    const signed = signer.sign(sampleSnapshot({ sequence: 2 }));
    lp.waits.push(async () => {
      lp.publish(signed.digest, 2, signed.bytes);
      return { status: 'ok', hint: { config_digest: signed.digest, sequence: 2 }, etag: `"${lp.etag}"`, bytes: 80, longPoll: true };
    });
    await longPollOnce();
    // random() = 0.5 of spread_ms 250.
    expect(timers.delays()).toContain(125);
    expect(lpDaemon.status().longPoll).toBe('active');
    const plainBefore = lp.plainAsked;
    timers.fire(125);
    await lpDaemon.idle();
    await vi.waitFor(async () => expect((await store.read()).applied?.sequence).toBe(2));
    // The check acts on the latest.json the long-poll was answered with; it does not ask for it again.
    expect(lp.plainAsked).toBe(plainBefore);
    expect((await store.read()).etag).toBe(`"${lp.etag}"`);
  });

  it('holds again at once when a wait ends with a 304', async () => {
    lp.waits.push(async () => {
      now += 30_000;
      return { status: 'not-modified', longPoll: true };
    });
    await longPollOnce();
    expect(timers.delays()).toContain(0);
  });

  it('waits the poll interval after a 304 that came long before the wait was over: the origin is not holding', async () => {
    lp.waits.push(async () => ({ status: 'not-modified', longPoll: true }));
    await longPollOnce();
    expect(timers.delays()).toContain(60_000);
  });

  it('polls at the interval against an origin that answers the wait at once, unmarked', async () => {
    lp.waits.push(async () => ({ status: 'not-modified', longPoll: false }));
    await longPollOnce();
    expect(lpDaemon.status().longPoll).toBe('unsupported');
    expect(timers.delays()).toContain(60_000);
    // The next step at the interval is a plain check: the recheck is ten minutes away.
    timers.fire(60_000);
    await lpDaemon.idle();
    expect(lp.waitsAsked).toBe(1);
  });

  it('falls back to polling while the origin is full, until its Retry-After has passed, and counts no failure', async () => {
    lp.waits.push(async () => {
      throw new OriginError('LONG_POLL_FULL', 'full', { status: 503, retryAfterMs: 5000 });
    });
    await longPollOnce();
    expect(lpDaemon.status()).toMatchObject({ longPoll: 'full', consecutiveFailures: 0 });
    // Retry-After (5 s) is longer than the first backoff (1 s), and shorter than the interval.
    expect(timers.delays()).toContain(5000);
  });

  it('backs off to a plain check when the long-poll breaks, spending no retry budget', async () => {
    lp.waits.push(async () => {
      throw new OriginError('FETCH_FAILED', 'socket hang up');
    });
    await longPollOnce();
    expect(lpDaemon.status()).toMatchObject({ consecutiveFailures: 1, lastOutcome: { result: 'failed', code: 'FETCH_FAILED' } });
    expect(timers.delays()).toContain(1000);
    expect((await store.read()).failures).toEqual({});
    timers.fire(1000);
    await lpDaemon.idle();
    // The plain check succeeded: long-poll resumes.
    expect(lpDaemon.status().consecutiveFailures).toBe(0);
    expect(timers.delays()).toContain(0);
  });
});
