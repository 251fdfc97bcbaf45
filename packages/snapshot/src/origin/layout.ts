/** SPEC §5: where each file of a network lives, relative to the origin's base. */
export const originPaths = {
  latest: (network: string) => `v1/${network}/latest.json`,
  snapshot: (network: string, hex: string) => `v1/${network}/snapshots/${hex}.json`,
  root: (network: string, version: number) => `v1/${network}/root/${version}.json`,
  chunks: (network: string, hex: string) => `v1/${network}/chunks/${hex}.json`,
  heartbeat: (network: string, nodeId: string) => `v1/${network}/nodes/${encodeURIComponent(nodeId)}/heartbeat`,
  nodes: (network: string) => `v1/${network}/nodes`,
} as const;

/** The unsigned hint an origin serves as latest.json; trusted for nothing but what to fetch next. */
export interface LatestHint {
  config_digest: string;
  sequence: number;
}

const LATEST_DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Reads latest.json leniently but safely: anything off the shape is null, never a crash. */
export function parseLatestHint(value: unknown): LatestHint | null {
  const hint = value as Partial<LatestHint> | null;
  if (hint === null || typeof hint !== 'object') return null;
  if (typeof hint.config_digest !== 'string' || !LATEST_DIGEST.test(hint.config_digest)) return null;
  if (typeof hint.sequence !== 'number' || !Number.isSafeInteger(hint.sequence) || hint.sequence < 0) return null;
  return { config_digest: hint.config_digest, sequence: hint.sequence };
}
