import { describe, expect, it } from 'vitest';

import { decide } from './decide.js';
import { type AgentState, emptyState } from './state.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const at = '2026-11-26T00:00:00Z';

function state(overrides: Partial<AgentState> = {}): AgentState {
  return { ...emptyState(), applied: { digest: d('1'), sequence: 1 }, high_water: { digest: d('2'), sequence: 2 }, ...overrides };
}

describe('decide', () => {
  it('does nothing for the applied digest or the one being applied', () => {
    expect(decide(state(), { digest: d('1'), sequence: 1 }, null)).toEqual({ action: 'unchanged', digest: d('1') });
    expect(decide(state(), { digest: d('3'), sequence: 3 }, { digest: d('3'), sequence: 3 })).toEqual({ action: 'unchanged', digest: d('3') });
  });

  it('fetches a digest it has not seen', () => {
    expect(decide(state(), { digest: d('3'), sequence: 3 }, null)).toEqual({ action: 'fetch', hint: { digest: d('3'), sequence: 3 } });
  });

  it('does not fetch a digest whose budget is spent, or one outside the rollout', () => {
    const failures = { [d('3')]: { sequence: 3, attempts: 3, code: 'EXPIRED', message: 'old', failed: true, at } };
    expect(decide(state({ failures }), { digest: d('3'), sequence: 3 }, null)).toMatchObject({ action: 'budget-exhausted', code: 'EXPIRED' });
    expect(decide(state({ not_eligible: [d('4')] }), { digest: d('4'), sequence: 4 }, null)).toEqual({ action: 'not-eligible', digest: d('4') });
  });

  describe('while pinned', () => {
    const pinned = state({
      pinned: { digest: d('1'), sequence: 1, until_above: 2, at },
      history: [
        { digest: d('1'), sequence: 1, verified_at: at, applied_at: at },
        { digest: d('2'), sequence: 2, verified_at: at, applied_at: at },
      ],
    });

    it('stays pinned for a digest verified at or below the pin, whatever sequence the hint claims', () => {
      expect(decide(pinned, { digest: d('2'), sequence: 1_000 }, null)).toEqual({ action: 'pinned', digest: d('1'), latest: d('2') });
    });

    it('fetches an unknown digest whatever sequence the hint claims, so only its verified sequence can lift the pin', () => {
      expect(decide(pinned, { digest: d('5'), sequence: 0 }, null)).toEqual({ action: 'fetch', hint: { digest: d('5'), sequence: 0 } });
    });
  });
});
