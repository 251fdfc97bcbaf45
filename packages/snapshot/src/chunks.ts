import { sha256Hex, utf8 } from './bytes.js';
import { parseCanonical } from './canonical.js';
import { refuse } from './errors.js';

/** The `chunks` field of a model (SPEC §3): chunk length and the digest of its chunk list. */
export interface ChunkSpec {
  readonly size: number;
  readonly sha256: string;
}

/** A chunk list as the publisher writes it (SPEC §5 `chunks/{hex}.json`). */
export interface ChunkList {
  /** The RFC 8785 bytes of the JSON array; what is served and hashed. */
  readonly bytes: Uint8Array;
  /** Lowercase hex SHA-256 of `bytes`: the model's `chunks.sha256` and the `{hex}` of its URL. */
  readonly sha256: string;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** How many chunks a file of `size` bytes has in chunks of `chunkSize`: the last may be shorter. */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/**
 * The exact length of a canonical chunk list of `count` entries: each entry is a quoted
 * 64-digit hex string (66 bytes), separated by commas, inside brackets. Known before a byte is
 * read, so a fetcher can bound its read by it and refuse more with TOO_LARGE.
 */
export function chunkListByteLength(count: number): number {
  return count === 0 ? 2 : 67 * count + 1;
}

/** Builds the chunk list of a model from the SHA-256 of each of its chunks, in file order. */
export function buildChunkList(chunkDigests: readonly string[]): ChunkList {
  chunkDigests.forEach((digest, index) => {
    if (!HEX64.test(digest)) refuse('CHUNK_LIST_INVALID', `chunk ${index} digest must be 64 lowercase hex digits, found "${digest}"`);
  });
  // JSON.stringify of an array of plain hex strings is already its RFC 8785 form: no keys to
  // sort, nothing to escape.
  const bytes = utf8(JSON.stringify(chunkDigests));
  return { bytes, sha256: sha256Hex(bytes) };
}

/**
 * Verifies a chunk list fetched for a model (SPEC §3, §5) and returns its entries. The digest
 * comes first because it says whom to blame: bytes that are not the ones asked for
 * (DIGEST_MISMATCH) are the origin's fault and worth another mirror, while a list whose digest
 * matches but whose form, entries or length are wrong is what the publisher put in the snapshot,
 * and every mirror will serve the same.
 */
export function verifyChunkList(bytes: Uint8Array, model: { readonly size: number; readonly chunks: ChunkSpec }): string[] {
  const count = chunkCount(model.size, model.chunks.size);
  const digest = sha256Hex(bytes);
  if (digest !== model.chunks.sha256) {
    refuse('DIGEST_MISMATCH', `chunk list digest is ${digest}, expected ${model.chunks.sha256}`);
  }
  const value = parseCanonical(bytes, 'chunk list');
  if (!Array.isArray(value)) refuse('CHUNK_LIST_INVALID', `chunk list is a JSON ${value === null ? 'null' : typeof value}, expected an array`);
  value.forEach((entry, index) => {
    if (typeof entry !== 'string' || !HEX64.test(entry)) {
      refuse('CHUNK_LIST_INVALID', `chunk list entry ${index} must be 64 lowercase hex digits, found ${JSON.stringify(entry)}`);
    }
  });
  if (value.length !== count) {
    refuse('CHUNK_COUNT_MISMATCH', `chunk list has ${value.length} entries, a model of ${model.size} bytes in chunks of ${model.chunks.size} has ${count}`);
  }
  return value as string[];
}
