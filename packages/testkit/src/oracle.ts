import { createHash, createPublicKey, verify } from 'node:crypto';

/**
 * An independent judge of what a verifier accepted, for the fuzzers. It shares no code with
 * @resultity/snapshot: signatures are checked with node:crypto (OpenSSL), not libsodium, PAE
 * and RFC 8785 are rebuilt here from the SPEC's words, and base64 is Node's decoder. A bug
 * in the package's verifier therefore cannot hide itself by being repeated in its judge.
 */

// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the raw 32 key bytes follow.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** SPEC §2 PAE, built by hand. */
export function oraclePae(payloadType: string, payload: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.byteLength} `), Buffer.from(payload)]);
}

/** True when `sig` is a valid Ed25519 signature of `message` by the raw public key, per OpenSSL. */
export function oracleVerify(rawPublicKey: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  if (rawPublicKey.byteLength !== 32 || sig.byteLength !== 64) return false;
  try {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(rawPublicKey)]), format: 'der', type: 'spki' });
    return verify(null, message, key, sig);
  } catch {
    return false;
  }
}

export function oracleSha256(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** RFC 8785 as its text says: ES number and string serialization, keys sorted by UTF-16 code units. */
export function oracleCanonical(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'number' || typeof value === 'string') {
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(oracleCanonical).join(',')}]`;
  const entries = Object.keys(value as object)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((k) => `${JSON.stringify(k)}:${oracleCanonical((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

/** The number of distinct trusted raw keys with a verifying signature among `sigs` (base64 text). */
export function oracleSigners(payloadType: string, payload: Uint8Array, sigs: readonly unknown[], trusted: readonly Uint8Array[]): number {
  const message = oraclePae(payloadType, payload);
  const distinct = new Map(trusted.map((k) => [Buffer.from(k).toString('hex'), k]));
  let count = 0;
  for (const key of distinct.values()) {
    const signed = sigs.some((s) => {
      const text = (s as { sig?: unknown } | null)?.sig;
      return typeof text === 'string' && oracleVerify(key, message, Buffer.from(text, 'base64'));
    });
    if (signed) count++;
  }
  return count;
}

/** How many fuzz inputs a property gets: FUZZ_RUNS (the long run sets 100,000), else a short run. */
export function fuzzRuns(short = 1000): number {
  const n = Number(process.env.FUZZ_RUNS);
  return Number.isInteger(n) && n > 0 ? n : short;
}

/** The seed of a fuzz run: FUZZ_SEED reproduces one, else a fresh one (fast-check prints it on failure). */
export function fuzzSeed(): number {
  const n = Number(process.env.FUZZ_SEED);
  return Number.isInteger(n) ? n : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
}
