import { type UpdateTarget, type VerifiedSnapshot, isRolloutEligible, verifySnapshot } from '@resultity/snapshot';

import { type ApplyOptions, ApplyTransaction } from './apply-transaction.js';
import type { AuditSink } from './audit.js';
import { decide } from './decide.js';
import { checkConfigDigest } from './digest.js';
import { AgentError, errorCode, errorMessage, isRetryable } from './errors.js';
import type { LatestAnswer, Origin } from './origin-client.js';
import type { ApplierPort, ApplyTarget, Logger, MetricsSink, ProgressInfo, RuntimeNotifier } from './ports.js';
import type { AgentState, SnapshotRef, StateStore } from './state.js';
import { StateKeeper } from './state-keeper.js';
import { rebuildState } from './state-rebuild.js';
import { readStored } from './stored-envelope.js';
import { forgetEtag, markNotEligible, markVerified, noteError, passesPin, unpin } from './transitions.js';
import { TrustStore } from './trust-store.js';

export type { ApplyOptions } from './apply-transaction.js';

/** Refusals that depend on the node's wall clock (SPEC §3 expires_at, §4 an expired root), not on the bytes. */
const CLOCK_REFUSALS: ReadonlySet<string> = new Set(['EXPIRED', 'ROOT_EXPIRED']);
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

/** What `unpin` did: lifted a pin, or found none. */
export type UnpinOutcome = { readonly unpinned: true; readonly digest: string; readonly untilAbove: number } | { readonly unpinned: false };

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
  /** Told of every verified snapshot's `updates.agent` (the self-updater decides, by digest, whether it is news). */
  readonly onAgentUpdate?: (update: UpdateTarget, seenIn: string) => void;
  /** How long a remembered ETag is sent before latest.json is fetched in full again; default 10 minutes. */
  readonly etagMaxAgeMs?: number;
  /** Rebuild a corrupt state.json (default); false for a process that does not hold the lock, which then gets STATE_CORRUPT. */
  readonly repairCorruptState?: boolean;
}

/**
 * The sync cycle as a sequence of parts: read the hint, decide (decide.ts), fetch and verify
 * against the trust store (trust-store.ts), then apply as a transaction
 * (apply-transaction.ts); every state change is a pure transition (transitions.ts) written
 * through the state keeper. It holds no timers; the daemon (loop.ts) decides when to call it.
 */
export class SyncEngine {
  private readonly state: StateKeeper;
  private readonly trust: TrustStore;
  private readonly transaction: ApplyTransaction;
  /** When latest.json last answered 200 in this process; the ETag is not trusted for longer than etagMaxAgeMs. */
  private latestFetchedAt: number | null = null;
  /**
   * Stored envelopes parsed before, by digest, with their bytes: an apply reads the previous
   * and the kept snapshots back several times, and parsing one costs more than reading it.
   * The file is still read each time, so a missing or changed envelope is seen as before.
   */
  private readonly parsed = new Map<string, { bytes: Uint8Array; target: ApplyTarget }>();

  constructor(private readonly deps: EngineDeps) {
    this.state = new StateKeeper(deps.store, deps.audit, (cause) =>
      deps.repairCorruptState === false ? Promise.reject(cause) : rebuildState(cause, { ...deps, trust: this.trust, now: () => this.now() }),
    );
    this.trust = new TrustStore({
      provisioned: deps.trustRoots,
      cachedRoots: () => deps.store.cachedRoots(),
      putRoot: (version, bytes) => deps.store.putRoot(version, bytes),
      fetchRoot: (version, signal) => deps.origin.root(version, signal),
      audit: deps.audit,
      onBytes: (bytes) => deps.metrics.bytesDownloaded('root', bytes),
    });
    this.transaction = new ApplyTransaction({
      applier: deps.applier,
      notifier: deps.notifier,
      state: this.state,
      store: deps.store,
      audit: deps.audit,
      metrics: deps.metrics,
      logger: deps.logger,
      retryBudget: deps.retryBudget,
      now: () => this.now(),
      loadTarget: (digest) => this.loadTarget(digest),
      keptTargets: () => this.keptTargets(),
      ...(deps.onProgress ? { onProgress: deps.onProgress } : {}),
    });
  }

  private now(): string {
    return this.deps.clock().toISOString();
  }

  /** The state as status and heartbeats show it (a corrupt state.json is rebuilt first). */
  readState(): Promise<AgentState> {
    return this.state.read();
  }

