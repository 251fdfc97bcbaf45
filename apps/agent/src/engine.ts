import { readFile } from 'node:fs/promises';

import {
  type Snapshot,
  type TrustedRoot,
  type VerifiedSnapshot,
  configDigest,
  envelopePayload,
  isRolloutEligible,
  parseCanonical,
  parseEnvelope,
  parseSnapshotValue,
  rotateRoot,
  verifySnapshot,
  walkRootChain,
} from '@resultity/snapshot';

import type { AuditSink } from './audit.js';
import { AgentError, errorCode, errorMessage } from './errors.js';
import type { Origin } from './origin-client.js';
import type { ApplierPort, ApplyTarget, Logger, MetricsSink, NotifyResult, ProgressInfo, RuntimeNotifier } from './ports.js';
import type { AgentState, SnapshotRef, StateStore } from './state.js';

/** Transport failures say nothing about a digest, so they back off without spending its retry budget. */
const TRANSPORT_CODES = new Set(['FETCH_FAILED', 'TIMEOUT', 'ABORTED']);

/** What one sync cycle ended in; `sync --once` maps it to an exit code. */
export type SyncOutcome =
  | { readonly result: 'unchanged'; readonly digest: string | null }
  | { readonly result: 'not-eligible'; readonly digest: string }
  | { readonly result: 'pinned'; readonly digest: string; readonly latest: string }
  | { readonly result: 'budget-exhausted'; readonly digest: string; readonly code: string; readonly message: string }
  | { readonly result: 'applied'; readonly digest: string; readonly sequence: number }
  | { readonly result: 'refused'; readonly code: string; readonly message: string; readonly digest?: string }
  | { readonly result: 'failed'; readonly code: string; readonly message: string; readonly digest?: string }
  | { readonly result: 'cancelled'; readonly digest: string };

/** A verified snapshot ready to apply. */
export interface Candidate {
  readonly verified: VerifiedSnapshot;
  readonly bytes: Uint8Array;
}

/** A check either found a verified candidate to apply or ended the cycle with an outcome. */
export type CheckResult = { readonly kind: 'candidate'; readonly candidate: Candidate } | { readonly kind: 'done'; readonly outcome: SyncOutcome };

/** Everything the engine talks to; `main`-style code builds the real ones, tests pass fakes. */
export interface EngineDeps {
  readonly network: string;
  readonly nodeId: string;
  readonly retryBudget: number;
  readonly maxSnapshotBytes: number;
  readonly agentVersion: string;
  /** The provisioned root envelopes from the configuration, oldest first. */
  readonly trustRoots: readonly Uint8Array[];
  readonly origin: Origin;
  readonly applier: ApplierPort;
  readonly notifier: RuntimeNotifier;
  readonly store: StateStore;
  readonly audit: AuditSink;
  readonly clock: () => Date;
  readonly logger: Logger;
  readonly metrics: MetricsSink;
  readonly onProgress?: (event: ProgressInfo) => void;
  /** How long a remembered ETag is sent before latest.json is fetched in full again; default 10 minutes. */
  readonly etagMaxAgeMs?: number;
}

interface ApplyOptions {
  readonly reason: 'sync' | 'rollback' | 'recover';
  readonly pinUntilAbove?: number;
  /** Restarts that have tried this apply before (carried in the journal). */
  readonly recoveries?: number;
}

/**
 * The sync state machine: check the origin, verify, apply, notify, record. It holds no timers;
 * the daemon (loop.ts) decides when to call it, so every decision here is testable with fakes.
 */
