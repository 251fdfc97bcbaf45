import { createHash } from 'node:crypto';

import { type Model, buildChunkList } from '@resultity/snapshot';

import { OriginChunkLists } from '../../src/chunk-lists.js';
import type { ChunkPorts, ChunkStaging, Downloader } from '../../src/ports.js';
import type { RangeMirror } from './range-mirror.js';

export const MiB = 1024 * 1024;
export const NETWORK = 'testnet';

/** The chunk list of `bytes` as a publisher makes it: RFC 8785 bytes and their digest. */
export function chunkListOf(bytes: Uint8Array, chunkSize: number): { bytes: Uint8Array; sha256: string; digests: string[] } {
  const digests: string[] = [];
  for (let at = 0; at < bytes.length; at += chunkSize) {
    digests.push(
      createHash('sha256')
        .update(bytes.subarray(at, at + chunkSize))
        .digest('hex'),
    );
  }
  return { ...buildChunkList(digests), digests };
}

/** Where a chunk list is served from an origin (SPEC §5). */
export function chunkListPath(hex: string): string {
  return `/v1/${NETWORK}/chunks/${hex}.json`;
}

/** A model with `chunks`, whose list `origin` serves, fetched from `urls`. */
export function chunkedModel(
  name: string,
  bytes: Uint8Array,
  chunkSize: number,
  urls: string[],
  origin: RangeMirror,
): Model & { chunks: NonNullable<Model['chunks']> } {
  const list = chunkListOf(bytes, chunkSize);
  origin.serve(chunkListPath(list.sha256), list.bytes);
  return {
    name,
    version: '1.0.0',
    sha256: createHash('sha256').update(bytes).digest('hex'),
    size: bytes.length,
    urls,
    chunks: { size: chunkSize, sha256: list.sha256 },
  };
}

/** Chunk ports on a real origin server and a real store's staging. */
export function chunkPorts(origin: RangeMirror, downloader: Downloader, staging: ChunkStaging, connections?: number, pieceBytes?: number): ChunkPorts {
  return {
    lists: new OriginChunkLists(origin.url(''), NETWORK, downloader),
    staging,
    ...(connections === undefined ? {} : { connections }),
    ...(pieceBytes === undefined ? {} : { pieceBytes }),
  };
}
