import type { AuditSink } from './audit.js';
import { errorCode, errorMessage } from './errors.js';
import type { ApplierPort, ApplyFailure, ApplyTarget, Logger, MetricsSink, NotifyResult, ProgressInfo, RuntimeNotifier } from './ports.js';
import type { SnapshotRef, StateStore } from './state.js';
import type { StateKeeper } from './state-keeper.js';
import { markApplied, markExhausted, markFailed, pin } from './transitions.js';

/** What one apply ended in (the engine turns it into a SyncOutcome). */
export type ApplyResult =
  | { readonly result: 'applied'; readonly digest: string; readonly sequence: number }
  | { readonly result: 'failed'; readonly code: string; readonly message: string; readonly digest: string }
  | { readonly result: 'cancelled'; readonly digest: string };

/** Why an apply runs: a sync, an operator's rollback (which pins), or the recovery of an interrupted one. */
export interface ApplyOptions {
  readonly reason: 'sync' | 'rollback' | 'recover';
  /** Pin what is applied (an operator's rollback, or the recovery of one). */
  readonly pin?: boolean;
  /** Restarts that have tried this apply before (carried in the journal). */
  readonly recoveries?: number;
}

/** What the transaction talks to. */
export interface ApplyTransactionDeps {
  readonly applier: ApplierPort;
  readonly notifier: RuntimeNotifier;
  readonly state: StateKeeper;
  readonly store: StateStore;
  readonly audit: AuditSink;
  readonly metrics: MetricsSink;
  readonly logger: Logger;
  readonly retryBudget: number;
  readonly now: () => string;
  readonly loadTarget: (digest: string) => Promise<ApplyTarget | null>;
  /** The snapshots whose models collection keeps (read after the apply is recorded). */
  readonly keptTargets: () => Promise<{ targets: ApplyTarget[] } | { missing: string }>;
  readonly onProgress?: (event: ProgressInfo) => void;
}

/**
 * One apply as a transaction: plan → journal → execute → notify → record, and on any failure
 * the last-known-good put back and the failure counted against the digest. The digest is
 * recorded last, so a crash before that replays the journal instead.
 */
export class ApplyTransaction {
  constructor(private readonly deps: ApplyTransactionDeps) {}

