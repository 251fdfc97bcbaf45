import { fuzzRuns, fuzzSeed, oracleCanonical, oracleSha256, oracleSigners, sampleSnapshot } from '@resultity/testkit';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';

import { canonicalBytes } from './canonical.js';
import { signEnvelope } from './dsse.js';
import { type SigningKey, cryptoReady, generateSigningKey } from './ed25519.js';
import { SnapshotError } from './errors.js';
import { type TrustedRoot, signRoot, walkRootChain } from './root.js';
import { ROOT_PAYLOAD_TYPE, SNAPSHOT_PAYLOAD_TYPE } from './schema.js';
import { verifySnapshotEnvelope } from './verify.js';

// Fuzzing of the envelope and snapshot parser and verifier. FUZZ_RUNS=100000 is the
// long run (`pnpm fuzz`); the suite runs a short one. Inputs range from random bytes to
// envelopes signed by trusted and untrusted keys with one thing wrong, so that both refusals
// and acceptances are reached; every acceptance is re-judged by the oracle in the testkit.

const NOW = new Date('2026-11-26T00:00:00Z');
const encoder = new TextEncoder();

let keys: SigningKey[]; // 0..2 are trusted, 3 is not
let roots: TrustedRoot[]; // threshold 1, 2, 3 over keys 0..2

beforeAll(async () => {
  await cryptoReady();
  keys = Array.from({ length: 4 }, () => generateSigningKey());
  const trusted = keys.slice(0, 3);
  roots = [1, 2, 3].map((threshold) => {
    const { envelope } = signRoot({ network: 'testnet', version: 1, expiresAt: '2099-01-01T00:00:00Z', threshold, keys: trusted }, trusted);
    return walkRootChain([encoder.encode(JSON.stringify(envelope))]);
  });
});

/** Mostly the good value, sometimes one of the bad ones: each input has few things wrong. */
function mostly<T>(good: fc.Arbitrary<T>, ...bad: T[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: fc.constantFrom(...bad) });
}

const snapshotValue = fc
  .record({
    sequence: mostly(fc.nat(20), Number.MAX_SAFE_INTEGER, -1, 1.5),
    network: mostly(fc.constant('testnet'), 'mainnet', 'Testnet'),
    expires: mostly(fc.constant('2099-12-02T12:00:00Z'), '2026-11-25T00:00:00Z', '2026-02-30T00:00:00Z', '2099-12-02T12:00:00+01:00'),
    schema: mostly<unknown>(fc.constant(1), 2, 0, '1'),
    extra: fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 2 }), { nil: undefined }),
    drop: mostly<string | undefined>(fc.constant(undefined), 'models', 'runtime', 'job', 'ttl', 'participation', 'issued_at'),
  })
  .map(({ sequence, network, expires, schema, extra, drop }) => {
    const value: Record<string, unknown> = { ...sampleSnapshot({ sequence, network, expires_at: expires }), schema, ...(extra ?? {}) };
    if (drop !== undefined) delete value[drop];
    return value;
  });

/** The payload bytes: mostly canonical snapshots, also non-canonical ones, arbitrary JSON and bytes. */
const payloadBytes = fc.oneof(
  { weight: 6, arbitrary: snapshotValue.map((v) => canonicalBytes(v)) },
  { weight: 1, arbitrary: snapshotValue.map((v) => encoder.encode(JSON.stringify(v, null, 1))) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => encoder.encode(JSON.stringify(v) ?? 'null')) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
);

const signature = fc.record({
  key: fc.integer({ min: 0, max: 3 }),
  hint: fc.constantFrom('right', 'right', 'wrong', 'none', 'junk'),
  sig: fc.constantFrom('valid', 'valid', 'valid', 'valid', 'valid', 'valid', 'flipped', 'random', 'garbage', 'urlsafe', 'otherType', 'number'),
});

