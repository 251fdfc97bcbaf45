import type { Candidate, SyncEngine, SyncOutcome, UnpinOutcome } from './engine.js';
import { outcomeCode } from './engine.js';
import { errorCode, errorMessage } from './errors.js';
import type { Origin } from './origin-client.js';
import type { Logger, MetricsSink } from './ports.js';
import { type LoopTimers, backoffDelay, isHealthy, pollDelay } from './schedule.js';
import type { SnapshotRef } from './state.js';

/** Timer functions, injected so the loop runs under fake timers in tests. */
export interface TimerPort {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: TimerPort = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** What the daemon drives and how it keeps time; timers and randomness are injectable for tests. */
export interface DaemonOptions {
  readonly engine: SyncEngine;
  readonly origin: Origin;
  readonly logger: Logger;
  readonly metrics: MetricsSink;
  /** The loop's timers for what is applied now (snapshot ttl, or configuration defaults). */
  readonly timers: () => Promise<LoopTimers>;
  readonly clock?: () => Date;
  readonly random?: () => number;
  readonly timerPort?: TimerPort;
}

/** What `/status` and `/healthz` report about the running loop. */
export interface DaemonStatus {
  readonly healthy: boolean;
  readonly applying: SnapshotRef | null;
  readonly lastOutcome: SyncOutcome | null;
  readonly lastSuccessAt: string | null;
  readonly consecutiveFailures: number;
}

/** Used only until the first timers are read: a loop must keep a schedule even when that read fails. */
const FALLBACK_TIMERS: LoopTimers = { pollMs: 60_000, heartbeatMs: 30_000, retryInitialMs: 1_000, retryMaxMs: 300_000, jitter: 0.1 };

interface ApplyTask {
  readonly ref: SnapshotRef;
  readonly controller: AbortController;
  readonly done: Promise<SyncOutcome>;
}

/**
 * The daemon: polls on a timer (jittered; backing off after failures), keeps one apply at a
 * time, and lets a newer verified snapshot cancel the apply in progress. Heartbeats run on a
 * timer of their own and never disturb the loop.
 */
export class Daemon {
  private readonly clock: () => Date;
  private readonly random: () => number;
  private readonly timerPort: TimerPort;
  private readonly stopController = new AbortController();
  private readonly startedAt: number;
  private pollTimer: unknown = null;
  private heartbeatTimer: unknown = null;
  private applying: ApplyTask | null = null;
  private ticking: Promise<void> | null = null;
  private lastOutcome: SyncOutcome | null = null;
  private lastSuccessAt: number | null = null;
  private failures = 0;
  private current: LoopTimers | null = null;
  private stopped = false;
  private operator: Promise<SyncOutcome> | null = null;

  constructor(private readonly options: DaemonOptions) {
    this.clock = options.clock ?? (() => new Date());
    this.random = options.random ?? Math.random;
    this.timerPort = options.timerPort ?? realTimers;
    this.startedAt = this.clock().getTime();
  }

  /**
   * Starts in the background: first finishes any interrupted apply (so stop() can abort it),
   * then polls and sends heartbeats. Resolves at once.
   */
  async start(): Promise<void> {
    const recovering = (async () => {
      const recovered = await this.options.engine.recover(this.stopController.signal).catch((error: unknown) => {
        this.options.logger.error({ code: errorCode(error), err: errorMessage(error) }, 'recovery failed');
        return null;
      });
      if (recovered) this.note(recovered);
      await this.loadTimers();
      this.schedulePoll(0);
      this.scheduleHeartbeat(0);
    })();
    this.ticking = recovering.finally(() => {
      this.ticking = null;
    });
  }

  status(): DaemonStatus {
    const pollMs = this.current?.pollMs ?? 60_000;
    return {
      healthy: isHealthy({ now: this.clock().getTime(), startedAt: this.startedAt, lastSuccessAt: this.lastSuccessAt, pollMs, applying: this.applying !== null }),
      applying: this.applying?.ref ?? null,
      lastOutcome: this.lastOutcome,
      lastSuccessAt: this.lastSuccessAt === null ? null : new Date(this.lastSuccessAt).toISOString(),
      consecutiveFailures: this.failures,
    };
  }

