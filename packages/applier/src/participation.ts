import type { Participation, Snapshot, Subcloud } from '@resultity/snapshot';

import { withRuntimeUpdate } from './runtime-update.js';
import type { DesiredState, NodeProfile, ParticipationFlags } from './types.js';

const KNOWN_REQUIREMENTS = new Set(['min_vram_gb', 'regions', 'gpus']);

function meetsOne(offered: string[], wanted: string[]): boolean {
  const have = new Set(offered.map((s) => s.toLowerCase()));
  return wanted.some((w) => have.has(w.toLowerCase()));
}

/**
 * Whether a node meets every requirement of a subcloud. A requirement this code does not know
 * is not met: joining a subcloud on a condition nobody checked is the unsafe mistake.
 */
export function meetsRequirements(subcloud: Subcloud, profile: NodeProfile): boolean {
  const require = subcloud.require as Record<string, unknown>;
  for (const key of Object.keys(require)) {
    if (require[key] !== undefined && !KNOWN_REQUIREMENTS.has(key)) return false;
  }
  const { min_vram_gb, regions, gpus } = subcloud.require;
  if (min_vram_gb !== undefined && !(profile.vram_gb >= min_vram_gb)) return false;
  if (regions !== undefined && !meetsOne(profile.regions, regions)) return false;
  if (gpus !== undefined && !meetsOne(profile.gpu, gpus)) return false;
  return true;
}

/** The participation flags a node takes from a snapshot: the mode, and the subclouds it qualifies for. */
export function evaluateParticipation(participation: Participation, profile: NodeProfile): ParticipationFlags {
  return {
    mode: participation.mode,
    subclouds: participation.subclouds.filter((s) => meetsRequirements(s, profile)).map((s) => s.id),
  };
}

/** The state a verified snapshot asks of this node, its `updates.runtime` applied to its containers. */
export function desiredStateFrom(snapshot: Snapshot, digest: string, profile: NodeProfile): DesiredState {
  return {
    digest,
    sequence: snapshot.sequence,
    containers: withRuntimeUpdate(snapshot.runtime.containers, snapshot.updates?.runtime),
    models: snapshot.models,
    flags: evaluateParticipation(snapshot.participation, profile),
  };
}
