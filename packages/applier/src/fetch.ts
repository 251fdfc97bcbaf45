import { type Hash, createHash } from 'node:crypto';

import type { Model } from '@resultity/snapshot';

import { type DownloadDetail, fetchChunked } from './chunked.js';
import { ApplyError, type MirrorFailure, fail } from './errors.js';
import { HttpStatusError } from './http.js';
import { allMirrorsFailed, hostOf, isNoSpace, mirrorFailure } from './mirror-failures.js';
import type { ChunkPorts, Clock, DownloadResponse, Downloader, ModelStore, PartWriter } from './ports.js';
import { assertSha256 } from './store.js';

/** Options of one model download. */
export interface FetchModelOptions {
  signal?: AbortSignal;
  /** `detail` carries the rate and, for a chunked download, how each mirror is doing. */
  onProgress?: (bytesDone: number, bytesTotal: number, detail?: DownloadDetail) => void;
  /** Interrupted transfers resumed per mirror before the next mirror is tried, default 5. */
  maxAttemptsPerUrl?: number;
  /** First pause between attempts; doubles each time, default 200 ms. */
  retryDelayMs?: number;
}

const PROGRESS_EVERY = 1 << 20;
/** Bytes gathered before one vectored write; chunks are written as they came, never copied. */
const WRITE_BATCH = 4 << 20;
/** Writes queued behind the socket; bounds memory at about WRITE_BATCH × this. */
const MAX_IN_FLIGHT = 4;

/** A hash already fed with what an interrupted download left staged, and how much that is. */
async function resumeHash(store: ModelStore, sha256: string, size: number): Promise<{ hash: Hash; done: number }> {
  const hash = createHash('sha256');
  const done = await store.partSize(sha256);
  if (done > 0 && done <= size) {
    for await (const chunk of store.readPart(sha256)) hash.update(chunk);
  }
  return { hash, done };
}

/**
 * Moves a response body into the staged file. Each chunk is hashed as it arrives and written
 * in order in vectored batches, a few batches in flight while the socket keeps flowing. The
 * hash is only trusted when every byte was written; after any failure the caller re-hashes
 * the staged file. Returns the bytes now received.
 */
async function receive(
  response: DownloadResponse,
  start: number,
  writer: PartWriter,
  hash: Hash,
  size: number,
  label: string,
  host: string,
  options: FetchModelOptions,
): Promise<number> {
  let done = start;
  let reported = done;
  let batch: Uint8Array[] = [];
  let batchBytes = 0;
  let chain: Promise<void> = Promise.resolve();
  const inFlight: Promise<void>[] = [];
  let writeError: unknown = null;
  const flush = () => {
    const chunks = batch;
    batch = [];
    batchBytes = 0;
    chain = chain
      .then(async () => {
        if (writeError === null) await writer.write(chunks);
      })
      .catch((error: unknown) => {
        writeError ??= error;
      });
    inFlight.push(chain);
  };
  try {
    for await (const chunk of response.body) {
      if (writeError !== null) throw writeError;
      if (options.signal?.aborted) fail('ABORTED', `download of ${label} was cancelled`);
      if (done + chunk.length > size) fail('SIZE_MISMATCH', `${host}: more than the expected ${size} bytes arrived`);
      hash.update(chunk);
      done += chunk.length;
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= WRITE_BATCH) {
        flush();
        if (inFlight.length >= MAX_IN_FLIGHT) await inFlight.shift();
      }
      if (done - reported >= PROGRESS_EVERY) {
        reported = done;
        options.onProgress?.(done, size);
      }
    }
  } finally {
    // Whatever arrived is kept, so a resume asks only for the rest.
    try {
      if (batchBytes > 0) flush();
      await chain;
    } finally {
      await writer.close();
      response.body.destroy?.();
    }
  }
  if (writeError !== null) throw writeError;
  return done;
}

/** What to do after one attempt on a mirror failed. */
function nextMove(error: unknown): 'retry' | 'next' | 'discard-and-next' | 'give-up' {
  // Bytes the signed hash or size refute: the staged part is worthless, and this mirror will serve them again.
  if (error instanceof ApplyError && (error.code === 'SIZE_MISMATCH' || error.code === 'HASH_MISMATCH')) return 'discard-and-next';
  // The server's trouble, which may pass: try the same mirror again after a pause.
  if (error instanceof HttpStatusError) return error.transient ? 'retry' : 'next';
  // A refused redirect or address, a stall, a drip: the mirror is refused, not retried.
  if (error instanceof ApplyError && error.code.startsWith('MIRROR_')) return 'next';
  // The node's own trouble (its store, say): another mirror would not help.
  if (error instanceof ApplyError) return 'give-up';
  // A cut connection: resume from what arrived.
  return 'retry';
}

/** What a download that succeeded met on the way: the mirrors it gave up on, for the audit log and metrics. */
export interface FetchReport {
  /** Mirrors given up on; a chunk list given up on is the first, with index -1. */
  dropped: MirrorFailure[];
  /** Set when the model has a chunk list that could not be used, so it came down as one stream instead. */
  fallback: MirrorFailure | null;
}

/**
 * Whether a chunked download's failure leaves the single stream worth trying, and what to
 * record if so: a chunk list the origin cannot serve, one that is refused, or one no mirror's
 * chunks agree with. The stream is verified against the signed whole-file sha256 alone, which
 * the SPEC requires anyway; a mirror that is down, a full disk or a cancel end the download.
 */
