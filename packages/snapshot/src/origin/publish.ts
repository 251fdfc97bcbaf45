import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { writeFileAtomic } from '@resultity/node-kit';

import { configDigest, parseCanonical } from '../canonical.js';
import { buildChunkList } from '../chunks.js';
import { envelopePayload, expectPayloadType } from '../dsse.js';
import { parseEnvelope } from '../envelope.js';
import { refuse } from '../errors.js';
import { type TrustedRoot, walkRootChain } from '../root.js';
import { type Envelope, SNAPSHOT_PAYLOAD_TYPE, type Snapshot } from '../schema.js';
import { parseSnapshotValue, verifySnapshotEnvelope } from '../verify.js';
import { type LatestHint, originPaths, parseLatestHint } from './layout.js';

export interface PublishInput {
  /** Directory the origin serves. */
  readonly dir: string;
  /** The snapshot envelope bytes, as signed. */
  readonly envelope: Uint8Array;
  /** Root envelopes, oldest first; each is written under root/{version}.json and used to verify. */
  readonly roots?: readonly Uint8Array[];
  readonly now: Date;
}

export interface PublishResult {
  readonly digest: string;
  readonly sequence: number;
  readonly network: string;
  readonly files: readonly string[];
}

/**
 * Writes the static layout of SPEC §5. The snapshot and roots go first; latest.json is
 * replaced atomically and last, so no client is ever pointed at a file that is not there yet.
 * A publish that would move latest.json back in sequence is refused.
 */
export async function publishSnapshot(input: PublishInput): Promise<PublishResult> {
  const envelope = parseEnvelope(input.envelope);
  const { snapshot, digest } = checkPublishable(envelope, input);
  const network = snapshot.network;
  const files: string[] = [];

  const roots = input.roots ?? [];
  for (const bytes of roots) {
    const rootEnvelope = parseEnvelope(bytes);
    const version = (parseCanonical(envelopePayload(rootEnvelope), 'root payload') as { version: number }).version;
    const path = originPaths.root(network, version);
    await writeFileAtomic(join(input.dir, path), bytes);
    files.push(path);
  }

  const latestFile = join(input.dir, originPaths.latest(network));
  const previous = await readLatest(latestFile);
  if (previous && previous.sequence > snapshot.sequence) {
    refuse('PUBLISH_CONFLICT', `origin already serves sequence ${previous.sequence}; refusing to publish ${snapshot.sequence}`);
  }
  if (previous && previous.sequence === snapshot.sequence && previous.config_digest !== digest) {
    refuse('PUBLISH_CONFLICT', `origin already serves sequence ${previous.sequence} as ${previous.config_digest}`);
  }

  const snapshotPath = originPaths.snapshot(network, digest.slice('sha256:'.length));
  await writeFileAtomic(join(input.dir, snapshotPath), input.envelope);
  files.push(snapshotPath);

  const latest: LatestHint = { config_digest: digest, sequence: snapshot.sequence };
  await writeFileAtomic(latestFile, `${JSON.stringify(latest)}\n`, 0o644, await nextModificationTime(latestFile, input.now));
  files.push(originPaths.latest(network));
  return { digest, sequence: snapshot.sequence, network, files };
}

function checkPublishable(envelope: Envelope, input: PublishInput): { snapshot: Snapshot; digest: string } {
  if (input.roots && input.roots.length > 0) {
    const root: TrustedRoot = walkRootChain(input.roots);
    const verified = verifySnapshotEnvelope({ envelope: input.envelope, root, now: input.now });
    return { snapshot: verified.snapshot, digest: verified.digest };
  }
  // Without roots the signatures cannot be checked here, but the payload still must be one
  // that an Agent could accept.
  expectPayloadType(envelope, SNAPSHOT_PAYLOAD_TYPE);
  const payload = envelopePayload(envelope);
  const snapshot = parseSnapshotValue(parseCanonical(payload, 'snapshot payload'));
  return { snapshot, digest: configDigest(payload) };
}

/**
 * Static servers derive ETags from modification time in whole seconds and size (nginx:
 * "mtime-size"), and two latest.json files of one length written within a second would share
 * one, so a node asking If-None-Match would be told nothing changed. The new file's time is
 * therefore always at least a second past the one it replaces.
 */
async function nextModificationTime(path: string, now: Date): Promise<Date> {
  const previous = await stat(path).catch(() => null);
  if (previous === null) return now;
  const floor = (Math.floor(previous.mtimeMs / 1000) + 1) * 1000;
  return new Date(Math.max(now.getTime(), floor));
}

async function readLatest(path: string): Promise<LatestHint | null> {
  try {
    return parseLatestHint(JSON.parse(await readFile(path, 'utf8')));
  } catch {
    return null;
  }
}

/**
 * Writes a model's chunk list (SPEC §3, §5) under chunks/{hex}.json and returns the value for
 * the model's `chunks` field. Written before the snapshot that names it is published, so no
 * Agent is pointed at a list that is not there yet; the file is immutable like a snapshot.
 */
export async function publishChunkList(input: {
  readonly dir: string;
  readonly network: string;
  /** The lowercase hex SHA-256 of every chunk, in file order. */
  readonly chunkDigests: readonly string[];
  readonly chunkSize: number;
}): Promise<{ readonly size: number; readonly sha256: string; readonly path: string }> {
  const list = buildChunkList(input.chunkDigests);
  const path = originPaths.chunks(input.network, list.sha256);
  await writeFileAtomic(join(input.dir, path), list.bytes);
  return { size: input.chunkSize, sha256: list.sha256, path };
}
