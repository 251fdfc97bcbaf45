import { canonicalBytes, configDigest } from './canonical.js';
import { signEnvelope } from './dsse.js';
import type { SigningKey } from './ed25519.js';
import { refuse } from './errors.js';
import { type Envelope, SNAPSHOT_PAYLOAD_TYPE } from './schema.js';
import { parseSnapshotValue } from './verify.js';

/**
 * Canonicalizes a snapshot, checks it against the schema (a publisher should never sign what
 * every Agent will refuse) and signs it with every given key.
 */
export function signSnapshot(value: unknown, keys: readonly SigningKey[]): { envelope: Envelope; digest: string } {
  if (keys.length === 0) refuse('USAGE', 'at least one signing key is needed');
  const payload = canonicalBytes(value);
  parseSnapshotValue(value);
  return { envelope: signEnvelope(SNAPSHOT_PAYLOAD_TYPE, payload, keys), digest: configDigest(payload) };
}
