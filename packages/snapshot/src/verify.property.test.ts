import { createTestSigner, envelopeBytes } from '@resultity/testkit';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';

import { REFUSAL_CODES, SnapshotError } from './errors.js';
import { verifySnapshot } from './verify.js';

const NOW = new Date('2026-11-26T00:00:00Z');
let signer: Awaited<ReturnType<typeof createTestSigner>>;

beforeAll(async () => {
  signer = await createTestSigner();
});

const name = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/);
const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const text = fc.string({ maxLength: 20 });
const count = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

const model = fc.record(
  {
    name,
    version: fc.string({ minLength: 1, maxLength: 12 }),
    sha256: hex64,
    size: count,
    urls: fc.array(fc.webUrl(), { minLength: 1, maxLength: 3 }),
    chunks: fc.record({ size: fc.integer({ min: 20, max: 30 }).map((e) => 2 ** e), sha256: hex64 }),
  },
  { requiredKeys: ['name', 'version', 'sha256', 'size', 'urls'] },
);

const container = fc.record(
  {
    name,
    image: fc.constantFrom('127.0.0.1:5000/resultity/runtime', 'registry.example/a/b'),
    tag: fc.string({ minLength: 1, maxLength: 10 }),
    digest: hex64.map((h) => `sha256:${h}`),
    env: fc.dictionary(fc.stringMatching(/^[A-Z_]{1,10}$/), text, { maxKeys: 4 }),
    command: fc.array(text, { maxLength: 4 }),
    ports: fc.array(
      fc.record({ container: fc.integer({ min: 1, max: 65535 }), host: fc.integer({ min: 1, max: 65535 }), protocol: fc.constantFrom('tcp', 'udp') }),
      { maxLength: 3 },
    ),
    restart: fc.constantFrom('no', 'on-failure', 'always', 'unless-stopped'),
    bridge: fc.boolean(),
    models: fc.boolean(),
    gpus: fc.oneof(fc.constant('all'), fc.integer({ min: 1, max: 16 })),
    shm_size_mb: fc.integer({ min: 1, max: 1_000_000 }),
  },
  { requiredKeys: ['name', 'image', 'tag', 'digest', 'env', 'command', 'ports', 'restart'] },
);

const snapshot = fc.record(
  {
    schema: fc.constant(1),
    network: fc.constant('testnet'),
    sequence: count,
    issued_at: fc.constant('2026-11-25T12:00:00Z'),
    expires_at: fc.constant('2099-12-02T12:00:00Z'),
    models: fc.uniqueArray(model, { selector: (m) => m.name, maxLength: 5 }),
    runtime: fc.record({ containers: fc.uniqueArray(container, { selector: (c) => c.name, maxLength: 3 }) }),
    job: fc.record({
      max_tokens: fc.integer({ min: 1, max: 1_000_000 }),
      max_queue_size: fc.integer({ min: 0, max: 10_000 }),
      execution_timeout_ms: fc.integer({ min: 1, max: 10_000_000 }),
      validation: fc.array(fc.record({ field: fc.constantFrom('max_tokens', 'prompt.length'), op: fc.constantFrom('lte', 'gt'), value: fc.integer() }), {
        maxLength: 3,
      }),
    }),
    participation: fc.record({
      mode: fc.constantFrom('testnet', 'mainnet'),
      subclouds: fc.uniqueArray(
        fc.record({ id: name, require: fc.record({ min_vram_gb: fc.double({ min: 0, max: 1000, noNaN: true }), regions: fc.array(text, { maxLength: 3 }) }) }),
        { selector: (s) => s.id, maxLength: 3 },
      ),
    }),
    ttl: fc.record({
      poll_interval_s: fc.integer({ min: 1, max: 86400 }),
      heartbeat_interval_s: fc.integer({ min: 1, max: 86400 }),
      retry_initial_ms: fc.constant(1000),
      retry_max_ms: fc.integer({ min: 1000, max: 10_000_000 }),
      cache_ttl_s: fc.integer({ min: 1, max: 86400 }),
    }),
    rollout: fc.record({ percent: fc.integer({ min: 0, max: 100 }) }),
    unknown_field: fc.jsonValue({ maxDepth: 2 }),
  },
  { requiredKeys: ['schema', 'network', 'sequence', 'issued_at', 'expires_at', 'models', 'runtime', 'job', 'participation', 'ttl'] },
);

describe('verifySnapshot, for any valid snapshot', () => {
  it('accepts what was signed and returns the same digest and content', async () => {
    await fc.assert(
      fc.asyncProperty(snapshot, async (value) => {
        const { bytes, digest } = signer.sign(value);
        const verified = await verifySnapshot({ envelope: bytes, root: signer.trusted, now: NOW });
        expect(verified.digest).toBe(digest);
        expect(verified.snapshot.sequence).toBe(value.sequence);
        expect(verified.snapshot.models.map((m) => m.name)).toEqual(value.models.map((m) => m.name));
      }),
      { numRuns: 150 },
    );
  });

  it('never accepts a byte-mutated envelope as anything but the original, and only refuses with a typed code', async () => {
    const codes = new Set<string>(REFUSAL_CODES);
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(snapshot, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), async (value, mutations) => {
        const { envelope, digest } = signer.sign(value);
        // Without the optional keyid hint, every byte of the envelope is load-bearing.
        const bare = envelopeBytes({ ...envelope, signatures: envelope.signatures.map((s) => ({ sig: s.sig })) });
        const mutated = bare.slice();
        for (const [position, xor] of mutations) {
          const i = position % mutated.length;
          mutated[i] = (mutated[i] ?? 0) ^ xor;
        }
        try {
          const verified = await verifySnapshot({ envelope: mutated, root: signer.trusted, now: NOW });
          // The only survivors are encodings SPEC §2 declares equal (standard vs URL-safe base64).
          expect(verified.digest).toBe(digest);
        } catch (error) {
          expect(error).toBeInstanceOf(SnapshotError);
          expect(codes.has((error as SnapshotError).code)).toBe(true);
          refused++;
        }
      }),
      { numRuns: 400 },
    );
    expect(refused).toBeGreaterThan(350);
  });
});