function chunkListFallback(error: unknown): MirrorFailure | null {
  if (!(error instanceof ApplyError)) return null;
  const chunksRefuted = error.code === 'DOWNLOAD_FAILED' && (error.mirrors?.length ?? 0) > 0 && error.mirrors!.every((m) => m.code === 'MIRROR_CHUNK_MISMATCH');
  if (error.code !== 'CHUNK_LIST_UNAVAILABLE' && error.code !== 'CHUNK_LIST_INVALID' && !chunksRefuted) return null;
  return {
    index: -1,
    code: chunksRefuted ? 'CHUNK_LIST_INVALID' : error.code,
    detail: `${chunksRefuted ? 'no mirror serves chunks that match the chunk list' : error.message}; fetched as one stream instead`,
  };
}

/**
 * Downloads a model into the store: streamed, hashed while written, size-bounded, resumed with
 * a Range request after an interruption, and renamed into `sha256/<hex>` only once verified. A
 * failed download leaves the store's blobs and index as they were. A model with a chunk list
 * comes down chunked when chunk ports are given; when its list cannot be had or no mirror's
 * chunks match it, it comes down as one stream instead, and the report says so (`fallback`).
 */
export async function fetchModel(
  model: Model,
  ports: { models: ModelStore; downloader: Downloader; clock: Clock; chunks?: ChunkPorts },
  options: FetchModelOptions = {},
): Promise<FetchReport> {
  const { models: store, downloader, clock } = ports;
  const sha256 = assertSha256(model.sha256);
  const size = model.size;
  const label = `${model.name}@${model.version}`;
  if (await store.hasBlob(sha256)) return { dropped: [], fallback: null };

  const chunks = model.chunks;
  let fallback: MirrorFailure | null = null;
  if (chunks !== undefined && ports.chunks !== undefined) {
    // The chunked file is sparse: what it already holds is already taken from the free space.
    const free = await store.freeBytes();
    const needed = size - Math.min(size, await ports.chunks.staging.chunkedBytes(sha256));
    if (free < needed) {
      fail('INSUFFICIENT_SPACE', `model ${label} needs ${needed} more bytes in ${store.root}, ${free} are free`);
    }
    try {
      const report = await fetchChunked({ ...model, chunks }, { ...ports, chunks: ports.chunks }, options);
      return { dropped: report.mirrors.flatMap((m) => (m.failure === null ? [] : [m.failure])), fallback: null };
    } catch (error) {
      fallback = chunkListFallback(error);
      if (fallback === null) throw error;
      // The staged chunks are of no use to the stream, and would take the disk space twice.
      await ports.chunks.staging.discardChunked(sha256);
    }
  }

  const staged = await store.partSize(sha256);
  if (staged > size) await store.discardPart(sha256);
  const needed = size - Math.min(staged, size);
  const free = await store.freeBytes();
  if (free < needed) {
    fail('INSUFFICIENT_SPACE', `model ${label} needs ${needed} more bytes in ${store.root}, ${free} are free`);
  }

  const maxAttempts = options.maxAttemptsPerUrl ?? 5;
  const baseDelay = options.retryDelayMs ?? 200;
  const failures: MirrorFailure[] = [];

  for (const [index, url] of model.urls.entries()) {
    const host = hostOf(url);
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (options.signal?.aborted) fail('ABORTED', `download of ${label} was cancelled`);
      try {
        let { hash, done } = await resumeHash(store, sha256, size);
        if (done < size) {
          const response = await downloader.open(url, { offset: done, signal: options.signal });
          if (response.totalBytes !== null && response.totalBytes !== size) {
            response.body.destroy?.();
            fail('SIZE_MISMATCH', `${host}: expected ${size} bytes, the server has ${response.totalBytes}`);
          }
          if (response.offset !== done) {
            // The server ignored the range: start over rather than trust a splice.
            hash = createHash('sha256');
            done = 0;
          }
          done = await receive(response, done, await store.openPart(sha256, done > 0), hash, size, label, host, options);
          if (done < size) throw new Error(`connection closed after ${done} of ${size} bytes`);
        }
        const actual = hash.digest('hex');
        if (actual !== sha256) {
          await store.discardPart(sha256);
          fail('HASH_MISMATCH', `${host}: expected sha256 ${sha256}, the bytes hash to ${actual}`);
        }
        await store.commitPart(sha256);
        options.onProgress?.(size, size);
        return { dropped: fallback === null ? failures : [fallback, ...failures], fallback };
      } catch (error) {
        if (options.signal?.aborted) {
          throw new ApplyError('ABORTED', `download of ${label} was cancelled (the staged part is kept for a resume)`, {
            cause: error,
          });
        }
        if (isNoSpace(error)) {
          await store.discardPart(sha256).catch(() => undefined);
          throw new ApplyError('INSUFFICIENT_SPACE', `model ${label}: the disk of ${store.root} filled up`, { cause: error });
        }
        const move = nextMove(error);
        if (move === 'give-up') throw error;
        if (move === 'discard-and-next') await store.discardPart(sha256);
        if (move !== 'retry' || attempt === maxAttempts) {
          failures.push(mirrorFailure(index, host, error));
          break;
        }
        await clock.sleep(baseDelay * 2 ** (attempt - 1), options.signal).catch(() => undefined);
      }
    }
  }
  // A part left by interruptions stays staged: the next apply resumes it instead of starting over.
  throw allMirrorsFailed(label, failures);
}
