import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { buildChunkList, chunkCount, chunkListByteLength, verifyChunkList } from './chunks.js';
import { codeOf } from './code-of.test-support.js';

const MiB = 2 ** 20;
const hexOf = (i: number) => createHash('sha256').update(`chunk ${i}`).digest('hex');
const utf8 = (text: string) => new TextEncoder().encode(text);
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** A model of `size` bytes in 1 MiB chunks and a chunk list of `entries`, digest matching. */
function fixture(size: number, entries: unknown[]) {
  const bytes = utf8(JSON.stringify(entries));
  return { bytes, model: { size, chunks: { size: MiB, sha256: sha(bytes) } } };
}

describe('chunkCount', () => {
  it('rounds up, so the last chunk may be shorter', () => {
    expect(chunkCount(0, MiB)).toBe(0);
    expect(chunkCount(1, MiB)).toBe(1);
    expect(chunkCount(MiB, MiB)).toBe(1);
    expect(chunkCount(MiB + 1, MiB)).toBe(2);
    expect(chunkCount(4_920_000_000, 64 * MiB)).toBe(74);
  });
});

describe('buildChunkList', () => {
  it('writes the RFC 8785 bytes of the array and their SHA-256', () => {
    const list = buildChunkList([hexOf(0), hexOf(1)]);
    expect(new TextDecoder().decode(list.bytes)).toBe(`["${hexOf(0)}","${hexOf(1)}"]`);
    expect(list.sha256).toBe(sha(list.bytes));
    expect(list.bytes.byteLength).toBe(chunkListByteLength(2));
    expect(buildChunkList([]).bytes.byteLength).toBe(chunkListByteLength(0));
  });

  it('refuses an entry that is not 64 lowercase hex digits', () => {
    expect(codeOf(() => buildChunkList([hexOf(0).toUpperCase()]))).toBe('CHUNK_LIST_INVALID');
  });

  it('builds what verifyChunkList accepts', () => {
    const digests = [hexOf(0), hexOf(1), hexOf(2)];
    const list = buildChunkList(digests);
    expect(verifyChunkList(list.bytes, { size: 2 * MiB + 5, chunks: { size: MiB, sha256: list.sha256 } })).toEqual(digests);
  });
});

describe('verifyChunkList', () => {
  it('returns the entries of a list that matches its digest and the model', () => {
    const { bytes, model } = fixture(2 * MiB, [hexOf(0), hexOf(1)]);
    expect(verifyChunkList(bytes, model)).toEqual([hexOf(0), hexOf(1)]);
  });

  it('accepts the empty list of an empty model', () => {
    const { bytes, model } = fixture(0, []);
    expect(verifyChunkList(bytes, model)).toEqual([]);
  });

  it('refuses bytes whose digest is not the one asked for with DIGEST_MISMATCH', () => {
    const { bytes, model } = fixture(2 * MiB, [hexOf(0), hexOf(1)]);
    const other = utf8(JSON.stringify([hexOf(0), hexOf(2)]));
    expect(codeOf(() => verifyChunkList(other, model))).toBe('DIGEST_MISMATCH');
    expect(codeOf(() => verifyChunkList(bytes, { ...model, chunks: { ...model.chunks, sha256: hexOf(9) } }))).toBe('DIGEST_MISMATCH');
  });

  it('refuses a list with one chunk too few or too many with CHUNK_COUNT_MISMATCH', () => {
    const short = fixture(2 * MiB + 1, [hexOf(0), hexOf(1)]);
    expect(codeOf(() => verifyChunkList(short.bytes, short.model))).toBe('CHUNK_COUNT_MISMATCH');
    const long = fixture(MiB, [hexOf(0), hexOf(1)]);
    expect(codeOf(() => verifyChunkList(long.bytes, long.model))).toBe('CHUNK_COUNT_MISMATCH');
  });

  it.each([
    ['an uppercase entry', [hexOf(0).toUpperCase()]],
    ['a short entry', ['abc']],
    ['a number', [1]],
    ['a nested array', [[hexOf(0)]]],
  ])('refuses a list holding %s with CHUNK_LIST_INVALID', (_, entries) => {
    const { bytes, model } = fixture(MiB, entries);
    expect(codeOf(() => verifyChunkList(bytes, model))).toBe('CHUNK_LIST_INVALID');
  });

  it('refuses a JSON value that is not an array with CHUNK_LIST_INVALID', () => {
    const { bytes, model } = fixture(MiB, [hexOf(0)]);
    const object = utf8(JSON.stringify({ 0: hexOf(0) }));
    expect(codeOf(() => verifyChunkList(object, { ...model, chunks: { ...model.chunks, sha256: sha(object) } }))).toBe('CHUNK_LIST_INVALID');
    expect(bytes.byteLength).toBe(chunkListByteLength(1));
  });

  it('refuses a list that is not in canonical form with NOT_CANONICAL, even when its digest matches', () => {
    const pretty = utf8(JSON.stringify([hexOf(0)], null, 1));
    expect(codeOf(() => verifyChunkList(pretty, { size: MiB, chunks: { size: MiB, sha256: sha(pretty) } }))).toBe('NOT_CANONICAL');
  });
});