  /** Runs one check now (used by tests and by a future control endpoint). */
  async tickNow(): Promise<void> {
    await this.ticking?.catch(() => undefined);
    if (this.pollTimer !== null) this.timerPort.clearTimeout(this.pollTimer);
    this.pollTimer = null;
    await this.tick();
  }

  /**
   * An operator's rollback through the running daemon: the apply in flight (if any) is
   * cancelled first, so there is still one apply at a time.
   */
  async rollback(to: string | undefined): Promise<SyncOutcome> {
    while (this.operator) await this.operator.catch(() => undefined);
    const run = (async () => {
      await this.ticking?.catch(() => undefined);
      const inFlight = this.applying;
      if (inFlight) {
        inFlight.controller.abort();
        await inFlight.done.catch(() => undefined);
      }
      const outcome = await this.options.engine.rollback(to, this.stopController.signal);
      this.note(outcome);
      await this.loadTimers();
      return outcome;
    })();
    this.operator = run;
    try {
      return await run;
    } finally {
      this.operator = null;
    }
  }

  /** An operator lifts the pin of a rollback (the control endpoint's POST /v1/unpin); the next poll runs at once. */
  async unpin(): Promise<UnpinOutcome> {
    while (this.operator) await this.operator.catch(() => undefined);
    const outcome = await this.options.engine.unpin();
    if (outcome.unpinned && !this.stopped && this.ticking === null) this.schedulePoll(0);
    return outcome;
  }

  /** SIGTERM: abort the work in flight (the applier restores what ran before), then return. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer !== null) this.timerPort.clearTimeout(this.pollTimer);
    if (this.heartbeatTimer !== null) this.timerPort.clearTimeout(this.heartbeatTimer);
    this.stopController.abort();
    this.applying?.controller.abort();
    await this.ticking?.catch(() => undefined);
    await this.applying?.done.catch(() => undefined);
    await this.operator?.catch(() => undefined);
  }

  /** Resolves when no apply is in progress (for tests and the dev network). */
  async idle(): Promise<void> {
    while (this.applying || this.ticking) {
      await this.ticking?.catch(() => undefined);
      await this.applying?.done.catch(() => undefined);
    }
  }

  private schedulePoll(ms: number): void {
    if (this.stopped) return;
    if (this.pollTimer !== null) this.timerPort.clearTimeout(this.pollTimer);
    this.pollTimer = this.timerPort.setTimeout(() => {
      this.pollTimer = null;
      void this.tick();
    }, ms);
  }

  private scheduleHeartbeat(ms: number): void {
    if (this.stopped) return;
    this.heartbeatTimer = this.timerPort.setTimeout(() => {
      void this.heartbeat().finally(() => this.scheduleHeartbeat(this.current?.heartbeatMs ?? 30_000));
    }, ms);
  }

  private async heartbeat(): Promise<void> {
    try {
      const status = this.applying ? 'applying' : this.failures > 0 ? 'degraded' : 'ok';
      const body = await this.options.engine.heartbeatBody(status);
      await this.options.origin.heartbeat(body, this.stopController.signal);
    } catch (error) {
      // A heartbeat is a courtesy to the network: failing one never touches the sync loop.
      this.options.logger.debug({ code: errorCode(error), err: errorMessage(error) }, 'heartbeat failed');
    }
  }

  private tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    this.ticking = this.runTick().finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  /**
   * One poll. Whatever it meets (a corrupt state file, a bug), the next poll is scheduled:
   * the loop is the Agent's only way back to a good state, so nothing may end it.
   */
  private async runTick(): Promise<void> {
    if (this.stopped) return;
    let delay: number | null = null;
    try {
      delay = await this.poll();
    } catch (error) {
      this.options.logger.error({ code: errorCode(error), err: errorMessage(error) }, 'poll failed');
      this.note({ result: 'failed', code: errorCode(error), message: errorMessage(error) });
      delay = backoffDelay(this.current ?? FALLBACK_TIMERS, this.failures, this.random());
    } finally {
      if (delay !== null) this.schedulePoll(delay);
    }
  }