  /** Finishes an apply a crash interrupted: toward its target from what really runs, or back to the last-known-good. */
  async recover(signal?: AbortSignal): Promise<SyncOutcome | null> {
    const { store, audit } = this.deps;
    await this.repairLastKnownGood();
    const journal = await store.readJournal();
    if (journal === null) {
      // Entries written since the last change (the daemon's `start`) are anchored now.
      await this.state.anchor();
      return null;
    }
    const state = await this.state.read();
    if (state.applied?.digest === journal.to.digest) {
      await store.clearJournal();
      await audit.append('recover', { digest: journal.to.digest, resolution: 'already recorded' });
      await this.state.anchor();
      return null;
    }
    const bytes = await store.getEnvelope(journal.to.digest).catch(() => null);
    const target = bytes ? readStored(bytes) : null;
    if (target === null || bytes === null) {
      await audit.append('recover', { digest: journal.to.digest, resolution: 'target envelope missing; restoring the last-known-good' });
      await this.transaction.restore(state.applied, 'recover');
      await store.clearJournal();
      await this.state.anchor();
      return {
        result: 'failed',
        code: 'STATE_CORRUPT',
        message: `journal names ${journal.to.digest}, which is not in the state directory`,
        digest: journal.to.digest,
      };
    }
    if (journal.recoveries >= this.deps.retryBudget) {
      // Every restart died in this apply: stop trying it, go back, and fail the digest.
      await audit.append('recover', {
        digest: journal.to.digest,
        recoveries: journal.recoveries,
        resolution: 'too many interrupted attempts; restoring the last-known-good',
      });
      await this.transaction.restore(state.applied, 'recover');
      await store.clearJournal();
      const message = `the apply of ${journal.to.digest} was interrupted ${journal.recoveries} times`;
      await this.transaction.recordExhausted(journal.to, 'APPLY_INTERRUPTED', message);
      await this.state.anchor();
      return { result: 'failed', code: 'APPLY_INTERRUPTED', message, digest: journal.to.digest };
    }
    await audit.append('recover', {
      digest: journal.to.digest,
      from: journal.from?.digest ?? null,
      reason: journal.reason,
      recoveries: journal.recoveries + 1,
      resolution: 'finishing the interrupted apply',
    });
    return this.apply({ verified: target, bytes }, signal, { reason: journal.reason, recoveries: journal.recoveries + 1, pin: journal.reason === 'rollback' });
  }

