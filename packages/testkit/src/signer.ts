import {
  type Envelope,
  type SigningKey,
  type SnapshotInput,
  type TrustedRoot,
  cryptoReady,
  generateSigningKey,
  signRoot,
  signSnapshot,
  walkRootChain,
} from '@resultity/snapshot';

/** A throwaway network identity for tests: keys, a root envelope, and a way to sign snapshots. */
export interface TestSigner {
  readonly network: string;
  readonly keys: readonly SigningKey[];
  readonly rootEnvelope: Envelope;
  readonly rootBytes: Uint8Array;
  readonly trusted: TrustedRoot;
  /** Signs a snapshot with the root's keys (or the given ones); returns envelope bytes and digest. */
  sign(snapshot: SnapshotInput | Record<string, unknown>, keys?: readonly SigningKey[]): { bytes: Uint8Array; envelope: Envelope; digest: string };
}

export function envelopeBytes(envelope: Envelope): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(envelope));
}

export async function createTestSigner(options: { network?: string; keys?: number; threshold?: number; expiresAt?: string } = {}): Promise<TestSigner> {
  await cryptoReady();
  const network = options.network ?? 'testnet';
  const keys = Array.from({ length: options.keys ?? 1 }, () => generateSigningKey());
  const { envelope: rootEnvelope } = signRoot(
    { network, version: 1, expiresAt: options.expiresAt ?? '2099-01-01T00:00:00Z', threshold: options.threshold ?? 1, keys },
    keys,
  );
  const rootBytes = envelopeBytes(rootEnvelope);
  return {
    network,
    keys,
    rootEnvelope,
    rootBytes,
    trusted: walkRootChain([rootBytes]),
    sign(snapshot, signWith = keys) {
      const { envelope, digest } = signSnapshot(snapshot, signWith);
      return { bytes: envelopeBytes(envelope), envelope, digest };
    },
  };
}
