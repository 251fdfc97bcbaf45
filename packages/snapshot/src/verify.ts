import { configDigest, parseCanonical } from './canonical.js';
import { checkThreshold, envelopePayload, expectPayloadType } from './dsse.js';
import { cryptoReady } from './ed25519.js';
import { DEFAULT_MAX_ENVELOPE_BYTES, parseEnvelope } from './envelope.js';
import { refuse } from './errors.js';
import type { TrustedRoot } from './root.js';
import {
  SNAPSHOT_PAYLOAD_TYPE,
  SNAPSHOT_SCHEMA_MAJOR,
  type Snapshot,
  SnapshotSchema,
  SnapshotSchemaModelsChecked,
  describeIssues,
  isModelListValid,
} from './schema.js';

/** What the node has applied; verification refuses anything that would go back from it. */
export interface AppliedState {
  readonly sequence: number;
  readonly digest: string;
}

/** Everything verification depends on: no clock, no files, no network of its own. */
export interface VerifyInput {
  /** The envelope exactly as received. */
  readonly envelope: Uint8Array;
  /** The newest trusted root, from walkRootChain. */
  readonly root: TrustedRoot;
  /** The network this node was provisioned for; defaults to the root's. */
  readonly network?: string;
  /** The applied snapshot, or null on a node that has applied none. */
  readonly applied?: AppliedState | null;
  /** The digest that was asked for (SPEC §5: the `{hex}` of the URL), as "sha256:<hex>". */
  readonly expectedDigest?: string;
  readonly now: Date;
  readonly maxBytes?: number;
}

/** A snapshot that passed every check, with the exact bytes that were signed. */
export interface VerifiedSnapshot {
  readonly snapshot: Snapshot;
  readonly digest: string;
  readonly payload: Uint8Array;
  readonly signers: readonly string[];
}

/**
 * Verifies a snapshot envelope (SPEC §1–§4) and returns the snapshot parsed from the verified
 * payload bytes, or throws a SnapshotError with a stable code. Requires cryptoReady() first;
 * verifySnapshot() is the form that awaits it.
 */
export function verifySnapshotEnvelope(input: VerifyInput): VerifiedSnapshot {
  const envelope = parseEnvelope(input.envelope, input.maxBytes ?? DEFAULT_MAX_ENVELOPE_BYTES);
  const payload = envelopePayload(envelope);
  // The digest comes first: bytes other than the ones asked for are the origin's fault and
  // worth another fetch (DIGEST_MISMATCH is retryable), whatever else is wrong with them, while
  // every later refusal is of the bytes published at that digest.
  const digest = configDigest(payload);
  if (input.expectedDigest !== undefined && input.expectedDigest !== digest) {
    refuse('DIGEST_MISMATCH', `payload digest is ${digest}, expected ${input.expectedDigest}`);
  }
  expectPayloadType(envelope, SNAPSHOT_PAYLOAD_TYPE);

  const { root, keys } = input.root;
  const network = input.network ?? root.network;
  if (root.network !== network) {
    refuse('NETWORK_MISMATCH', `trusted root is for network "${root.network}", expected "${network}"`);
  }
  if (Date.parse(root.expires_at) <= input.now.getTime()) {
    refuse('ROOT_EXPIRED', `trusted root v${root.version} expired at ${root.expires_at} (now ${input.now.toISOString()})`);
  }

  const { signers } = checkThreshold(envelope, payload, keys, root.threshold, 'snapshot');

  const value = parseCanonical(payload, 'snapshot payload');
  const snapshot = parseSnapshotValue(value);

  if (snapshot.network !== network) {
    refuse('NETWORK_MISMATCH', `snapshot is for network "${snapshot.network}", expected "${network}"`);
  }
  if (Date.parse(snapshot.expires_at) <= input.now.getTime()) {
    refuse('EXPIRED', `snapshot ${snapshot.sequence} expired at ${snapshot.expires_at} (now ${input.now.toISOString()})`);
  }
  checkNotBehind(snapshot.sequence, digest, input.applied ?? null);

  return { snapshot, digest, payload, signers };
}

/** verifySnapshotEnvelope, once libsodium has loaded. */
export async function verifySnapshot(input: VerifyInput): Promise<VerifiedSnapshot> {
  await cryptoReady();
  return verifySnapshotEnvelope(input);
}

/** Schema check of a parsed payload: a greater major is UNSUPPORTED_SCHEMA, anything else wrong SCHEMA_INVALID. */
export function parseSnapshotValue(value: unknown): Snapshot {
  const major = (value as { schema?: unknown } | null)?.schema;
  if (typeof major === 'number' && Number.isInteger(major) && major > SNAPSHOT_SCHEMA_MAJOR) {
    refuse('UNSUPPORTED_SCHEMA', `snapshot schema ${major} is newer than ${SNAPSHOT_SCHEMA_MAJOR}, the newest this Agent knows`);
  }
  // Models are most of a large snapshot; when the hand-written check accepts them all, zod
  // checks the rest and leaves the models as they are. Anything else takes the full schema,
  // which also names what is wrong.
  const models = (value as { models?: unknown } | null)?.models;
  if (isModelListValid(models)) {
    const rest = SnapshotSchemaModelsChecked.safeParse(value);
    if (rest.success) return rest.data as Snapshot;
  }
  const parsed = SnapshotSchema.safeParse(value);
  if (!parsed.success) refuse('SCHEMA_INVALID', `snapshot: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** SPEC §3: never a lower sequence, never another digest under the same sequence. */
export function checkNotBehind(sequence: number, digest: string, applied: AppliedState | null): void {
  if (applied === null) return;
  if (sequence < applied.sequence) {
    refuse('ROLLBACK', `snapshot sequence ${sequence} is below the applied ${applied.sequence}`);
  }
  if (sequence === applied.sequence && digest !== applied.digest) {
    refuse('SEQUENCE_CONFLICT', `sequence ${sequence} is applied as ${applied.digest}, but this snapshot is ${digest}`);
  }
}
