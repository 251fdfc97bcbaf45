import type { Candidate, SyncEngine, SyncOutcome, UnpinOutcome } from './engine.js';
import { outcomeCode } from './engine.js';
import { errorCode, errorMessage } from './errors.js';
import { type LatestAnswer, type LatestResult, type Origin, OriginError } from './origin-client.js';
import type { Logger, MetricsSink } from './ports.js';
import { type LongPollSettings, type LoopTimers, backoffDelay, isHealthy, pollDelay, recheckDelay, spreadDelay } from './schedule.js';
import type { AgentState, SnapshotRef } from './state.js';

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
  /** SPEC §5 long-poll, tried against the origin and kept only if it answers marked; absent: plain polling. */
  readonly longPoll?: LongPollSettings | null;
}

/**
 * Where long-poll stands with this origin: not configured, not known yet, in use, not
 * supported (the origin answered a wait at once, unmarked: polling at the interval and asking
 * again after the recheck), or full (the origin refused to hold one more: polling until its
 * Retry-After, or the backoff, has passed).
 */
export type LongPollMode = 'off' | 'unknown' | 'active' | 'unsupported' | 'full';

/** What `/status` and `/healthz` report about the running loop. */
export interface DaemonStatus {
  readonly healthy: boolean;
  readonly applying: SnapshotRef | null;
  readonly lastOutcome: SyncOutcome | null;
  readonly lastSuccessAt: string | null;
  readonly consecutiveFailures: number;
  readonly longPoll: LongPollMode;
}

/** Used only until the first timers are read: a loop must keep a schedule even when that read fails. */
const FALLBACK_TIMERS: LoopTimers = { pollMs: 60_000, heartbeatMs: 30_000, retryInitialMs: 1_000, retryMaxMs: 300_000, jitter: 0.1 };

/** What the loop does when its timer fires: check now, or pick between a check and a long-poll. */
type StepKind = 'check' | 'next';

