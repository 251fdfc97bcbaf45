import type { AgentState, ErrorRecord, SnapshotRef } from './state.js';

/*
 * How the state changes, as pure functions AgentState -> AgentState. The engine decides when
 * each happens and writes the result; nothing here touches a file or a clock (times come in).
 */

/** Only the newest few failed digests are remembered: an older one can never be applied anyway. */
const FAILURES_KEPT = 16;
/** Digests outside the rollout, remembered so they are not fetched again on every poll. */
const NOT_ELIGIBLE_KEPT = 32;

/** latest.json answered 200 with a hint: remember it and the ETag it came with. */
export function noteLatest(state: AgentState, hint: SnapshotRef, etag: string | null, at: string): AgentState {
  return { ...state, etag, latest: hint, latest_at: at };
}

/** A check reached the origin. Kept in memory between real changes, so a 304 writes nothing. */
export function noteCheck(state: AgentState, at: string, reachedOrigin: boolean): AgentState {
  return { ...state, last_check: at, ...(reachedOrigin ? { last_success_check: at } : {}) };
}

/** A 304 with no remembered hint cannot be acted on: forget the ETag so the next poll asks in full. */
export function forgetEtag(state: AgentState): AgentState {
  return { ...state, etag: null };
}

export function noteError(state: AgentState, error: ErrorRecord): AgentState {
  return { ...state, last_error: error };
}

/** A snapshot passed verification: it is in history (and its verified sequence known from now on). */
export function markVerified(state: AgentState, ref: SnapshotRef, at: string): AgentState {
  if (state.history.some((h) => h.digest === ref.digest)) return state;
  return { ...state, history: [...state.history, { ...ref, verified_at: at, applied_at: null }] };
}

export function markNotEligible(state: AgentState, digest: string): AgentState {
  if (state.not_eligible.includes(digest)) return state;
  return { ...state, not_eligible: [...state.not_eligible.slice(-(NOT_ELIGIBLE_KEPT - 1)), digest] };
}

/** Counts one failure against a digest's retry budget; `exhausted` once the budget is spent. */
export function markFailed(
  state: AgentState,
  ref: SnapshotRef,
  failure: { code: string; message: string; at: string },
  retryBudget: number,
): { state: AgentState; exhausted: boolean } {
  const attempts = (state.failures[ref.digest]?.attempts ?? 0) + 1;
  const exhausted = attempts >= retryBudget;
  const kept = Object.entries(state.failures)
    .filter(([digest]) => digest !== ref.digest)
    .slice(-(FAILURES_KEPT - 1));
  return {
    state: {
      ...state,
      failures: {
        ...Object.fromEntries(kept),
        [ref.digest]: { sequence: ref.sequence, attempts, code: failure.code, message: failure.message, failed: exhausted, at: failure.at },
      },
      last_error: { code: failure.code, message: failure.message, at: failure.at, digest: ref.digest },
    },
    exhausted,
  };
}

/** A failure with no budget left to spend: every remaining attempt of the digest is used up. */
export function markExhausted(state: AgentState, ref: SnapshotRef, failure: { code: string; message: string; at: string }, retryBudget: number): AgentState {
  let next = state;
  for (let i = 0; i < retryBudget; i++) next = markFailed(next, ref, failure, retryBudget).state;
  return next;
}

/**
 * A verified snapshot now runs: record it, raise the rollback floor (high_water never goes
 * down), forget its failures, and lift a pin it passed. The pin itself is set apart (pin()).
 */
export function markApplied(state: AgentState, ref: SnapshotRef, at: string, runtime: { outcome: string }): AgentState {
  const highWater = state.high_water === null || ref.sequence > state.high_water.sequence ? ref : state.high_water;
  const failures = { ...state.failures };
  delete failures[ref.digest];
  const history = state.history.some((h) => h.digest === ref.digest)
    ? state.history.map((h) => (h.digest === ref.digest ? { ...h, applied_at: at } : h))
    : [...state.history, { ...ref, verified_at: at, applied_at: at }];
  return liftPinIfPassed(
    { ...state, applied: ref, high_water: highWater, failures, history, last_error: null, runtime: { digest: ref.digest, outcome: runtime.outcome, at } },
    ref,
  );
}

/**
 * An operator's rollback: stay on `ref` until a verified snapshot above everything applied
 * so far appears. The bound comes from high_water and what is applied, never from a hint.
 */
export function pin(state: AgentState, ref: SnapshotRef, at: string): AgentState {
  const untilAbove = Math.max(state.high_water?.sequence ?? 0, state.applied?.sequence ?? 0, ref.sequence);
  return { ...state, pinned: { ...ref, until_above: untilAbove, at } };
}

/** An operator lifts the pin: the next poll follows the network again. */
export function unpin(state: AgentState): AgentState {
  return { ...state, pinned: null };
}

/** A pin ends only when a verified snapshot's sequence passes it. */
export function liftPinIfPassed(state: AgentState, verified: SnapshotRef): AgentState {
  return state.pinned !== null && verified.sequence > state.pinned.until_above ? { ...state, pinned: null } : state;
}

/** Whether a verified snapshot may replace a pinned one. */
export function passesPin(state: AgentState, verified: SnapshotRef): boolean {
  return state.pinned === null || verified.sequence > state.pinned.until_above;
}