  async run(
    target: ApplyTarget,
    bytes: Uint8Array,
    previous: ApplyTarget | null,
    signal: AbortSignal | undefined,
    options: ApplyOptions,
  ): Promise<ApplyResult> {
    const { state, store, audit, applier } = this.deps;
    const ref: SnapshotRef = { digest: target.digest, sequence: target.snapshot.sequence };
    const lastKnownGood = (await state.read()).applied;

    const planned = await applier.plan(target, previous);
    if (!planned.ok) {
      await audit.append('apply-failed', {
        digest: ref.digest,
        sequence: ref.sequence,
        stage: 'plan',
        code: planned.failure.code,
        message: planned.failure.message,
      });
      return this.failed(ref, planned.failure);
    }
    const plan = planned.plan;
    await audit.append('plan', { digest: ref.digest, sequence: ref.sequence, reason: options.reason, steps: plan.lines });
    await store.writeJournal({ from: lastKnownGood, to: ref, reason: options.reason, started_at: this.deps.now(), recoveries: options.recoveries ?? 0 });
    await audit.append('apply-started', { digest: ref.digest, sequence: ref.sequence, from: lastKnownGood?.digest ?? null, steps: plan.steps.length });

    const executed = await applier.execute(plan, { ...(signal ? { signal } : {}), onProgress: this.progress() });
    if (!executed.ok) {
      const failure = executed.failure;
      if (failure.cancelled) {
        await audit.append('apply-cancelled', { digest: ref.digest, code: failure.code, rolled_back: failure.rolledBack });
        if (!failure.rolledBack) await this.restore(lastKnownGood, 'cancelled');
        await store.clearJournal();
        await state.anchor();
        return { result: 'cancelled', digest: ref.digest };
      }
      await audit.append('apply-failed', {
        digest: ref.digest,
        sequence: ref.sequence,
        code: failure.code,
        message: failure.message,
        rolled_back: failure.rolledBack,
        ...(failure.mirrors ? { mirrors: failure.mirrors } : {}),
      });
      if (!failure.rolledBack) await this.restore(lastKnownGood, 'apply-failed');
      else if (lastKnownGood) await audit.append('rollback', { to: lastKnownGood.digest, from: ref.digest, reason: 'apply-failed', by: 'applier' });
      await store.clearJournal();
      return this.failed(ref, failure);
    }
    this.deps.metrics.applyDuration(executed.durationMs / 1000);

    const runtime = await this.notify(target);
    if (runtime.outcome === 'nack') {
      await this.restore(lastKnownGood, 'runtime-nack');
      await store.clearJournal();
      const message = `runtime refused ${ref.digest}: ${runtime.code ?? 'NACK'}: ${errorMessage(runtime.message ?? '')}`.trim();
      return this.failed(ref, { code: 'RUNTIME_NACK', message, retryable: false, rolledBack: true, cancelled: false });
    }

    await store.putLastKnownGood(bytes);
    const appliedAt = this.deps.now();
    // Recorded and pruned in one write; the journal goes after it, so a crash in between finds
    // the digest recorded and only clears the journal.
    await state.update((s) => {
      const applied = markApplied(s, ref, appliedAt, runtime);
      return store.prune(options.pin ? pin(applied, ref, appliedAt) : applied);
    });
    await store.clearJournal();
    const dropped = executed.droppedMirrors ?? [];
    for (const d of dropped) for (const m of d.mirrors) this.deps.metrics.mirrorFailure(m.code);
    await audit.append('applied', {
      digest: ref.digest,
      sequence: ref.sequence,
      reason: options.reason,
      duration_ms: executed.durationMs,
      runtime: runtime.outcome,
      // Hosts are named here, in the local audit log, and nowhere that leaves the node.
      ...(dropped.length > 0 ? { mirrors: dropped } : {}),
    });
    await state.anchor();
    await this.collect(target);
    this.deps.metrics.appliedSequence(ref.sequence);
    this.deps.logger.info({ digest: ref.digest, sequence: ref.sequence, reason: options.reason }, 'applied');
    return { result: 'applied', digest: ref.digest, sequence: ref.sequence };
  }

  /**
   * Removes model files no snapshot the node may go back to references (`keptTargets`: the
   * applied one, the one before it, a pinned one), after an apply that succeeded. A failed apply
   * collects nothing: the node is on its last-known-good, and what it fetched for the failed
   * target stays for the retry. The applied snapshot (and the model index) is always kept, so a
   * file a running container may be reading for a model still announced is never removed. When
   * a kept envelope cannot be read, nothing is collected: better a full disk later than a
   * deleted model now. A failure here never fails the apply.
   */
  private async collect(applied: ApplyTarget): Promise<void> {
    const { audit, applier, logger } = this.deps;
    try {
      const kept = await this.deps.keptTargets();
      if ('missing' in kept) {
        await audit.append('collect', { ok: false, code: 'STATE_CORRUPT', message: `the envelope of ${kept.missing} is missing; nothing collected` });
        return;
      }
      const keep = kept.targets.some((t) => t.digest === applied.digest) ? kept.targets : [applied, ...kept.targets];
      const result = await applier.collect(keep);
      if (result.removed.length === 0 && result.failed.length === 0) return;
      this.deps.metrics.collectedBytes(result.bytesFreed);
      await audit.append('collect', {
        ok: result.failed.length === 0,
        kept: keep.map((t) => t.digest),
        removed: result.removed,
        bytes_freed: result.bytesFreed,
        ...(result.failed.length > 0 ? { failed: result.failed } : {}),
      });
    } catch (error) {
      logger.warn({ code: errorCode(error), err: errorMessage(error) }, 'collecting the model store failed');
      await audit.append('collect', { ok: false, code: errorCode(error), message: errorMessage(error) });
    }
  }