  /** Checks, starts an apply or notes the outcome, and says when to poll next. */
  private async poll(): Promise<number | null> {
    if (this.operator) {
      // An operator's rollback is running; the loop waits for it rather than racing it.
      return pollDelay(this.current ?? (await this.loadTimers()), this.random());
    }
    const { engine, logger } = this.options;
    let result: Awaited<ReturnType<SyncEngine['check']>>;
    try {
      result = await engine.check(this.stopController.signal, { inProgress: this.applying?.ref ?? null });
    } catch (error) {
      result = { kind: 'done', outcome: { result: 'failed', code: errorCode(error), message: errorMessage(error) } };
      logger.error({ code: errorCode(error), err: errorMessage(error) }, 'check failed');
    }
    if (this.stopped) return null;
    if (result.kind === 'candidate') {
      this.lastSuccessAt = this.clock().getTime();
      await this.startApply(result.candidate);
      // Keep polling while the apply runs: a newer snapshot may replace it.
      return pollDelay(this.current ?? (await this.loadTimers()), this.random());
    }
    const outcome = result.outcome;
    this.options.metrics.syncResult(outcomeCode(outcome));
    if (!(outcome.result === 'failed' && outcome.digest === undefined)) this.lastSuccessAt = this.clock().getTime();
    this.note(outcome);
    const timers = await this.loadTimers();
    if (this.applying) return pollDelay(timers, this.random());
    return this.failures > 0 ? backoffDelay(timers, this.failures, this.random()) : pollDelay(timers, this.random());
  }

  /** The timers of what is applied now; the ones known before when they cannot be read. */
  private async loadTimers(): Promise<LoopTimers> {
    try {
      this.current = await this.options.timers();
    } catch (error) {
      this.options.logger.error({ code: errorCode(error), err: errorMessage(error) }, 'timers could not be read; keeping the previous ones');
    }
    return this.current ?? FALLBACK_TIMERS;
  }

  private async startApply(candidate: Candidate): Promise<void> {
    const ref = { digest: candidate.verified.digest, sequence: candidate.verified.snapshot.sequence };
    const previous = this.applying;
    if (previous) {
      this.options.logger.info({ cancelled: previous.ref.digest, newer: ref.digest }, 'a newer snapshot cancels the apply in progress');
      previous.controller.abort();
      await previous.done.catch(() => undefined);
    }
    const controller = new AbortController();
    const signal = AbortSignal.any([controller.signal, this.stopController.signal]);
    const done = this.options.engine.apply(candidate, signal, { reason: 'sync' }).catch((error: unknown) => ({
      result: 'failed' as const,
      code: errorCode(error),
      message: errorMessage(error),
      digest: ref.digest,
    }));
    const task: ApplyTask = { ref, controller, done };
    this.applying = task;
    void done.then(async (outcome) => {
      if (this.applying === task) this.applying = null;
      this.options.metrics.syncResult(outcomeCode(outcome));
      if (outcome.result === 'cancelled') return;
      this.note(outcome);
      const timers = await this.loadTimers();
      if (outcome.result !== 'applied' && !this.stopped && this.applying === null) {
        this.schedulePoll(backoffDelay(timers, this.failures, this.random()));
      }
    });
  }

  private note(outcome: SyncOutcome): void {
    this.lastOutcome = outcome;
    if (outcome.result === 'failed' || outcome.result === 'refused') {
      this.failures += 1;
      this.options.logger.warn({ code: outcome.code, digest: outcome.digest ?? null, err: outcome.message }, 'sync did not converge');
    } else {
      this.failures = 0;
    }
  }
}
