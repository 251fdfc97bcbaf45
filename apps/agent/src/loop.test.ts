import { writeFile } from 'node:fs/promises';

import { createTestSigner, sampleSnapshot, tempDir, type TestSigner } from '@resultity/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { SyncEngine } from './engine.js';
import { FakeApplier, FakeNotifier, FakeOrigin, MemoryAudit } from './fakes.test-support.js';
import { Daemon, type TimerPort } from './loop.js';
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