export class SyncEngine {
  private root: TrustedRoot | null = null;
  private stateLock: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: EngineDeps) {}

  private now(): string {
    return this.deps.clock().toISOString();
  }

  /** Finishes an apply a crash interrupted: toward its target from what really runs, or back to the last-known-good. */
  async recover(signal?: AbortSignal): Promise<SyncOutcome | null> {
    const { store, audit } = this.deps;
    await this.repairLastKnownGood();
    const journal = await store.readJournal();
    if (journal === null) return null;
    const state = await store.read();
    if (state.applied?.digest === journal.to.digest) {
      await store.clearJournal();
      await audit.append('recover', { digest: journal.to.digest, resolution: 'already recorded' });
      return null;
    }
    const bytes = await store.getEnvelope(journal.to.digest);
    const target = bytes ? this.readStored(bytes) : null;
    if (target === null || bytes === null) {
      await audit.append('recover', { digest: journal.to.digest, resolution: 'target envelope missing; restoring the last-known-good' });
      await this.restore(state.applied, 'recover');
      await store.clearJournal();
      return { result: 'failed', code: 'STATE_CORRUPT', message: `journal names ${journal.to.digest}, which is not in the state directory`, digest: journal.to.digest };
    }
    if (journal.recoveries >= this.deps.retryBudget) {
      // Every restart died in this apply: stop trying it, go back, and fail the digest.
      await audit.append('recover', { digest: journal.to.digest, recoveries: journal.recoveries, resolution: 'too many interrupted attempts; restoring the last-known-good' });
      await this.restore(state.applied, 'recover');
      await store.clearJournal();
      const message = `the apply of ${journal.to.digest} was interrupted ${journal.recoveries} times`;
      for (let i = 0; i < this.deps.retryBudget; i++) await this.recordFailure(journal.to, 'APPLY_INTERRUPTED', message);
      return { result: 'failed', code: 'APPLY_INTERRUPTED', message, digest: journal.to.digest };
    }
    await audit.append('recover', { digest: journal.to.digest, from: journal.from?.digest ?? null, reason: journal.reason, recoveries: journal.recoveries + 1, resolution: 'finishing the interrupted apply' });
    const latest = state.latest?.sequence ?? 0;
    const pin = journal.reason === 'rollback' ? Math.max(state.high_water?.sequence ?? 0, latest) : undefined;
    return this.apply({ verified: target, bytes }, signal, {
      reason: journal.reason,
      recoveries: journal.recoveries + 1,
      ...(pin === undefined ? {} : { pinUntilAbove: pin }),
    });
  }

  /** last-known-good.json follows state.json; a crash between the two writes is mended here. */
  private async repairLastKnownGood(): Promise<void> {
    const { store } = this.deps;
    const applied = (await store.read()).applied;
    if (applied === null) return;
    const bytes = await store.getEnvelope(applied.digest);
    if (bytes === null) return;
    const current = await readFile(store.paths.lastKnownGood).catch(() => null);
    if (current === null || !Buffer.from(bytes).equals(current)) await store.putLastKnownGood(bytes);
  }

  /** One whole cycle: check, and apply what the check found. */
  async syncOnce(signal?: AbortSignal): Promise<SyncOutcome> {
    const check = await this.check(signal);
    const outcome = check.kind === 'done' ? check.outcome : await this.apply(check.candidate, signal, { reason: 'sync' });
    this.deps.metrics.syncResult(outcomeCode(outcome));
    return outcome;
  }

  /**
   * Polls latest.json and, when it points at something new, fetches and verifies it. Returns
   * the verified candidate without applying it, so the daemon can cancel an older apply first.
   */
  async check(signal?: AbortSignal, options: { inProgress?: SnapshotRef | null } = {}): Promise<CheckResult> {
    const { origin, store, audit } = this.deps;
    const before = await store.read();
    const checkedAt = this.now();

    let hint: SnapshotRef;
    try {
      // An ETag made of mtime and size (nginx) can stay the same across a change; asking
      // without it now and then bounds how long such a change can hide.
      const fresh = before.latest_at !== null && this.deps.clock().getTime() - Date.parse(before.latest_at) < (this.deps.etagMaxAgeMs ?? 600_000);
      const latest = await origin.latest(fresh ? before.etag : null, signal);
      if (latest.status === 'ok') {
        this.deps.metrics.bytesDownloaded('latest', latest.bytes);
        hint = { digest: latest.hint.config_digest, sequence: latest.hint.sequence };
        if (before.latest?.digest !== hint.digest) await audit.append('fetch', { what: 'latest', digest: hint.digest, sequence: hint.sequence });
        const seen = hint;
        await this.update((s) => ({ ...s, etag: latest.etag, latest: seen, latest_at: checkedAt, last_check: checkedAt, last_success_check: checkedAt }));
      } else if (before.latest !== null) {
        hint = before.latest;
        await this.update((s) => ({ ...s, last_check: checkedAt, last_success_check: checkedAt }));
      } else {
        // A 304 with no remembered hint cannot be acted on: forget the ETag and ask again next time.
        await this.update((s) => ({ ...s, etag: null, last_check: checkedAt, last_success_check: checkedAt }));
        return this.done({ result: 'unchanged', digest: before.applied?.digest ?? null });
      }
    } catch (error) {
      const code = errorCode(error);
      const message = errorMessage(error);
      await this.update((s) => ({ ...s, last_check: checkedAt, last_error: { code, message, at: checkedAt } }));
      await audit.append('fetch', { what: 'latest', ok: false, code, message });
      return this.done({ result: 'failed', code, message });
    }
    const state = await store.read();

    if (state.applied?.digest === hint.digest) return this.done({ result: 'unchanged', digest: hint.digest });
    if (options.inProgress?.digest === hint.digest) return this.done({ result: 'unchanged', digest: hint.digest });
    if (state.pinned !== null && hint.sequence <= state.pinned.until_above) {
      return this.done({ result: 'pinned', digest: state.pinned.digest, latest: hint.digest });
    }
    const failure = state.failures[hint.digest];
    if (failure?.failed) {
      return this.done({ result: 'budget-exhausted', digest: hint.digest, code: failure.code, message: failure.message });
    }
    if (state.not_eligible.includes(hint.digest)) return this.done({ result: 'not-eligible', digest: hint.digest });

    let bytes: Uint8Array;
    let verified: VerifiedSnapshot;
    try {
      bytes = await origin.snapshot(hint.digest, signal);
      this.deps.metrics.bytesDownloaded('snapshot', bytes.byteLength);
      await audit.append('fetch', { what: 'snapshot', digest: hint.digest, bytes: bytes.byteLength });
      const root = await this.trustedRoot(signal);
      verified = await verifySnapshot({
        envelope: bytes,
        root,
        network: this.deps.network,
        applied: state.high_water,
        expectedDigest: hint.digest,
        now: this.deps.clock(),
        maxBytes: this.deps.maxSnapshotBytes,
      });
    } catch (error) {
      const code = errorCode(error);
      const message = errorMessage(error);
      if (TRANSPORT_CODES.has(code)) {
        await audit.append('fetch', { what: 'snapshot', digest: hint.digest, ok: false, code, message });
        await this.update((s) => ({ ...s, last_error: { code, message, at: checkedAt, digest: hint.digest } }));
        return this.done({ result: 'failed', code, message, digest: hint.digest });
      }
      await audit.append('refused', { digest: hint.digest, sequence: hint.sequence, code, message });
      await this.recordFailure(hint, code, message);
      return this.done({ result: 'refused', code, message, digest: hint.digest });
    }

    await store.putEnvelope(verified.digest, bytes);
    await this.update((s) =>
      s.history.some((h) => h.digest === verified.digest)
        ? s
        : { ...s, history: [...s.history, { digest: verified.digest, sequence: verified.snapshot.sequence, verified_at: checkedAt, applied_at: null }] },
    );
    await audit.append('verified', { digest: verified.digest, sequence: verified.snapshot.sequence, signers: verified.signers });

    if (options.inProgress && verified.snapshot.sequence <= options.inProgress.sequence) {
      return this.done({ result: 'unchanged', digest: options.inProgress.digest });
    }
    if (!isRolloutEligible(this.deps.nodeId, verified.digest, verified.snapshot)) {
      await audit.append('not-eligible', { digest: verified.digest, sequence: verified.snapshot.sequence, percent: verified.snapshot.rollout?.percent ?? 100 });
      await this.update((s) => ({ ...s, not_eligible: [...s.not_eligible.slice(-31), verified.digest] }));
      return this.done({ result: 'not-eligible', digest: verified.digest });
    }
    return { kind: 'candidate', candidate: { verified, bytes } };
  }

  /**
   * Plans and executes one verified snapshot, tells the runtime, and records the digest last.
   * Any failure leaves the last-known-good running and is recorded with its code.
   */
  async apply(candidate: Candidate, signal: AbortSignal | undefined, options: ApplyOptions): Promise<SyncOutcome> {
    const { store, audit, applier, logger } = this.deps;
    const { verified, bytes } = candidate;
    const target: ApplyTarget = { snapshot: verified.snapshot, digest: verified.digest };
    const ref: SnapshotRef = { digest: verified.digest, sequence: verified.snapshot.sequence };
    const state = await store.read();
    const previous = state.applied ? await this.loadTarget(state.applied.digest) : null;

    await this.noteUpdates(target, previous);

    let plan: Awaited<ReturnType<ApplierPort['plan']>>;
    try {
      plan = await applier.plan(target, previous);
    } catch (error) {
      return this.applyFailed(ref, error, 'plan');
    }
    await audit.append('plan', { digest: ref.digest, sequence: ref.sequence, reason: options.reason, steps: plan.lines });
    await store.writeJournal({ from: state.applied, to: ref, reason: options.reason, started_at: this.now(), recoveries: options.recoveries ?? 0 });
    await audit.append('apply-started', { digest: ref.digest, sequence: ref.sequence, from: state.applied?.digest ?? null, steps: plan.steps.length });

    const started = Date.now();
    const seen = new Map<string, number>();
    const onProgress = (event: ProgressInfo) => {
      // Progress events carry totals so far; the metric counts what is new in each.
      const key = `${event.kind}:${event.name}`;
      const delta = event.bytesDone - (seen.get(key) ?? 0);
      seen.set(key, event.bytesDone);
      if (delta > 0) this.deps.metrics.bytesDownloaded(event.kind, delta);
      this.deps.onProgress?.(event);
    };
    try {
      await applier.execute(plan, { signal, onProgress });
    } catch (error) {
      const code = errorCode(error);
      const rolledBack = (error as { rolledBack?: unknown }).rolledBack === true;
      if (signal?.aborted) {
        await audit.append('apply-cancelled', { digest: ref.digest, code, rolled_back: rolledBack });
        if (!rolledBack) await this.restore(state.applied, 'cancelled');
        await store.clearJournal();
        return { result: 'cancelled', digest: ref.digest };
      }
      await audit.append('apply-failed', { digest: ref.digest, sequence: ref.sequence, code, message: errorMessage(error), rolled_back: rolledBack });
      if (!rolledBack) await this.restore(state.applied, 'apply-failed');
      else if (state.applied) await audit.append('rollback', { to: state.applied.digest, from: ref.digest, reason: 'apply-failed', by: 'applier' });
      await store.clearJournal();
      return this.applyFailed(ref, error, 'execute', false);
    }
    const seconds = (Date.now() - started) / 1000;
    this.deps.metrics.applyDuration(seconds);

    const runtime = await this.notify(target);
    if (runtime.outcome === 'nack') {
      await this.restore(state.applied, 'runtime-nack');
      await store.clearJournal();
      const message = `runtime refused ${ref.digest}: ${runtime.code ?? 'NACK'}: ${runtime.message ?? ''}`.trim();
      await this.recordFailure(ref, 'RUNTIME_NACK', message);
      return { result: 'failed', code: 'RUNTIME_NACK', message, digest: ref.digest };
    }

    // The digest is recorded last: a crash before this line replays the journal instead.
    await store.putLastKnownGood(bytes);
    const appliedAt = this.now();
    await this.update((s) => {
      const highWater = s.high_water === null || ref.sequence > s.high_water.sequence ? ref : s.high_water;
      const failures = { ...s.failures };
      delete failures[ref.digest];
      const history = s.history.some((h) => h.digest === ref.digest)
        ? s.history.map((h) => (h.digest === ref.digest ? { ...h, applied_at: appliedAt } : h))
        : [...s.history, { ...ref, verified_at: appliedAt, applied_at: appliedAt }];
      return {
        ...s,
        applied: ref,
        high_water: highWater,
        pinned: options.pinUntilAbove === undefined ? null : { ...ref, until_above: options.pinUntilAbove, at: appliedAt },
        failures,
        history,
        last_error: null,
        runtime: { digest: ref.digest, outcome: runtime.outcome, at: appliedAt },
      };
    });
    await store.clearJournal();
    await this.update((s) => store.prune(s));
    await audit.append('applied', { digest: ref.digest, sequence: ref.sequence, reason: options.reason, duration_ms: Math.round(seconds * 1000), runtime: runtime.outcome });
    this.deps.metrics.appliedSequence(ref.sequence);
    logger.info({ digest: ref.digest, sequence: ref.sequence, reason: options.reason }, 'applied');
    return { result: 'applied', digest: ref.digest, sequence: ref.sequence };
  }

  /**
   * An operator's rollback to a verified envelope from history: allowed to go back in sequence,
   * then pinned until the network publishes a sequence above everything seen so far.
   */
  async rollback(to: string | undefined, signal?: AbortSignal): Promise<SyncOutcome> {
    const { store, audit } = this.deps;
    const state = await store.read();
    const chosen = to ?? previousApplied(state);
    if (chosen === undefined) throw new AgentError('NOT_IN_HISTORY', 'there is no earlier applied snapshot in history to roll back to');
    const digest = chosen.startsWith('sha256:') ? chosen : `sha256:${chosen}`;
    const pin = Math.max(state.high_water?.sequence ?? 0, state.latest?.sequence ?? 0);
    if (state.applied?.digest === digest) {
      // Already running (an apply in flight may just have been cancelled): only pin it.
      const applied = state.applied;
      await this.update((s) => ({ ...s, pinned: { ...applied, until_above: pin, at: this.now() } }));
      await audit.append('rollback', { by: 'operator', from: digest, to: digest, sequence: applied.sequence, pinned_until_above: pin, note: 'already applied; pinned' });
      return { result: 'applied', digest, sequence: applied.sequence };
    }
    const bytes = await store.getEnvelope(digest);
    if (bytes === null) throw new AgentError('NOT_IN_HISTORY', `${digest} is not among the verified envelopes kept in ${store.paths.envelopes}`);
    // Re-verified against the current root, without the sequence floor: the operator asked to go back.
    const verified = await verifySnapshot({
      envelope: bytes,
      root: await this.trustedRoot(signal, false),
      network: this.deps.network,
      applied: null,
      expectedDigest: digest,
      now: this.deps.clock(),
      maxBytes: this.deps.maxSnapshotBytes,
    });
    await audit.append('rollback', { by: 'operator', from: state.applied?.digest ?? null, to: digest, sequence: verified.snapshot.sequence, pinned_until_above: pin });
    return this.apply({ verified, bytes }, signal, { reason: 'rollback', pinUntilAbove: pin });
  }

  /**
   * Verifies envelope bytes as a sync would (root chain, network, expiry, sequence floor)
   * without recording anything, for `plan`.
   */
  async verifyEnvelope(bytes: Uint8Array, options: { expectedDigest?: string; online?: boolean } = {}): Promise<VerifiedSnapshot> {
    const state = await this.deps.store.read();
    return verifySnapshot({
      envelope: bytes,
      root: await this.trustedRoot(undefined, options.online ?? false),
      network: this.deps.network,
      applied: state.high_water,
      ...(options.expectedDigest ? { expectedDigest: options.expectedDigest } : {}),
      now: this.deps.clock(),
      maxBytes: this.deps.maxSnapshotBytes,
    });
  }

  /** The steps an apply of this envelope (or of what latest.json names) would run, without running them. */
  async planFor(target: ApplyTarget): Promise<readonly string[]> {
    const state = await this.deps.store.read();
    const previous = state.applied ? await this.loadTarget(state.applied.digest) : null;
    return (await this.deps.applier.plan(target, previous)).lines;
  }

  /** The body of a heartbeat (SPEC §5). */
  async heartbeatBody(status: string): Promise<Record<string, unknown>> {
    const state = await this.deps.store.read();
    return {
      config_digest: state.applied?.digest ?? null,
      sequence: state.applied?.sequence ?? null,
      status,
      agent_version: this.deps.agentVersion,
      last_error: state.last_error,
      pending_update: state.pending_agent_update,
      pinned: state.pinned !== null,
      sent_at: this.now(),
    };
  }

  /** The applied snapshot, read back from the state directory. */
  async appliedTarget(): Promise<ApplyTarget | null> {
    const state = await this.deps.store.read();
    return state.applied ? this.loadTarget(state.applied.digest) : null;
  }

  private async notify(target: ApplyTarget): Promise<NotifyResult> {
    const { audit, notifier, applier } = this.deps;
    let result: NotifyResult;
    try {
      result = await notifier.notify(applier.environment(target));
    } catch (error) {
      result = { outcome: 'nack', acks: [], code: errorCode(error), message: errorMessage(error) };
    }
    const type = result.outcome === 'ack' ? 'runtime-ack' : result.outcome === 'nack' ? 'runtime-nack' : 'runtime-none';
    await audit.append(type, {
      digest: target.digest,
      acks: result.acks.map((a) => ({ runtime: a.runtimeId, ok: a.ok, code: a.code ?? null })),
      ...(result.code ? { code: result.code } : {}),
      ...(result.message ? { message: result.message } : {}),
    });
    return result;
  }

  /** Puts the last-known-good back (plan from reality toward it) and tells the runtime. */
  private async restore(lkg: SnapshotRef | null, reason: string): Promise<void> {
    const { audit, applier, logger } = this.deps;
    if (lkg === null) {
      await audit.append('rollback', { to: null, reason, note: 'no snapshot was applied before; nothing to restore' });
      return;
    }
    const target = await this.loadTarget(lkg.digest);
    if (target === null) {
      await audit.append('rollback', { to: lkg.digest, reason, ok: false, code: 'STATE_CORRUPT', message: 'the last-known-good envelope is missing' });
      return;
    }
    try {
      const plan = await applier.plan(target, null);
      await applier.execute(plan, {});
      await audit.append('rollback', { to: lkg.digest, reason, ok: true, steps: plan.lines });
      await this.notify(target);
    } catch (error) {
      logger.error({ code: errorCode(error), err: errorMessage(error) }, 'restoring the last-known-good failed');
      await audit.append('rollback', { to: lkg.digest, reason, ok: false, code: errorCode(error), message: errorMessage(error) });
    }
  }

  private async applyFailed(ref: SnapshotRef, error: unknown, stage: string, audited = true): Promise<SyncOutcome> {
    const code = errorCode(error);
    const message = errorMessage(error);
    if (audited) await this.deps.audit.append('apply-failed', { digest: ref.digest, sequence: ref.sequence, stage, code, message });
    await this.recordFailure(ref, code, message);
    return { result: 'failed', code, message, digest: ref.digest };
  }

  /** Counts a failure against a digest's retry budget; past the budget the digest is failed until a newer one appears. */
  private async recordFailure(ref: SnapshotRef, code: string, message: string): Promise<void> {
    const at = this.now();
    let exhausted = false;
    await this.update((s) => {
      const attempts = (s.failures[ref.digest]?.attempts ?? 0) + 1;
      exhausted = attempts >= this.deps.retryBudget;
      // Only the newest few digests are remembered: an older one can never be applied anyway.
      const kept = Object.entries(s.failures).slice(-15);
      return {
        ...s,
        failures: { ...Object.fromEntries(kept), [ref.digest]: { sequence: ref.sequence, attempts, code, message, failed: exhausted, at } },
        last_error: { code, message, at, digest: ref.digest },
      };
    });
    if (exhausted) {
      await this.deps.audit.append('budget-exhausted', { digest: ref.digest, attempts: this.deps.retryBudget, code });
      this.deps.logger.warn({ digest: ref.digest, code }, 'retry budget spent; this digest is failed until a newer one is published');
    }
  }

  /**
   * `updates.agent` is detected, audited and shown in status (self-update is not done here);
   * `updates.runtime` is applied like any container change, so it is audited with whether a
   * container of the snapshot runs exactly that image.
   */
  private async noteUpdates(target: ApplyTarget, previous: ApplyTarget | null): Promise<void> {
    const runtime = target.snapshot.updates?.runtime;
    if (runtime && runtime.version !== previous?.snapshot.updates?.runtime?.version) {
      const container = target.snapshot.runtime.containers.find((c) => c.image === runtime.image && c.digest === runtime.digest);
      await this.deps.audit.append('runtime-update', {
        version: runtime.version,
        image: runtime.image,
        image_digest: runtime.digest,
        from: previous?.snapshot.updates?.runtime?.version ?? null,
        container: container?.name ?? null,
        seen_in: target.digest,
      });
    }
    const update = target.snapshot.updates?.agent;
    if (!update || update.version === this.deps.agentVersion) return;
    const state = await this.deps.store.read();
    if (state.pending_agent_update?.version === update.version && state.pending_agent_update.digest === update.digest) return;
    await this.update((s) => ({ ...s, pending_agent_update: { version: update.version, image: update.image, digest: update.digest, seen_in: target.digest, at: this.now() } }));
    await this.deps.audit.append('agent-update', { version: update.version, image: update.image, image_digest: update.digest, current: this.deps.agentVersion, seen_in: target.digest });
  }

  /**
   * The newest trusted root: the provisioned chain, the rotations learned before, and any the
   * origin now has (SPEC §4), each step checked by the snapshot package.
   */
  private async trustedRoot(signal?: AbortSignal, online = true): Promise<TrustedRoot> {
    const { store, origin, audit } = this.deps;
    if (this.root === null) {
      let root = walkRootChain(this.deps.trustRoots);
      for (const bytes of await store.cachedRoots()) {
        const version = rootVersion(bytes);
        if (version !== null && version === root.root.version + 1) root = rotateRoot(root, bytes);
      }
      this.root = root;
    }
    if (!online) return this.root;
    for (;;) {
      const next = await origin.root(this.root.root.version + 1, signal);
      if (next === null) break;
      this.deps.metrics.bytesDownloaded('root', next.byteLength);
      const rotated = rotateRoot(this.root, next);
      await store.putRoot(rotated.root.version, next);
      await audit.append('root-rotated', { from: this.root.root.version, to: rotated.root.version });
      this.root = rotated;
    }
    return this.root;
  }

  private async loadTarget(digest: string): Promise<ApplyTarget | null> {
    const bytes = await this.deps.store.getEnvelope(digest);
    if (bytes === null) return null;
    const stored = this.readStored(bytes);
    return stored ? { snapshot: stored.snapshot, digest: stored.digest } : null;
  }

  /** Reads an envelope the Agent verified and stored itself; the state directory is trusted. */
  private readStored(bytes: Uint8Array): VerifiedSnapshot | null {
    try {
      const payload = envelopePayload(parseEnvelope(bytes, Number.MAX_SAFE_INTEGER));
      const snapshot: Snapshot = parseSnapshotValue(parseCanonical(payload, 'stored snapshot'));
      return { snapshot, digest: configDigest(payload), payload, signers: [] };
    } catch {
      return null;
    }
  }

  /** Read-modify-write of state.json, one at a time: a check may run while an apply is in progress. */
  private async update(change: (state: AgentState) => AgentState | Promise<AgentState>): Promise<void> {
    const run = this.stateLock.then(async () => {
      const next = await change(await this.deps.store.read());
      await this.deps.store.write(next);
    });
    this.stateLock = run.catch(() => undefined);
    return run;
  }

  private done(outcome: SyncOutcome): CheckResult {
    return { kind: 'done', outcome };
  }
}

/** The code a sync outcome is counted under in metrics and printed by the CLI. */
export function outcomeCode(outcome: SyncOutcome): string {
  switch (outcome.result) {
    case 'refused':
    case 'failed':
      return outcome.code;
    case 'budget-exhausted':
      return 'RETRY_BUDGET_EXHAUSTED';
    default:
      return outcome.result.toUpperCase().replace(/-/g, '_');
  }
}

/** The snapshot applied before the current one, the default target of an operator's rollback. */
function previousApplied(state: AgentState): string | undefined {
  return state.history
    .filter((h) => h.applied_at !== null && h.digest !== state.applied?.digest)
    .sort((a, b) => (b.applied_at ?? '').localeCompare(a.applied_at ?? '') || b.sequence - a.sequence)[0]?.digest;
}

function rootVersion(bytes: Uint8Array): number | null {
  try {
    const value = parseCanonical(envelopePayload(parseEnvelope(bytes)), 'root') as { version?: unknown };
    return typeof value.version === 'number' ? value.version : null;
  } catch {
    return null;
  }
}
