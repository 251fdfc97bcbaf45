import { type Snapshot, type VerifiedSnapshot, configDigest, envelopePayload, parseCanonical, parseEnvelope, parseSnapshotValue } from '@resultity/snapshot';

/**
 * Reads an envelope the Agent verified and stored itself, without checking signatures again:
 * the state directory is trusted for what it names (only verified envelopes are written there).
 * Null when the bytes are not a snapshot envelope.
 */
export function readStored(bytes: Uint8Array): VerifiedSnapshot | null {
  try {
    const payload = envelopePayload(parseEnvelope(bytes, Number.MAX_SAFE_INTEGER));
    const snapshot: Snapshot = parseSnapshotValue(parseCanonical(payload, 'stored snapshot'));
    return { snapshot, digest: configDigest(payload), payload, signers: [] };
  } catch {
    return null;
  }
}
