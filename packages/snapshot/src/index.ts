export * from './errors.js';
export * from './schema.js';
export { canonicalBytes, configDigest, parseCanonical } from './canonical.js';
export { decodeBase64, encodeBase64, sha256Hex } from './bytes.js';
export { pae, signEnvelope, checkThreshold, envelopePayload, MAX_VERIFY_ATTEMPTS } from './dsse.js';
export type { ThresholdResult } from './dsse.js';
export {
  cryptoReady,
  keyidOf,
  generateSigningKey,
  decodePublicKey,
  toKeyFile,
  fromKeyFile,
  isSigningKey,
} from './ed25519.js';
export type { PublicKey, SigningKey, KeyFile } from './ed25519.js';
export { parseEnvelope, DEFAULT_MAX_ENVELOPE_BYTES } from './envelope.js';
export { trustProvisionedRoot, rotateRoot, walkRootChain, signRoot } from './root.js';
export type { TrustedRoot, RootDraft } from './root.js';
export { verifySnapshot, verifySnapshotEnvelope, parseSnapshotValue, checkNotBehind } from './verify.js';
export type { VerifyInput, VerifiedSnapshot, AppliedState } from './verify.js';
export { signSnapshot } from './sign.js';
export { rolloutBucket, isRolloutEligible } from './rollout.js';
export { isRfc3339Utc, isLeapYear } from './timestamp.js';
export { verifyChunkList, buildChunkList, chunkCount, chunkListByteLength } from './chunks.js';
export type { ChunkList, ChunkSpec } from './chunks.js';
