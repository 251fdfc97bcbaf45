import type { AgentState, SnapshotRef } from './state.js';

/** What to do with a latest.json hint, decided from the state alone. */
export type Decision =
  | { readonly action: 'unchanged'; readonly digest: string }
  | { readonly action: 'pinned'; readonly digest: string; readonly latest: string }
  | { readonly action: 'budget-exhausted'; readonly digest: string; readonly code: string; readonly message: string }
  | { readonly action: 'not-eligible'; readonly digest: string }
  | { readonly action: 'fetch'; readonly hint: SnapshotRef };

/**
 * Decides what a hint asks for. The hint is unsigned (SPEC §5): it may trigger a fetch, but
 * its `sequence` never decides a pin. While pinned, a digest is skipped only when its
 * sequence is known from its own verification (history); anything else is fetched, and only
 * the verified sequence can lift the pin (see liftPinIfPassed).
 */
export function decide(state: AgentState, hint: SnapshotRef, inProgress: SnapshotRef | null): Decision {
  if (state.applied?.digest === hint.digest) return { action: 'unchanged', digest: hint.digest };
  if (inProgress?.digest === hint.digest) return { action: 'unchanged', digest: hint.digest };
  if (state.pinned !== null) {
    const verifiedSequence = state.history.find((h) => h.digest === hint.digest)?.sequence;
    if (verifiedSequence !== undefined && verifiedSequence <= state.pinned.until_above) {
      return { action: 'pinned', digest: state.pinned.digest, latest: hint.digest };
    }
  }
  const failure = state.failures[hint.digest];
  if (failure?.failed) return { action: 'budget-exhausted', digest: hint.digest, code: failure.code, message: failure.message };
  if (state.not_eligible.includes(hint.digest)) return { action: 'not-eligible', digest: hint.digest };
  return { action: 'fetch', hint };
}