  /** Puts the last-known-good back (plan from reality toward it) and tells the runtime. */
  async restore(lkg: SnapshotRef | null, reason: string): Promise<void> {
    const { audit, applier, logger } = this.deps;
    if (lkg === null) {
      await audit.append('rollback', { to: null, reason, note: 'no snapshot was applied before; nothing to restore' });
      return;
    }
    const target = await this.deps.loadTarget(lkg.digest);
    if (target === null) {
      await audit.append('rollback', { to: lkg.digest, reason, ok: false, code: 'STATE_CORRUPT', message: 'the last-known-good envelope is missing' });
      return;
    }
    const planned = await applier.plan(target, null);
    const executed = planned.ok ? await applier.execute(planned.plan, {}) : planned;
    if (!executed.ok) {
      const { code, message } = executed.failure;
      logger.error({ code, err: message }, 'restoring the last-known-good failed');
      await audit.append('rollback', { to: lkg.digest, reason, ok: false, code, message });
      return;
    }
    await audit.append('rollback', { to: lkg.digest, reason, ok: true, steps: planned.ok ? planned.plan.lines : [] });
    await this.notify(target);
  }

  /** Counts a failure against a digest's retry budget; past the budget the digest is failed until a newer one appears. */
  async recordFailure(ref: SnapshotRef, code: string, message: string): Promise<void> {
    const at = this.deps.now();
    let exhausted = false;
    await this.deps.state.update((s) => {
      const next = markFailed(s, ref, { code, message, at }, this.deps.retryBudget);
      exhausted = next.exhausted;
      return next.state;
    });
    if (exhausted) await this.noteExhausted(ref, code);
  }

  /** Spends the whole budget at once: every restart died in this apply. */
  async recordExhausted(ref: SnapshotRef, code: string, message: string): Promise<void> {
    const at = this.deps.now();
    await this.deps.state.update((s) => markExhausted(s, ref, { code, message, at }, this.deps.retryBudget));
    await this.noteExhausted(ref, code);
  }

  private async noteExhausted(ref: SnapshotRef, code: string): Promise<void> {
    await this.deps.audit.append('budget-exhausted', { digest: ref.digest, attempts: this.deps.retryBudget, code });
    this.deps.logger.warn({ digest: ref.digest, code }, 'retry budget spent; this digest is failed until a newer one is published');
  }

  /**
   * A failure of the applier counts against the digest unless it is transient (the engine was
   * unreachable, a download timed out): those back off without spending the budget.
   */
  private async failed(ref: SnapshotRef, failure: ApplyFailure): Promise<ApplyResult> {
    if (failure.retryable) {
      await this.deps.state.update((s) => ({ ...s, last_error: { code: failure.code, message: failure.message, at: this.deps.now(), digest: ref.digest } }));
    } else {
      await this.recordFailure(ref, failure.code, failure.message);
    }
    await this.deps.state.anchor();
    return { result: 'failed', code: failure.code, message: failure.message, digest: ref.digest };
  }

  private progress(): (event: ProgressInfo) => void {
    const seen = new Map<string, number>();
    return (event) => {
      // Progress events carry totals so far; the metric counts what is new in each.
      const key = `${event.kind}:${event.name}`;
      const delta = event.bytesDone - (seen.get(key) ?? 0);
      seen.set(key, event.bytesDone);
      if (delta > 0) this.deps.metrics.bytesDownloaded(event.kind, delta);
      this.deps.onProgress?.(event);
    };
  }

  private async notify(target: ApplyTarget): Promise<NotifyResult> {
    const { audit, notifier, applier } = this.deps;
    let result: NotifyResult;
    try {
      result = await notifier.notify(await applier.environment(target));
    } catch (error) {
      result = { outcome: 'nack', acks: [], code: errorCode(error), message: errorMessage(error) };
    }
    const type = result.outcome === 'ack' ? 'runtime-ack' : result.outcome === 'nack' ? 'runtime-nack' : 'runtime-none';
    await audit.append(type, {
      digest: target.digest,
      acks: result.acks.map((a) => ({ runtime: a.runtimeId, ok: a.ok, code: a.code ?? null })),
      ...(result.code ? { code: result.code } : {}),
      ...(result.message ? { message: errorMessage(result.message) } : {}),
    });
    return result;
  }
}
