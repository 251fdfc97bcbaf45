import { createHash } from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { buildChunkList } from '../chunks.js';
import { refuse } from '../errors.js';
import { publishChunkList } from '../origin/publish.js';
import { describeFsError } from '@resultity/node-kit';
import { type Model, ModelSchema, NAME_PATTERN } from '../schema.js';

/** What `model add` needs: the file, its identity, its mirrors, and where its chunk list goes. */
export interface ModelAddInput {
  readonly file: string;
  readonly name: string;
  readonly version: string;
  readonly urls: readonly string[];
  readonly chunkSize: number;
  readonly origin: string;
  /** The network whose origin tree gets the chunk list; read from the origin when absent. */
  readonly network?: string;
}

export const DEFAULT_CHUNK_SIZE = 64 * 2 ** 20;
const READ_BYTES = 4 * 2 ** 20;
const UNITS: Record<string, number> = { '': 1, b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30 };

/** Parses a chunk size like `64MiB`, `1GiB` or `1048576`: a power of two from 1 MiB to 1 GiB (SPEC §3). */
export function parseChunkSize(text: string): number {
  const m = /^(\d{1,10})\s*([kmg]i?b|b)?$/i.exec(text.trim());
  const unit = (m?.[2] ?? '').toLowerCase().replace(/^([kmg])b$/, '$1ib');
  const size = m ? Number(m[1]) * (UNITS[unit] ?? Number.NaN) : Number.NaN;
  if (!Number.isSafeInteger(size) || size < 2 ** 20 || size > 2 ** 30 || (size & (size - 1)) !== 0) {
    refuse('USAGE', `--chunk-size must be a power of two from 1MiB to 1GiB, found "${text}"`);
  }
  return size;
}

/** The network an origin directory serves, when it serves exactly one (`<origin>/v1/<network>/`). */
async function networkOf(origin: string): Promise<string> {
  let names: string[];
  try {
    names = (await readdir(join(origin, 'v1'), { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (cause) {
    return refuse('USAGE', `cannot tell the network from ${origin} (${describeFsError(cause)}); pass --network`, cause);
  }
  if (names.length !== 1) refuse('USAGE', `${origin} serves ${names.length} networks (${names.join(', ') || 'none'}); pass --network`);
  return names[0] as string;
}

/**
 * Hashes a model file once — the whole file and each chunk in the same pass — writes its chunk
 * list into the origin (`v1/<network>/chunks/<hex>.json`, RFC 8785 bytes, atomically; the name
 * is its own digest, so an existing one is the same file) and returns the model entry for the
 * snapshot, `chunks` included, checked against the snapshot schema.
 */
export async function addModel(input: ModelAddInput): Promise<{ model: Model; listPath: string }> {
  if (!NAME_PATTERN.test(input.name)) refuse('USAGE', `--name must match ${NAME_PATTERN.source}, found "${input.name}"`);
  if (input.network !== undefined && !NAME_PATTERN.test(input.network))
    refuse('USAGE', `--network must match ${NAME_PATTERN.source}, found "${input.network}"`);
  const network = input.network ?? (await networkOf(input.origin));

  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(input.file, 'r');
  } catch (cause) {
    return refuse('IO', `cannot read ${input.file}: ${describeFsError(cause)}`, cause);
  }
  const whole = createHash('sha256');
  const digests: string[] = [];
  let size = 0;
  try {
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    let chunk = createHash('sha256');
    let inChunk = 0;
    for (;;) {
      // Reads never cross a chunk boundary, so each read feeds exactly one chunk hash.
      const want = Math.min(buffer.length, input.chunkSize - inChunk);
      const { bytesRead } = await handle.read(buffer, 0, want, null);
      if (bytesRead === 0) break;
      const bytes = buffer.subarray(0, bytesRead);
      whole.update(bytes);
      chunk.update(bytes);
      size += bytesRead;
      inChunk += bytesRead;
      if (inChunk === input.chunkSize) {
        digests.push(chunk.digest('hex'));
        chunk = createHash('sha256');
        inChunk = 0;
      }
    }
    if (inChunk > 0) digests.push(chunk.digest('hex'));
  } catch (cause) {
    return refuse('IO', `cannot read ${input.file}: ${describeFsError(cause)}`, cause);
  } finally {
    await handle.close();
  }

  const list = buildChunkList(digests);
  const parsed = ModelSchema.safeParse({
    name: input.name,
    version: input.version,
    sha256: whole.digest('hex'),
    size,
    urls: [...input.urls],
    chunks: { size: input.chunkSize, sha256: list.sha256 },
  });
  if (!parsed.success) refuse('USAGE', `the model entry is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);

  try {
    const published = await publishChunkList({ dir: input.origin, network, chunkDigests: digests, chunkSize: input.chunkSize });
    return { model: parsed.data, listPath: published.path };
  } catch (cause) {
    return refuse('IO', `cannot write the chunk list into ${input.origin}: ${describeFsError(cause)}`, cause);
  }
}
