import { describe, expect, it } from 'vitest';

import { type AgentState, emptyState } from './state.js';
import { liftPinIfPassed, markApplied, markFailed, markNotEligible, markVerified, noteLatest, pin, unpin } from './transitions.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const at = '2026-11-26T00:00:00Z';
const ack = { outcome: 'ack' };

function applied(...sequences: number[]): AgentState {
  let state = emptyState();
  for (const s of sequences) state = markApplied(state, { digest: d(String(s)), sequence: s }, at, ack);
  return state;
}

describe('markApplied', () => {
  it('records what runs and raises high_water, which never goes down', () => {
    const state = applied(1, 3, 2);
    expect(state.applied).toEqual({ digest: d('2'), sequence: 2 });
    expect(state.high_water).toEqual({ digest: d('3'), sequence: 3 });
    expect(state.history.map((h) => h.sequence)).toEqual([1, 3, 2]);
  });

  it('forgets the failures of the digest and the last error', () => {
    const failed = markFailed(applied(1), { digest: d('2'), sequence: 2 }, { code: 'PULL_FAILED', message: 'x', at }, 3).state;
    expect(failed.last_error?.code).toBe('PULL_FAILED');
    const next = markApplied(failed, { digest: d('2'), sequence: 2 }, at, ack);
    expect(next.failures).toEqual({});
    expect(next.last_error).toBeNull();
  });

  it('lifts a pin only when the applied sequence passes it', () => {
    const pinned = pin(applied(1, 2, 1), { digest: d('1'), sequence: 1 }, at);
    expect(markApplied(pinned, { digest: d('2'), sequence: 2 }, at, ack).pinned).not.toBeNull();
    expect(markApplied(pinned, { digest: d('3'), sequence: 3 }, at, ack).pinned).toBeNull();
  });
});

describe('pin', () => {
  it('pins until above high_water, not above what latest.json claimed', () => {
    const state = noteLatest(applied(1, 2, 1), { digest: d('9'), sequence: 1_000_000 }, '"e"', at);
    expect(pin(state, { digest: d('1'), sequence: 1 }, at).pinned).toEqual({ digest: d('1'), sequence: 1, until_above: 2, at });
  });
});

describe('unpin and liftPinIfPassed', () => {
  it('clear the pin, the latter only for a verified sequence above it', () => {
    const pinned = pin(applied(1, 2, 1), { digest: d('1'), sequence: 1 }, at);
    expect(unpin(pinned).pinned).toBeNull();
    expect(liftPinIfPassed(pinned, { digest: d('2'), sequence: 2 }).pinned).not.toBeNull();
    expect(liftPinIfPassed(pinned, { digest: d('3'), sequence: 3 }).pinned).toBeNull();
  });
});

describe('markFailed', () => {
  it('counts attempts and marks the digest failed when the budget is spent', () => {
    const ref = { digest: d('2'), sequence: 2 };
    const one = markFailed(emptyState(), ref, { code: 'EXPIRED', message: 'x', at }, 2);
    expect(one.exhausted).toBe(false);
    const two = markFailed(one.state, ref, { code: 'EXPIRED', message: 'x', at }, 2);
    expect(two.exhausted).toBe(true);
    expect(two.state.failures[ref.digest]).toMatchObject({ attempts: 2, failed: true });
  });

  it('remembers only the newest sixteen digests', () => {
    let state = emptyState();
    for (let i = 0; i < 20; i++)
      state = markFailed(state, { digest: `sha256:${i.toString(16).padStart(64, '0')}`, sequence: i }, { code: 'X', message: 'x', at }, 3).state;
    expect(Object.keys(state.failures)).toHaveLength(16);
  });
});

describe('markVerified and markNotEligible', () => {
  it('add a digest once', () => {
    const ref = { digest: d('4'), sequence: 4 };
    const state = markVerified(markVerified(emptyState(), ref, at), ref, at);
    expect(state.history).toHaveLength(1);
    expect(markNotEligible(markNotEligible(state, ref.digest), ref.digest).not_eligible).toEqual([ref.digest]);
  });
});