  /** last-known-good.json follows state.json; a crash between the two writes is mended here. */
  private async repairLastKnownGood(): Promise<void> {
    const { store } = this.deps;
    const applied = (await this.state.read()).applied;
    if (applied === null) return;
    const bytes = await store.getEnvelope(applied.digest).catch(() => null);
    if (bytes === null) return;
    const current = await store.getLastKnownGood().catch(() => null);
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
   * A check that finds nothing new writes nothing durable.
   */
  async check(signal?: AbortSignal, options: { inProgress?: SnapshotRef | null; heard?: LatestAnswer } = {}): Promise<CheckResult> {
    const auditedBefore = this.deps.audit.head()?.index;
    const hint = await this.readHint(signal, options.heard ?? null);
    if ('outcome' in hint) return this.done(hint.outcome);
    const state = await this.state.read();
    const decision = decide(state, hint.ref, options.inProgress ?? null);
    // Fetching ends in a state write; anything else anchors what this check audited of latest.json now.
    if (decision.action !== 'fetch' && this.deps.audit.head()?.index !== auditedBefore) await this.state.anchor();
    switch (decision.action) {
      case 'unchanged':
        return this.done({ result: 'unchanged', digest: decision.digest });
      case 'pinned':
        return this.done({ result: 'pinned', digest: decision.digest, latest: decision.latest });
      case 'budget-exhausted':
        return this.done({ result: 'budget-exhausted', digest: decision.digest, code: decision.code, message: decision.message });
      case 'not-eligible':
        return this.done({ result: 'not-eligible', digest: decision.digest });
      case 'fetch':
        return this.fetchAndVerify(decision.hint, signal, options.inProgress ?? null);
    }
  }

  /**
   * latest.json, or the remembered hint on a 304; an outcome when there is nothing to act on.
   * `heard`: latest.json as a long-poll was just answered with it (counted there), not asked again.
   */
  private async readHint(signal: AbortSignal | undefined, heard: LatestAnswer | null): Promise<{ ref: SnapshotRef } | { outcome: SyncOutcome }> {
    const { origin, audit, clock } = this.deps;
    const before = await this.state.read();
    const checkedAt = this.now();
    // An ETag made of mtime and size (nginx) can stay the same across a change; asking
    // without it now and then bounds how long such a change can hide.
    const fetchedAt = this.latestFetchedAt ?? (before.latest_at === null ? null : Date.parse(before.latest_at));
    const fresh = fetchedAt !== null && clock().getTime() - fetchedAt < (this.deps.etagMaxAgeMs ?? 600_000);
    let latest: Awaited<ReturnType<Origin['latest']>>;
    try {
      latest = heard ?? (await origin.latest(fresh ? before.etag : null, signal));
    } catch (error) {
      const code = errorCode(error);
      const message = errorMessage(error);
      this.state.noteCheck(checkedAt, false);
      // Audited first, so the one write of the state anchors the entry too.
      await audit.append('fetch', { what: 'latest', ok: false, code, message });
      await this.state.update((s) => noteError(s, { code, message, at: checkedAt }));
      return { outcome: { result: 'failed', code, message } };
    }
    this.state.noteCheck(checkedAt, true);
    if (latest.status === 'ok') {
      if (heard === null) this.deps.metrics.bytesDownloaded('latest', latest.bytes);
      this.latestFetchedAt = clock().getTime();
      const ref = { digest: latest.hint.config_digest, sequence: latest.hint.sequence };
      if (before.latest?.digest !== ref.digest || before.latest.sequence !== ref.sequence || before.etag !== latest.etag) {
        if (before.latest?.digest !== ref.digest) await audit.append('fetch', { what: 'latest', digest: ref.digest, sequence: ref.sequence });
        this.state.noteLatest(ref, latest.etag, checkedAt);
      }
      return { ref };
    }
    if (before.latest !== null) return { ref: before.latest };
    // A 304 with no remembered hint cannot be acted on: forget the ETag and ask again next time.
    await this.state.update(forgetEtag);
    return { outcome: { result: 'unchanged', digest: before.applied?.digest ?? null } };
  }

  /**
   * Fetches the hinted snapshot and verifies it. A transport failure (retryable: the origin,
   * a mirror or the root chain did not answer) backs off without spending the digest's retry
   * budget; only a refusal of the bytes counts against it.
   */
  private async fetchAndVerify(hint: SnapshotRef, signal: AbortSignal | undefined, inProgress: SnapshotRef | null): Promise<CheckResult> {
    const { origin, store, audit } = this.deps;
    const at = this.now();
    let bytes: Uint8Array;
    let verified: VerifiedSnapshot;
    try {
      bytes = await origin.snapshot(hint.digest, signal);
      this.deps.metrics.bytesDownloaded('snapshot', bytes.byteLength);
      await audit.append('fetch', { what: 'snapshot', digest: hint.digest, bytes: bytes.byteLength });
      const root = await this.trust.refresh(signal);
      const floor = (await this.state.read()).high_water;
      verified = await verifySnapshot({
        envelope: bytes,
        root,
        network: this.deps.network,
        applied: floor,
        expectedDigest: hint.digest,
        now: this.deps.clock(),
        maxBytes: this.deps.maxSnapshotBytes,
      });
    } catch (error) {
      const code = errorCode(error);
      const message = errorMessage(error);
      if (isRetryable(error)) {
        await audit.append('fetch', { what: 'snapshot', digest: hint.digest, ok: false, code, message });
        await this.state.update((s) => noteError(s, { code, message, at, digest: hint.digest }));
        return this.done({ result: 'failed', code, message, digest: hint.digest });
      }
      await audit.append('refused', { digest: hint.digest, sequence: hint.sequence, code, message });
      // An expiry is judged by this node's clock, not by the bytes: a clock that ran ahead and
      // is set right makes the same snapshot good again. Counting it would fail the digest for
      // good after retry_budget polls of a wrong clock; so it is reported and backed off from,
      // never counted.
      if (CLOCK_REFUSALS.has(code)) await this.state.update((s) => noteError(s, { code, message, at, digest: hint.digest }));
      else await this.transaction.recordFailure(hint, code, message);
      await this.state.anchor();
      return this.done({ result: 'refused', code, message, digest: hint.digest });
    }

    const ref = { digest: verified.digest, sequence: verified.snapshot.sequence };
    await store.putEnvelope(verified.digest, bytes);
    await audit.append('verified', { digest: ref.digest, sequence: ref.sequence, signers: verified.signers });
    const state = await this.state.update((s) => markVerified(s, ref, at));

    if (inProgress && ref.sequence <= inProgress.sequence) return this.done({ result: 'unchanged', digest: inProgress.digest });
    if (!passesPin(state, ref) && state.pinned !== null) return this.done({ result: 'pinned', digest: state.pinned.digest, latest: ref.digest });
    if (!isRolloutEligible(this.deps.nodeId, verified.digest, verified.snapshot)) {
      await audit.append('not-eligible', { digest: ref.digest, sequence: ref.sequence, percent: verified.snapshot.rollout?.percent ?? 100 });
      await this.state.update((s) => markNotEligible(s, ref.digest));
      return this.done({ result: 'not-eligible', digest: ref.digest });
    }
    return { kind: 'candidate', candidate: { verified, bytes } };
  }

  /**
   * Plans and executes one verified snapshot, tells the runtime, and records the digest last.
   * Any failure leaves the last-known-good running and is recorded with its code.
   */
  async apply(candidate: Candidate, signal: AbortSignal | undefined, options: ApplyOptions): Promise<SyncOutcome> {
    const { verified, bytes } = candidate;
    const target: ApplyTarget = { snapshot: verified.snapshot, digest: verified.digest };
    this.remember(bytes, target);
    const state = await this.state.read();
    const previous = state.applied ? await this.loadTarget(state.applied.digest) : null;
    await this.noteUpdates(target, previous);
    return this.transaction.run(target, bytes, previous, signal, options);
  }

  /**
   * An operator's rollback to a verified envelope from history: allowed to go back in sequence,
   * then pinned until a verified snapshot above everything applied so far appears.
   */
  async rollback(to: string | undefined, signal?: AbortSignal): Promise<SyncOutcome> {
    const { store, audit } = this.deps;
    const digest = to === undefined ? undefined : checkConfigDigest(to, 'rollback --to');
    const state = await this.state.read();
    const chosen = digest ?? previousApplied(state);
    if (chosen === undefined) throw new AgentError('NOT_IN_HISTORY', 'there is no earlier applied snapshot in history to roll back to');
    const untilAbove = Math.max(state.high_water?.sequence ?? 0, state.applied?.sequence ?? 0);
    if (state.applied?.digest === chosen) {
      // Already running (an apply in flight may just have been cancelled): only pin it.
      const applied = state.applied;
      await this.state.update((s) => ({ ...s, pinned: { ...applied, until_above: untilAbove, at: this.now() } }));
      await audit.append('rollback', {
        by: 'operator',
        from: chosen,
        to: chosen,
        sequence: applied.sequence,
        pinned_until_above: untilAbove,
        note: 'already applied; pinned',
      });
      await this.state.anchor();
      return { result: 'applied', digest: chosen, sequence: applied.sequence };
    }
    const bytes = await store.getEnvelope(chosen);
    if (bytes === null) throw new AgentError('NOT_IN_HISTORY', `${chosen} is not among the verified envelopes kept in ${store.paths.envelopes}`);
    // Re-verified against the current root, without the sequence floor: the operator asked to go back.
    const verified = await verifySnapshot({
      envelope: bytes,
      root: await this.trust.current(),
      network: this.deps.network,
      applied: null,
      expectedDigest: chosen,
      now: this.deps.clock(),
      maxBytes: this.deps.maxSnapshotBytes,
    });
    await audit.append('rollback', {
      by: 'operator',
      from: state.applied?.digest ?? null,
      to: chosen,
      sequence: verified.snapshot.sequence,
      pinned_until_above: untilAbove,
    });
    return this.apply({ verified, bytes }, signal, { reason: 'rollback', pin: true });
  }

  /** An operator lifts the pin of a rollback (audited); the next poll follows the network again. */
  async unpin(): Promise<UnpinOutcome> {
    const pinned = (await this.state.read()).pinned;
    if (pinned === null) return { unpinned: false };
    await this.deps.audit.append('unpin', { by: 'operator', digest: pinned.digest, until_above: pinned.until_above });
    await this.state.update(unpin);
    return { unpinned: true, digest: pinned.digest, untilAbove: pinned.until_above };
  }

  /**
   * Verifies envelope bytes as a sync would (root chain, network, expiry, sequence floor)
   * without recording anything, for `plan`.
   */
  async verifyEnvelope(bytes: Uint8Array, options: { expectedDigest?: string; online?: boolean } = {}): Promise<VerifiedSnapshot> {
    const state = await this.state.read();
    return verifySnapshot({
      envelope: bytes,
      root: options.online ? await this.trust.refresh() : await this.trust.current(),
      network: this.deps.network,
      applied: state.high_water,
      ...(options.expectedDigest ? { expectedDigest: options.expectedDigest } : {}),
      now: this.deps.clock(),
      maxBytes: this.deps.maxSnapshotBytes,
    });
  }

  /** The steps an apply of this envelope (or of what latest.json names) would run, without running them. */
  async planFor(target: ApplyTarget): Promise<readonly string[]> {
    const state = await this.state.read();
    const previous = state.applied ? await this.loadTarget(state.applied.digest) : null;
    const planned = await this.deps.applier.plan(target, previous);
    if (!planned.ok) throw Object.assign(new Error(planned.failure.message), { code: planned.failure.code });
    return planned.plan.lines;
  }

  /** The body of a heartbeat (SPEC §5); `audit_head` lets the network notice a log cut short. */
  async heartbeatBody(status: string): Promise<Record<string, unknown>> {
    const state = await this.state.read();
    return {
      config_digest: state.applied?.digest ?? null,
      sequence: state.applied?.sequence ?? null,
      status,
      agent_version: this.deps.agentVersion,
      last_error: state.last_error,
      pending_update: state.pending_agent_update,
      pinned: state.pinned !== null,
      audit_head: this.deps.audit.head() ?? state.audit_head,
      sent_at: this.now(),
    };
  }

  /**
   * The snapshots whose models collection keeps: the applied one, the one applied before it (an
   * operator's rollback goes there by default, and `plan` retained its models) and a pinned one.
   * Older envelopes are not kept: rolling back to one downloads its models again. `missing`
   * names an envelope the state points at but the state directory lacks; then nothing is kept
   * safely and nothing may be collected.
   */
  async keptTargets(): Promise<{ targets: ApplyTarget[] } | { missing: string }> {
    const state = await this.state.read();
    const digests = new Set([state.applied?.digest, previousApplied(state), state.pinned?.digest].filter((d): d is string => d !== undefined));
    const targets: ApplyTarget[] = [];
    for (const digest of digests) {
      const target = await this.loadTarget(digest);
      if (target === null) return { missing: digest };
      targets.push(target);
    }
    return { targets };
  }

  /** The applied snapshot, read back from the state directory. */
  async appliedTarget(): Promise<ApplyTarget | null> {
    const state = await this.state.read();
    return state.applied ? this.loadTarget(state.applied.digest) : null;
  }

  /**
   * `updates.agent` is detected, audited and shown in status (self-update is not done here);
   * `updates.runtime` moves the containers that run its image to its digest (the applier's
   * `withRuntimeUpdate`), so it is audited with the container it moves, or none.
   */
  private async noteUpdates(target: ApplyTarget, previous: ApplyTarget | null): Promise<void> {
    const runtime = target.snapshot.updates?.runtime;
    if (runtime && runtime.version !== previous?.snapshot.updates?.runtime?.version) {
      const container = target.snapshot.runtime.containers.find((c) => c.image === runtime.image);
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
    if (update) this.deps.onAgentUpdate?.(update, target.digest);
    if (!update || update.version === this.deps.agentVersion) return;
    const state = await this.state.read();
    if (state.pending_agent_update?.version === update.version && state.pending_agent_update.digest === update.digest) return;
    await this.state.update((s) => ({
      ...s,
      pending_agent_update: { version: update.version, image: update.image, digest: update.digest, seen_in: target.digest, at: this.now() },
    }));
    await this.deps.audit.append('agent-update', {
      version: update.version,
      image: update.image,
      image_digest: update.digest,
      current: this.deps.agentVersion,
      seen_in: target.digest,
    });
  }

  private async loadTarget(digest: string): Promise<ApplyTarget | null> {
    const bytes = await this.deps.store.getEnvelope(digest).catch(() => null);
    if (bytes === null) return null;
    const known = this.parsed.get(digest);
    if (known !== undefined && Buffer.from(known.bytes).equals(bytes)) return known.target;
    const stored = readStored(bytes);
    if (stored === null) return null;
    const target = { snapshot: stored.snapshot, digest: stored.digest };
    this.remember(bytes, target);
    return target;
  }

  private remember(bytes: Uint8Array, target: ApplyTarget): void {
    this.parsed.delete(target.digest);
    // The few an apply looks at (applied, previous, pinned, the target): a bound, not a policy.
    if (this.parsed.size >= 8) this.parsed.delete(this.parsed.keys().next().value as string);
    this.parsed.set(target.digest, { bytes, target });
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
