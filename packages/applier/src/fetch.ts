import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';

import type { Model } from '@resultity/snapshot';

import { ApplyError, fail, messageOf } from './errors.js';
import { HttpStatusError } from './http.js';
import type { Clock, Downloader, ModelStore } from './ports.js';
import { assertSha256 } from './store.js';

/** Options of one model download. */
export interface FetchModelOptions {
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /** Interrupted transfers resumed per mirror before the next mirror is tried, default 5. */
  maxAttemptsPerUrl?: number;
  /** First pause between attempts; doubles each time, default 200 ms. */
  retryDelayMs?: number;
}

const PROGRESS_EVERY = 1 << 20;

function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

async function hashPart(store: ModelStore, sha256: string, size: number) {
  const hash = createHash('sha256');
  const done = await store.partSize(sha256);
  if (done > 0 && done <= size) {
    for await (const chunk of store.readPart(sha256)) hash.update(chunk);
  }
  return { hash, done };
}

/**
 * Downloads a model into the store: streamed, hashed while written, size-bounded, resumed with
 * a Range request after an interruption, and renamed into `sha256/<hex>` only once verified. A
 * failed download leaves the store's blobs and index as they were.
 */
export async function fetchModel(
  model: Model,
  ports: { models: ModelStore; downloader: Downloader; clock: Clock },
  options: FetchModelOptions = {},
): Promise<void> {
  const { models: store, downloader, clock } = ports;
  const sha256 = assertSha256(model.sha256);
  const size = model.size;
  const label = `${model.name}@${model.version}`;
  if (await store.hasBlob(sha256)) return;

  const staged = await store.partSize(sha256);
  if (staged > size) await store.discardPart(sha256);
  const needed = size - Math.min(staged, size);
  const free = await store.freeBytes();
  if (free < needed) {
    fail('INSUFFICIENT_SPACE', `model ${label} needs ${needed} more bytes in ${store.root}, ${free} are free`);
  }

  const maxAttempts = options.maxAttemptsPerUrl ?? 5;
  const baseDelay = options.retryDelayMs ?? 200;
  let lastError: unknown = new ApplyError('DOWNLOAD_FAILED', `model ${label} has no URL`);

  for (const url of model.urls) {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (options.signal?.aborted) fail('ABORTED', `download of ${label} was cancelled`);
      try {
        let { hash, done } = await hashPart(store, sha256, size);
        if (done < size) {
          const response = await downloader.open(url, { offset: done, signal: options.signal });
          const whole = response.totalBytes;
          if (whole !== null && whole !== size) {
            response.body.destroy?.();
            fail('SIZE_MISMATCH', `model ${label} from ${url}: expected ${size} bytes, the server has ${whole}`);
          }
          if (response.offset !== done) {
            // The server ignored the range: start over rather than trust a splice.
            hash = createHash('sha256');
            done = 0;
          }
          const out = await store.openPart(sha256, done > 0);
          let reported = done;
          await pipeline(
            response.body,
            async function* (source: AsyncIterable<Uint8Array>) {
              for await (const chunk of source) {
                if (done + chunk.length > size) {
                  fail('SIZE_MISMATCH', `model ${label} from ${url}: more than the expected ${size} bytes arrived`);
                }
                hash.update(chunk);
                done += chunk.length;
                if (done - reported >= PROGRESS_EVERY || done === size) {
                  reported = done;
                  options.onProgress?.(done, size);
                }
                yield chunk;
              }
            },
            out,
            options.signal ? { signal: options.signal } : {},
          );
          if (done < size) throw new Error(`connection closed after ${done} of ${size} bytes`);
        }
        const actual = hash.digest('hex');
        if (actual !== sha256) {
          await store.discardPart(sha256);
          fail('HASH_MISMATCH', `model ${label} from ${url}: expected sha256 ${sha256}, the bytes hash to ${actual}`);
        }
        await store.commitPart(sha256);
        options.onProgress?.(size, size);
        return;
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
        lastError = error;
        if (error instanceof ApplyError && (error.code === 'SIZE_MISMATCH' || error.code === 'HASH_MISMATCH')) {
          await store.discardPart(sha256);
          break;
        }
        if (error instanceof HttpStatusError && !error.transient) break;
        if (attempt < maxAttempts) await clock.sleep(baseDelay * 2 ** (attempt - 1), options.signal).catch(() => undefined);
      }
    }
  }
  // A part left by interruptions stays staged: the next apply resumes it instead of starting over.
  if (lastError instanceof ApplyError) throw lastError;
  throw new ApplyError('DOWNLOAD_FAILED', `model ${label}: every mirror failed; last: ${messageOf(lastError)}`, {
    cause: lastError,
  });
}
