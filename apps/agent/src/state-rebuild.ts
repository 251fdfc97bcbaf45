import { type VerifiedSnapshot, verifySnapshot } from '@resultity/snapshot';

import { type AuditSink, readVerifiedAuditEntries } from './audit.js';
import { errorMessage } from './errors.js';
import type { Logger } from './ports.js';
import { type AgentState, type SnapshotRef, type StateStore, emptyState } from './state.js';
import { readStored } from './stored-envelope.js';
import type { TrustStore } from './trust-store.js';

/** What a rebuild reads from and writes to. */
export interface RebuildDeps {
  readonly store: StateStore;
  readonly audit: AuditSink;
  readonly trust: TrustStore;
  readonly network: string;
  readonly maxSnapshotBytes: number;
  readonly clock: () => Date;
  readonly now: () => string;
  readonly logger: Logger;
}

/**
 * state.json did not parse. What runs is left alone; the state is made again from what can
 * be verified: the last-known-good envelope (re-verified against the trust root) is what is
 * applied, and the rollback floor is the highest of it and every applied entry of the audit
 * chain up to its first broken link, so the floor never goes down because a file broke. The
 * broken file is kept aside, the rebuild is audited, and last_error says STATE_CORRUPT.
 */
export async function rebuildState(cause: unknown, deps: RebuildDeps): Promise<AgentState> {
  const { store, audit, logger } = deps;
  const aside = await store.quarantine(deps.clock());
  const at = deps.now();
  let applied: SnapshotRef | null = null;
  const lkg = await store.getLastKnownGood().catch(() => null);
  if (lkg !== null) {
    const verified = await verifyRunning(lkg, deps);
    if (verified !== null) applied = { digest: verified.digest, sequence: verified.snapshot.sequence };
  }
  let highWater = applied;
  for (const entry of await readVerifiedAuditEntries(store.paths.audit)) {
    const { digest, sequence } = entry as { digest?: unknown; sequence?: unknown };
    if (entry.type !== 'applied' || typeof digest !== 'string' || typeof sequence !== 'number') continue;
    if (highWater === null || sequence > highWater.sequence) highWater = { digest, sequence };
  }
  const message = `state.json did not parse (${errorMessage(cause)}); moved to ${aside} and rebuilt from the last-known-good and the audit log`;
  let state: AgentState = {
    ...emptyState(),
    applied,
    high_water: highWater,
    history: applied ? [{ ...applied, verified_at: at, applied_at: at }] : [],
    last_error: { code: 'STATE_CORRUPT', message, at },
  };
  // Running below the floor means an operator rolled back: stay there, as the pin said.
  if (applied !== null && highWater !== null && applied.sequence < highWater.sequence) {
    state = { ...state, pinned: { ...applied, until_above: highWater.sequence, at } };
  }
  await audit.append('repair', {
    what: 'state.json',
    code: 'STATE_CORRUPT',
    moved_to: aside,
    applied: applied?.digest ?? null,
    high_water: highWater?.sequence ?? null,
  });
  state = { ...state, audit_head: audit.head() };
  await store.write(state);
  logger.error({ code: 'STATE_CORRUPT', err: message }, 'state.json was corrupt; rebuilt from what could be verified');
  return state;
}

/** Verifies the signatures of what runs against the trusted root; its expiry does not matter, it already runs. */
async function verifyRunning(bytes: Uint8Array, deps: RebuildDeps): Promise<VerifiedSnapshot | null> {
  const stored = readStored(bytes);
  if (stored === null) return null;
  try {
    const expires = Date.parse(stored.snapshot.expires_at);
    const now = deps.clock();
    return await verifySnapshot({
      envelope: bytes,
      root: await deps.trust.current(),
      network: deps.network,
      applied: null,
      now: expires <= now.getTime() ? new Date(expires - 1) : now,
      maxBytes: deps.maxSnapshotBytes,
    });
  } catch {
    return null;
  }
}