interface WatchTask {
  readonly controller: AbortController;
  done: Promise<void>;
}

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
  /** When the one timer fires and what it does then. */
  private pollDue: { at: number; kind: StepKind } | null = null;
  private heartbeatTimer: unknown = null;
  private applying: ApplyTask | null = null;
  private ticking: Promise<void> | null = null;
  private lastOutcome: SyncOutcome | null = null;
  private lastSuccessAt: number | null = null;
  private failures = 0;
  private current: LoopTimers | null = null;
  private stopped = false;
  private operator: Promise<SyncOutcome> | null = null;
  private readonly longPoll: LongPollSettings | null;
  private longPollMode: LongPollMode;
  /** No long-poll before this time (ms): an origin that does not support it, or is full, is polled until then. */
  private watchNotBefore = 0;
  /** Consecutive LONG_POLL_FULL answers, for the backoff between them. */
  private fullAnswers = 0;
  private watching: WatchTask | null = null;
  /** The ETag a long-poll answer taught that the engine has not seen; undefined: the engine's own. */
  private watchEtag: string | undefined;
  /**
   * The latest.json a long-poll was answered with, for the check it schedules: it is the file
   * itself (SPEC §5 lets it name the digest to fetch), so asking for it again after the spread
   * would only cost the origin and the node one more request.
   */
  private heard: LatestAnswer | null = null;

  constructor(private readonly options: DaemonOptions) {
    this.clock = options.clock ?? (() => new Date());
    this.random = options.random ?? Math.random;
    this.timerPort = options.timerPort ?? realTimers;
    this.startedAt = this.clock().getTime();
    this.longPoll = options.longPoll ?? null;
    this.longPollMode = this.longPoll === null ? 'off' : 'unknown';
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
      this.schedule(0, 'check');
      this.scheduleHeartbeat(0);
    })();
    this.ticking = recovering.finally(() => {
      this.ticking = null;
    });
  }

  status(): DaemonStatus {
    const polledMs = this.current?.pollMs ?? 60_000;
    // A held long-poll is a check that lasts its whole wait; health must not expire during one.
    // Once anything fails, the poll interval rules again, so a lost origin turns unhealthy as before.
    const holding = this.longPoll !== null && this.longPollMode === 'active' && this.failures === 0;
    const pollMs = holding && this.longPoll !== null ? Math.max(polledMs, this.longPoll.waitS * 1000) : polledMs;
    return {
      healthy: isHealthy({
        now: this.clock().getTime(),
        startedAt: this.startedAt,
        lastSuccessAt: this.lastSuccessAt,
        pollMs,
        applying: this.applying !== null,
      }),
      applying: this.applying?.ref ?? null,
      lastOutcome: this.lastOutcome,
      lastSuccessAt: this.lastSuccessAt === null ? null : new Date(this.lastSuccessAt).toISOString(),
      consecutiveFailures: this.failures,
      longPoll: this.longPollMode,
    };
  }

  /** Runs one check now (used by tests and by a future control endpoint). */
  async tickNow(): Promise<void> {
    await this.ticking?.catch(() => undefined);
    if (this.pollTimer !== null) this.timerPort.clearTimeout(this.pollTimer);
    this.pollTimer = null;
    await this.cancelWatch();
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
    if (outcome.unpinned && !this.stopped && this.ticking === null) this.schedule(0, 'check');
    return outcome;
  }

  /** SIGTERM: abort the work in flight (the applier restores what ran before), then return. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer !== null) this.timerPort.clearTimeout(this.pollTimer);
    if (this.heartbeatTimer !== null) this.timerPort.clearTimeout(this.heartbeatTimer);
    this.stopController.abort();
    this.applying?.controller.abort();
    await this.cancelWatch();
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

  /**
   * Sets the one timer of the loop. A new decision supersedes a long-poll held now (an apply
   * that failed wants its backoff check, not a wait of up to wait_s).
   */
  private schedule(ms: number, kind: StepKind): void {
    if (this.stopped) return;
    if (this.pollTimer !== null) this.timerPort.clearTimeout(this.pollTimer);
    void this.cancelWatch();
    this.pollDue = { at: this.clock().getTime() + ms, kind };
    this.pollTimer = this.timerPort.setTimeout(() => {
      this.pollTimer = null;
      this.pollDue = null;
      if (kind === 'next' && this.wantsWatch()) this.watch();
      else void this.tick();
    }, ms);
  }

  /** Long-poll is worth a request now: configured, nothing failing (a failure backs off with plain checks), not paused. */
  private wantsWatch(): boolean {
    return this.longPoll !== null && this.failures === 0 && this.clock().getTime() >= this.watchNotBefore;
  }

  /** After a check: long-poll at once when it may be used; otherwise poll, but no later than the long-poll pause ends. */
  private afterCheck(delay: number): number {
    if (this.longPoll === null || this.failures > 0) return delay;
    const remaining = this.watchNotBefore - this.clock().getTime();
    return remaining <= 0 ? 0 : Math.min(delay, remaining);
  }

  private async cancelWatch(): Promise<void> {
    const task = this.watching;
    if (task === null) return;
    this.watching = null;
    task.controller.abort();
    await task.done;
  }

  /** Starts one long-poll; when it ends, it schedules what comes next itself. */
  private watch(): void {
    if (this.stopped || this.watching !== null || this.longPoll === null) return;
    const settings = this.longPoll;
    const controller = new AbortController();
    const task: WatchTask = { controller, done: Promise.resolve() };
    task.done = this.runWatch(settings, controller.signal)
      .catch((error: unknown): { ms: number; kind: StepKind } | null => {
        // A bug here must not end the loop: back to a plain check after the backoff.
        this.options.logger.error({ code: errorCode(error), err: errorMessage(error) }, 'long-poll failed');
        this.note({ result: 'failed', code: errorCode(error), message: errorMessage(error) });
        return { ms: backoffDelay(this.current ?? FALLBACK_TIMERS, this.failures, this.random()), kind: 'check' };
      })
      .then((next) => {
        // Cancelled (a new decision, stop): whoever cancelled it schedules what comes next.
        if (this.watching !== task) return;
        this.watching = null;
        if (next !== null) this.schedule(next.ms, next.kind);
      });
    this.watching = task;
  }

  /**
   * One long-poll of latest.json with the ETag the engine acted on. When it answers with news,
   * the check that follows (after the spread) acts on that answer and fetches and verifies the
   * snapshot as any poll does. Returns the next step, or null when it was cancelled.
   */
  private async runWatch(settings: LongPollSettings, signal: AbortSignal): Promise<{ ms: number; kind: StepKind } | null> {
    const { origin, logger, metrics } = this.options;
    const timers = this.current ?? FALLBACK_TIMERS;
    const known = await this.options.engine.readState().catch(() => null);
    const etag = this.watchEtag ?? known?.etag ?? null;
    const startedAt = this.clock().getTime();
    let answer: LatestResult;
    try {
      answer = await origin.latest(etag, AbortSignal.any([signal, this.stopController.signal]), { waitS: settings.waitS });
    } catch (error) {
      if (signal.aborted || this.stopped) return null;
      const now = this.clock().getTime();
      if (error instanceof OriginError && error.code === 'LONG_POLL_FULL') {
        // The origin is reachable and said so: not a failure of the sync, but a request to hold off.
        this.lastSuccessAt = now;
        this.fullAnswers += 1;
        const pause = Math.max(error.retryAfterMs ?? 0, backoffDelay(timers, this.fullAnswers, this.random()));
        this.watchNotBefore = now + pause;
        this.setMode('full', { retry_in_ms: pause });
        return { ms: Math.min(pollDelay(timers, this.random()), pause), kind: 'next' };
      }
      // A long-poll that breaks is a transport failure: backoff, then a plain check. No
      // digest's retry budget is touched: nothing was fetched, let alone refused.
      logger.warn({ code: errorCode(error), err: errorMessage(error) }, 'long-poll broke');
      this.note({ result: 'failed', code: errorCode(error), message: errorMessage(error) });
      return { ms: backoffDelay(timers, this.failures, this.random()), kind: 'check' };
    }
    const now = this.clock().getTime();
    this.lastSuccessAt = now;
    if (answer.status === 'ok') metrics.bytesDownloaded('latest', answer.bytes);
    const changed = answer.status === 'ok' && isNews(answer.hint, known);
    if (changed && answer.status === 'ok') this.heard = answer;
    if (answer.longPoll !== true) {
      // A static server or a CDN: it answered at once, as to any poll. Poll at the interval.
      this.watchNotBefore = now + recheckDelay(settings, timers, this.random());
      this.setMode('unsupported', { recheck_in_ms: this.watchNotBefore - now });
      return changed ? { ms: spreadDelay(settings, this.random()), kind: 'check' } : { ms: pollDelay(timers, this.random()), kind: 'next' };
    }
    this.fullAnswers = 0;
    this.setMode('active', { wait_s: settings.waitS });
    // A fleet hears of a change in the same millisecond; each node waits its own share of spread_ms.
    if (changed) return { ms: spreadDelay(settings, this.random()), kind: 'check' };
    if (answer.status === 'ok') {
      // Nothing new to the engine, only a newer ETag for the same hint: hold with that one.
      if (answer.etag !== null && answer.etag !== etag) {
        this.watchEtag = answer.etag;
        return { ms: 0, kind: 'next' };
      }
      return { ms: pollDelay(timers, this.random()), kind: 'next' };
    }
    // A 304 ends a held wait. One that comes well before the wait is over means the origin is
    // not holding: ask again at the poll interval rather than at once, so it cannot become a spin.
    const early = now - startedAt < settings.waitS * 500;
    return { ms: early ? pollDelay(timers, this.random()) : 0, kind: 'next' };
  }

  private setMode(mode: LongPollMode, details: Record<string, unknown>): void {
    if (mode === this.longPollMode) return;
    this.longPollMode = mode;
    const messages: Record<LongPollMode, string> = {
      off: 'long-poll off',
      unknown: 'long-poll not tried yet',
      active: 'the origin long-polls: changes are heard as they are published',
      unsupported: 'the origin does not long-poll: polling at the interval',
      full: 'the origin holds all the long-polls it will: polling until it has room',
    };
    this.options.logger.info({ long_poll: mode, ...details }, messages[mode]);
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
    // The engine reads latest.json now: its ETag is the one to hold with from here on.
    this.watchEtag = undefined;
    const heard = this.heard;
    this.heard = null;
    let delay: number | null = null;
    try {
      delay = await this.poll(heard);
    } catch (error) {
      this.options.logger.error({ code: errorCode(error), err: errorMessage(error) }, 'poll failed');
      this.note({ result: 'failed', code: errorCode(error), message: errorMessage(error) });
      delay = backoffDelay(this.current ?? FALLBACK_TIMERS, this.failures, this.random());
    } finally {
      if (delay !== null) this.schedule(this.afterCheck(delay), 'next');
    }
  }

  /** Checks, starts an apply or notes the outcome, and says when to poll next. */
  private async poll(heard: LatestAnswer | null): Promise<number | null> {
    if (this.operator) {
      // An operator's rollback is running; the loop waits for it rather than racing it.
      return pollDelay(this.current ?? (await this.loadTimers()), this.random());
    }
    const { engine, logger } = this.options;
    let result: Awaited<ReturnType<SyncEngine['check']>>;
    try {
      result = await engine.check(this.stopController.signal, { inProgress: this.applying?.ref ?? null, ...(heard ? { heard } : {}) });
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
      if (this.stopped || this.applying !== null) return;
      if (outcome.result !== 'applied') this.schedule(backoffDelay(timers, this.failures, this.random()), 'check');
      else this.pullInPoll(timers);
    });
  }

  /**
   * The poll set while an apply ran used the timers known before it (the configuration's at
   * the first apply); a snapshot that asks to be polled sooner is polled sooner from now on.
   */
  private pullInPoll(timers: LoopTimers): void {
    const due = this.pollDue;
    if (this.pollTimer === null || due === null || due.kind !== 'next' || this.watching !== null) return;
    const delay = pollDelay(timers, this.random());
    if (this.clock().getTime() + delay < due.at) this.schedule(delay, 'next');
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

/** A hint the engine has not acted on: another digest or sequence than the latest it knows. */
function isNews(hint: { config_digest: string; sequence: number }, known: AgentState | null): boolean {
  const latest = known?.latest ?? null;
  return latest === null || latest.digest !== hint.config_digest || latest.sequence !== hint.sequence;
}
