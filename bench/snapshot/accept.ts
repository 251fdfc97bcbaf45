// Benchmark: the whole accept pipeline of a snapshot envelope (base64, signatures, canonical
// check, schema, digest) for a ~150 KB snapshot, in one run next to (a) tuf-js verifying a
// targets metadata of about the same size and (b) the floor: JSON.parse + base64 decode +
// SHA-256 + one Ed25519 verify of the same bytes with Node's own crypto.
import { createHash, generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { loadavg } from 'node:os';

import { createTestSigner, largeSnapshot } from '@resultity/testkit';
import { canonicalize as tufCanonicalize } from '@tufjs/canonical-json';
import { Metadata, MetadataKind } from '@tufjs/models';
import { pae, verifySnapshotEnvelope } from '@resultity/snapshot';
import sodium from 'libsodium-wrappers';

const NOW = new Date('2026-11-26T00:00:00Z');
const ROUNDS = Number(process.env.ROUNDS ?? 200);

type Timing = { label: string; medianMs: number; p90Ms: number };

// The contenders run round-robin, one call each per round, so that a busy machine (this one is
// shared) slows them all alike and their ratios stay meaningful even when absolute times do not.
function measureTogether(contenders: Record<string, () => void>): Record<string, Timing> {
  const entries = Object.entries(contenders);
  for (let i = 0; i < 20; i++) for (const [, fn] of entries) fn(); // warm up the JIT and libsodium
  const times: Record<string, number[]> = Object.fromEntries(entries.map(([label]) => [label, []]));
  for (let i = 0; i < ROUNDS; i++) {
    for (const [label, fn] of entries) {
      const start = process.hrtime.bigint();
      fn();
      times[label]!.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
  }
  return Object.fromEntries(
    Object.entries(times).map(([label, t]) => {
      t.sort((a, b) => a - b);
      return [label, { label, medianMs: t[Math.floor(t.length / 2)] ?? 0, p90Ms: t[Math.floor(t.length * 0.9)] ?? 0 }];
    }),
  );
}

// --- ours -------------------------------------------------------------------------------
const signer = await createTestSigner();
const { bytes: envelope } = signer.sign(largeSnapshot(500, 50));
const ours = () => {
  verifySnapshotEnvelope({ envelope, root: signer.trusted, now: NOW });
};

// --- floor: the same bytes, the least any verifier must do ------------------------------
// Measured twice: with Node's native Ed25519 and with libsodium's (the primitive ours uses).
const { publicKey: floorPublic, privateKey: floorPrivate } = generateKeyPairSync('ed25519');
const parsedOnce = JSON.parse(Buffer.from(envelope).toString('utf8')) as { payloadType: string; payload: string };
const payloadOnce = Buffer.from(parsedOnce.payload, 'base64');
const floorSig = nodeSign(null, pae(parsedOnce.payloadType, payloadOnce), floorPrivate);
const floor = () => {
  const parsed = JSON.parse(Buffer.from(envelope).toString('utf8')) as { payloadType: string; payload: string };
  const payload = Buffer.from(parsed.payload, 'base64');
  createHash('sha256').update(payload).digest('hex');
  if (!nodeVerify(null, pae(parsed.payloadType, payload), floorPublic, floorSig)) throw new Error('floor verify failed');
};

const signingKey = signer.keys[0]!;
const sodiumSig = sodium.crypto_sign_detached(pae(parsedOnce.payloadType, payloadOnce), signingKey.secretKey);
const floorSodium = () => {
  const parsed = JSON.parse(Buffer.from(envelope).toString('utf8')) as { payloadType: string; payload: string };
  const payload = Buffer.from(parsed.payload, 'base64');
  createHash('sha256').update(payload).digest('hex');
  if (!sodium.crypto_sign_verify_detached(sodiumSig, pae(parsed.payloadType, payload), signingKey.publicKey)) {
    throw new Error('floor verify failed');
  }
};

// --- tuf-js: targets metadata of about the same size, verified by its root ---------------
const tufKeys = generateKeyPairSync('ed25519');
const rawPublic = tufKeys.publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
const tufKeyid = createHash('sha256').update(rawPublic).digest('hex');
const targets: Record<string, unknown> = {};
for (let i = 0; i < 550; i++) {
  targets[`models/model-${i}/1.${i}.0/weights.gguf`] = {
    length: 1_000_000 + i,
    hashes: { sha256: createHash('sha256').update(`t${i}`).digest('hex') },
    custom: { version: `1.${i}.0`, urls: [`https://models.example/resultity/model-${i}/weights.gguf`] },
  };
}
const targetsSigned = { _type: 'targets', spec_version: '1.0.31', version: 1, expires: '2099-01-01T00:00:00Z', targets };
const tufSig = nodeSign(null, Buffer.from(tufCanonicalize(targetsSigned)), tufKeys.privateKey).toString('hex');
const targetsText = JSON.stringify({ signed: targetsSigned, signatures: [{ keyid: tufKeyid, sig: tufSig }] });
const rootJson = {
  signed: {
    _type: 'root',
    spec_version: '1.0.31',
    version: 1,
    expires: '2099-01-01T00:00:00Z',
    consistent_snapshot: true,
    keys: { [tufKeyid]: { keytype: 'ed25519', scheme: 'ed25519', keyval: { public: rawPublic.toString('hex') } } },
    roles: Object.fromEntries(['root', 'targets', 'snapshot', 'timestamp'].map((role) => [role, { keyids: [tufKeyid], threshold: 1 }])),
  },
  signatures: [],
};
const tufRoot = Metadata.fromJSON(MetadataKind.Root, rootJson);
const tuf = () => {
  const metadata = Metadata.fromJSON(MetadataKind.Targets, JSON.parse(targetsText));
  tufRoot.verifyDelegate('targets', metadata);
};

const timed = measureTogether({ ours, floor, floorSodium, tuf });
const [o, f, fs, t] = [timed.ours!, timed.floor!, timed.floorSodium!, timed.tuf!];

const result = {
  node: process.version,
  rounds: ROUNDS,
  envelopeBytes: envelope.byteLength,
  tufTargetsBytes: Buffer.byteLength(targetsText),
  oursMedianMs: +o.medianMs.toFixed(3),
  oursP90Ms: +o.p90Ms.toFixed(3),
  floorMedianMs: +f.medianMs.toFixed(3),
  floorLibsodiumMedianMs: +fs.medianMs.toFixed(3),
  tufMedianMs: +t.medianMs.toFixed(3),
  oursOverTuf: +(o.medianMs / t.medianMs).toFixed(3),
  oursOverFloor: +(o.medianMs / f.medianMs).toFixed(2),
  oursOverFloorLibsodium: +(o.medianMs / fs.medianMs).toFixed(2),
  goals: { oursOverTuf: '<= 0.1', oursOverFloorLibsodium: '<= 3' },
  loadAverage: loadavg().map((x) => +x.toFixed(2)),
};
console.log(JSON.stringify(result, null, 2));
