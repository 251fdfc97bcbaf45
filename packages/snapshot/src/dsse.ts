import { decodeBase64, encodeBase64, utf8 } from './bytes.js';
import { type PublicKey, type SigningKey, sign, verifySignature } from './ed25519.js';
import { refuse } from './errors.js';
import type { Envelope } from './schema.js';

/** DSSE v1 pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body. */
export function pae(payloadType: string, payload: Uint8Array): Uint8Array {
  const type = utf8(payloadType);
  const head = utf8(`DSSEv1 ${type.byteLength} ${payloadType} ${payload.byteLength} `);
  const out = new Uint8Array(head.byteLength + payload.byteLength);
  out.set(head, 0);
  out.set(payload, head.byteLength);
  return out;
}

/** Wraps payload bytes in a DSSE envelope signed by every given key. */
export function signEnvelope(payloadType: string, payload: Uint8Array, keys: readonly SigningKey[]): Envelope {
  const message = pae(payloadType, payload);
  return {
    payloadType,
    payload: encodeBase64(payload),
    signatures: keys.map((key) => ({ keyid: key.keyid, sig: encodeBase64(sign(message, key)) })),
  };
}

/** Upper bound on Ed25519 verifications spent on one envelope. */
export const MAX_VERIFY_ATTEMPTS = 128;

/** Which trusted keys signed, out of how many were needed. */
export interface ThresholdResult {
  readonly signers: readonly string[];
  readonly threshold: number;
}

/**
 * Counts the distinct trusted keys with a verifying signature over PAE(type, payload) and
 * refuses below the threshold. keyids are hints only (SPEC §2): the key a signature names is tried first, then the
 * others; a key counts
 * once however often it signed, and signatures that do not verify are ignored.
 */
export function checkThreshold(envelope: Envelope, payload: Uint8Array, trusted: readonly PublicKey[], threshold: number, what: string): ThresholdResult {
  const message = pae(envelope.payloadType, payload);
  const signers = new Set<string>();
  // Each attempt hashes the whole payload, so a hostile envelope full of unhinted signatures
  // gets a bounded number of tries rather than signatures × keys.
  let attemptsLeft = MAX_VERIFY_ATTEMPTS;
  for (const entry of envelope.signatures) {
    if (signers.size >= threshold || attemptsLeft <= 0) break;
    let signature: Uint8Array;
    try {
      signature = decodeBase64(entry.sig, 'signature');
    } catch {
      continue; // an undecodable signature is one that does not verify, and those are ignored
    }
    const hinted = trusted.find((key) => key.keyid === entry.keyid);
    // The hint orders the search; a wrong hint costs attempts, never a valid signature.
    const candidates = hinted ? [hinted, ...trusted.filter((key) => key !== hinted)] : trusted;
    for (const key of candidates) {
      if (signers.has(key.keyid) || attemptsLeft <= 0) continue;
      attemptsLeft--;
      if (verifySignature(signature, message, key.publicKey)) {
        signers.add(key.keyid);
        break;
      }
    }
  }
  if (signers.size < threshold) {
    refuse('SIGNATURE_THRESHOLD', `${what} signed by ${signers.size}/${threshold} trusted keys (${envelope.signatures.length} signatures present)`);
  }
  return { signers: [...signers], threshold };
}

/** Decodes the envelope's payload field (standard or URL-safe base64). */
export function envelopePayload(envelope: Envelope): Uint8Array {
  return decodeBase64(envelope.payload, 'envelope payload');
}

/** Refuses an envelope whose payloadType is not the expected one. */
export function expectPayloadType(envelope: Envelope, expected: string): void {
  if (envelope.payloadType !== expected) {
    refuse('PAYLOAD_TYPE', `payloadType is "${envelope.payloadType.slice(0, 100)}", expected "${expected}"`);
  }
}
