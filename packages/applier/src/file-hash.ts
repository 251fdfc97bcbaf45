import { closeSync, openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

/**
 * Hashing a staged file off the main thread, which only receives, writes and schedules: both
 * SHA-256 passes the SPEC asks for (each chunk's, to verify it before it counts, and the whole
 * file's) run in workers that read the written bytes back from the file. The bytes are then
 * still in the page cache, so the read back is a memory copy, not disk I/O (about 0.1 CPU-s per
 * GiB here, against about 0.8 for the hash itself), and the hashes use the other core.
 *
 * The worker is plain CommonJS evaluated from a string: no second build entry, and it runs the
 * same from `src` under vitest as from `dist`.
 */
const PREFIX_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readSync } = require('node:fs');
const { createHash } = require('node:crypto');
const fd = workerData.fd;
const hash = createHash('sha256');
const buffer = Buffer.allocUnsafe(workerData.bufferBytes);
let position = 0;
let target = 0;
let finishAt = -1;
parentPort.on('message', (message) => {
  if (message.upTo > target) target = message.upTo;
  if (message.finishAt !== undefined) finishAt = message.finishAt;
  try {
    while (position < target) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, target - position), position);
      if (n === 0) throw new Error('the staged file ends at ' + position + ', expected ' + target + ' bytes');
      hash.update(buffer.subarray(0, n));
      position += n;
    }
    if (finishAt >= 0 && position >= finishAt) {
      parentPort.postMessage({ digest: hash.digest('hex') });
    }
  } catch (error) {
    parentPort.postMessage({ error: String((error && error.message) || error) });
  }
});
`;

/** Digests of every chunk of a file, in order: the check of chunks a journal says are good. */
const CHUNKS_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, readSync, closeSync } = require('node:fs');
const { createHash } = require('node:crypto');
const { path, size, chunkSize, indices, bufferBytes } = workerData;
const buffer = Buffer.allocUnsafe(bufferBytes);
const fd = openSync(path, 'r');
try {
  const digests = [];
  for (const index of indices) {
    const hash = createHash('sha256');
    let position = index * chunkSize;
    const end = Math.min(size, position + chunkSize);
    while (position < end) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, end - position), position);
      if (n === 0) throw new Error('the staged file ends at ' + position);
      hash.update(buffer.subarray(0, n));
      position += n;
    }
    digests.push(hash.digest('hex'));
  }
  parentPort.postMessage({ digests });
} catch (error) {
  parentPort.postMessage({ error: String((error && error.message) || error) });
} finally {
  closeSync(fd);
}
`;

/**
 * Chunk hashes of a download in progress. Each job (one attempt at one chunk) is sent its
 * written ranges in file order, then asked for its digest; messages are handled one at a time,
 * so a job's ranges are hashed in the order they were sent. The file descriptor belongs to the
 * main thread (a worker's own would outlive a terminated worker).
 */
