import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { isRolloutEligible, rolloutBucket } from './rollout.js';

const digest = `sha256:${'ab'.repeat(32)}`;

describe('rollout eligibility', () => {
  it('buckets by the first 8 hex digits of sha256(node_id:config_digest) mod 100', () => {
    const hex = createHash('sha256').update(`node-7:${digest}`).digest('hex');
    expect(rolloutBucket('node-7', digest)).toBe(Number.parseInt(hex.slice(0, 8), 16) % 100);
  });

  it('takes every node at 100 percent (the default) and none at 0', () => {
    const nodes = Array.from({ length: 200 }, (_, i) => `node-${i}`);
    expect(nodes.every((n) => isRolloutEligible(n, digest, {}))).toBe(true);
    expect(nodes.some((n) => isRolloutEligible(n, digest, { rollout: { percent: 0 } }))).toBe(false);
  });

  it('takes roughly the given share of many nodes', () => {
    const nodes = Array.from({ length: 2000 }, (_, i) => `node-${i}`);
    const taken = nodes.filter((n) => isRolloutEligible(n, digest, { rollout: { percent: 25 } })).length;
    expect(taken).toBeGreaterThan(400);
    expect(taken).toBeLessThan(600);
  });
});
