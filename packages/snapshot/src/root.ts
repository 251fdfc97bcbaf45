import { canonicalBytes, parseCanonical } from './canonical.js';
import { checkThreshold, envelopePayload, expectPayloadType, signEnvelope } from './dsse.js';
import { type PublicKey, type SigningKey, decodePublicKey } from './ed25519.js';
import { parseEnvelope } from './envelope.js';
import { SnapshotError, refuse } from './errors.js';
import { type Envelope, ROOT_PAYLOAD_TYPE, ROOT_SCHEMA_MAJOR, type Root, RootSchema, describeIssues } from './schema.js';

/** A root whose signatures and keys have been checked, ready to verify what it signs. */
export interface TrustedRoot {
  readonly root: Root;
  readonly keys: readonly PublicKey[];
}

function decodeRootKeys(root: Root): PublicKey[] {
  return root.keys.map((entry, index) => {
    const key = decodePublicKey(entry.public_key, `keys.${index}.public_key`);
    if (key.keyid !== entry.keyid) {
      refuse('SCHEMA_INVALID', `keys.${index}.keyid is ${entry.keyid}, but its public key hashes to ${key.keyid}`);
    }
    return key;
  });
}

/** Payload of a root envelope: canonical bytes, then schema; nothing is trusted yet. */
function readRootPayload(envelope: Envelope): { root: Root; keys: PublicKey[]; payload: Uint8Array } {
  expectPayloadType(envelope, ROOT_PAYLOAD_TYPE);
  const payload = envelopePayload(envelope);
  const value = parseCanonical(payload, 'root payload');
  const major = (value as { schema?: unknown } | null)?.schema;
  if (typeof major === 'number' && Number.isInteger(major) && major > ROOT_SCHEMA_MAJOR) {
    refuse('UNSUPPORTED_SCHEMA', `root schema ${major} is newer than ${ROOT_SCHEMA_MAJOR}, the newest this Agent knows`);
  }
  const parsed = RootSchema.safeParse(value);
  if (!parsed.success) refuse('SCHEMA_INVALID', `root: ${describeIssues(parsed.error)}`);
  return { root: parsed.data, keys: decodeRootKeys(parsed.data), payload };
}

/**
 * Accepts the root the node was provisioned with (out of band). It must still be well formed
 * and signed by a threshold of its own keys, so a corrupted file cannot become the trust anchor.
 */
export function trustProvisionedRoot(bytes: Uint8Array): TrustedRoot {
  const envelope = parseEnvelope(bytes);
  const { root, keys, payload } = readRootPayload(envelope);
  checkThreshold(envelope, payload, keys, root.threshold, `root v${root.version}`);
  return { root, keys };
}

/**
 * Accepts root N+1 from root N (SPEC §4): signed by a threshold of N's keys and a threshold
 * of its own, same network, version exactly N+1. Every failure is ROOT_ROTATION_INVALID, with
 * the underlying reason in the message, because the chain as a whole is what is refused.
 */
export function rotateRoot(current: TrustedRoot, nextBytes: Uint8Array): TrustedRoot {
  try {
    const envelope = parseEnvelope(nextBytes);
    const { root, keys, payload } = readRootPayload(envelope);
    if (root.version !== current.root.version + 1) {
      refuse('ROOT_ROTATION_INVALID', `root version is ${root.version}, expected ${current.root.version + 1}`);
    }
    if (root.network !== current.root.network) {
      refuse('ROOT_ROTATION_INVALID', `root network is "${root.network}", expected "${current.root.network}"`);
    }
    checkThreshold(envelope, payload, current.keys, current.root.threshold, `root v${root.version} by the keys of v${current.root.version}`);
    checkThreshold(envelope, payload, keys, root.threshold, `root v${root.version} by its own keys`);
    return { root, keys };
  } catch (error) {
    if (error instanceof SnapshotError && error.code !== 'ROOT_ROTATION_INVALID') {
      throw new SnapshotError('ROOT_ROTATION_INVALID', `root v${current.root.version + 1}: ${error.code}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/**
 * Walks a provisioned root and its successors, oldest first, to the newest trusted root.
 * Expiry is not checked on the way: an expired intermediate root may still vouch for its
 * successor, as in TUF; only the root used to accept snapshots must be current.
 */
export function walkRootChain(chain: readonly Uint8Array[]): TrustedRoot {
  const [first, ...rest] = chain;
  if (first === undefined) refuse('ROOT_ROTATION_INVALID', 'no trusted root was given');
  let trusted = trustProvisionedRoot(first);
  for (const next of rest) trusted = rotateRoot(trusted, next);
  return trusted;
}

/** What a new root says, before it is signed. */
export interface RootDraft {
  network: string;
  version: number;
  expiresAt: string;
  threshold: number;
  keys: readonly PublicKey[];
}

/** Builds and signs a root envelope; `signers` are every key whose signature it should carry. */
export function signRoot(draft: RootDraft, signers: readonly SigningKey[]): { envelope: Envelope; root: Root } {
  const value = {
    schema: ROOT_SCHEMA_MAJOR,
    network: draft.network,
    version: draft.version,
    expires_at: draft.expiresAt,
    threshold: draft.threshold,
    keys: draft.keys.map((key) => ({ keyid: key.keyid, public_key: Buffer.from(key.publicKey).toString('base64') })),
  };
  const parsed = RootSchema.safeParse(value);
  if (!parsed.success) refuse('SCHEMA_INVALID', `root: ${describeIssues(parsed.error)}`);
  const unique = [...new Map(signers.map((key) => [key.keyid, key])).values()];
  return { envelope: signEnvelope(ROOT_PAYLOAD_TYPE, canonicalBytes(value), unique), root: parsed.data };
}
