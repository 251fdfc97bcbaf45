import { generateSigningKey, signRoot } from '@resultity/snapshot';
import { type TestSigner, createTestSigner, envelopeBytes } from '@resultity/testkit';
import { beforeEach, describe, expect, it } from 'vitest';

import { MemoryAudit } from './fakes.test-support.js';
import { TrustStore, type TrustStorePorts } from './trust-store.js';

let signer: TestSigner;
let published: Map<number, Uint8Array>;
let kept: Map<number, Uint8Array>;
let audit: MemoryAudit;

function store(): TrustStore {
  const ports = {
    provisioned: [signer.rootBytes],
    cachedRoots: async () => [...kept.entries()].sort(([a], [b]) => a - b).map(([, bytes]) => bytes),
    putRoot: async (version: number, bytes: Uint8Array) => {
      kept.set(version, bytes);
    },
    fetchRoot: async (version: number) => published.get(version) ?? null,
    audit,
  } satisfies TrustStorePorts;
  return new TrustStore(ports);
}

/** Root N+1 signed by the keys of N and its own. */
function rotate(version: number, previousKeys: readonly ReturnType<typeof generateSigningKey>[]) {
  const key = generateSigningKey();
  const { envelope } = signRoot({ network: 'testnet', version, expiresAt: '2099-01-01T00:00:00Z', threshold: 1, keys: [key] }, [...previousKeys, key]);
  return { key, bytes: envelopeBytes(envelope) };
}

beforeEach(async () => {
  signer = await createTestSigner();
  published = new Map();
  kept = new Map();
  audit = new MemoryAudit();
});

describe('TrustStore', () => {
  it('walks the chain the origin has, persisting and auditing each step', async () => {
    const two = rotate(2, signer.keys);
    const three = rotate(3, [two.key]);
    published.set(2, two.bytes).set(3, three.bytes);
    expect((await store().refresh()).root.version).toBe(3);
    expect([...kept.keys()]).toEqual([2, 3]);
    expect(audit.entries.map(({ type, from, to }) => [type, from, to])).toEqual([
      ['root-rotated', 1, 2],
      ['root-rotated', 2, 3],
    ]);
  });

  it('starts from the roots it learned before, without asking the origin', async () => {
    const two = rotate(2, signer.keys);
    kept.set(2, two.bytes);
    expect((await store().current()).root.version).toBe(2);
  });

  it('refuses a next root that the current keys did not sign, and keeps nothing of it', async () => {
    const stranger = generateSigningKey();
    published.set(2, rotate(2, [stranger]).bytes);
    await expect(store().refresh()).rejects.toMatchObject({ code: 'ROOT_ROTATION_INVALID' });
    expect(kept.size).toBe(0);
  });
});
