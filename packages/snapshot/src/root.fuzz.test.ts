import { fuzzRuns, fuzzSeed, oracleCanonical, oracleSha256, oracleSigners } from '@resultity/testkit';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';

import { canonicalBytes } from './canonical.js';
import { signEnvelope } from './dsse.js';
import { type SigningKey, cryptoReady, generateSigningKey } from './ed25519.js';
import { SnapshotError } from './errors.js';
import { type TrustedRoot, walkRootChain } from './root.js';
import { ROOT_PAYLOAD_TYPE } from './schema.js';

// Fuzzing of the root-chain walk (SPEC §4): chains of one to four roots whose
// versions, networks, key sets, thresholds and signer sets are drawn at random, mostly right,
// so that both accepted and refused chains are reached. Every accepted chain is re-judged link
// by link by the node:crypto oracle of the testkit.

const encoder = new TextEncoder();
let pool: SigningKey[];

beforeAll(async () => {
  await cryptoReady();
  pool = Array.from({ length: 5 }, () => generateSigningKey());
});

function mostly<T>(good: fc.Arbitrary<T>, ...bad: T[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 10, arbitrary: good }, { weight: 1, arbitrary: fc.constantFrom(...bad) });
}

const link = fc.record({
  versionStep: mostly(fc.constant(1), 0, 2, -1),
  network: mostly(fc.constant('testnet'), 'mainnet'),
  keys: fc.array(fc.nat(4), { minLength: 1, maxLength: 4 }),
  threshold: mostly(fc.integer({ min: 1, max: 3 }), 0, 9),
  // 'both': every key of this root and of the one before signs (a well-made rotation); else a random set.
  signedBy: fc.oneof({ weight: 3, arbitrary: fc.constant('both' as const) }, { weight: 1, arbitrary: fc.array(fc.nat(4), { maxLength: 6 }) }),
  keyidWrong: mostly(fc.constant(false), true),
  mangle: mostly<string | undefined>(fc.constant(undefined), 'flipSig', 'type', 'noncanonical', 'cut'),
  expired: mostly(fc.constant(false), true),
});

type Link = typeof link extends fc.Arbitrary<infer T> ? T : never;

function buildChain(links: readonly Link[]): Uint8Array[] {
  let version = 0;
  let before: number[] = [];
  return links.map((l) => {
    version += l.versionStep;
    const keys = l.keys.map((i) => pool[i] as SigningKey);
    const value = {
      schema: 1,
      network: l.network,
      version,
      expires_at: l.expired ? '2000-01-01T00:00:00Z' : '2099-01-01T00:00:00Z',
      threshold: l.threshold,
      keys: keys.map((k) => ({
        keyid: l.keyidWrong ? oracleSha256(k.keyid) : k.keyid,
        public_key: Buffer.from(k.publicKey).toString('base64'),
      })),
    };
    const payload = l.mangle === 'noncanonical' ? encoder.encode(JSON.stringify(value, null, 2)) : canonicalBytes(value);
    const type = l.mangle === 'type' ? 'application/vnd.resultity.snapshot+json' : ROOT_PAYLOAD_TYPE;
    const signers = l.signedBy === 'both' ? [...new Set([...l.keys, ...before])] : l.signedBy;
    before = l.keys;
    const envelope = signEnvelope(
      type,
      payload,
      signers.map((i) => pool[i] as SigningKey),
    );
    if (l.mangle === 'flipSig' && envelope.signatures[0] !== undefined) {
      const sig = envelope.signatures[0].sig;
      envelope.signatures[0].sig = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
    }
    const text = JSON.stringify(envelope);
    return encoder.encode(l.mangle === 'cut' ? text.slice(0, text.length >> 1) : text);
  });
}

interface RawRoot {
  network: string;
  version: number;
  threshold: number;
  keys: { keyid: string; public_key: string }[];
}

/** Oracle: each link is a canonical root, self-signed by its threshold, and chains from the one before. */
function judgeAccepted(chain: readonly Uint8Array[], trusted: TrustedRoot): void {
  let previous: { root: RawRoot; keys: Buffer[] } | null = null;
  for (const bytes of chain) {
    const envelope = JSON.parse(Buffer.from(bytes).toString('utf8')) as { payloadType: string; payload: string; signatures: unknown[] };
    expect(envelope.payloadType).toBe(ROOT_PAYLOAD_TYPE);
    const payload = Buffer.from(envelope.payload, 'base64');
    const text = payload.toString('utf8');
    expect(oracleCanonical(JSON.parse(text))).toBe(text);
    const root = JSON.parse(text) as RawRoot;
    const keys = root.keys.map((k) => Buffer.from(k.public_key, 'base64'));
    for (const [i, k] of root.keys.entries()) expect(k.keyid).toBe(oracleSha256(keys[i] as Buffer));
    expect(root.threshold).toBeGreaterThanOrEqual(1);
    expect(oracleSigners(envelope.payloadType, payload, envelope.signatures, keys)).toBeGreaterThanOrEqual(root.threshold);
    if (previous !== null) {
      expect(root.version).toBe(previous.root.version + 1);
      expect(root.network).toBe(previous.root.network);
      expect(oracleSigners(envelope.payloadType, payload, envelope.signatures, previous.keys)).toBeGreaterThanOrEqual(previous.root.threshold);
    }
    previous = { root, keys };
  }
  expect(previous).not.toBeNull();
  expect(trusted.root.version).toBe(previous?.root.version);
  expect(trusted.root.threshold).toBe(previous?.root.threshold);
  expect(trusted.keys.map((k) => Buffer.from(k.publicKey).toString('base64'))).toEqual(previous?.keys.map((k) => k.toString('base64')));
}

describe('walkRootChain under fuzzing', () => {
  it('never crashes and accepts only chains where every link is signed by a threshold of the keys before it and its own', () => {
    let accepted = 0;
    let rotations = 0;
    const runs = fuzzRuns();
    const seed = fuzzSeed();
    fc.assert(
      fc.property(fc.array(link, { minLength: 1, maxLength: 4 }), (links) => {
        const chain = buildChain(links);
        let trusted: TrustedRoot;
        try {
          trusted = walkRootChain(chain);
        } catch (error) {
          if (!(error instanceof SnapshotError)) throw new Error(`root walk crashed with ${String(error)}`, { cause: error });
          return;
        }
        accepted++;
        if (chain.length > 1) rotations++;
        judgeAccepted(chain, trusted);
      }),
      { numRuns: runs, seed },
    );
    console.log(`root fuzz: seed ${seed}, ${runs} chains, ${accepted} accepted (${rotations} with a rotation), 0 crashes, 0 false accepts`);
    // Both single roots and real rotations must be reached, or the oracle judged nothing.
    expect(rotations).toBeGreaterThan(0);
    expect(accepted).toBeGreaterThan(runs / 100);
  });
});
