import { createTestSigner, envelopeBytes, sampleSnapshot } from '@resultity/testkit';
import { beforeAll, describe, expect, it } from 'vitest';

import { canonicalBytes } from './canonical.js';
import { signEnvelope } from './dsse.js';
import { type SigningKey, cryptoReady, generateSigningKey } from './ed25519.js';
import { codeOf } from './code-of.test-support.js';
import { rotateRoot, signRoot, trustProvisionedRoot, walkRootChain } from './root.js';
import { ROOT_PAYLOAD_TYPE } from './schema.js';
import { verifySnapshot } from './verify.js';

const NOW = new Date('2026-11-26T00:00:00Z');

function rootBytes(version: number, keys: SigningKey[], threshold: number, signers: SigningKey[], extra: { network?: string; expiresAt?: string } = {}) {
  const { envelope } = signRoot(
    { network: extra.network ?? 'testnet', version, expiresAt: extra.expiresAt ?? '2099-01-01T00:00:00Z', threshold, keys },
    signers,
  );
  return envelopeBytes(envelope);
}

describe('root rotation', () => {
  let a: SigningKey;
  let b: SigningKey;
  let c: SigningKey;
  beforeAll(async () => {
    await cryptoReady();
    [a, b, c] = [generateSigningKey(), generateSigningKey(), generateSigningKey()];
  });

  it('walks v1 → v2 → v3 and verifies snapshots with the newest root only', async () => {
    const v1 = rootBytes(1, [a], 1, [a]);
    const v2 = rootBytes(2, [b], 1, [a, b]);
    const v3 = rootBytes(3, [c], 1, [b, c]);
    const trusted = walkRootChain([v1, v2, v3]);
    expect(trusted.root.version).toBe(3);

    const signer = await createTestSigner();
    const snapshot = canonicalBytes(sampleSnapshot());
    const byC = envelopeBytes(signEnvelope('application/vnd.resultity.snapshot+json', snapshot, [c]));
    const byA = envelopeBytes(signEnvelope('application/vnd.resultity.snapshot+json', snapshot, [a]));
    await expect(verifySnapshot({ envelope: byC, root: trusted, now: NOW })).resolves.toBeDefined();
    await expect(verifySnapshot({ envelope: byA, root: trusted, now: NOW })).rejects.toMatchObject({ code: 'SIGNATURE_THRESHOLD' });
    expect(signer.trusted.root.version).toBe(1);
  });

  it('walks through an expired intermediate root', () => {
    const v1 = rootBytes(1, [a], 1, [a], { expiresAt: '2020-01-01T00:00:00Z' });
    const v2 = rootBytes(2, [b], 1, [a, b]);
    expect(walkRootChain([v1, v2]).root.version).toBe(2);
  });

  it.each([
    ['signed only by the new keys', () => rootBytes(2, [b], 1, [b])],
    ['signed only by the old keys', () => rootBytes(2, [b], 1, [a])],
    ['skipping a version', () => rootBytes(3, [b], 1, [a, b])],
    ['repeating a version', () => rootBytes(1, [b], 1, [a, b])],
    ['for another network', () => rootBytes(2, [b], 1, [a, b], { network: 'mainnet' })],
    ['not a root at all', () => envelopeBytes(signEnvelope('application/vnd.resultity.snapshot+json', canonicalBytes(sampleSnapshot()), [a, b]))],
    ['not JSON', () => new TextEncoder().encode('nope')],
  ])('refuses a next root %s with ROOT_ROTATION_INVALID', (_, make) => {
    const current = trustProvisionedRoot(rootBytes(1, [a], 1, [a]));
    expect(codeOf(() => rotateRoot(current, make()))).toBe('ROOT_ROTATION_INVALID');
  });

  it('needs a threshold of old keys, not just one, when the old threshold is 2', () => {
    const current = trustProvisionedRoot(rootBytes(1, [a, b], 2, [a, b]));
    expect(codeOf(() => rotateRoot(current, rootBytes(2, [c], 1, [a, c])))).toBe('ROOT_ROTATION_INVALID');
    expect(rotateRoot(current, rootBytes(2, [c], 1, [a, b, c])).root.version).toBe(2);
  });

  it('refuses a provisioned root that its own keys did not sign', () => {
    expect(codeOf(() => trustProvisionedRoot(rootBytes(1, [a], 1, [b])))).toBe('SIGNATURE_THRESHOLD');
  });

  it('refuses a root whose keyid does not match its public key', () => {
    const value = {
      schema: 1,
      network: 'testnet',
      version: 1,
      expires_at: '2099-01-01T00:00:00Z',
      threshold: 1,
      keys: [{ keyid: b.keyid, public_key: Buffer.from(a.publicKey).toString('base64') }],
    };
    const bytes = envelopeBytes(signEnvelope(ROOT_PAYLOAD_TYPE, canonicalBytes(value), [a]));
    expect(codeOf(() => trustProvisionedRoot(bytes))).toBe('SCHEMA_INVALID');
  });

  it('refuses an empty chain', () => {
    expect(codeOf(() => walkRootChain([]))).toBe('ROOT_ROTATION_INVALID');
  });
});