const CHUNK_JOBS_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readSync } = require('node:fs');
const { createHash } = require('node:crypto');
const { fd, bufferBytes } = workerData;
const buffer = Buffer.allocUnsafe(bufferBytes);
const jobs = new Map();
parentPort.on('message', (message) => {
  const { id, from, to, finish, drop } = message;
  if (drop) {
    jobs.delete(id);
    return;
  }
  try {
    let hash = jobs.get(id);
    if (hash === undefined) {
      hash = createHash('sha256');
      jobs.set(id, hash);
    }
    let position = from;
    while (position < to) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, to - position), position);
      if (n === 0) throw new Error('the staged file ends at ' + position + ', expected ' + to + ' bytes');
      hash.update(buffer.subarray(0, n));
      position += n;
    }
    if (finish) {
      jobs.delete(id);
      parentPort.postMessage({ id, digest: hash.digest('hex') });
    }
  } catch (error) {
    jobs.delete(id);
    parentPort.postMessage({ id, error: String((error && error.message) || error) });
  }
});
`;

const BUFFER_BYTES = 1 << 20;

/** SHA-256 of chunks of a staged file, fed their written ranges as they are written. */
export interface ChunkHasher {
  /** Bytes `[from, to)` of job `id` are written: hash them next (ranges of a job come in file order). */
  update(id: number, from: number, to: number): void;
  /** Hashes `[from, to)`, the job's last range, and gives the job's lowercase hex digest. */
  finish(id: number, from: number, to: number): Promise<string>;
  /** Forgets a job that will not be finished (its chunk starts over). */
  drop(id: number): void;
  /** Stops the worker; digests not given yet are refused. */
  close(): Promise<void>;
}

export function startChunkHasher(path: string): ChunkHasher {
  const fd = openSync(path, 'r');
  const worker = new Worker(CHUNK_JOBS_WORKER, { eval: true, workerData: { fd, bufferBytes: BUFFER_BYTES } });
  const waiting = new Map<number, { resolve: (digest: string) => void; reject: (error: Error) => void }>();
  let failure: Error | null = null;
  const refuseAll = (error: Error) => {
    failure ??= error;
    for (const settle of waiting.values()) settle.reject(error);
    waiting.clear();
  };
  worker.on('message', (message: { id: number; digest?: string; error?: string }) => {
    const settle = waiting.get(message.id);
    waiting.delete(message.id);
    if (message.digest !== undefined) settle?.resolve(message.digest);
    else {
      const error = new Error(`hashing ${path}: ${message.error}`);
      // A failed update has no waiter yet: its finish is refused when it comes.
      if (settle === undefined) failure ??= error;
      else settle.reject(error);
    }
  });
  worker.on('error', refuseAll);
  let closed = false;
  return {
    update: (id, from, to) => worker.postMessage({ id, from, to }),
    finish: (id, from, to) =>
      new Promise<string>((resolve, reject) => {
        if (failure !== null) {
          reject(failure);
          return;
        }
        waiting.set(id, { resolve, reject });
        worker.postMessage({ id, from, to, finish: true });
      }),
    drop: (id) => worker.postMessage({ id, drop: true }),
    close: async () => {
      if (closed) return;
      closed = true;
      await worker.terminate();
      closeSync(fd);
      refuseAll(new Error(`hashing ${path}: stopped`));
    },
  };
}

/** The whole-file hash of a staged file whose verified prefix grows while it downloads. */
export interface PrefixHasher {
  /** The verified, contiguous prefix now reaches `upTo` bytes: hash up to there in the background. */
  advance(upTo: number): void;
  /** Hashes up to `size` and gives the lowercase hex digest. */
  finish(size: number): Promise<string>;
  /** Stops the worker (after finish, or to abandon it). */
  close(): Promise<void>;
}

export function startPrefixHasher(path: string): PrefixHasher {
  // The descriptor is the main thread's, closed once the worker is stopped: one the worker
  // opened itself would stay open when it is terminated before it finishes (an abort).
  const fd = openSync(path, 'r');
  const worker = new Worker(PREFIX_WORKER, { eval: true, workerData: { fd, bufferBytes: BUFFER_BYTES } });
  let failure: Error | null = null;
  let settle: { resolve: (digest: string) => void; reject: (error: Error) => void } | null = null;
  worker.on('message', (message: { digest?: string; error?: string }) => {
    if (message.error !== undefined) {
      failure = new Error(`hashing ${path}: ${message.error}`);
      settle?.reject(failure);
    } else if (message.digest !== undefined) settle?.resolve(message.digest);
  });
  worker.on('error', (error) => {
    failure = error;
    settle?.reject(error);
  });
  let closed = false;
  return {
    advance: (upTo) => worker.postMessage({ upTo }),
    finish: (size) =>
      new Promise<string>((resolve, reject) => {
        if (failure !== null) {
          reject(failure);
          return;
        }
        settle = { resolve, reject };
        worker.postMessage({ upTo: size, finishAt: size });
      }),
    close: async () => {
      if (closed) return;
      closed = true;
      await worker.terminate();
      closeSync(fd);
    },
  };
}

/** The SHA-256 of the chunks `indices` of a staged file, read back in a worker. */
export function hashChunks(path: string, size: number, chunkSize: number, indices: readonly number[]): Promise<string[]> {
  return new Promise<string[]>((resolve, reject) => {
    const worker = new Worker(CHUNKS_WORKER, { eval: true, workerData: { path, size, chunkSize, indices: [...indices], bufferBytes: BUFFER_BYTES } });
    worker.once('message', (message: { digests?: string[]; error?: string }) => {
      if (message.digests !== undefined) resolve(message.digests);
      else reject(new Error(`hashing chunks of ${path}: ${message.error ?? 'no answer'}`));
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}