const envelopeCase = fc.record({
  payload: payloadBytes,
  type: mostly(fc.constant(SNAPSHOT_PAYLOAD_TYPE), ROOT_PAYLOAD_TYPE, 'application/json'),
  signatures: fc.array(signature, { minLength: 1, maxLength: 6 }),
  payloadEncoding: fc.constantFrom('std', 'std', 'std', 'std', 'url', 'unpadded', 'spaced', 'flipped'),
  root: fc.constantFrom(0, 0, 1, 2),
  applied: fc.option(fc.record({ sequence: fc.nat(4), digest: fc.constantFrom('same', 'other') }), { nil: null }),
  expected: mostly<string>(fc.constantFrom('none', 'right'), 'wrong'),
  extraFields: fc.option(fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 2 }), { nil: undefined }),
  mangle: fc.oneof(
    { weight: 10, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }), cut: fc.boolean() }) },
  ),
});

function flipByte(text: string, at: number): string {
  if (text.length === 0) return 'A';
  const i = at % text.length;
  const c = text[i] === 'A' ? 'B' : 'A';
  return text.slice(0, i) + c + text.slice(i + 1);
}

function buildEnvelope(c: typeof envelopeCase extends fc.Arbitrary<infer T> ? T : never): { bytes: Uint8Array; digest: string } {
  const payload = c.payload;
  const b64 = Buffer.from(payload).toString('base64');
  const sigs = c.signatures.map((s) => {
    const key = keys[s.key] as SigningKey;
    const type = s.sig === 'otherType' ? ROOT_PAYLOAD_TYPE : c.type;
    const [good] = signEnvelope(type, payload, [key]).signatures;
    const valid = (good as { sig: string }).sig;
    const sig =
      s.sig === 'flipped'
        ? flipByte(valid, 7)
        : s.sig === 'random'
          ? Buffer.from(oracleSha256(valid) + oracleSha256(valid), 'hex').toString('base64')
          : s.sig === 'garbage'
            ? '!!not base64!!'
            : s.sig === 'urlsafe'
              ? valid.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
              : s.sig === 'number'
                ? 12
                : valid;
    const keyid = s.hint === 'right' ? key.keyid : s.hint === 'wrong' ? (keys[(s.key + 1) % 4] as SigningKey).keyid : s.hint === 'junk' ? 'zz' : undefined;
    return keyid === undefined ? { sig } : { keyid, sig };
  });
  const encoded =
    c.payloadEncoding === 'url'
      ? b64.replace(/\+/g, '-').replace(/\//g, '_')
      : c.payloadEncoding === 'unpadded'
        ? b64.replace(/=+$/, '')
        : c.payloadEncoding === 'spaced'
          ? ` ${b64}`
          : c.payloadEncoding === 'flipped'
            ? flipByte(b64, 11)
            : b64;
  let text = JSON.stringify({ ...(c.extraFields ?? {}), payloadType: c.type, payload: encoded, signatures: sigs });
  let bytes = encoder.encode(text);
  if (c.mangle !== undefined) {
    if (c.mangle.cut) {
      text = text.slice(0, c.mangle.at % (text.length + 1));
      bytes = encoder.encode(text);
    } else {
      bytes = Uint8Array.from(bytes);
      bytes[c.mangle.at % bytes.length] = c.mangle.byte;
    }
  }
  return { bytes, digest: `sha256:${oracleSha256(payload)}` };
}

/**
 * The oracle's verdict on an envelope the verifier accepted: what was returned really is the
 * envelope's payload, canonical, with its digest, signed over PAE by a threshold of distinct
 * trusted keys, for this network, unexpired, and not behind what was applied.
 */
function judgeAccepted(
  bytes: Uint8Array,
  root: TrustedRoot,
  result: ReturnType<typeof verifySnapshotEnvelope>,
  input: { expectedDigest?: string; applied: { sequence: number; digest: string } | null },
): void {
  const raw = JSON.parse(Buffer.from(bytes).toString('utf8')) as { payloadType: string; payload: string; signatures: unknown[] };
  expect(raw.payloadType).toBe(SNAPSHOT_PAYLOAD_TYPE);
  const payload = Buffer.from(raw.payload, 'base64');
  expect(Buffer.from(result.payload).equals(payload)).toBe(true);
  const text = payload.toString('utf8');
  expect(oracleCanonical(JSON.parse(text))).toBe(text);
  expect(result.digest).toBe(`sha256:${oracleSha256(payload)}`);
  if (input.expectedDigest !== undefined) expect(result.digest).toBe(input.expectedDigest);
  const signers = oracleSigners(
    raw.payloadType,
    payload,
    raw.signatures,
    root.keys.map((k) => k.publicKey),
  );
  expect(signers).toBeGreaterThanOrEqual(root.root.threshold);
  expect(root.root.threshold).toBeGreaterThanOrEqual(1);
  const value = JSON.parse(text) as { schema: unknown; network: unknown; sequence: number; expires_at: string };
  expect(value.schema).toBe(1);
  expect(value.network).toBe('testnet');
  expect(result.snapshot.sequence).toBe(value.sequence);
  expect(Date.parse(value.expires_at)).toBeGreaterThan(NOW.getTime());
  if (input.applied !== null) {
    expect(value.sequence).toBeGreaterThanOrEqual(input.applied.sequence);
    if (value.sequence === input.applied.sequence) expect(result.digest).toBe(input.applied.digest);
  }
}

/** Runs the verifier on one input: anything thrown must be the package's SnapshotError. */
function run(bytes: Uint8Array, root: TrustedRoot, input: { expectedDigest?: string; applied: { sequence: number; digest: string } | null }) {
  try {
    return verifySnapshotEnvelope({
      envelope: bytes,
      root,
      now: NOW,
      applied: input.applied,
      ...(input.expectedDigest === undefined ? {} : { expectedDigest: input.expectedDigest }),
    });
  } catch (error) {
    if (!(error instanceof SnapshotError)) throw new Error(`verifier crashed with ${String(error)}`, { cause: error });
    return null;
  }
}

describe('verifySnapshotEnvelope under fuzzing', () => {
  it('never crashes and never accepts what a threshold of trusted keys did not sign', () => {
    let accepted = 0;
    const runs = fuzzRuns();
    const seed = fuzzSeed();
    fc.assert(
      fc.property(envelopeCase, (c) => {
        const { bytes, digest } = buildEnvelope(c);
        const root = roots[c.root] as TrustedRoot;
        const applied = c.applied === null ? null : { sequence: c.applied.sequence, digest: c.applied.digest === 'same' ? digest : `sha256:${'0'.repeat(64)}` };
        const expectedDigest = c.expected === 'none' ? undefined : c.expected === 'right' ? digest : `sha256:${'f'.repeat(64)}`;
        const input = { applied, ...(expectedDigest === undefined ? {} : { expectedDigest }) };
        const result = run(bytes, root, input);
        if (result !== null) {
          accepted++;
          judgeAccepted(bytes, root, result, input);
        }
      }),
      { numRuns: runs, seed },
    );
    console.log(`verify fuzz: seed ${seed}, ${runs} inputs, ${accepted} accepted, 0 crashes, 0 false accepts`);
    // A generator that never reached an acceptance would test only the refusals.
    expect(accepted).toBeGreaterThan(runs / 50);
  });

  it('never crashes on arbitrary bytes or JSON', () => {
    const runs = fuzzRuns();
    const seed = fuzzSeed();
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 256 }),
      fc.jsonValue({ maxDepth: 4 }).map((v) => encoder.encode(JSON.stringify(v) ?? '')),
      fc
        .record(
          { payloadType: fc.jsonValue({ maxDepth: 1 }), payload: fc.oneof(fc.string(), fc.base64String()), signatures: fc.jsonValue({ maxDepth: 3 }) },
          { requiredKeys: [] },
        )
        .map((v) => encoder.encode(JSON.stringify(v))),
    );
    fc.assert(
      fc.property(input, fc.integer({ min: 0, max: 2 }), (bytes, r) => {
        expect(run(bytes, roots[r] as TrustedRoot, { applied: null })).toBeNull();
      }),
      { numRuns: runs, seed },
    );
    console.log(`verify fuzz (arbitrary bytes): seed ${seed}, ${runs} inputs, 0 crashes, 0 accepts`);
  });
});
