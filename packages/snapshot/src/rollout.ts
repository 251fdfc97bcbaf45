import { sha256Hex } from './bytes.js';
import type { Snapshot } from './schema.js';

/** The node's bucket for one snapshot, 0–99 (SPEC §3): stable per node and digest. */
export function rolloutBucket(nodeId: string, configDigest: string): number {
  return Number.parseInt(sha256Hex(`${nodeId}:${configDigest}`).slice(0, 8), 16) % 100;
}

/** Whether this node takes part in a snapshot's rollout; one that does not stays on what it has. */
export function isRolloutEligible(nodeId: string, configDigest: string, snapshot: Pick<Snapshot, 'rollout'>): boolean {
  const percent = snapshot.rollout?.percent ?? 100;
  return rolloutBucket(nodeId, configDigest) < percent;
}
