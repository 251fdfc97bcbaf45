import { createTestSigner, envelopeBytes, sampleSnapshot } from '@resultity/testkit';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import { canonicalBytes, configDigest } from './canonical.js';
import { signEnvelope } from './dsse.js';
import { generateSigningKey } from './ed25519.js';
import { SnapshotError } from './errors.js';
import { ROOT_PAYLOAD_TYPE, SNAPSHOT_PAYLOAD_TYPE } from './schema.js';
import { type VerifyInput, verifySnapshot } from './verify.js';

const NOW = new Date('2026-11-26T00:00:00Z');
type Signer = Awaited<ReturnType<typeof createTestSigner>>;
let signer: Signer;

beforeAll(async () => {
  signer = await createTestSigner();
});

afterEach(() => {
  vi.restoreAllMocks();
});

async function refusal(input: Partial<VerifyInput> & { envelope: Uint8Array }): Promise<SnapshotError> {
  try {
    await verifySnapshot({ root: signer.trusted, now: NOW, ...input });
  } catch (error) {
    if (error instanceof SnapshotError) return error;
    throw new Error(`expected a SnapshotError, got ${String(error)}`);
  }
  throw new Error('expected a refusal, but the envelope was accepted');
}

const bytesOf = (value: unknown) => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));

describe('verifySnapshot', () => {
  describe('when the envelope is good', () => {
    it('returns the snapshot parsed from the signed bytes and its digest', async () => {
      const { bytes, digest } = signer.sign(sampleSnapshot({ sequence: 7 }));
      const verified = await verifySnapshot({ envelope: bytes, root: signer.trusted, now: NOW });
      expect(verified.digest).toBe(digest);
      expect(verified.snapshot.sequence).toBe(7);
      expect(verified.signers).toEqual([signer.keys[0]?.keyid]);
    });

    it('accepts URL-safe base64 without padding', async () => {
      const { envelope, digest } = signer.sign(sampleSnapshot());
      const urlSafe = (s: string) => s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      const converted = {
        ...envelope,
        payload: urlSafe(envelope.payload),
        signatures: envelope.signatures.map((s) => ({ ...s, sig: urlSafe(s.sig) })),
      };
      expect(envelope.payload + envelope.signatures[0]?.sig).toMatch(/[+/=]/);
      const verified = await verifySnapshot({ envelope: bytesOf(converted), root: signer.trusted, now: NOW });
      expect(verified.digest).toBe(digest);
    });

    it('ignores unknown envelope fields and keeps unknown snapshot fields', async () => {
      const { envelope } = signer.sign(sampleSnapshot({ future_section: { x: 1 } }));
      const withExtra = { ...envelope, comment: 'added by a mirror', signatures: [{ ...envelope.signatures[0], extra: true }] };
      const verified = await verifySnapshot({ envelope: bytesOf(withExtra), root: signer.trusted, now: NOW });
      expect((verified.snapshot as Record<string, unknown>).future_section).toEqual({ x: 1 });
    });

    it('accepts the applied snapshot again (same sequence, same digest)', async () => {
      const { bytes, digest } = signer.sign(sampleSnapshot({ sequence: 3 }));
      const verified = await verifySnapshot({ envelope: bytes, root: signer.trusted, now: NOW, applied: { sequence: 3, digest } });
      expect(verified.digest).toBe(digest);
    });

    it('ignores signatures that do not verify when enough others do', async () => {
      const { envelope } = signer.sign(sampleSnapshot());
      const noisy = { ...envelope, signatures: [{ keyid: 'ab', sig: 'not base64!' }, { sig: 'AAAA' }, ...envelope.signatures] };
      await expect(verifySnapshot({ envelope: bytesOf(noisy), root: signer.trusted, now: NOW })).resolves.toBeDefined();
    });

    it('counts a signature whose keyid hint names another key', async () => {
      const { envelope } = signer.sign(sampleSnapshot());
      const misHinted = { ...envelope, signatures: envelope.signatures.map((s) => ({ ...s, keyid: '00'.repeat(32) })) };
      await expect(verifySnapshot({ envelope: bytesOf(misHinted), root: signer.trusted, now: NOW })).resolves.toBeDefined();
    });
  });

  describe('when the envelope is hostile', () => {
    it('refuses a 5 MiB envelope with TOO_LARGE before parsing it', async () => {
      const huge = new Uint8Array(5 * 1024 * 1024).fill(0x20);
      const parse = vi.spyOn(JSON, 'parse');
      const error = await refusal({ envelope: huge });
      expect(error.code).toBe('TOO_LARGE');
      expect(error.message).toContain('limit is 4194304');
      expect(parse).not.toHaveBeenCalled();
    });

    it.each([
      ['bytes that are not JSON', '{"payloadType":'],
      ['a JSON array', '[]'],
      ['an envelope without signatures', JSON.stringify({ payloadType: SNAPSHOT_PAYLOAD_TYPE, payload: 'e30=' })],
      ['a payload that is not base64', JSON.stringify({ payloadType: SNAPSHOT_PAYLOAD_TYPE, payload: '{not base64}', signatures: [] })],
    ])('refuses %s with MALFORMED', async (_, text) => {
      expect((await refusal({ envelope: bytesOf(text) })).code).toBe('MALFORMED');
    });

    it('refuses another payloadType with PAYLOAD_TYPE', async () => {
      const envelope = signEnvelope(ROOT_PAYLOAD_TYPE, canonicalBytes(sampleSnapshot()), signer.keys);
      const error = await refusal({ envelope: envelopeBytes(envelope) });
      expect(error.code).toBe('PAYLOAD_TYPE');
      expect(error.message).toContain(SNAPSHOT_PAYLOAD_TYPE);
    });

    it('refuses an envelope signed by an untrusted key with SIGNATURE_THRESHOLD', async () => {
      const { bytes } = signer.sign(sampleSnapshot(), [generateSigningKey()]);
      const error = await refusal({ envelope: bytes });
      expect(error.code).toBe('SIGNATURE_THRESHOLD');
      expect(error.message).toContain('signed by 0/1 trusted keys');
    });

    it('refuses a signature over other bytes with SIGNATURE_THRESHOLD', async () => {
      const good = signer.sign(sampleSnapshot({ sequence: 1 })).envelope;
      const other = signer.sign(sampleSnapshot({ sequence: 2 })).envelope;
      const spliced = { ...other, signatures: good.signatures };
      expect((await refusal({ envelope: bytesOf(spliced) })).code).toBe('SIGNATURE_THRESHOLD');
    });

    it('never counts duplicate signatures by one key towards a threshold of 2', async () => {
      const twoKeys = await createTestSigner({ keys: 2, threshold: 2 });
      const [first] = twoKeys.keys;
      const { envelope } = twoKeys.sign(sampleSnapshot(), [first!]);
      const sig = envelope.signatures[0]!;
      const duplicated = { ...envelope, signatures: [sig, sig, { ...sig, keyid: twoKeys.keys[1]!.keyid }, { sig: sig.sig }] };
      const error = await refusal({ envelope: bytesOf(duplicated), root: twoKeys.trusted });
      expect(error.code).toBe('SIGNATURE_THRESHOLD');
      expect(error.message).toContain('signed by 1/2 trusted keys');
      const both = twoKeys.sign(sampleSnapshot());
      await expect(verifySnapshot({ envelope: both.bytes, root: twoKeys.trusted, now: NOW })).resolves.toBeDefined();
    });

    it('refuses a signed payload that is not canonical with NOT_CANONICAL', async () => {
      const pretty = new TextEncoder().encode(JSON.stringify(sampleSnapshot(), null, 2));
      const envelope = signEnvelope(SNAPSHOT_PAYLOAD_TYPE, pretty, signer.keys);
      expect((await refusal({ envelope: envelopeBytes(envelope) })).code).toBe('NOT_CANONICAL');
    });

    it('refuses a snapshot off the schema with SCHEMA_INVALID naming the field', async () => {
      const bad = sampleSnapshot();
      (bad.models[0] as { sha256: string }).sha256 = 'XYZ';
      const envelope = signEnvelope(SNAPSHOT_PAYLOAD_TYPE, canonicalBytes(bad), signer.keys);
      const error = await refusal({ envelope: envelopeBytes(envelope) });
      expect(error.code).toBe('SCHEMA_INVALID');
      expect(error.message).toContain('models.0.sha256');
    });

    it('refuses duplicate names with SCHEMA_INVALID', async () => {
      const base = sampleSnapshot();
      const twice = { ...base, models: [base.models[0], base.models[0]] };
      const envelope = signEnvelope(SNAPSHOT_PAYLOAD_TYPE, canonicalBytes(twice), signer.keys);
      const error = await refusal({ envelope: envelopeBytes(envelope) });
      expect(error.code).toBe('SCHEMA_INVALID');
      expect(error.message).toContain('duplicate model name');
    });

    it('refuses a greater schema major with UNSUPPORTED_SCHEMA', async () => {
      const envelope = signEnvelope(SNAPSHOT_PAYLOAD_TYPE, canonicalBytes({ ...sampleSnapshot(), schema: 2 }), signer.keys);
      expect((await refusal({ envelope: envelopeBytes(envelope) })).code).toBe('UNSUPPORTED_SCHEMA');
    });

    it('refuses a snapshot for another network with NETWORK_MISMATCH', async () => {
      const { bytes } = signer.sign(sampleSnapshot({ network: 'mainnet' }));
      const error = await refusal({ envelope: bytes });
      expect(error.code).toBe('NETWORK_MISMATCH');
      expect(error.message).toContain('expected "testnet"');
    });

    it('refuses an expired snapshot with EXPIRED', async () => {
      const { bytes } = signer.sign(sampleSnapshot({ issued_at: '2026-01-01T00:00:00Z', expires_at: '2026-02-01T00:00:00Z' }));
      expect((await refusal({ envelope: bytes })).code).toBe('EXPIRED');
    });

    it('refuses a lower sequence than the applied one with ROLLBACK', async () => {
      const { bytes } = signer.sign(sampleSnapshot({ sequence: 4 }));
      const error = await refusal({ envelope: bytes, applied: { sequence: 5, digest: `sha256:${'0'.repeat(64)}` } });
      expect(error.code).toBe('ROLLBACK');
      expect(error.message).toContain('sequence 4 is below the applied 5');
    });

    it('refuses the applied sequence under another digest with SEQUENCE_CONFLICT', async () => {
      const { bytes } = signer.sign(sampleSnapshot({ sequence: 5 }));
      const error = await refusal({ envelope: bytes, applied: { sequence: 5, digest: `sha256:${'0'.repeat(64)}` } });
      expect(error.code).toBe('SEQUENCE_CONFLICT');
    });

    it('refuses a payload other than the one asked for with DIGEST_MISMATCH', async () => {
      const { bytes } = signer.sign(sampleSnapshot());
      const asked = `sha256:${'1'.repeat(64)}`;
      const error = await refusal({ envelope: bytes, expectedDigest: asked });
      expect(error.code).toBe('DIGEST_MISMATCH');
      expect(error.message).toContain(asked);
    });

    it('refuses a badly signed payload other than the one asked for with DIGEST_MISMATCH, which is retryable', async () => {
      const { bytes } = signer.sign(sampleSnapshot(), [generateSigningKey()]);
      const error = await refusal({ envelope: bytes, expectedDigest: `sha256:${'1'.repeat(64)}` });
      expect(error.code).toBe('DIGEST_MISMATCH');
      expect(error.retryable).toBe(true);
    });

    it('refuses the payload asked for when its signatures fail, and calls that not retryable', async () => {
      const { bytes, digest } = signer.sign(sampleSnapshot(), [generateSigningKey()]);
      const error = await refusal({ envelope: bytes, expectedDigest: digest });
      expect(error.code).toBe('SIGNATURE_THRESHOLD');
      expect(error.retryable).toBe(false);
    });

    it('refuses another payloadType of the payload asked for with PAYLOAD_TYPE, not retryable', async () => {
      const envelope = signEnvelope(ROOT_PAYLOAD_TYPE, canonicalBytes(sampleSnapshot()), signer.keys);
      const digest = configDigest(canonicalBytes(sampleSnapshot()));
      const error = await refusal({ envelope: envelopeBytes(envelope), expectedDigest: digest });
      expect(error.code).toBe('PAYLOAD_TYPE');
      expect(error.retryable).toBe(false);
    });

    it('refuses to accept anything with an expired root (ROOT_EXPIRED)', async () => {
      const old = await createTestSigner({ expiresAt: '2026-01-01T00:00:00Z' });
      const { bytes } = old.sign(sampleSnapshot());
      expect((await refusal({ envelope: bytes, root: old.trusted })).code).toBe('ROOT_EXPIRED');
    });
  });
});
