import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** SHA-256 of a stream of batches, fed in file order. */
export interface Hasher {
  /**
   * Takes the batch; the caller must not touch it afterwards (it may be moved to another
   * thread). Resolves once the hasher has room for more, which bounds memory.
   */
  update(batch: Buffer): Promise<void>;
  digest(): Promise<string>;
  close(): Promise<void>;
}

/** Hashes on the calling thread: for small files, where starting a thread costs more than it saves. */
export function inlineHasher(): Hasher {
  const hash = createHash('sha256');
  return {
    update: async (batch) => {
      hash.update(batch);
    },
    digest: async () => hash.digest('hex'),
    close: async () => undefined,
  };
}

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash('sha256');
parentPort.on('message', (message) => {
  if (message === 'digest') parentPort.postMessage({ digest: hash.digest('hex') });
  else {
    hash.update(new Uint8Array(message));
    parentPort.postMessage({ hashed: true });
  }
});
`;

/**
 * Hashes on a worker thread, so the thread reading the socket only copies bytes: on a large
 * model this is what keeps the download near the speed of curl. Batches are moved, not copied.
 */
export function workerHasher(maxQueued = 4): Hasher {
  const worker = new Worker(WORKER_SOURCE, { eval: true });
  let failure: Error | null = null;
  let queued = 0;
  let room: (() => void) | null = null;
  let onDigest: ((hex: string) => void) | null = null;
  worker.on('error', (error) => {
    failure = error;
    room?.();
  });
  worker.on('message', (message: { hashed?: true; digest?: string }) => {
    if (message.hashed) {
      queued--;
      room?.();
    } else if (message.digest !== undefined) onDigest?.(message.digest);
  });
  return {
    update: async (batch) => {
      if (failure) throw failure;
      const whole = batch.byteOffset === 0 && batch.byteLength === batch.buffer.byteLength && !(batch.buffer instanceof SharedArrayBuffer);
      queued++;
      if (whole) worker.postMessage(batch.buffer, [batch.buffer as ArrayBuffer]);
      else worker.postMessage(batch.buffer.slice(batch.byteOffset, batch.byteOffset + batch.byteLength));
      while (queued >= maxQueued && failure === null) {
        await new Promise<void>((resolve) => {
          room = resolve;
        });
        room = null;
      }
      if (failure) throw failure;
    },
    digest: () =>
      new Promise<string>((resolve, reject) => {
        if (failure) {
          reject(failure);
          return;
        }
        onDigest = resolve;
        worker.once('error', reject);
        worker.postMessage('digest');
      }),
    close: async () => {
      await worker.terminate();
    },
  };
}
